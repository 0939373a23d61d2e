// Starts the real service on port 0 against a fresh PostgreSQL database (or in-memory
// PGlite), and gives tests generated clients over real sockets.
import { type Client, createClient, type Transport } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport } from '@connectrpc/connect-node';
import pino from 'pino';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { ErrorDetailSchema, type ErrorDetail } from '../../gen/billing/v1/errors_pb.js';
import { type App, build } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { openDatabase } from '../../src/storage/database.js';
import { ConnectError } from '@connectrpc/connect';
import { createTestDatabase, type TestDatabase } from './postgres.js';

export interface TestApp {
  readonly app: App;
  readonly url: string;
  readonly billing: Client<typeof BillingService>;
  readonly admin: Client<typeof AdminService>;
  /** The same services over the Connect protocol on HTTP/1.1. */
  readonly billingHttp1: Client<typeof BillingService>;
  readonly database?: TestDatabase;
  close(): Promise<void>;
}

export interface TestAppOptions {
  readonly embedded?: boolean;
  readonly catalogue?: 'muse' | 'mu';
  readonly env?: Record<string, string>;
  /** Share this PostgreSQL database (another app's) instead of creating one; it is not dropped on close. */
  readonly databaseUrl?: string;
}

export async function startTestApp(options: TestAppOptions = {}): Promise<TestApp> {
  const database = options.embedded || options.databaseUrl ? undefined : await createTestDatabase();
  const databaseUrl = options.databaseUrl ?? database?.url;
  const config = loadConfig({
    PORT: '0',
    BILLING_CONFIG: `config/${options.catalogue ?? 'muse'}.json`,
    BILLING_DATA_DIR: 'memory://',
    LOG_LEVEL: 'silent',
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    ...options.env,
  });
  const db = await openDatabase({
    ...(databaseUrl ? { databaseUrl } : {}),
    dataDir: 'memory://',
    poolSizeMax: 24,
  });
  const app = await build(config, { db, metrics: false, log: pino({ level: 'silent' }) });
  const url = `http://127.0.0.1:${app.server.port}`;
  const grpc: Transport = createGrpcTransport({ baseUrl: url });
  const connect: Transport = createConnectTransport({ baseUrl: url, httpVersion: '1.1' });
  return {
    app,
    url,
    billing: createClient(BillingService, grpc),
    admin: createClient(AdminService, grpc),
    billingHttp1: createClient(BillingService, connect),
    ...(database ? { database } : {}),
    close: async () => {
      await app.close();
      await db.close();
      await database?.drop();
    },
  };
}

/** The ConnectError a call failed with and its typed detail; throws if it succeeded. */
export async function failure(call: Promise<unknown>): Promise<{ error: ConnectError; detail: ErrorDetail | undefined }> {
  try {
    await call;
  } catch (error) {
    const connectError = ConnectError.from(error);
    return { error: connectError, detail: connectError.findDetails(ErrorDetailSchema)[0] };
  }
  throw new Error('expected the call to fail, but it succeeded');
}

let counter = 0;
/** A fresh idempotency key. */
export function key(prefix = 'k'): string {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now()}-${counter}`;
}
