// The bank test (Jepsen style): 64 concurrent clients over gRPC, gRPC-Web and Connect
// (JSON on HTTP/1.1, binary on HTTP/2) move credits among five hot users with every
// mutation, retry keys, reuse keys for other requests, and send one request several times
// at the same moment. Afterwards the checker rebuilds every balance, hold, refund, promo
// and free-operation count from the replies alone and compares them with the database,
// VerifyLedger and each user's paged history (test/bank/checker.ts). Then every counted
// limit gets N concurrent requests against a cap of K, and every loser's code and reason
// are asserted. BANK_OPS is the number of requests over both catalogues' runs (default
// 3,000; npm run test:long: 100,000); BANK_SEED replays a run's choices.
import { Code } from '@connectrpc/connect';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { Plan, WaivedReason } from '../../gen/billing/v1/types_pb.js';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { type Call, sameReply, send, showReply } from '../bank/calls.js';
import { checkBank, lastShortExpiry } from '../bank/checker.js';
import { type BankClient, bankClients } from '../bank/clients.js';
import { describeOutcome, type Outcome } from '../bank/outcome.js';
import { exactly, messages, race, shape, tally } from '../bank/race.js';
import { countFrom, Rng, seedFrom } from '../bank/rng.js';
import { BankRun } from '../bank/workload.js';
import { describeHistory, setUpWorld } from '../bank/world.js';
import { fund, key, startTestApp, type TestApp } from '../support/app.js';

const SEED = seedFrom('BANK_SEED');
/** Requests over the whole file, split between the two catalogues' runs. */
const OPS = countFrom('BANK_OPS', 3_000);
const OPS_PER_RUN = Math.ceil(OPS / 2);
const CONCURRENCY = 64;
const REPLAY = `BANK_SEED=${SEED} BANK_OPS=${OPS}`;
console.log(`bank test: ${REPLAY} (set them to replay this run's choices)`);

type Catalogue = 'muse' | 'mu';

// One app at a time: each holds up to 24 PostgreSQL connections, and the shared server's
// limit of 100 is easily reached when other suites run beside this one.
let open: { catalogue: Catalogue; t: TestApp; clients: BankClient[] } | undefined;

async function app(catalogue: Catalogue): Promise<{ t: TestApp; clients: BankClient[] }> {
  if (open?.catalogue === catalogue) return open;
  await open?.t.close();
  open = undefined;
  // 64 clients and races of up to 60 calls: past the default admission bound (32), which
  // would refuse some as OVERLOADED; the bound is test/server/db-faults.test.ts's subject.
  const t = await startTestApp({ catalogue, env: { DATABASE_WORK_MAX: '256' } });
  open = { catalogue, t, clients: bankClients(t.url) };
  return open;
}

afterAll(async () => {
  await open?.t.close();
});

const BANK_TITLE = `${CONCURRENCY} clients move credits among 5 hot users; every acknowledged operation is in the ledger exactly once`;
const BANK_TIMEOUT_MS = 60_000 + OPS_PER_RUN * 40;

async function bank(catalogue: Catalogue): Promise<void> {
  const { t, clients } = await app(catalogue);
  const world = await setUpWorld(t.admin, t.app.config.catalogue, `bank-${catalogue}`);
  const rng = new Rng(SEED ^ (catalogue === 'mu' ? 0x5bd1e995 : 0));
  const run = new BankRun({ world, clients, rng, ops: OPS_PER_RUN, concurrency: CONCURRENCY });
  await run.seed(20_000n);
  const history = await run.run();
  // Short holds must be past their expiry before the holds are compared; then the
  // sweeper tidies them so the stored reserved amounts can be compared too.
  const wait = lastShortExpiry(history) + 1_100 - Date.now();
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  await t.app.holds.sweep();
  const query = (sql: string, params?: readonly unknown[]) => t.app.db.query(sql, params);
  const problems = await checkBank({ history, world, query, db: t.app.db, admin: t.admin, billing: t.billing, rng });
  console.log(`bank ${catalogue} (${REPLAY}):\n  ${describeHistory(history)}\n  problems: ${problems.list.length} ${problems.summary().join(', ')}`);
  expect(problems.sample(4), `${REPLAY}: ${problems.list.length} problems (${problems.summary().join(', ')})`).toEqual([]);
}

describe('bank on the muse catalogue (config/muse.json)', () => {
  it(BANK_TITLE, () => bank('muse'), BANK_TIMEOUT_MS);
});

// ---- the same request sent several times at once ----------------------------------------

/** Sends one call `copies` times at once over different connections; every copy must get one reply. */
async function storm(clients: readonly BankClient[], call: Call, copies = 12): Promise<Outcome<unknown>[]> {
  const outcomes = await race(copies, clients, (client) => send(client, call));
  const winner = outcomes.find((o) => o.ok);
  const summary = outcomes.map((o) => (o.ok ? showReply(o.reply) : describeOutcome(o))).join(' | ');
  expect(outcomes.every((o) => o.ok), `every copy of one ${call.rpc} gets the winner's reply: ${summary}`).toBe(true);
  for (const o of outcomes) {
    if (o.ok && winner?.ok) expect(sameReply(call.rpc, winner.reply, o.reply), `copies of one ${call.rpc} differ: ${summary}`).toBe(true);
  }
  return outcomes;
}

async function funded(t: TestApp, userId: string, amount: bigint): Promise<void> {
  await fund(t, userId, amount);
}

async function expectClean(t: TestApp): Promise<void> {
  const report = await verifyLedger(t.app.db);
  expect(report.violations).toEqual([]);
  const [row] = await t.app.db.query('select coalesce(sum(amount_millicredits), 0)::text as total from postings');
  expect(row?.total).toBe('0');
}

async function keyRows(t: TestApp, userId: string): Promise<number> {
  const [row] = await t.app.db.query('select count(*)::int as n from idempotency_keys where user_id = $1', [userId]);
  return Number(row?.n);
}

// The account exists first: on a brand-new account the copies queue on its creation and
// each then reads the winner's committed result, which would hide a stale read under the lock.
describe('the same request sent 12 times at once, on an account that already exists', () => {
  it('a Charge the balance covers once: every copy gets the one charge', async () => {
    const { t, clients } = await app('muse');
    const userId = 'dup-charge';
    await funded(t, userId, 1_000n);
    const call: Call = { rpc: 'charge', req: { userId, idempotencyKey: key('dup'), product: 'muse', usage: { case: 'amountMillicredits', value: 1_000n } } };
    await storm(clients, call);
    expect((await t.billing.getBalance({ userId })).balance?.balanceMillicredits).toBe(0n);
  });

  it('a Refund of all that remains: every copy gets the one refund', async () => {
    const { t, clients } = await app('muse');
    const userId = 'dup-refund';
    await funded(t, userId, 2_000n);
    const charge = await t.billing.charge({ userId, idempotencyKey: key(), product: 'muse', usage: { case: 'amountMillicredits', value: 1_500n } });
    const call: Call = { rpc: 'refund', req: { userId, idempotencyKey: key('dup'), transactionId: charge.transaction?.id ?? '', amountMillicredits: 0n, reason: 'dup' } };
    await storm(clients, call);
    expect((await t.billing.getBalance({ userId })).balance?.balanceMillicredits).toBe(2_000n);
  });

  it('a Redeem: every copy gets the one redemption', async () => {
    const { t, clients } = await app('muse');
    const userId = 'dup-redeem';
    await funded(t, userId, 1n);
    await t.admin.createPromoCode({ code: 'DUP-STORM', amountMillicredits: 2_500n, maxRedemptions: 0n });
    await storm(clients, { rpc: 'redeem', req: { userId, idempotencyKey: key('dup'), code: 'dup-storm' } });
    expect((await t.billing.getBalance({ userId })).balance?.balanceMillicredits).toBe(2_501n);
  });

  it('a capture of a hold: every copy gets the one capture', async () => {
    const { t, clients } = await app('muse');
    const userId = 'dup-capture';
    await funded(t, userId, 1_000n);
    const hold = await t.billing.reserve({ userId, idempotencyKey: key(), product: 'muse', amount: { case: 'amountMillicredits', value: 1_000n } });
    const reservationId = hold.reservation?.id ?? '';
    await storm(clients, { rpc: 'charge', req: { userId, idempotencyKey: key('dup'), product: 'muse', usage: { case: 'amountMillicredits', value: 1_000n }, reservationId } });
    expect((await t.billing.getBalance({ userId })).balance).toMatchObject({ balanceMillicredits: 0n, reservedMillicredits: 0n });
  });

  it('a Reserve of all that is available: every copy gets the one hold', async () => {
    const { t, clients } = await app('muse');
    const userId = 'dup-reserve';
    await funded(t, userId, 1_000n);
    await storm(clients, { rpc: 'reserve', req: { userId, idempotencyKey: key('dup'), product: 'muse', amount: { case: 'amountMillicredits', value: 1_000n } } });
    const [row] = await t.app.db.query(`select count(*)::int as n from reservations where user_id = $1`, [userId]);
    expect(row?.n).toBe(1);
  });

  it('a Release and a Grant: every copy gets the one result', async () => {
    const { t, clients } = await app('muse');
    const userId = 'dup-release';
    await funded(t, userId, 1_000n);
    const hold = await t.billing.reserve({ userId, idempotencyKey: key(), product: 'muse', amount: { case: 'amountMillicredits', value: 600n } });
    await storm(clients, { rpc: 'release', req: { userId, idempotencyKey: key('dup'), reservationId: hold.reservation?.id ?? '' } });
    await storm(clients, { rpc: 'grant', req: { userId, idempotencyKey: key('dup'), grant: { case: 'amountMillicredits', value: 400n }, reason: 'dup' } });
    expect((await t.billing.getBalance({ userId })).balance).toMatchObject({ balanceMillicredits: 1_400n, reservedMillicredits: 0n });
    expect(await keyRows(t, userId)).toBe(4);
    await expectClean(t);
  });
});

// ---- counted limits: N concurrent requests against a cap of K ----------------------------

function utcDay(): string {
  return new Date().toISOString().slice(0, 10);
}

/** Runs a race whose count depends on the UTC day; a race that straddles midnight is run again. */
async function withinOneUtcDay<T>(body: () => Promise<T>): Promise<T> {
  for (;;) {
    const day = utcDay();
    const result = await body();
    if (utcDay() === day) return result;
  }
}

describe('counted limits under concurrency (muse): exactly K of N', () => {
  it('promo cap: 40 users (half with accounts already) redeem a code capped at 5: exactly 5, the rest PROMO_CODE_EXHAUSTED', async () => {
    const { t, clients } = await app('muse');
    const code = 'RACE-CAP5';
    await t.admin.createPromoCode({ code, amountMillicredits: 3_000n, maxRedemptions: 5n });
    const users = Array.from({ length: 40 }, (_, i) => `promo-race-${i}`);
    for (const u of users.slice(0, 20)) await funded(t, u, 100n);
    const outcomes = await race(40, clients, (c, i) => c.billing.redeem({ userId: users[i] as string, idempotencyKey: key('redeem'), code }));
    expect(shape(tally(outcomes))).toEqual(exactly(40, 5, Code.ResourceExhausted, ErrorReason.PROMO_CODE_EXHAUSTED));
    expect((await t.admin.getPromoCode({ code })).promoCode?.redemptions).toBe(5n);
    const [rows] = await t.app.db.query(`select count(*)::int as n, coalesce(sum(amount_millicredits), 0)::text as total
        from transactions where type = 'PROMO' and operation = $1`, [code]);
    expect(rows).toEqual({ n: 5, total: '15000' });
    await expectClean(t);
  });

  it('refund cap: a charge of 6,000 and 30 concurrent refunds of 1,000: exactly 6, the rest REFUND_EXCEEDS_CHARGE', async () => {
    const { t, clients } = await app('muse');
    const userId = 'refund-race';
    await funded(t, userId, 6_000n);
    const charge = await t.billing.charge({ userId, idempotencyKey: key(), product: 'muse', usage: { case: 'amountMillicredits', value: 6_000n } });
    const transactionId = charge.transaction?.id ?? '';
    const outcomes = await race(30, clients, (c) => c.billing.refund({ userId, idempotencyKey: key('refund'), transactionId, amountMillicredits: 1_000n, reason: 'race' }));
    expect(shape(tally(outcomes))).toEqual(exactly(30, 6, Code.FailedPrecondition, ErrorReason.REFUND_EXCEEDS_CHARGE));
    expect((await t.billing.getBalance({ userId })).balance?.balanceMillicredits).toBe(6_000n);
    const [rows] = await t.app.db.query(`select count(*)::int as n, sum(amount_millicredits)::text as total from transactions
        where refunded_transaction_id = $1::bigint`, [transactionId]);
    expect(rows).toEqual({ n: 6, total: '6000' });
    expect(await keyRows(t, userId)).toBe(2 + 6);
    await expectClean(t);
  });

  it('holds against available: balance 8,000 and 40 concurrent Reserves of 1,000: exactly 8, the rest INSUFFICIENT_BALANCE', async () => {
    const { t, clients } = await app('muse');
    const userId = 'reserve-race';
    await funded(t, userId, 8_000n);
    const outcomes = await race(40, clients, (c) => c.billing.reserve({ userId, idempotencyKey: key('hold'), product: 'muse', amount: { case: 'amountMillicredits', value: 1_000n } }));
    expect(shape(tally(outcomes))).toEqual(exactly(40, 8, Code.FailedPrecondition, ErrorReason.INSUFFICIENT_BALANCE));
    expect((await t.billing.getBalance({ userId })).balance).toMatchObject({ balanceMillicredits: 8_000n, reservedMillicredits: 8_000n, availableMillicredits: 0n });
    const [rows] = await t.app.db.query(`select count(*)::int as n from reservations where user_id = $1 and status = 'ACTIVE'`, [userId]);
    expect(rows?.n).toBe(8);
    await expectClean(t);
  });

  it('charges against available: balance 8,000 with a hold of 2,000 and 40 concurrent Charges of 1,000: exactly 6', async () => {
    const { t, clients } = await app('muse');
    const userId = 'charge-race';
    await funded(t, userId, 8_000n);
    await t.billing.reserve({ userId, idempotencyKey: key(), product: 'muse', amount: { case: 'amountMillicredits', value: 2_000n } });
    const outcomes = await race(40, clients, (c) => c.billing.charge({ userId, idempotencyKey: key('charge'), product: 'muse', usage: { case: 'amountMillicredits', value: 1_000n } }));
    expect(shape(tally(outcomes))).toEqual(exactly(40, 6, Code.FailedPrecondition, ErrorReason.INSUFFICIENT_BALANCE));
    expect((await t.billing.getBalance({ userId })).balance).toMatchObject({ balanceMillicredits: 2_000n, reservedMillicredits: 2_000n, availableMillicredits: 0n });
    await expectClean(t);
  });

  it('charges right after a hold expired: balance 3,000, an expired hold of 3,000 and 60 concurrent Charges of 1,000: exactly 3', async () => {
    const { t, clients } = await app('muse');
    const userId = 'expired-race';
    await funded(t, userId, 3_000n);
    const hold = await t.billing.reserve({ userId, idempotencyKey: key(), product: 'muse', amount: { case: 'amountMillicredits', value: 3_000n }, ttlSeconds: 1 });
    const expiresMs = Number(hold.reservation?.expiresAt?.seconds ?? 0n) * 1000 + Math.floor((hold.reservation?.expiresAt?.nanos ?? 0) / 1e6);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresMs + 300 - Date.now())));
    // The first charge to lock the account frees the expired hold; the others must see it freed once, not twice.
    const outcomes = await race(60, clients, (c) => c.billing.charge({ userId, idempotencyKey: key('after-expiry'), product: 'muse', usage: { case: 'amountMillicredits', value: 1_000n } }));
    const counted = tally(outcomes);
    expect(shape(counted), messages(outcomes)).toEqual(exactly(60, 3, Code.FailedPrecondition, ErrorReason.INSUFFICIENT_BALANCE));
    const views = counted.ok.map((r) => `${r.balance?.balanceMillicredits}/${r.balance?.reservedMillicredits}/${r.balance?.availableMillicredits}`).sort();
    expect(views).toEqual(['0/0/0', '1000/0/1000', '2000/0/2000']);
    expect((await t.billing.getBalance({ userId })).balance).toMatchObject({ balanceMillicredits: 0n, reservedMillicredits: 0n });
    await expectClean(t);
  });

  it('partial charges against available: balance 10,000 and 20 concurrent allow_partial Charges of 3,000 debit exactly 10,000', async () => {
    const { t, clients } = await app('muse');
    const userId = 'partial-race';
    await funded(t, userId, 10_000n);
    const outcomes = await race(20, clients, (c) => c.billing.charge({ userId, idempotencyKey: key('partial'), product: 'muse', usage: { case: 'amountMillicredits', value: 3_000n }, allowPartial: true }));
    const { ok } = tally(outcomes);
    expect(ok, messages(outcomes)).toHaveLength(20);
    const debits = ok.map((r) => `${r.chargedMillicredits}+${r.shortfallMillicredits}`).sort();
    expect(debits).toEqual([...Array(16).fill('0+3000'), '1000+2000', '3000+0', '3000+0', '3000+0'].sort());
    expect((await t.billing.getBalance({ userId })).balance?.balanceMillicredits).toBe(0n);
    await expectClean(t);
  });
});

describe('bank on the mu catalogue (config/mu.json), with daily free operations', () => {
  it(BANK_TITLE, () => bank('mu'), BANK_TIMEOUT_MS);
});

describe('counted limits under concurrency (mu): exactly K of N', () => {
  const chargeOp = (userId: string, name: string) => ({
    userId,
    idempotencyKey: key('free'),
    product: 'mu',
    usage: { case: 'operation' as const, value: { name, quantity: 1n } },
  });

  it('daily free operations (mu): 30 concurrent news.search charges, credits for all: exactly 10 waived, 20 charged', async () => {
    const { t, clients } = await app('mu');
    const outcomes = await withinOneUtcDay(async () => {
      const userId = `free-paid-${key()}`;
      await funded(t, userId, 30_000n);
      return { userId, outcomes: await race(30, clients, (c) => c.billing.charge(chargeOp(userId, 'news.search'))) };
    });
    const { ok } = tally(outcomes.outcomes);
    expect(ok, messages(outcomes.outcomes)).toHaveLength(30);
    const waived = ok.filter((r) => r.waivedReason === WaivedReason.FREE_DAILY_OPERATION);
    expect({ waived: waived.length, charged: ok.filter((r) => r.chargedMillicredits === 1_000n).length }).toEqual({ waived: 10, charged: 20 });
    expect(waived.every((r) => r.chargedMillicredits === 0n && r.transaction?.amountMillicredits === 0n)).toBe(true);
    const { balance } = await t.billing.getBalance({ userId: outcomes.userId });
    expect(balance).toMatchObject({ balanceMillicredits: 10_000n, freeOperationsRemaining: 0n });
    const [used] = await t.app.db.query('select used from daily_free_usage where user_id = $1', [outcomes.userId]);
    expect(used?.used).toBe(10);
    await expectClean(t);
  });

  it('daily free operations (mu): 30 concurrent free-listed charges, no credits: exactly 10 waived, 20 INSUFFICIENT_BALANCE', async () => {
    const { t, clients } = await app('mu');
    const names = ['news.search', 'video.search', 'chat.query'];
    const result = await withinOneUtcDay(async () => {
      const userId = `free-broke-${key()}`;
      // The account exists (a plan was set) with no credits.
      await t.admin.setPlan({ userId, plan: Plan.FREE });
      return { userId, outcomes: await race(30, clients, (c, i) => c.billing.charge(chargeOp(userId, names[i % 3] as string))) };
    });
    const counted = tally(result.outcomes);
    expect(shape(counted)).toEqual(exactly(30, 10, Code.FailedPrecondition, ErrorReason.INSUFFICIENT_BALANCE));
    expect(counted.ok.every((r) => r.waivedReason === WaivedReason.FREE_DAILY_OPERATION && r.chargedMillicredits === 0n)).toBe(true);
    const [used] = await t.app.db.query('select used from daily_free_usage where user_id = $1', [result.userId]);
    expect(used?.used).toBe(10);
    const [rows] = await t.app.db.query('select count(*)::int as n from transactions where user_id = $1', [result.userId]);
    expect(rows?.n).toBe(10);
    expect(await keyRows(t, result.userId)).toBe(10);
    await expectClean(t);
  });
});
