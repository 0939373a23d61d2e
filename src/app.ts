// Composition: configuration → database → ledger (ledger/ledger.ts) → server. main.ts runs it as a process;
// tests call build() with their own database and port 0.
import http from 'node:http';
import type { Interceptor } from '@connectrpc/connect';
import type { Logger } from 'pino';
import type { Config } from './config.js';
import { scheduleDailyTopUp } from './jobs/daily-top-up.js';
import { scheduleHoldSweeper } from './jobs/hold-sweeper.js';
import { JobProgress } from './jobs/progress.js';
import type { Holds } from './ledger/holds/holds.js';
import { logAuditEvents } from './ledger/audit/audit.js';
import { createLedger, type Ledger } from './ledger/ledger.js';
import { createLogger } from './log.js';
import { accessLogInterceptor } from './rpc/access-log.js';
import { authInterceptor, scopeTable, type ScopeTable } from './rpc/auth.js';
import { errorInterceptor } from './rpc/errors.js';
import { type LimitTable, limitsInterceptor, limitTable } from './rpc/limits.js';
import { deadlineInterceptor } from './rpc/deadline.js';
import { tracingInterceptor } from './rpc/tracing.js';
import { createMetrics, type Metrics } from './rpc/metrics.js';
import { routes, SCOPED_SERVICES } from './rpc/routes.js';
import { type RunningServer, startServer } from './server.js';
import { createServiceMetrics } from './service-metrics.js';
import { Admission, admitted, defaultWorkMax } from './storage/admission.js';
import { type Database, databaseSettings, openDatabase } from './storage/database.js';
import { Wallet } from './wallet/wallet.js';

/** Longest deadline a client may set; longer ones are capped to this. */
export const TIMEOUT_MS_MAX = 60_000;

export interface App {
  readonly config: Config;
  readonly db: Database;
  readonly ledger: Ledger;
  readonly holds: Holds;
  readonly wallet: Wallet;
  readonly server: RunningServer;
  readonly metricsServer?: http.Server;
  readonly metrics: Metrics;
  readonly log: Logger;
  close(): Promise<void>;
}

export interface BuildOptions {
  /** Use this database instead of opening the configured one; the app will not close it. */
  readonly db?: Database;
  /** Serve Prometheus metrics on config.metricsPort (default true). */
  readonly metrics?: boolean;
  /** Run the scheduled jobs (default true). */
  readonly jobs?: boolean;
  /** Poll the watched chains in the background (default: as jobs). Tests poll by hand. */
  readonly depositPolling?: boolean;
  readonly log?: Logger;
}

/** What the contract states about every method: the scope it needs and its request limits. */
export interface ContractRules {
  readonly scopes: ScopeTable;
  readonly limits: LimitTable;
}

/**
 * Reads the scopes and limits from the descriptors. A method without a scope, or a
 * malformed limit, throws here, naming it: the server does not start.
 */
export function readContract(): ContractRules {
  return { scopes: scopeTable(SCOPED_SERVICES), limits: limitTable(SCOPED_SERVICES) };
}

/**
 * The interceptors every call passes, outermost first (the last runs innermost, so limits
 * are checked after auth: an unauthenticated caller learns nothing). The server and the
 * in-process service tests (test/support/services.ts) use this one list.
 *
 * The access log comes first (a tracing interceptor, when there is one, goes before it so
 * that its span is active when the line is written): it times the whole call, sets the
 * request id before anything else runs, and sees every outcome as the caller will (the
 * error interceptor inside it has translated it). Metrics come just inside it; both are
 * outside the error interceptor, so they record the same code.
 */
export function interceptors(config: Config, log: Logger, metrics: Metrics, contract: ContractRules): Interceptor[] {
  // Tracing is outermost, so every other interceptor (and the access log) runs inside the call's span; absent when off.
  const tracing = config.tracing ? [tracingInterceptor()] : [];
  return [
    ...tracing,
    accessLogInterceptor(log),
    metrics.interceptor,
    errorInterceptor(log),
    authInterceptor(config.tokens, contract.scopes),
    limitsInterceptor(contract.limits),
    deadlineInterceptor,
  ];
}

export async function build(config: Config, options: BuildOptions = {}): Promise<App> {
  const log = options.log ?? createLogger(config.logLevel);
  // First: a method the contract left without a scope, or a malformed limit, stops the
  // start-up before anything opens.
  const contract = readContract();
  const ownsDb = !options.db;
  const opened =
    options.db ??
    (await openDatabase({ ...(config.databaseUrl ? { databaseUrl: config.databaseUrl } : {}), ...databaseSettings(config), dataDir: config.dataDir }));
  // Everything below reaches the database through one admission bound; past it, work is refused as OVERLOADED.
  const db = admitted(opened, new Admission(config.databaseWorkMax ?? (await defaultWorkMax(opened))));
  const metrics = createMetrics();
  // Money, holds, replays, jobs, VerifyLedger and early refusals, in the same registry.
  const serviceMetrics = createServiceMetrics(metrics.registry);
  const ledger = createLedger(db, config.catalogue, config.batching, {
    auditSink: logAuditEvents(log),
    progress: new JobProgress({ log, intervalMs: config.progressIntervalMs }),
    observer: serviceMetrics.ledger,
  });
  const { holds, topUps } = ledger;
  serviceMetrics.watchHolds(() => holds.totals());
  const wallet = new Wallet(ledger.kernel, config.wallet, log, metrics.registry);
  await wallet.checkKeys();
  await wallet.prepare();
  const server = await startServer({
    port: config.port,
    host: config.host,
    requestBytesMax: config.requestBytesMax,
    timeoutMsMax: TIMEOUT_MS_MAX,
    limits: config.server,
    interceptors: interceptors(config, log, metrics, contract),
    routes: routes({ ledger, wallet, probe: () => db.ping(), jobs: serviceMetrics.jobs }),
    onRefused: serviceMetrics.refused,
    ...(config.tls ? { tls: { ...config.tls, log } } : {}),
  });
  // Jobs run on every replica: both are safe to overlap (row locks and unique keys).
  const jobs = (options.jobs ?? true)
    ? [
        scheduleHoldSweeper(holds, config.holdSweepSchedule, log, serviceMetrics.jobs),
        scheduleDailyTopUp(topUps, config.dailyTopUpSchedule, log, serviceMetrics.jobs),
      ]
    : [];
  if (options.depositPolling ?? options.jobs ?? true) wallet.start();
  if (!wallet.enabled) log.info(config.wallet.disabledReason);
  let metricsServer: http.Server | undefined;
  if (options.metrics ?? true) {
    metricsServer = http.createServer((req, res) => {
      if (req.url !== '/metrics') return void res.writeHead(404).end();
      metrics.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        () => res.writeHead(500).end(),
      );
    });
    await new Promise<void>((resolve) => metricsServer!.listen(config.metricsPort, config.host, resolve));
  }
  return {
    config,
    db,
    ledger,
    holds,
    wallet,
    server,
    metrics,
    ...(metricsServer ? { metricsServer } : {}),
    log,
    close: async () => {
      for (const job of jobs) job.stop();
      await wallet.stop();
      await server.close();
      await new Promise<void>((resolve) => (metricsServer ? metricsServer.close(() => resolve()) : resolve()));
      if (ownsDb) await db.close();
    },
  };
}
