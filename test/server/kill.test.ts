// kill -9 under load: the service as a real process (`tsx src/main.ts`) on a fresh PostgreSQL
// database, 24 clients in flight over gRPC sending every mutation of the bank workload
// (test/bank/: Grant, Charge in every form, captures of holds, Reserve, Release, Refund,
// Redeem, retries, key reuse, copies sent at once), each new request under a fresh key.
// At random moments every few seconds the process is SIGKILLed and started again on the
// same database and port, and the load goes on.
//
// A call that fails UNAVAILABLE while the process is being killed is uncertain: it may or
// may not have committed. After the last restart every uncertain key is sent again until
// it gets a definite answer, and every acknowledged key is sent again once (it must replay
// its first reply, field for field). Then the uncertain attempts are dropped and the bank
// checker (test/bank/checker.ts) rebuilds the expected state from the definite replies
// alone: every stored transaction, idempotency record and hold was acknowledged, every
// acknowledgement is stored exactly once, balances, holds, promo and free-operation counts
// equal what the replies add up to, and VerifyLedger is clean.
//
// KILL_CYCLES kills (3 here; `npm run test:kill`: 25); KILL_SEED replays the kill moments
// and the workload's choices (the timing of 24 clients against a process start is not
// reproducible, the choices are).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Client, Code, createClient, type Interceptor } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { afterAll, describe, expect, it } from 'vitest';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { loadConfig } from '../../src/config.js';
import { type Database, openDatabase } from '../../src/storage/database.js';
import { checkBank, lastShortExpiry } from '../bank/checker.js';
import type { BankClient } from '../bank/clients.js';
import { describeOutcome, type Outcome } from '../bank/outcome.js';
import { countFrom, Rng, seedFrom } from '../bank/rng.js';
import { type Attempt, type BankHistory, BankRun } from '../bank/workload.js';
import { describeHistory, setUpWorld } from '../bank/world.js';
import { awayFromUtcMidnight } from '../support/app.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { killService, type RunningService, ServiceProcesses, stopService } from '../support/process.js';

const SEED = seedFrom('KILL_SEED');
const CYCLES = countFrom('KILL_CYCLES', 3);
const CONCURRENCY = 24;
const REPLAY = `KILL_SEED=${SEED} KILL_CYCLES=${CYCLES}`;
console.log(`kill test: ${REPLAY} (set them to replay this run's kill moments and choices)`);

/** A process start takes 3–5 s on an idle machine and, seen while four suites shared two cores, over 60 s on a loaded one. */
const START_TIMEOUT_MS = 180_000;
const TIMEOUT_MS = START_TIMEOUT_MS + 60_000 + CYCLES * 30_000;
/** Load between two kills, in milliseconds: "every few seconds". */
const LOAD_MS: readonly [number, number] = [1_000, 3_500];

const processes = new ServiceProcesses();
const dirs: string[] = [];
let database: TestDatabase | undefined;
let db: Database | undefined;

afterAll(async () => {
  await processes.killAll();
  await db?.close();
  await database?.drop();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Holds calls back while the process is down, so that clients do not spin on refused connections. */
class Gate {
  private opened: Promise<void> = Promise.resolve();
  private release: () => void = () => {};

  close(): void {
    this.opened = new Promise((resolve) => (this.release = resolve));
  }

  open(): void {
    this.release();
  }

  /** Calls past the gate and not yet answered. */
  inFlight = 0;

  readonly interceptor: Interceptor = (next) => async (req) => {
    await this.opened;
    this.inFlight += 1;
    try {
      return await next(req);
    } finally {
      this.inFlight -= 1;
    }
  };
}

/** Three gRPC connections (each transport its own HTTP/2 session), behind the gate. */
function gatedClients(baseUrl: string, gate: Gate): BankClient[] {
  return Array.from({ length: 3 }, (_, i) => ({
    name: `grpc-${i}`,
    billing: createClient(BillingService, createGrpcTransport({ baseUrl, interceptors: [gate.interceptor] })),
  }));
}

/**
 * The client-side failures of a connection that breaks under a call, as connect-node
 * reports them: a reset socket is ABORTED, a stream closed under it CANCELED, a refused
 * connection UNAVAILABLE. None carries the server's ErrorDetail.
 */
const CONNECTION_LOST = /ECONNRESET|ECONNREFUSED|EPIPE|socket hang up|stream closed|GOAWAY|session/i;

/** A call that may or may not have run: UNAVAILABLE, or its connection broke (the process was killed under it). */
function uncertain(o: Outcome<unknown>): boolean {
  if (o.ok) return false;
  if (o.code === Code.Unavailable) return true;
  return (o.code === Code.Aborted || o.code === Code.Canceled || o.code === Code.Unknown || o.code === Code.Internal) && o.detail === undefined && CONNECTION_LOST.test(o.message);
}

/** The shipped mu catalogue (it counts free operations per day) with the hold sweeper every second. */
function catalogueFile(): string {
  const catalogue = JSON.parse(readFileSync(new URL('../../config/mu.json', import.meta.url), 'utf8')) as Record<string, Record<string, unknown>>;
  catalogue.holds!.sweepSchedule = '* * * * * *';
  const dir = mkdtempSync(join(tmpdir(), 'billing-kill-'));
  dirs.push(dir);
  const file = join(dir, 'mu-sweep-every-second.json');
  writeFileSync(file, JSON.stringify(catalogue));
  return file;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Down {
  readonly killMs: number;
  readonly upMs: number;
  readonly inFlight: number;
}

/** Sends `keys` again, `width` at a time, each until it gets a definite answer; returns what each finally got. */
async function resendUntilDefinite(run: BankRun, clients: readonly BankClient[], keys: readonly { userId: string; key: string }[], width: number): Promise<Attempt[]> {
  const finals: Attempt[] = [];
  let next = 0;
  const worker = async (w: number) => {
    for (let i = next++; i < keys.length; i = next++) {
      const { userId, key } = keys[i]!;
      for (let round = 0; ; round += 1) {
        const a = await run.resend(clients[(w + round) % clients.length]!, userId, key);
        if (!uncertain(a.outcome)) {
          finals.push(a);
          break;
        }
        if (round >= 20) throw new Error(`${REPLAY}: key ${key} of ${userId} still uncertain after ${round + 1} retries: ${describeOutcome(a.outcome)}`);
        await sleep(250);
      }
    }
  };
  await Promise.all(Array.from({ length: width }, (_, w) => worker(w)));
  return finals;
}

function keysOf(attempts: readonly Attempt[]): { userId: string; key: string }[] {
  const seen = new Map<string, { userId: string; key: string }>();
  for (const a of attempts) seen.set(`${a.userId}\u0000${a.key}`, { userId: a.userId, key: a.key });
  return [...seen.values()];
}

describe('kill -9 under load', () => {
  it(`${CYCLES} kill -9 cycles under ${CONCURRENCY} calls in flight: every acknowledged operation is in the ledger once, every uncertain one ends once`, async () => {
    const rng = new Rng(SEED);
    const killRng = rng.fork(1);
    database = await createTestDatabase('billing_kill');
    const file = catalogueFile();
    const env = {
      DATABASE_URL: database.url,
      BILLING_CONFIG: file,
      BILLING_DATA_DIR: mkdtempSync(join(tmpdir(), 'billing-kill-data-')),
      LOG_LEVEL: 'info',
      // The workload sends copies of a call at once on top of 24 in flight and the sweeper:
      // this test is about kills, not the overload edge (test/server/db-faults.test.ts), so
      // every call is admitted.
      DATABASE_WORK_MAX: '256',
    };
    dirs.push(env.BILLING_DATA_DIR);
    let service: RunningService = await processes.start('kill:start', env, START_TIMEOUT_MS);
    const port = service.port;
    const baseUrl = `http://127.0.0.1:${port}`;
    db = await openDatabase({ databaseUrl: database.url, dataDir: 'memory://', poolSizeMax: 2, migrate: false });
    // The midnight top-up credits users with no request of theirs: stay clear of it.
    await awayFromUtcMidnight(db, TIMEOUT_MS / 1000);

    const grpc = createGrpcTransport({ baseUrl });
    const admin: Client<typeof AdminService> = createClient(AdminService, grpc);
    const billing = createClient(BillingService, grpc);
    const catalogue = loadConfig({ BILLING_CONFIG: file, BILLING_DATA_DIR: 'memory://' }).catalogue;
    const world = await setUpWorld(admin, catalogue, 'kill');
    const gate = new Gate();
    const clients = gatedClients(baseUrl, gate);
    let stopping = false;
    const run = new BankRun({ world, clients, rng: rng.fork(2), ops: Number.MAX_SAFE_INTEGER, concurrency: CONCURRENCY, stop: () => stopping });
    await run.seed(20_000n);

    // The load runs on while the process is killed and started again underneath it.
    const loaded = run.run();
    const downs: Down[] = [];
    for (let cycle = 0; cycle < CYCLES; cycle += 1) {
      await sleep(killRng.int(...LOAD_MS));
      const killMs = Date.now();
      const inFlight = gate.inFlight;
      const killed = killService(service);
      gate.close();
      expect(await killed).toBe('SIGKILL');
      service = await processes.start(`kill:cycle-${cycle}`, { ...env, PORT: String(port) }, START_TIMEOUT_MS);
      downs.push({ killMs, upMs: Date.now(), inFlight });
      gate.open();
    }
    await sleep(killRng.int(...LOAD_MS));
    stopping = true;
    const loadHistory = await loaded;

    // Every uncertain key again, until it is definite; then every acknowledged key once more.
    const doubtful = loadHistory.attempts.filter((a) => a.mode !== 'reuse' && uncertain(a.outcome));
    const doubtfulKeys = keysOf(doubtful);
    const recorded = new Set(
      (await db.query<{ user_id: string; idempotency_key: string }>('select user_id, idempotency_key from idempotency_keys where user_id = any($1::text[])', [world.users]))
        .map((r) => `${r.user_id}\u0000${r.idempotency_key}`),
    );
    // Committed under a kill with every reply lost: only the retries below can acknowledge them.
    const ackedInLoad = new Set(loadHistory.attempts.filter((a) => a.outcome.ok).map((a) => `${a.userId}\u0000${a.key}`));
    const committedUnseen = doubtfulKeys.filter((k) => recorded.has(`${k.userId}\u0000${k.key}`) && !ackedInLoad.has(`${k.userId}\u0000${k.key}`)).length;
    const settled = await resendUntilDefinite(run, clients, doubtfulKeys, CONCURRENCY);
    const acknowledged = keysOf(loadHistory.attempts.filter((a) => a.outcome.ok));
    const replays = await resendUntilDefinite(run, clients, acknowledged, CONCURRENCY);

    // Uncertain attempts say nothing about the ledger; only definite ones go to the checker.
    const definite = (a: Attempt) => !uncertain(a.outcome);
    const history: BankHistory = {
      attempts: loadHistory.attempts.filter(definite),
      groups: loadHistory.groups.map((g) => ({ ...g, attempts: g.attempts.filter(definite) })),
      elapsedMs: loadHistory.elapsedMs,
    };
    // UNAVAILABLE only where a kill fell inside the call.
    const whileUp = loadHistory.attempts.filter((a) => uncertain(a.outcome) && !downs.some((d) => a.startMs <= d.upMs && a.endMs >= d.killMs));

    // Short holds past their expiry, then swept by the process's own sweeper (every second).
    const wait = lastShortExpiry(history) + 1_100 - Date.now();
    if (wait > 0) await sleep(wait);
    for (let i = 0; i < 100; i += 1) {
      const [row] = await db.query<{ n: number }>(`select count(*)::int as n from reservations where status = 'ACTIVE' and expires_at <= now()`);
      if (row?.n === 0) break;
      await sleep(200);
    }
    const problems = await checkBank({ history, world, query: (sql, params) => db!.query(sql, params), db, admin, billing, rng });
    for (const a of whileUp) problems.add('unavailable_while_up', `${a.meta.kind} key ${a.key} of ${a.userId}: ${describeOutcome(a.outcome)} with no kill during the call`);
    if (doubtful.length === 0) problems.add('no_uncertain_calls', 'no call was in flight at any kill: the test killed nothing that mattered');

    const lost = new Map<string, number>();
    for (const a of doubtful) {
      const label = describeOutcome(a.outcome);
      lost.set(label, (lost.get(label) ?? 0) + 1);
    }
    const outcomes = new Map<string, number>();
    for (const a of settled) {
      const label = a.outcome.ok ? 'ok' : describeOutcome(a.outcome).split(' ')[0]!;
      outcomes.set(label, (outcomes.get(label) ?? 0) + 1);
    }
    console.log(
      [
        `kill test (${REPLAY}):`,
        `  ${describeHistory(loadHistory)}`,
        `  kills: ${downs.map((d) => `${d.inFlight} in flight, down ${d.upMs - d.killMs} ms`).join('; ')}`,
        `  uncertain: ${doubtful.length} attempts under ${doubtfulKeys.length} keys, ${committedUnseen} of them committed with every reply lost; ` +
          `retried to ${JSON.stringify(Object.fromEntries(outcomes))}`,
        `  how the uncertain calls failed: ${JSON.stringify(Object.fromEntries(lost))}`,
        `  acknowledged keys replayed after the last restart: ${replays.length}`,
        `  problems: ${problems.list.length} ${problems.summary().join(', ')}`,
      ].join('\n'),
    );
    expect(problems.sample(4), `${REPLAY}: ${problems.list.length} problems (${problems.summary().join(', ')})`).toEqual([]);
    expect(await stopService(service)).toBe(0);
  }, TIMEOUT_MS);
});
