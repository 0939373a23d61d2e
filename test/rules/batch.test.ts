// Rules tier: batching of units of work (src/ledger/kernel/batch.ts) on PostgreSQL.
//
// The property: operations sent all at once, so that they are decided in batches, end
// exactly as the same operations sent one after another, in the same order — the same
// replies, refusals, balances, holds and history. Pure decisions (charges, grants), units
// with statements of their own (holds, captures, free operations, promo codes),
// refusals after statements, replays and reused keys all take part. Seeded: BATCH_SEED
// replays a run, BATCH_RUNS sets how many.
//
// Then what the property cannot show: a refused charge refuses only itself, a database
// error in one unit runs the others again alone, a refusal after statements leaves
// nothing, a deadline that passes in the batch, and duplicates within one batch.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import type { Catalogue } from '../../src/domain/catalogue.js';
import { DeadlineExceededError, withDeadline } from '../../src/domain/deadline.js';
import { BillingError } from '../../src/domain/errors.js';
import { creditDecision, TRANSACTION_RESULT } from '../../src/ledger/kernel/credit.js';
import { SYSTEM_GRANTS } from '../../src/ledger/kernel/names.js';
import { createLedger, type Ledger } from '../../src/ledger/ledger.js';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { type Database, openDatabase } from '../../src/storage/database.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const SEED = process.env.BATCH_SEED ? Number(process.env.BATCH_SEED) : Math.floor(Math.random() * 2 ** 31);
const RUNS = process.env.BATCH_RUNS ? Number(process.env.BATCH_RUNS) : 12;
console.log(`batch property: BATCH_SEED=${SEED} BATCH_RUNS=${RUNS}`);

const muse = loadConfig({ BILLING_CONFIG: 'config/muse.json', BILLING_DATA_DIR: 'memory://' }).catalogue;
// Two free operations a day of midi.generate, so free usage (a statement of its own) takes part.
const catalogue: Catalogue = { ...muse, dailyFreePerDay: 2n, dailyFreeOperations: new Set(['midi.generate']) };

let one: TestDatabase;
let many: TestDatabase;
let dbOne: Database;
let dbMany: Database;

beforeAll(async () => {
  [one, many] = await Promise.all([createTestDatabase(), createTestDatabase()]);
  [dbOne, dbMany] = await Promise.all([
    openDatabase({ databaseUrl: one.url, dataDir: 'memory://', poolSizeMax: 4 }),
    openDatabase({ databaseUrl: many.url, dataDir: 'memory://', poolSizeMax: 4 }),
  ]);
});
afterAll(async () => {
  await Promise.all([dbOne?.close(), dbMany?.close()]);
  await Promise.all([one?.drop(), many?.drop()]);
});

type Op =
  | { op: 'grant'; user: number; key: number; amount: bigint }
  | { op: 'charge'; user: number; key: number; amount: bigint; partial: boolean }
  | { op: 'free'; user: number; key: number }
  | { op: 'capture'; user: number; key: number; hold: number; amount: bigint }
  | { op: 'reserve'; user: number; key: number; amount: bigint }
  | { op: 'release'; user: number; key: number; hold: number }
  | { op: 'redeem'; user: number; key: number };

const USERS = 3;
const HOLDS_PER_USER = 2;
const amount = fc.constantFrom(1n, 400n, 1000n, 2500n);
const common = { user: fc.nat(USERS - 1), key: fc.nat(4) };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant('grant' as const), ...common, amount }),
  fc.record({ op: fc.constant('charge' as const), ...common, amount, partial: fc.boolean() }),
  fc.record({ op: fc.constant('free' as const), ...common }),
  fc.record({ op: fc.constant('capture' as const), ...common, hold: fc.nat(HOLDS_PER_USER - 1), amount }),
  fc.record({ op: fc.constant('reserve' as const), ...common, amount }),
  fc.record({ op: fc.constant('release' as const), ...common, hold: fc.nat(HOLDS_PER_USER - 1) }),
  fc.record({ op: fc.constant('redeem' as const), ...common }),
);

interface World {
  ledger: Ledger;
  db: Database;
  users: string[];
  holds: string[][];
  code: string;
}

/** Funds the run's users and places their holds one by one (the same on both databases). */
async function prepare(ledger: Ledger, db: Database, run: string): Promise<World> {
  const users = Array.from({ length: USERS }, (_, i) => `b${run}-u${i}`);
  const code = `BATCH${run}`.toUpperCase();
  await ledger.promos.create({ code, amountMillicredits: 700n, maxRedemptions: 2n });
  const holds: string[][] = [];
  for (const userId of users) {
    await ledger.credits.grant({ userId, idempotencyKey: 'seed', grant: { kind: 'amount', amountMillicredits: 3000n }, reason: 'seed', reference: '', metadata: {} });
    const ids: string[] = [];
    for (let h = 0; h < HOLDS_PER_USER; h++) {
      const placed = await ledger.holds.reserve({ userId, idempotencyKey: `seed-hold-${h}`, product: 'p', usage: { kind: 'amount', amountMillicredits: 300n }, ttlSeconds: 600 });
      ids.push(placed.reservation.id);
    }
    holds.push(ids);
  }
  return { ledger, db, users, holds, code };
}

/** Starts an operation; it reaches the kernel before this returns (no await in front of it). */
function start(w: World, o: Op): Promise<unknown> {
  const userId = w.users[o.user]!;
  const idempotencyKey = `k${o.key}`;
  switch (o.op) {
    case 'grant':
      return w.ledger.credits.grant({ userId, idempotencyKey, grant: { kind: 'amount', amountMillicredits: o.amount }, reason: 'r', reference: '', metadata: {} });
    case 'charge':
      return w.ledger.charges.charge({ userId, idempotencyKey, product: 'p', usage: { kind: 'amount', amountMillicredits: o.amount }, allowPartial: o.partial, reference: '', metadata: {} });
    case 'free':
      return w.ledger.charges.charge({ userId, idempotencyKey, product: 'p', usage: { kind: 'operation', name: 'midi.generate', quantity: 1n }, allowPartial: false, reference: '', metadata: {} });
    case 'capture':
      return w.ledger.charges.charge({
        userId, idempotencyKey, product: 'p', usage: { kind: 'amount', amountMillicredits: o.amount }, reservationId: w.holds[o.user]![o.hold]!, allowPartial: false, reference: '', metadata: {},
      });
    case 'reserve':
      return w.ledger.holds.reserve({ userId, idempotencyKey, product: 'p', usage: { kind: 'amount', amountMillicredits: o.amount }, ttlSeconds: 600 });
    case 'release':
      return w.ledger.holds.release({ userId, idempotencyKey, reservationId: w.holds[o.user]![o.hold]! });
    case 'redeem':
      return w.ledger.promos.redeem({ userId, idempotencyKey, code: w.code });
  }
}

/** A reply or refusal with the database's own ids and times left out; anything else fails the test. */
function outcome(settled: PromiseSettledResult<unknown>): unknown {
  if (settled.status === 'rejected') {
    if (!(settled.reason instanceof BillingError)) throw settled.reason;
    return { refused: settled.reason.reason };
  }
  return JSON.parse(
    JSON.stringify(settled.value, (key, value: unknown) =>
      ['id', 'createdAtMs', 'expiresAtMs', 'reservationId'].includes(key) ? '*' : typeof value === 'bigint' ? value.toString() : value,
    ),
  );
}

/** What the run left in the database, for its users, with ids replaced by their order. */
async function state(w: World): Promise<unknown> {
  const rows = await w.db.query(
    `select a.user_id, a.balance_millicredits::text as balance, a.reserved_millicredits::text as reserved,
            (select json_agg(json_build_array(t.type, t.amount_millicredits::text, t.balance_after_millicredits::text, t.idempotency_key) order by t.id)
               from transactions t where t.user_id = a.user_id) as history,
            (select json_agg(r.status order by r.id) from reservations r where r.user_id = a.user_id) as holds,
            (select count(*)::int from idempotency_keys k where k.user_id = a.user_id) as keys,
            (select coalesce(sum(f.used), 0)::text from daily_free_usage f where f.user_id = a.user_id) as free_used
       from user_accounts a where a.user_id = any($1::text[]) order by a.user_id`,
    [w.users],
  );
  const [promo] = await w.db.query('select redemptions::text as n from promo_codes where code = $1', [w.code]);
  return { rows: rows.map((r) => ({ ...r, user_id: String(r.user_id).replace(/^b\d+-/, '') })), redemptions: promo?.n };
}

describe('batched units of work', () => {
  it('end as the same operations sent one by one, in the same order', async () => {
    const sequential = createLedger(dbOne, catalogue, { lanes: 1 });
    const batched = createLedger(dbMany, catalogue, { lanes: 1, unitsMax: 16 });
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), async (ops) => {
        run += 1;
        const tag = `${SEED % 100000}r${run}`;
        const a = await prepare(sequential, dbOne, tag);
        const b = await prepare(batched, dbMany, tag);
        const alone: PromiseSettledResult<unknown>[] = [];
        for (const o of ops) alone.push(...(await Promise.allSettled([start(a, o)])));
        const together = await Promise.allSettled(ops.map((o) => start(b, o)));
        expect(together.map(outcome)).toEqual(alone.map(outcome));
        expect(await state(b)).toEqual(await state(a));
      }),
      { seed: SEED, numRuns: RUNS },
    );
    // The property is about batches: they must have formed.
    expect(batched.kernel.batchStats.largest).toBeGreaterThan(1);
    expect(sequential.kernel.batchStats.largest).toBe(1);
    expect((await verifyLedger(dbMany)).ok).toBe(true);
  }, 180_000);
});

describe('one unit of a batch', () => {
  const ledger = () => createLedger(dbMany, catalogue, { lanes: 1 });
  const grant = (l: Ledger, userId: string, amountMillicredits: bigint) =>
    l.credits.grant({ userId, idempotencyKey: `fund-${userId}`, grant: { kind: 'amount', amountMillicredits }, reason: 'r', reference: '', metadata: {} });
  const charge = (l: Ledger, userId: string, key: string, amountMillicredits: bigint) =>
    l.charges.charge({ userId, idempotencyKey: key, product: 'p', usage: { kind: 'amount', amountMillicredits }, allowPartial: false, reference: '', metadata: {} });
  const balance = async (userId: string) =>
    (await dbMany.query('select balance_millicredits::text as b from user_accounts where user_id = $1', [userId]))[0]?.b;

  it('refused for its balance refuses only itself, and the account is never overdrawn', async () => {
    const l = ledger();
    await grant(l, 'one-hot', 10n);
    const settled = await Promise.allSettled(Array.from({ length: 25 }, (_, i) => charge(l, 'one-hot', `c${i}`, 1n)));
    expect(settled.filter((s) => s.status === 'fulfilled')).toHaveLength(10);
    const refused = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected');
    expect(refused.map((s) => (s.reason as BillingError).reason)).toEqual(Array(15).fill('INSUFFICIENT_BALANCE'));
    // In arrival order: the first ten were paid.
    expect(settled.slice(0, 10).every((s) => s.status === 'fulfilled')).toBe(true);
    expect(await balance('one-hot')).toBe('0');
    expect(l.kernel.batchStats.largest).toBeGreaterThan(1);
    expect(l.kernel.batchStats.rerunAlone).toBe(0);
  });

  it('failing in the database fails only itself: the others run again alone and commit', async () => {
    const l = ledger();
    const k = l.kernel;
    const post = (userId: string, key: string, fault: boolean) =>
      k.post(TRANSACTION_RESULT, { userId, idempotencyKey: key, requestHash: 'h', operation: 'Test' }, async (s, account) => {
        if (fault) await s.query('select 1 / 0');
        return creditDecision(catalogue, account, 'GRANT', SYSTEM_GRANTS, 100n, { userId, product: '', operation: '', reference: '', reason: 'r', idempotencyKey: key, metadata: {} });
      });
    const settled = await Promise.allSettled([
      post('fault-a', 'g1', false),
      post('fault-b', 'g1', false),
      post('fault-a', 'g2', true),
      post('fault-c', 'g1', false),
      post('fault-a', 'g3', false),
    ]);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect(String((settled[2] as PromiseRejectedResult).reason)).toMatch(/division by zero/);
    expect(k.batchStats.rerunAlone).toBeGreaterThan(0);
    expect([await balance('fault-a'), await balance('fault-b'), await balance('fault-c')]).toEqual(['200', '100', '100']);
  });

  it('refused after statements of its own leaves none of them, and the batch goes on', async () => {
    const l = ledger();
    const k = l.kernel;
    const post = (userId: string, key: string, refuse: boolean) =>
      k.post(TRANSACTION_RESULT, { userId, idempotencyKey: key, requestHash: 'h', operation: 'Test' }, async (s, account) => {
        await s.query(`insert into promo_codes (code, amount_millicredits, max_redemptions) values ($1, 1, 1)`, [`TRACE-${userId}-${key}`.toUpperCase()]);
        if (refuse) throw new BillingError('INSUFFICIENT_BALANCE', 'refused on purpose');
        return creditDecision(catalogue, account, 'GRANT', SYSTEM_GRANTS, 100n, { userId, product: '', operation: '', reference: '', reason: 'r', idempotencyKey: key, metadata: {} });
      });
    const settled = await Promise.allSettled([post('sp-a', 'x', false), post('sp-a', 'y', true), post('sp-a', 'z', false), post('sp-new', 'y', true)]);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'rejected']);
    const traces = await dbMany.query(`select code from promo_codes where code like 'TRACE-SP-%' order by code`);
    expect(traces.map((r) => r.code)).toEqual(['TRACE-SP-A-X', 'TRACE-SP-A-Z']);
    expect(await balance('sp-a')).toBe('200');
    // The refused user's account, created by the batch's lock, is gone again.
    expect(await balance('sp-new')).toBeUndefined();
    expect(k.batchStats.rerunAlone).toBe(0);
  });

  it('with rows that reference its transaction writes them in the batch, beside pure units', async () => {
    const l = ledger();
    const k = l.kernel;
    const post = (userId: string, key: string, reference: boolean) =>
      k.post(TRANSACTION_RESULT, { userId, idempotencyKey: key, requestHash: 'h', operation: 'Test' }, async (_s, account) => ({
        ...creditDecision(catalogue, account, 'GRANT', SYSTEM_GRANTS, 100n, { userId, product: '', operation: '', reference: '', reason: 'r', idempotencyKey: key, metadata: {} }),
        ...(reference
          ? { afterWrite: async (s: { query: Database['query'] }, id: string) => void (await s.query(`insert into promo_codes (code, amount_millicredits) values ($1, 1)`, [`AW-${id}`])) }
          : {}),
      }));
    const [a, b, c] = await Promise.all([post('aw', 'a', false), post('aw', 'b', true), post('aw', 'c', false)]);
    expect(await balance('aw')).toBe('300');
    const rows = await dbMany.query(`select code from promo_codes where code = $1`, [`AW-${b.transaction.id}`]);
    expect(rows).toHaveLength(1);
    expect(BigInt(a.transaction.id) < BigInt(b.transaction.id) && BigInt(b.transaction.id) < BigInt(c.transaction.id)).toBe(true);
    expect(k.batchStats.largest).toBeGreaterThan(1);
  });

  it('sent twice in one batch is written once and answered alike', async () => {
    const l = ledger();
    await grant(l, 'dup', 1000n);
    const replies = await Promise.all(Array.from({ length: 6 }, () => charge(l, 'dup', 'same', 100n)));
    for (const reply of replies) expect(reply).toEqual(replies[0]);
    expect(await balance('dup')).toBe('900');
    const reused = await Promise.allSettled([charge(l, 'dup', 'other', 1n), charge(l, 'dup', 'other', 2n)]);
    expect(reused[0]!.status).toBe('fulfilled');
    expect(((reused[1] as PromiseRejectedResult).reason as BillingError).reason).toBe('IDEMPOTENCY_KEY_REUSED');
  });

  it('whose deadline passes while it waits is not written, and the others are', async () => {
    const l = ledger();
    await grant(l, 'late', 1000n);
    // A slow first unit holds the lane; the short-deadline charge queues behind it.
    const slow = l.kernel.post(TRANSACTION_RESULT, { userId: 'late-slow', idempotencyKey: 's', requestHash: 'h', operation: 'Test' }, async (s, account) => {
      await s.query('select pg_sleep(0.3)');
      return creditDecision(catalogue, account, 'GRANT', SYSTEM_GRANTS, 1n, { userId: 'late-slow', product: '', operation: '', reference: '', reason: 'r', idempotencyKey: 's', metadata: {} });
    });
    const late = withDeadline(100, () => charge(l, 'late', 'short', 10n));
    const patient = charge(l, 'late', 'long', 20n);
    const settled = await Promise.allSettled([slow, late, patient]);
    expect(settled.map((s) => s.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((settled[1] as PromiseRejectedResult).reason).toBeInstanceOf(DeadlineExceededError);
    expect(await balance('late')).toBe('980');
  });
});

describe('balance reads that arrive together', () => {
  it('are answered by fewer statements, each with its own user', async () => {
    const l = createLedger(dbMany, catalogue, { lanes: 1 });
    const users = Array.from({ length: 8 }, (_, i) => `read-${i}`);
    for (const [i, userId] of users.slice(0, 6).entries()) {
      await l.credits.grant({ userId, idempotencyKey: 'fund', grant: { kind: 'amount', amountMillicredits: BigInt(100 * (i + 1)) }, reason: 'r', reference: '', metadata: {} });
    }
    const asked = Array.from({ length: 60 }, (_, i) => users[i % users.length]!);
    const together = await Promise.all(asked.map((userId) => l.kernel.balance(userId)));
    const alone: unknown[] = [];
    for (const userId of asked) alone.push(await createLedger(dbMany, catalogue).kernel.balance(userId));
    expect(together).toEqual(alone);
    expect(together.map((b) => b.balanceMillicredits)).toEqual(asked.map((u) => (Number(u.slice(5)) < 6 ? BigInt(100 * (Number(u.slice(5)) + 1)) : 0n)));
    expect(l.kernel.readStats.reads).toBe(60);
    expect(l.kernel.readStats.statements).toBeLessThan(60);
  });
});

