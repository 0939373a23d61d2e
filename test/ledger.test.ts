// The ledger core over real sockets against real PostgreSQL: charges, grants, refunds,
// idempotency, history, and the invariants after concurrent load.
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorReason } from '../gen/billing/v1/errors_pb.js';
import { TransactionType } from '../gen/billing/v1/types_pb.js';
import { verifyLedger } from '../src/ledger/verify.js';
import { failure, key, startTestApp, type TestApp } from './support/app.js';

let t: TestApp;

beforeAll(async () => {
  t = await startTestApp();
});

afterAll(async () => {
  await t?.close();
});

async function grant(userId: string, amount: bigint) {
  return t.billing.grant({
    userId,
    idempotencyKey: key('grant'),
    grant: { case: 'amountMillicredits', value: amount },
    reason: 'test funds',
  });
}

function chargeAmount(userId: string, amount: bigint, idempotencyKey = key('charge')) {
  return t.billing.charge({
    userId,
    idempotencyKey,
    product: 'muse',
    usage: { case: 'amountMillicredits', value: amount },
  });
}

describe('balances', () => {
  it('reads an unknown user as 0 on the FREE plan without creating it', async () => {
    const { balance } = await t.billing.getBalance({ userId: 'nobody-yet' });
    expect(balance?.balanceMillicredits).toBe(0n);
    expect(balance?.availableMillicredits).toBe(0n);
    expect(balance?.plan).toBe(1); // PLAN_FREE
    expect(balance?.canStart).toBe(false);
    expect(balance?.lowBalance).toBe(true);
    const rows = await t.app.db.query("select 1 from user_accounts where user_id = 'nobody-yet'");
    expect(rows).toHaveLength(0);
  });

  it('grants by SKU and explicit amount, and charges operations at catalogue prices', async () => {
    const user = 'sku-user';
    const boost = await t.billing.grant({ userId: user, idempotencyKey: key(), grant: { case: 'sku', value: 'boost_50' } });
    expect(boost.transaction?.amountMillicredits).toBe(50_000n);
    expect(boost.transaction?.operation).toBe('boost_50');
    expect(boost.transaction?.type).toBe(TransactionType.GRANT);
    const charged = await t.billing.charge({
      userId: user,
      idempotencyKey: key(),
      product: 'muse',
      usage: { case: 'operation', value: { name: 'sample.generate', quantity: 3n } },
    });
    expect(charged.chargedMillicredits).toBe(6_000n);
    expect(charged.price?.unitPriceMillicredits).toBe(2_000n);
    expect(charged.balance?.balanceMillicredits).toBe(44_000n);
    expect(charged.transaction?.balanceAfterMillicredits).toBe(44_000n);
    expect(charged.transaction?.amountMillicredits).toBe(-6_000n);
  });

  it('refuses an unaffordable charge and changes nothing; the same key works once funds arrive', async () => {
    const user = 'short-user';
    await grant(user, 1_000n);
    const k = key('retry');
    const { error, detail } = await failure(chargeAmount(user, 1_500n, k));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(detail?.reason).toBe(ErrorReason.INSUFFICIENT_BALANCE);
    expect(detail?.requiredMillicredits).toBe(1_500n);
    expect(detail?.availableMillicredits).toBe(1_000n);
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(1_000n);
    await grant(user, 1_000n);
    const ok = await chargeAmount(user, 1_500n, k);
    expect(ok.chargedMillicredits).toBe(1_500n);
    expect(ok.balance?.balanceMillicredits).toBe(500n);
  });

  it('with allow_partial debits what is available and reports the shortfall', async () => {
    const user = 'partial-user';
    await grant(user, 700n);
    const res = await t.billing.charge({
      userId: user,
      idempotencyKey: key(),
      product: 'muse',
      usage: { case: 'amountMillicredits', value: 1_000n },
      allowPartial: true,
    });
    expect(res.chargedMillicredits).toBe(700n);
    expect(res.shortfallMillicredits).toBe(300n);
    expect(res.balance?.balanceMillicredits).toBe(0n);
  });
});

describe('refunds', () => {
  it('returns part, then the rest, and never more than was charged', async () => {
    const user = 'refund-user';
    await grant(user, 10_000n);
    const charge = await chargeAmount(user, 4_000n);
    const transactionId = charge.transaction!.id;
    const part = await t.billing.refund({ userId: user, idempotencyKey: key(), transactionId, amountMillicredits: 1_000n, reason: 'bad output' });
    expect(part.transaction?.amountMillicredits).toBe(1_000n);
    expect(part.transaction?.refundedTransactionId).toBe(transactionId);
    expect(part.balance?.balanceMillicredits).toBe(7_000n);
    const tooMuch = await failure(
      t.billing.refund({ userId: user, idempotencyKey: key(), transactionId, amountMillicredits: 3_001n, reason: 'x' }),
    );
    expect(tooMuch.detail?.reason).toBe(ErrorReason.REFUND_EXCEEDS_CHARGE);
    expect(tooMuch.detail?.availableMillicredits).toBe(3_000n);
    const rest = await t.billing.refund({ userId: user, idempotencyKey: key(), transactionId, amountMillicredits: 0n, reason: 'rest' });
    expect(rest.transaction?.amountMillicredits).toBe(3_000n);
    expect(rest.balance?.balanceMillicredits).toBe(10_000n);
    const none = await failure(t.billing.refund({ userId: user, idempotencyKey: key(), transactionId, reason: 'again' }));
    expect(none.detail?.reason).toBe(ErrorReason.REFUND_EXCEEDS_CHARGE);
  });

  it('refuses refunds of another user\'s charge, of non-charges and of unknown ids', async () => {
    await grant('refund-a', 5_000n);
    const charge = await chargeAmount('refund-a', 1_000n);
    const other = await failure(
      t.billing.refund({ userId: 'refund-b', idempotencyKey: key(), transactionId: charge.transaction!.id, reason: 'x' }),
    );
    expect(other.error.code).toBe(Code.NotFound);
    expect(other.detail?.reason).toBe(ErrorReason.TRANSACTION_NOT_FOUND);
    const g = await grant('refund-a', 1n);
    const notCharge = await failure(
      t.billing.refund({ userId: 'refund-a', idempotencyKey: key(), transactionId: g.transaction!.id, reason: 'x' }),
    );
    expect(notCharge.detail?.reason).toBe(ErrorReason.NOT_A_CHARGE);
  });

  it('keeps refunds within the charge under concurrency', async () => {
    const user = 'refund-race';
    await grant(user, 10_000n);
    const charge = await chargeAmount(user, 5_000n);
    const attempts = Array.from({ length: 20 }, () =>
      t.billing.refund({
        userId: user,
        idempotencyKey: key('rr'),
        transactionId: charge.transaction!.id,
        amountMillicredits: 1_000n,
        reason: 'race',
      }),
    );
    const settled = await Promise.allSettled(attempts);
    expect(settled.filter((s) => s.status === 'fulfilled')).toHaveLength(5);
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(10_000n);
  });
});

describe('idempotency', () => {
  it('32 concurrent identical Grants take effect once and return the same transaction', async () => {
    const user = 'idem-grant';
    const k = key('same');
    const request = {
      userId: user,
      idempotencyKey: k,
      grant: { case: 'amountMillicredits' as const, value: 7_000n },
      reason: 'once',
      reference: 'inv-1',
    };
    const results = await Promise.all(Array.from({ length: 32 }, () => t.billing.grant(request)));
    const ids = new Set(results.map((r) => r.transaction?.id));
    expect(ids.size).toBe(1);
    expect(results.every((r) => r.balance?.balanceMillicredits === 7_000n)).toBe(true);
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(7_000n);
    const rows = await t.app.db.query('select count(*)::int as n from transactions where user_id = $1', [user]);
    expect(rows[0]?.n).toBe(1);
    const reused = await failure(t.billing.grant({ ...request, grant: { case: 'amountMillicredits', value: 7_001n } }));
    expect(reused.error.code).toBe(Code.AlreadyExists);
    expect(reused.detail?.reason).toBe(ErrorReason.IDEMPOTENCY_KEY_REUSED);
  });

  it('replays a Charge with its original result, also over HTTP/1.1 Connect JSON', async () => {
    const user = 'idem-charge';
    await grant(user, 5_000n);
    const k = key();
    const first = await chargeAmount(user, 1_000n, k);
    await chargeAmount(user, 1_000n); // the balance moves on
    const replay = await t.billingHttp1.charge({
      userId: user,
      idempotencyKey: k,
      product: 'muse',
      usage: { case: 'amountMillicredits', value: 1_000n },
    });
    expect(replay.transaction?.id).toBe(first.transaction?.id);
    expect(replay.balance?.balanceMillicredits).toBe(4_000n);
    expect(replay.transaction?.createdAt).toEqual(first.transaction?.createdAt);
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(3_000n);
    const other = await failure(chargeAmount(user, 999n, k));
    expect(other.detail?.reason).toBe(ErrorReason.IDEMPOTENCY_KEY_REUSED);
  });

  it('scopes keys to the user', async () => {
    const k = key('shared');
    await grant('scope-a', 1n);
    const a = await t.billing.grant({ userId: 'scope-a', idempotencyKey: k, grant: { case: 'amountMillicredits', value: 5n }, reason: 'r' });
    const b = await t.billing.grant({ userId: 'scope-b', idempotencyKey: k, grant: { case: 'amountMillicredits', value: 5n }, reason: 'r' });
    expect(a.transaction?.id).not.toBe(b.transaction?.id);
  });
});

describe('history', () => {
  it('lists newest first with cursor pages and a type filter', async () => {
    const user = 'history-user';
    await grant(user, 100_000n);
    for (let i = 0; i < 7; i += 1) await chargeAmount(user, 10n + BigInt(i));
    const seen: string[] = [];
    let pageToken = '';
    do {
      const page = await t.billing.listTransactions({ userId: user, pageSize: 3, pageToken });
      expect(page.transactions.length).toBeLessThanOrEqual(3);
      seen.push(...page.transactions.map((tx) => tx.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    expect(seen).toHaveLength(8);
    const numeric = seen.map(BigInt);
    expect([...numeric].sort((a, b) => (a > b ? -1 : 1))).toEqual(numeric);
    const grants = await t.billing.listTransactions({ userId: user, types: [TransactionType.GRANT] });
    expect(grants.transactions.map((tx) => tx.type)).toEqual([TransactionType.GRANT]);
    const bad = await failure(t.billing.listTransactions({ userId: user, pageToken: 'garbage' }));
    expect(bad.detail?.field).toBe('page_token');
  });
});

describe('concurrency', () => {
  it('96 concurrent Charges on one account never overdraw', async () => {
    const user = 'hot-user';
    await grant(user, 40_000n); // affords exactly 40 charges of 1,000
    const results = await Promise.allSettled(Array.from({ length: 96 }, () => chargeAmount(user, 1_000n)));
    const ok = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r) => r.status === 'rejected');
    expect(ok).toHaveLength(40);
    expect(refused).toHaveLength(56);
    for (const r of refused) {
      const { detail } = await failure(Promise.reject((r as PromiseRejectedResult).reason));
      expect(detail?.reason).toBe(ErrorReason.INSUFFICIENT_BALANCE);
    }
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(0n);
    const report = await verifyLedger(t.app.db);
    expect(report.violations).toEqual([]);
    const zero = await t.app.db.query('select coalesce(sum(amount_millicredits), 0)::text as total from postings');
    expect(zero[0]?.total).toBe('0');
  });

  it('concurrent Charges spread over accounts with mixed sizes keep every invariant', async () => {
    const seed = Number(process.env.TEST_SEED ?? Date.now() % 1_000_000);
    console.log(`concurrency spread seed: ${seed} (set TEST_SEED to repeat)`);
    let state = seed;
    const random = (n: number) => {
      state = (state * 1_103_515_245 + 12_345) % 2_147_483_648;
      return state % n;
    };
    const users = Array.from({ length: 8 }, (_, i) => `spread-${seed}-${i}`);
    await Promise.all(users.map((u) => grant(u, 5_000n)));
    const calls = Array.from({ length: 128 }, () =>
      chargeAmount(users[random(users.length)]!, BigInt(1 + random(900))).catch(() => undefined),
    );
    await Promise.all(calls);
    for (const u of users) {
      const b = (await t.billing.getBalance({ userId: u })).balance!;
      expect(b.balanceMillicredits).toBeGreaterThanOrEqual(0n);
    }
    expect((await verifyLedger(t.app.db)).violations).toEqual([]);
  });
});
