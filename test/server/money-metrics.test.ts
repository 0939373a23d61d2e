// The metrics that tell the money story, scraped over HTTP from a real server on real
// PostgreSQL: after a scripted sequence (grants, charges of two products, a refused charge,
// a replayed grant, a refund, a promo redemption, a hold captured and one left open, a
// top-up run over the API, VerifyLedger), /metrics shows the exact milli-credits moved per
// type and product, the exact replays, the holds, the jobs and the verdict; a request that
// does not decode, an oversized one and an unknown path are counted too. Then the ledger's
// observer on its own: a batch that rolls back and runs its units again alone, a refusal
// after statements and duplicates in one batch are each told once, after their commit.
// Last the server's refusal callback: past the calls in flight, and a silent connection.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Client, createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { Plan } from '../../gen/billing/v1/types_pb.js';
import { type App, build } from '../../src/app.js';
import { loadConfig } from '../../src/config.js';
import { BillingError } from '../../src/domain/errors.js';
import { creditDecision, TRANSACTION_RESULT } from '../../src/ledger/kernel/credit.js';
import { SYSTEM_GRANTS } from '../../src/ledger/kernel/names.js';
import type { LedgerObserver, MoneyMoved } from '../../src/ledger/kernel/observer.js';
import { createLedger } from '../../src/ledger/ledger.js';
import type { RefusedBeforeHandler } from '../../src/rpc/handler.js';
import { registerHealth } from '../../src/rpc/health.js';
import { startServer } from '../../src/server.js';
import { type Database, databaseSettings, openDatabase } from '../../src/storage/database.js';
import { awayFromUtcMidnight, failure, key } from '../support/app.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

let database: TestDatabase;
let db: Database;
let app: App;
let dir: string;
let url: string;
let billing: Client<typeof BillingService>;
let admin: Client<typeof AdminService>;

beforeAll(async () => {
  database = await createTestDatabase();
  // The muse catalogue with a hold sweeper every second (so its job metrics show without
  // waiting) and a daily top-up that never fires during the test.
  dir = mkdtempSync(join(tmpdir(), 'money-metrics-'));
  const catalogue = JSON.parse(readFileSync('config/muse.json', 'utf8')) as { holds: { sweepSchedule: string }; dailyTopUp: { schedule: string } };
  catalogue.holds.sweepSchedule = '* * * * * *';
  catalogue.dailyTopUp.schedule = '0 0 1 1 *';
  writeFileSync(join(dir, 'catalogue.json'), JSON.stringify(catalogue));
  const config = loadConfig({
    PORT: '0',
    METRICS_PORT: '0',
    BILLING_CONFIG: join(dir, 'catalogue.json'),
    BILLING_DATA_DIR: 'memory://',
    LOG_LEVEL: 'silent',
    DATABASE_URL: database.url,
    REQUEST_BYTES_MAX: '4096',
  });
  db = await openDatabase({ databaseUrl: database.url, ...databaseSettings(config), dataDir: 'memory://', poolSizeMax: 8 });
  app = await build(config, { db, metrics: true, jobs: true, depositPolling: false, log: pino({ level: 'silent' }) });
  url = `http://127.0.0.1:${app.server.port}`;
  const transport = createGrpcTransport({ baseUrl: url });
  billing = createClient(BillingService, transport);
  admin = createClient(AdminService, transport);
});

afterAll(async () => {
  await app?.close();
  await db?.close();
  await database?.drop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function scrape(): Promise<string> {
  const port = (app.metricsServer!.address() as AddressInfo).port;
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

/** The value of one series, exactly as named with its labels in the exposition (undefined when absent). */
function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** Every series of a metric name: "name{labels}" → value. */
function series(text: string, name: string): Map<string, number> {
  const found = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) {
      const at = line.lastIndexOf(' ');
      found.set(line.slice(0, at), Number(line.slice(at + 1)));
    }
  }
  return found;
}

async function postJson(path: string, body: string): Promise<{ status: number; json: { code?: string } }> {
  const res = await fetch(`${url}/${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  return { status: res.status, json: (await res.json().catch(() => ({}))) as { code?: string } };
}

describe('money metrics', () => {
  it('show the exact credits moved per type and product, replays, holds, jobs and the verdict', async () => {
    await awayFromUtcMidnight(app.db);
    // PRO users are not topped up: only 'mm-free' is, by exactly the target.
    for (const userId of ['mm-a', 'mm-b']) await admin.setPlan({ userId, plan: Plan.PRO });
    await admin.setPlan({ userId: 'mm-free', plan: Plan.FREE });

    const grantKey = key('grant');
    const grant = { userId: 'mm-a', idempotencyKey: grantKey, grant: { case: 'amountMillicredits' as const, value: 10_000n }, reason: 'start' };
    await billing.grant(grant);
    await billing.grant({ userId: 'mm-b', idempotencyKey: key(), grant: { case: 'amountMillicredits', value: 20_000n }, reason: 'start' });
    // The same grant again, twice: replays, not new credits.
    await billing.grant(grant);
    await billing.grant(grant);

    const museCharge = await billing.charge({ userId: 'mm-a', idempotencyKey: key(), product: 'muse', usage: { case: 'amountMillicredits', value: 3_000n } });
    await billing.charge({ userId: 'mm-b', idempotencyKey: key(), product: 'vital_ai', usage: { case: 'amountMillicredits', value: 2_000n } });
    // Refused: more than the balance; moves nothing.
    const refused = await failure(billing.charge({ userId: 'mm-a', idempotencyKey: key(), product: 'muse', usage: { case: 'amountMillicredits', value: 1_000_000n } }));
    expect(refused.detail?.reason).toBeDefined();

    await billing.refund({ userId: 'mm-a', idempotencyKey: key(), transactionId: museCharge.transaction!.id, amountMillicredits: 1_000n, reason: 'bad output' });

    await admin.createPromoCode({ code: 'MM-PROMO', amountMillicredits: 2_500n, maxRedemptions: 5n });
    await billing.redeem({ userId: 'mm-b', idempotencyKey: key(), code: 'MM-PROMO' });

    const hold = await billing.reserve({ userId: 'mm-b', idempotencyKey: key(), product: 'vital_ai', amount: { case: 'amountMillicredits', value: 1_500n } });
    await billing.charge({
      userId: 'mm-b',
      idempotencyKey: key(),
      product: 'vital_ai',
      usage: { case: 'amountMillicredits', value: 1_200n },
      reservationId: hold.reservation!.id,
    });
    // Left open: the holds gauges show it.
    await billing.reserve({ userId: 'mm-a', idempotencyKey: key(), product: 'muse', amount: { case: 'amountMillicredits', value: 700n } });

    const topUp = await admin.runDailyTopUp({ date: '' });
    expect(topUp).toMatchObject({ accountsToppedUp: 1n, totalMillicredits: 5_000n });
    // A refused date is not a run of the job.
    await failure(admin.runDailyTopUp({ date: '2001-01-01' }));

    const report = await admin.verifyLedger({});
    expect(report.ok).toBe(true);

    // Refused before the handler ran, and counted all the same.
    const garbage = await postJson('billing.v1.BillingService/Charge', '{"userId":');
    expect(garbage.json.code).toBe('invalid_argument');
    const big = await postJson('billing.v1.BillingService/Grant', JSON.stringify({ userId: 'mm-a', idempotencyKey: 'x', reason: 'x'.repeat(8_000) }));
    expect(big.json.code).toBe('resource_exhausted');
    expect((await fetch(`${url}/billing.v1.BillingService/NoSuchMethod`, { method: 'POST' })).status).toBe(404);

    // The sweeper runs every second: wait for a run of it to have ended (no timing asserted).
    let text = await scrape();
    while (value(text, 'billing_job_last_success_timestamp_seconds{job="hold_sweeper"}') === undefined) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      text = await scrape();
    }

    expect(series(text, 'billing_credits_moved_millicredits_total')).toEqual(
      new Map([
        ['billing_credits_moved_millicredits_total{type="grant",product=""}', 30_000],
        ['billing_credits_moved_millicredits_total{type="charge",product="muse"}', 3_000],
        ['billing_credits_moved_millicredits_total{type="charge",product="vital_ai"}', 3_200],
        ['billing_credits_moved_millicredits_total{type="refund",product="muse"}', 1_000],
        ['billing_credits_moved_millicredits_total{type="promo",product=""}', 2_500],
        ['billing_credits_moved_millicredits_total{type="daily_top_up",product=""}', 5_000],
      ]),
    );
    expect(series(text, 'billing_ledger_transactions_total')).toEqual(
      new Map([
        ['billing_ledger_transactions_total{type="grant",product=""}', 2],
        ['billing_ledger_transactions_total{type="charge",product="muse"}', 1],
        ['billing_ledger_transactions_total{type="charge",product="vital_ai"}', 2],
        ['billing_ledger_transactions_total{type="refund",product="muse"}', 1],
        ['billing_ledger_transactions_total{type="promo",product=""}', 1],
        ['billing_ledger_transactions_total{type="daily_top_up",product=""}', 1],
      ]),
    );
    expect(series(text, 'billing_idempotent_replays_total')).toEqual(new Map([['billing_idempotent_replays_total{operation="Grant"}', 2]]));

    expect(value(text, 'billing_holds_active')).toBe(1);
    expect(value(text, 'billing_holds_held_millicredits')).toBe(700);

    expect(value(text, 'billing_job_runs_total{job="daily_top_up",trigger="rpc"}')).toBe(1);
    expect(value(text, 'billing_job_failures_total{job="daily_top_up",trigger="rpc"}')).toBeUndefined();
    expect(value(text, 'billing_job_duration_seconds_count{job="daily_top_up",trigger="rpc"}')).toBe(1);
    expect(value(text, 'billing_job_last_success_timestamp_seconds{job="daily_top_up"}')).toBeGreaterThan(1_700_000_000);
    expect(value(text, 'billing_job_last_success_timestamp_seconds{job="hold_sweeper"}')).toBeGreaterThan(1_700_000_000);
    expect(value(text, 'billing_job_runs_total{job="hold_sweeper",trigger="schedule"}')).toBeGreaterThanOrEqual(1);
    expect(value(text, 'billing_job_failures_total{job="hold_sweeper",trigger="schedule"}')).toBeUndefined();

    expect(value(text, 'billing_ledger_verify_ok')).toBe(1);
    expect(value(text, 'billing_ledger_verify_findings')).toBe(0);
    expect(value(text, 'billing_ledger_verify_last_run_timestamp_seconds')).toBeGreaterThan(1_700_000_000);

    const charge = 'billing_rpc_calls_total{procedure="billing.v1.BillingService/Charge"';
    expect(value(text, `${charge},code="invalid_argument"}`)).toBe(1);
    expect(value(text, `${charge},code="failed_precondition"}`)).toBe(1);
    expect(value(text, `${charge},code="ok"}`)).toBe(3);
    expect(value(text, 'billing_rpc_calls_total{procedure="billing.v1.BillingService/Grant",code="resource_exhausted"}')).toBe(1);
    expect(value(text, 'billing_rpc_refused_total{reason="unknown_path"}')).toBe(1);
  });
});

describe('the ledger observer', () => {
  /** A ledger on one lane (so units batch) whose observer writes down what it is told. */
  function observed() {
    const moved: MoneyMoved[] = [];
    const replayed: string[] = [];
    const observer: LedgerObserver = { committed: (m) => moved.push(...m), replayed: (operation) => replayed.push(operation) };
    const ledger = createLedger(db, app.config.catalogue, { lanes: 1 }, { observer });
    const total = () => moved.reduce((sum, m) => sum + m.millicredits, 0n);
    const count = () => moved.reduce((sum, m) => sum + m.transactions, 0);
    return { ledger, moved, replayed, total, count };
  }
  const grantUnit = (o: ReturnType<typeof observed>, userId: string, key: string, amount: bigint, fault?: 'database' | 'refuse') =>
    o.ledger.kernel.post(TRANSACTION_RESULT, { userId, idempotencyKey: key, requestHash: 'h', operation: 'Grant' }, async (s, account) => {
      if (fault === 'database') await s.query('select 1 / 0');
      if (fault === 'refuse') {
        await s.query('select 1');
        throw new BillingError('INSUFFICIENT_BALANCE', 'refused on purpose');
      }
      return creditDecision(app.config.catalogue, account, 'GRANT', SYSTEM_GRANTS, amount, { userId, product: '', operation: '', reference: '', reason: 'r', idempotencyKey: key, metadata: {} });
    });

  it('hears of a rolled-back batch only from the units that committed when run again alone', async () => {
    const o = observed();
    const settled = await Promise.allSettled([
      grantUnit(o, 'obs-a', 'g1', 100n),
      grantUnit(o, 'obs-b', 'g1', 200n),
      grantUnit(o, 'obs-a', 'g2', 400n, 'database'),
      grantUnit(o, 'obs-c', 'g1', 800n),
    ]);
    expect(settled.map((x) => x.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(o.ledger.kernel.batchStats.rerunAlone).toBeGreaterThan(0);
    expect([o.total(), o.count()]).toEqual([1_100n, 3]);
    expect(o.moved.every((m) => m.type === 'GRANT' && m.product === '')).toBe(true);
  });

  it('hears nothing of a unit refused after statements of its own, and of the others once', async () => {
    const o = observed();
    const settled = await Promise.allSettled([grantUnit(o, 'obs-r', 'x', 10n), grantUnit(o, 'obs-r', 'y', 20n, 'refuse'), grantUnit(o, 'obs-r', 'z', 40n)]);
    expect(settled.map((x) => x.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(o.ledger.kernel.batchStats.rerunAlone).toBe(0);
    expect([o.total(), o.count()]).toEqual([50n, 2]);
  });

  it('hears of duplicates in one batch as one transaction and the rest as replays; a reused key is neither', async () => {
    const o = observed();
    await grantUnit(o, 'obs-dup', 'fund', 1_000n);
    const charge = (key: string, amount: bigint) =>
      o.ledger.charges.charge({ userId: 'obs-dup', idempotencyKey: key, product: 'studio', usage: { kind: 'amount', amountMillicredits: amount }, allowPartial: false, reference: '', metadata: {} });
    await Promise.all(Array.from({ length: 6 }, () => charge('same', 100n)));
    const reused = await Promise.allSettled([charge('same', 101n)]);
    expect(reused[0]!.status).toBe('rejected');
    expect(o.moved).toEqual([
      { type: 'GRANT', product: '', transactions: 1, millicredits: 1_000n },
      { type: 'CHARGE', product: 'studio', transactions: 1, millicredits: 100n },
    ]);
    expect(o.replayed).toEqual(Array(5).fill('Charge'));
  });
});

describe("the server's refusals before the handler", () => {
  it('tell the callback once per call past the cap and per connection that sent nothing in time', async () => {
    const reasons: RefusedBeforeHandler[] = [];
    const server = await startServer({
      port: 0,
      host: '127.0.0.1',
      requestBytesMax: 4096,
      timeoutMsMax: 60_000,
      limits: {
        firstBytesTimeoutMs: 300,
        idleTimeoutMs: 30_000,
        headersTimeoutMs: 30_000,
        requestTimeoutMs: 30_000,
        connectionsMax: 100,
        callsInFlightMax: 1,
        shutdownGraceMs: 100,
      },
      interceptors: [],
      routes: (router) => registerHealth(router, async () => true, []),
      onRefused: (reason) => reasons.push(reason),
    });
    const sockets: net.Socket[] = [];
    const connect = () =>
      new Promise<net.Socket>((resolve) => {
        const socket = net.connect(server.port, '127.0.0.1', () => resolve(socket));
        socket.on('error', () => {});
        sockets.push(socket);
      });
    try {
      // One call in flight: its body never comes.
      const held = await connect();
      held.write('POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n');
      // The next is refused unread. Calls go out on fresh connections until one is refused
      // (the held call may be parsed after the first of them): those before are answered.
      let answer = '';
      for (let i = 0; i < 50 && !answer.startsWith('HTTP/1.1 503 '); i += 1) {
        const next = await connect();
        const answered = new Promise<string>((resolve) => next.once('data', (d: Buffer) => resolve(d.toString())));
        next.write('POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}');
        answer = await answered;
      }
      expect(answer).toMatch(/^HTTP\/1.1 503 /);
      // A connection that sends nothing is closed after firstBytesTimeoutMs.
      const silent = await connect();
      await new Promise((resolve) => silent.once('close', resolve));
      expect(reasons.sort()).toEqual(['calls_in_flight_max', 'first_bytes_timeout']);
    } finally {
      for (const socket of sockets) socket.destroy();
      await server.close(100);
    }
  });
});
