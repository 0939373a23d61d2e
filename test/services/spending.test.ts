// Spending rules over real sockets against PostgreSQL: holds and their lifecycle, partial
// charges, plans, the M4L waiver, waived charges in the history, idempotent replays.
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { Plan, ReservationStatus, TransactionType, WaivedReason } from '../../gen/billing/v1/types_pb.js';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { awayFromUtcMidnight, failure, fund, key, outcome, refusal, refused } from '../support/app.js';
import { startServices, type TestServices } from '../support/services.js';

let t: TestServices;

beforeAll(async () => {
  t = await startServices();
});

afterAll(async () => {
  await t?.close();
});

const amount = (value: bigint) => ({ case: 'amountMillicredits' as const, value });

async function funds(userId: string, value: bigint) {
  await fund(t, userId, value);
}

function reserve(userId: string, value: bigint, ttlSeconds = 0, idempotencyKey = key('hold')) {
  return t.billing.reserve({ userId, idempotencyKey, product: 'muse', amount: amount(value), ttlSeconds });
}

function capture(userId: string, reservationId: string, value: bigint, allowPartial = false) {
  return t.billing.charge({ userId, idempotencyKey: key('cap'), product: 'muse', usage: amount(value), reservationId, allowPartial });
}

async function balanceOf(userId: string) {
  return (await t.billing.getBalance({ userId })).balance!;
}

describe('holds', () => {
  it('reserve then capture less: the remainder is released', async () => {
    const user = 'hold-less';
    await funds(user, 10_000n);
    const { reservation, balance } = await reserve(user, 4_000n);
    expect(reservation?.status).toBe(ReservationStatus.ACTIVE);
    expect(balance?.reservedMillicredits).toBe(4_000n);
    expect(balance?.availableMillicredits).toBe(6_000n);
    const charged = await capture(user, reservation!.id, 1_500n);
    expect(charged.chargedMillicredits).toBe(1_500n);
    expect(charged.balance).toMatchObject({ balanceMillicredits: 8_500n, reservedMillicredits: 0n, availableMillicredits: 8_500n });
  });

  it('reserve then capture more: the excess comes from available balance', async () => {
    const user = 'hold-more';
    await funds(user, 10_000n);
    const { reservation } = await reserve(user, 2_000n);
    await reserve(user, 3_000n); // another hold stays untouched
    const charged = await capture(user, reservation!.id, 6_000n);
    expect(charged.chargedMillicredits).toBe(6_000n);
    expect(charged.balance).toMatchObject({ balanceMillicredits: 4_000n, reservedMillicredits: 3_000n, availableMillicredits: 1_000n });
  });

  it('capture beyond what is available: refused without allow_partial, shortfall with it', async () => {
    const user = 'hold-short';
    await funds(user, 5_000n);
    const { reservation } = await reserve(user, 1_000n);
    await reserve(user, 2_000n);
    const refused = await failure(capture(user, reservation!.id, 4_001n));
    expect(refused.detail?.reason).toBe(ErrorReason.INSUFFICIENT_BALANCE);
    expect(refused.detail?.availableMillicredits).toBe(3_000n); // 5,000 − 3,000 held + the 1,000 being captured
    expect(await balanceOf(user)).toMatchObject({ balanceMillicredits: 5_000n, reservedMillicredits: 3_000n });
    const partial = await capture(user, reservation!.id, 4_500n, true);
    expect(partial.chargedMillicredits).toBe(3_000n);
    expect(partial.shortfallMillicredits).toBe(1_500n);
    expect(partial.balance).toMatchObject({ balanceMillicredits: 2_000n, reservedMillicredits: 2_000n, availableMillicredits: 0n });
  });

  it('release twice is fine; capture after release or a second capture fails with its reason', async () => {
    const user = 'hold-release';
    await funds(user, 3_000n);
    const { reservation } = await reserve(user, 1_000n);
    const first = await t.billing.release({ userId: user, idempotencyKey: key(), reservationId: reservation!.id });
    expect(first.reservation?.status).toBe(ReservationStatus.RELEASED);
    expect(first.balance?.reservedMillicredits).toBe(0n);
    const second = await t.billing.release({ userId: user, idempotencyKey: key(), reservationId: reservation!.id });
    expect(second.reservation?.status).toBe(ReservationStatus.RELEASED);
    const afterRelease = await failure(capture(user, reservation!.id, 100n));
    expect(afterRelease.error.code).toBe(Code.FailedPrecondition);
    expect(afterRelease.detail?.reason).toBe(ErrorReason.RESERVATION_RELEASED);

    const other = await reserve(user, 500n);
    await capture(user, other.reservation!.id, 500n);
    const again = await failure(capture(user, other.reservation!.id, 500n));
    expect(again.detail?.reason).toBe(ErrorReason.RESERVATION_CAPTURED);
    const releaseCaptured = await failure(t.billing.release({ userId: user, idempotencyKey: key(), reservationId: other.reservation!.id }));
    expect(releaseCaptured.detail?.reason).toBe(ErrorReason.RESERVATION_CAPTURED);
    const unknown = await failure(capture(user, '999999999', 1n));
    expect(unknown.error.code).toBe(Code.NotFound);
    expect(unknown.detail?.reason).toBe(ErrorReason.RESERVATION_NOT_FOUND);
  });

  it('a hold with ttl_seconds 1 stops counting after a second, cannot be captured, and is swept', async () => {
    const user = 'hold-ttl';
    await funds(user, 2_000n);
    const { reservation } = await reserve(user, 1_500n, 1);
    expect((await balanceOf(user)).availableMillicredits).toBe(500n);
    await new Promise((resolve) => setTimeout(resolve, 1_300));
    expect(await balanceOf(user)).toMatchObject({ reservedMillicredits: 0n, availableMillicredits: 2_000n });
    const expired = await failure(capture(user, reservation!.id, 100n));
    expect(expired.detail?.reason).toBe(ErrorReason.RESERVATION_EXPIRED);
    // The whole balance is usable again at once, before any sweep.
    const charged = await t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: amount(2_000n) });
    expect(charged.balance?.balanceMillicredits).toBe(0n);
    const unfunded = await failure(reserve('hold-sweep', 1n, 1));
    expect([unfunded.error.code, unfunded.detail?.reason]).toEqual([Code.FailedPrecondition, ErrorReason.INSUFFICIENT_BALANCE]);
    await funds('hold-sweep', 1_000n);
    await reserve('hold-sweep', 1_000n, 1);
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    // The test app runs no sweeper of its own, so this sweep is the one that frees the hold
    // ('hold-ttl' freed its own when it charged): exactly one account.
    const stored = `select r.status, a.reserved_millicredits::text as reserved
                      from reservations r join user_accounts a using (user_id) where r.user_id = 'hold-sweep'`;
    expect(await t.app.db.query(stored)).toEqual([{ status: 'ACTIVE', reserved: '1000' }]);
    expect(await t.app.holds.sweep()).toBe(1);
    expect(await t.app.db.query(stored)).toEqual([{ status: 'EXPIRED', reserved: '0' }]);
    expect((await verifyLedger(t.app.db)).violations).toEqual([]);
  });

  it('concurrent Reserves never hold more than the balance; every loser is INSUFFICIENT_BALANCE', async () => {
    const user = 'hold-race';
    await funds(user, 10_000n);
    const outcomes = await Promise.all(Array.from({ length: 48 }, () => outcome(reserve(user, 700n))));
    expect(outcomes.filter((o) => o.ok)).toHaveLength(14); // 14 × 700 = 9,800 ≤ 10,000 < 15 × 700
    // The schema's reserved <= balance would also stop a 15th hold, but as an internal
    // error: each loser must be refused by the service, with the figures.
    const lost = outcomes.filter((o) => !o.ok);
    expect(lost).toHaveLength(34);
    for (const o of lost) {
      expect(refusal(o)).toBe(refused(Code.FailedPrecondition, ErrorReason.INSUFFICIENT_BALANCE));
      expect([o.detail?.requiredMillicredits, o.detail?.availableMillicredits]).toEqual([700n, 200n]);
    }
    expect(await balanceOf(user)).toMatchObject({ reservedMillicredits: 9_800n, availableMillicredits: 200n });
    expect((await verifyLedger(t.app.db)).violations).toEqual([]);
  });

  it('replays Reserve, Release and Charge with their original results', async () => {
    const user = 'hold-replay';
    await funds(user, 5_000n);
    const k = key('r');
    const first = await reserve(user, 1_000n, 0, k);
    const replay = await reserve(user, 1_000n, 0, k);
    expect(replay.reservation?.id).toBe(first.reservation?.id);
    expect((await balanceOf(user)).reservedMillicredits).toBe(1_000n);
    const reused = await failure(reserve(user, 1_001n, 0, k));
    expect(reused.detail?.reason).toBe(ErrorReason.IDEMPOTENCY_KEY_REUSED);
    const rk = key('rel');
    const released = await t.billing.release({ userId: user, idempotencyKey: rk, reservationId: first.reservation!.id });
    const releasedAgain = await t.billing.release({ userId: user, idempotencyKey: rk, reservationId: first.reservation!.id });
    expect(releasedAgain).toEqual(released);
    const ck = key('c');
    const request = { userId: user, idempotencyKey: ck, product: 'muse', usage: { case: 'operation' as const, value: { name: 'vital_ai.generate', quantity: 1n } } };
    const charged = await t.billing.charge(request);
    expect(await t.billing.charge(request)).toEqual(charged);
    expect((await balanceOf(user)).balanceMillicredits).toBe(4_000n);
  });

  it('validates holds: ttl, amount, ids', async () => {
    const ttl = await failure(reserve('v', 1n, 86_401));
    expect(ttl.detail?.field).toBe('ttl_seconds');
    const zero = await failure(reserve('v', 0n));
    expect(zero.detail?.field).toBe('amount_millicredits');
    const id = await failure(t.billing.release({ userId: 'v', idempotencyKey: 'k', reservationId: 'x1' }));
    expect(id.detail?.field).toBe('reservation_id');
  });
});

describe('plans and waivers', () => {
  const run = (model: string, finishReason = 'stop') => ({
    case: 'tokenUsage' as const,
    value: { model, tokensIn: 30_000n, tokensOut: 5_000n, finishReason },
  });

  it('gates premium models by plan; ADMIN charges succeed, are recorded, debit nothing', async () => {
    const user = 'plan-user';
    await funds(user, 50_000n);
    const refused = await failure(t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: run('claude-opus-4.6') }));
    expect(refused.error.code).toBe(Code.PermissionDenied);
    expect(refused.detail?.reason).toBe(ErrorReason.PLAN_REQUIRED);
    const pro = await t.admin.setPlan({ userId: user, plan: Plan.PRO });
    expect(pro.balance?.plan).toBe(Plan.PRO);
    const charged = await t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: run('claude-opus-4.6') });
    // (30,000 + 4 × 5,000) / 20,000 × 3.2 = 8 credits
    expect(charged.chargedMillicredits).toBe(8_000n);

    const admin = 'admin-user';
    await t.admin.setPlan({ userId: admin, plan: Plan.ADMIN });
    const free = await t.billing.charge({ userId: admin, idempotencyKey: key(), product: 'muse', usage: run('claude-opus-4.6') });
    expect(free.chargedMillicredits).toBe(0n);
    expect(free.waivedReason).toBe(WaivedReason.ADMIN_PLAN);
    expect(free.price?.costMillicredits).toBe(8_000n);
    expect(free.transaction?.amountMillicredits).toBe(0n);
    expect(free.balance?.canStart).toBe(true);
    const big = await t.billing.charge({ userId: admin, idempotencyKey: key(), product: 'muse', usage: amount(1_000_000n) });
    expect(big.waivedReason).toBe(WaivedReason.ADMIN_PLAN);
    expect((await balanceOf(admin)).balanceMillicredits).toBe(0n);
    const invalidPlan = await failure(t.admin.setPlan({ userId: admin, plan: Plan.UNSPECIFIED }));
    expect(invalidPlan.detail?.field).toBe('plan');
  });

  it('m4l.request is free with the m4l entitlement; waived charges are in the history with reasons', async () => {
    const user = 'm4l-user';
    await funds(user, 2_000n);
    const m4l = { case: 'operation' as const, value: { name: 'm4l.request', quantity: 1n } };
    const paid = await t.billing.charge({ userId: user, idempotencyKey: key(), product: 'm4l', usage: m4l });
    expect(paid.chargedMillicredits).toBe(500n);
    const granted = await t.admin.setEntitlement({ userId: user, entitlement: 'm4l', active: true });
    expect(granted.balance?.entitlements).toEqual(['m4l']);
    const free = await t.billing.charge({ userId: user, idempotencyKey: key(), product: 'm4l', usage: m4l });
    expect(free.chargedMillicredits).toBe(0n);
    expect(free.waivedReason).toBe(WaivedReason.ENTITLEMENT);
    const toolCalls = await t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: run('gpt-5-mini', 'tool_calls') });
    expect(toolCalls.waivedReason).toBe(WaivedReason.FINISH_TOOL_CALLS);
    const error = await t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: run('gpt-5-mini', 'error') });
    expect(error.waivedReason).toBe(WaivedReason.FINISH_ERROR);
    const history = await t.billing.listTransactions({ userId: user, types: [TransactionType.CHARGE] });
    expect(history.transactions.map((tx) => [tx.amountMillicredits, tx.waivedReason])).toEqual([
      [0n, WaivedReason.FINISH_ERROR],
      [0n, WaivedReason.FINISH_TOOL_CALLS],
      [0n, WaivedReason.ENTITLEMENT],
      [-500n, WaivedReason.UNSPECIFIED],
    ]);
    await t.admin.setEntitlement({ userId: user, entitlement: 'm4l', active: false });
    const again = await t.billing.charge({ userId: user, idempotencyKey: key(), product: 'm4l', usage: m4l });
    expect(again.chargedMillicredits).toBe(500n);
  });

  it('reports low_balance and can_start on every returned balance', async () => {
    const user = 'flags-user';
    await funds(user, 1_100n);
    let b = await balanceOf(user);
    expect([b.lowBalance, b.canStart]).toEqual([false, true]);
    const charged = await t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: amount(100n) });
    expect([charged.balance?.lowBalance, charged.balance?.canStart]).toEqual([true, true]); // 1,000 ≤ threshold
    const held = await reserve(user, 901n);
    expect([held.balance?.lowBalance, held.balance?.canStart]).toEqual([true, false]); // 99 < 100
    b = await balanceOf(user);
    expect(b.availableMillicredits).toBe(99n);
    expect(b.canStart).toBe(false);
  });

  it('quotes without charging, with the waiver that would apply', async () => {
    const user = 'quote-user';
    const q = await t.billing.quote({ userId: user, product: 'muse', usage: { case: 'operation', value: { name: 'sample.generate', quantity: 2n } } });
    expect(q.costMillicredits).toBe(4_000n);
    const tools = await t.billing.quote({ userId: user, product: 'muse', usage: run('gpt-5.2', 'tool_calls') });
    expect(tools.costMillicredits).toBe(0n);
    expect(tools.waivedReason).toBe(WaivedReason.FINISH_TOOL_CALLS);
    expect(tools.price?.costMillicredits).toBeGreaterThan(0n);
    const rows = await t.app.db.query("select 1 from user_accounts where user_id = 'quote-user'");
    expect(rows).toHaveLength(0);
  });
});

describe('the second catalogue (mu)', () => {
  let mu: TestServices;

  beforeAll(async () => {
    mu = await startServices({ catalogue: 'mu' });
  });

  afterAll(async () => {
    await mu?.close();
  });

  const op = (name: string) => ({ case: 'operation' as const, value: { name, quantity: 1n } });

  it('uses 10 free operations a UTC day before credits; the 11th costs credits; the next day starts at 10', async () => {
    // The free count is per UTC day by the database's clock: do not straddle midnight.
    await awayFromUtcMidnight(mu.app.db);
    const user = 'mu-user';
    await mu.billing.grant({ userId: user, idempotencyKey: key(), grant: amount(10_000n), reason: 'r' });
    expect((await mu.billing.getBalance({ userId: user })).balance?.freeOperationsRemaining).toBe(10n);
    const names = ['news.search', 'video.search', 'chat.query'];
    for (let i = 0; i < 10; i += 1) {
      const res = await mu.billing.charge({ userId: user, idempotencyKey: key(), product: 'mu', usage: op(names[i % 3]!) });
      expect(res.chargedMillicredits).toBe(0n);
      expect(res.waivedReason).toBe(WaivedReason.FREE_DAILY_OPERATION);
      expect(res.balance?.freeOperationsRemaining).toBe(BigInt(9 - i));
    }
    const eleventh = await mu.billing.charge({ userId: user, idempotencyKey: key(), product: 'mu', usage: op('chat.query') });
    expect(eleventh.chargedMillicredits).toBe(3_000n);
    const summary = await mu.billing.charge({ userId: user, idempotencyKey: key(), product: 'mu', usage: op('news.summary') });
    expect(summary.chargedMillicredits).toBe(1_000n); // not in the free list
    const watch = await mu.billing.charge({ userId: user, idempotencyKey: key(), product: 'mu', usage: op('video.watch') });
    expect(watch.waivedReason).toBe(WaivedReason.ZERO_PRICE);
    // Yesterday's usage does not count today: move the recorded day back by one.
    await mu.app.db.query("update daily_free_usage set day = day - 1 where user_id = 'mu-user'");
    const nextDay = await mu.billing.getBalance({ userId: user });
    expect(nextDay.balance?.freeOperationsRemaining).toBe(10n);
    const free = await mu.billing.charge({ userId: user, idempotencyKey: key(), product: 'mu', usage: op('news.search') });
    expect(free.waivedReason).toBe(WaivedReason.FREE_DAILY_OPERATION);
    expect(free.balance?.freeOperationsRemaining).toBe(9n);
  });

  it('prices the mu catalogue from configuration alone', async () => {
    const user = 'mu-prices';
    await mu.billing.grant({ userId: user, idempotencyKey: key(), grant: amount(100_000n), reason: 'r' });
    const expected: Record<string, bigint> = {
      'news.summary': 1_000n, 'chat.room': 1_000n, 'app.create': 5_000n, 'app.modify': 3_000n,
      'agent.run': 5_000n, 'email.external': 4_000n,
    };
    for (const [name, price] of Object.entries(expected)) {
      const q = await mu.billing.quote({ userId: user, product: 'mu', usage: op(name) });
      expect([name, q.costMillicredits]).toEqual([name, price]);
    }
    const unknown = await failure(mu.billing.charge({ userId: user, idempotencyKey: key(), product: 'mu', usage: op('sample.generate') }));
    expect(unknown.detail?.reason).toBe(ErrorReason.UNKNOWN_OPERATION);
    expect((await verifyLedger(mu.app.db)).violations).toEqual([]);
  });
});
