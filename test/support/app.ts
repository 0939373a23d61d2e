// Starts the real service on port 0 against a fresh PostgreSQL database (or in-memory
// PGlite), and gives tests generated clients over real sockets.
import { type Client, createClient, type Transport } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport } from '@connectrpc/connect-node';
import pino from 'pino';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { WalletService } from '../../gen/billing/v1/wallet_service_pb.js';
import { ErrorDetailSchema, type ErrorDetail, ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { type App, build } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { databaseSettings, openDatabase } from '../../src/storage/database.js';
import { Code, ConnectError } from '@connectrpc/connect';
import { afterAll, beforeAll } from 'vitest';
import { createTestDatabase, type TestDatabase } from './postgres.js';

export interface TestApp {
  readonly app: App;
  readonly url: string;
  readonly billing: Client<typeof BillingService>;
  readonly admin: Client<typeof AdminService>;
  readonly wallet: Client<typeof WalletService>;
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
  /**
   * Run the scheduled jobs (hold sweeper, daily top-up) in the background. Off by default:
   * a test must not race a sweep it did not ask for, or get a top-up when it crosses 00:00 UTC.
   */
  readonly jobs?: boolean;
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
    ...databaseSettings(config),
    dataDir: 'memory://',
    // Two test files run at once and some start two apps: 4 × 16 stays well inside the
    // server's max_connections of 100, whatever else is connected.
    poolSizeMax: 16,
  });
  const app = await build(config, { db, metrics: false, jobs: options.jobs ?? false, log: pino({ level: 'silent' }) });
  const url = `http://127.0.0.1:${app.server.port}`;
  const grpc: Transport = createGrpcTransport({ baseUrl: url });
  const connect: Transport = createConnectTransport({ baseUrl: url, httpVersion: '1.1' });
  return {
    app,
    url,
    billing: createClient(BillingService, grpc),
    admin: createClient(AdminService, grpc),
    wallet: createClient(WalletService, grpc),
    billingHttp1: createClient(BillingService, connect),
    ...(database ? { database } : {}),
    close: async () => {
      await app.close();
      await db.close();
      await database?.drop();
    },
  };
}

/**
 * Something started before the first test of the enclosing file or describe block and
 * closed after its last. The object is filled in by beforeAll.
 */
export function useStarted<T extends { close(): Promise<void> }>(start: () => Promise<T>): T {
  const started = {} as T;
  beforeAll(async () => {
    Object.assign(started, await start());
  });
  afterAll(async () => {
    await started.close?.();
  });
  return started;
}

/** One app for the enclosing file or describe block. */
export function useTestApp(options: TestAppOptions = {}): TestApp {
  return useStarted(() => startTestApp(options));
}

/** How one call ended: its reply, or the ConnectError and typed detail it was refused with. */
export type Outcome<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: ConnectError; readonly detail: ErrorDetail | undefined };

/** Settles a call into its Outcome without throwing, so every call of a race can be checked. */
export async function outcome<T>(call: Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await call };
  } catch (error) {
    const connectError = ConnectError.from(error);
    return { ok: false, error: connectError, detail: connectError.findDetails(ErrorDetailSchema)[0] };
  }
}

/** A refused call as "Code REASON" (readable in a failed assertion); "succeeded" for a reply. */
export function refusal(o: Outcome<unknown>): string {
  return o.ok ? 'succeeded' : refused(o.error.code, o.detail?.reason);
}

/** The refusal() text of an expected refusal. */
export function refused(code: Code, reason: ErrorReason | undefined): string {
  return `${Code[code]} ${reason === undefined ? '(no ErrorDetail)' : ErrorReason[reason]}`;
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

/** Grants `amount` milli-credits to the user with a fresh key: the one way tests fund a user. */
export function fund(t: Pick<TestApp, 'billing'>, userId: string, amount: bigint) {
  return t.billing.grant({ userId, idempotencyKey: key('fund'), grant: { case: 'amountMillicredits', value: amount }, reason: 'test funds' });
}

let counter = 0;
/** A fresh idempotency key. */
export function key(prefix = 'k'): string {
  counter += 1;
  return `${prefix}-${process.pid}-${Date.now()}-${counter}`;
}

/** Seconds from the database's clock to the next 00:00 UTC. */
export async function secondsToUtcMidnight(db: App['db']): Promise<number> {
  const [row] = await db.query<{ s: string }>(
    `select extract(epoch from (date_trunc('day', now() at time zone 'utc') + interval '1 day') - now() at time zone 'utc')::text as s`,
  );
  return Number(row!.s);
}

/**
 * Waits out the last `marginSeconds` of a UTC day by the database's clock, so a test that
 * counts per-day usage (free operations, top-ups) starts and ends on the same day.
 */
export async function awayFromUtcMidnight(db: App['db'], marginSeconds = 30): Promise<void> {
  const left = await secondsToUtcMidnight(db);
  if (left < marginSeconds) await new Promise((resolve) => setTimeout(resolve, (left + 1) * 1000));
}
