// Services tier: the real services, interceptors and ledger on a fresh PostgreSQL
// database, called in process over Connect's router transport — no HTTP server and no
// sockets. Tests that are about what the services decide run here; what the transport
// does (HTTP/2, HTTP/1.1, deadlines, sizes, processes) is tested over sockets by
// startTestApp (test/support/app.ts).
import { type Client, createClient, createRouterTransport } from '@connectrpc/connect';
import pino from 'pino';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { WalletService } from '../../gen/billing/v1/wallet_service_pb.js';
import { interceptors, readContract } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { createLedger, type Ledger } from '../../src/ledger/ledger.js';
import { createMetrics } from '../../src/rpc/metrics.js';
import { routes } from '../../src/rpc/routes.js';
import { type Database, openDatabase } from '../../src/storage/database.js';
import { Wallet } from '../../src/wallet/wallet.js';
import { useStarted } from './app.js';
import { createTestDatabase, type TestDatabase } from './postgres.js';

export interface TestServices {
  /** The same shape the socket tier's app offers to tests that read the database. */
  readonly app: { readonly db: Database; readonly ledger: Ledger; readonly holds: Ledger['holds'] };
  readonly billing: Client<typeof BillingService>;
  readonly admin: Client<typeof AdminService>;
  readonly wallet: Client<typeof WalletService>;
  close(): Promise<void>;
}

/** One set of services for the enclosing file or describe block. */
export function useServices(options: Parameters<typeof startServices>[0] = {}): TestServices {
  return useStarted(() => startServices(options));
}

export async function startServices(options: { catalogue?: 'muse' | 'mu'; env?: Record<string, string> } = {}): Promise<TestServices> {
  const database: TestDatabase = await createTestDatabase();
  const config = loadConfig({
    BILLING_CONFIG: `config/${options.catalogue ?? 'muse'}.json`,
    BILLING_DATA_DIR: 'memory://',
    DATABASE_URL: database.url,
    LOG_LEVEL: 'silent',
    ...options.env,
  });
  const db = await openDatabase({ databaseUrl: database.url, dataDir: 'memory://', poolSizeMax: 16 });
  const log = pino({ level: 'silent' });
  const ledger = createLedger(db, config.catalogue, config.batching);
  const metrics = createMetrics();
  const wallet = new Wallet(ledger.kernel, config.wallet, log, metrics.registry);
  const transport = createRouterTransport(routes({ ledger, wallet, probe: () => db.ping() }), {
    router: { interceptors: interceptors(config, log, metrics, readContract()) },
  });
  return {
    app: { db, ledger, holds: ledger.holds },
    billing: createClient(BillingService, transport),
    admin: createClient(AdminService, transport),
    wallet: createClient(WalletService, transport),
    close: async () => {
      await wallet.stop();
      await db.close();
      await database.drop();
    },
  };
}
