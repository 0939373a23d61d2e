// Promo codes over real sockets against real PostgreSQL: management, validation, every
// refusal with its reason, idempotent replays, and the cap and once-per-user rules under
// concurrent redemptions.
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { TransactionType } from '../../gen/billing/v1/types_pb.js';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { failure, key, outcome, refusal, refused } from '../support/app.js';
import { startServices, type TestServices } from '../support/services.js';

let t: TestServices;

beforeAll(async () => {
  t = await startServices();
});

afterAll(async () => {
  await t?.close();
});

function createCode(code: string, amount: bigint, maxRedemptions = 0n, expiresAtMs?: number) {
  return t.admin.createPromoCode({
    code,
    amountMillicredits: amount,
    maxRedemptions,
    ...(expiresAtMs === undefined ? {} : { expiresAt: timestampFromMs(expiresAtMs) }),
  });
}

function redeem(userId: string, code: string, idempotencyKey = key('redeem')) {
  return t.billing.redeem({ userId, idempotencyKey, code });
}

describe('managing codes', () => {
  it('creates a code stored upper-case and reads it back case-insensitively', async () => {
    const expiresAtMs = Date.now() + 86_400_000;
    const { promoCode } = await createCode('Summer-25_a', 2_500n, 100n, expiresAtMs);
    expect(promoCode?.code).toBe('SUMMER-25_A');
    expect(promoCode?.amountMillicredits).toBe(2_500n);
    expect(promoCode?.maxRedemptions).toBe(100n);
    expect(promoCode?.redemptions).toBe(0n);
    expect(promoCode?.disabled).toBe(false);
    expect(Number(promoCode?.expiresAt?.seconds) * 1000 + (promoCode?.expiresAt?.nanos ?? 0) / 1e6).toBe(expiresAtMs);
    const got = await t.admin.getPromoCode({ code: 'summer-25_A' });
    expect(got.promoCode?.code).toBe('SUMMER-25_A');
    expect(got.promoCode?.createdAt).toBeDefined();
  });

  it('re-creating the same code is idempotent; other terms under the name are ALREADY_EXISTS', async () => {
    await createCode('twice', 1_000n, 5n);
    const again = await createCode('TWICE', 1_000n, 5n);
    expect(again.promoCode?.code).toBe('TWICE');
    const { error, detail } = await failure(createCode('Twice', 2_000n, 5n));
    expect(error.code).toBe(Code.AlreadyExists);
    expect(detail?.reason).toBe(ErrorReason.PROMO_CODE_EXISTS);
  });

  it('lists codes newest first, a page at a time', async () => {
    for (const code of ['LIST-A', 'LIST-B', 'LIST-C']) await createCode(code, 1_000n);
    const seen: string[] = [];
    let pageToken = '';
    do {
      const page = await t.admin.listPromoCodes({ pageSize: 2, pageToken });
      expect(page.promoCodes.length).toBeLessThanOrEqual(2);
      seen.push(...page.promoCodes.map((p) => p.code));
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    expect(new Set(seen).size).toBe(seen.length);
    const listed = seen.filter((c) => c.startsWith('LIST-'));
    expect(listed).toEqual(['LIST-C', 'LIST-B', 'LIST-A']);
    const bad = await failure(t.admin.listPromoCodes({ pageToken: 'garbage' }));
    expect(bad.detail?.field).toBe('page_token');
  });

  it('refuses bad input naming the field, and writes nothing', async () => {
    const cases: [Promise<unknown>, string][] = [
      [createCode('', 1_000n), 'code'],
      [createCode('has space', 1_000n), 'code'],
      [createCode('x'.repeat(65), 1_000n), 'code'],
      [createCode('ÜBER', 1_000n), 'code'],
      [createCode('ZERO', 0n), 'amount_millicredits'],
      [createCode('NEGATIVE', -5n), 'amount_millicredits'],
      [createCode('HUGE', 1_000_000_000_001n), 'amount_millicredits'],
      [createCode('MAXNEG', 1_000n, -1n), 'max_redemptions'],
      [createCode('MAXBIG', 1_000n, 1_000_000_001n), 'max_redemptions'],
      [createCode('PAST', 1_000n, 0n, Date.now() - 1_000), 'expires_at'],
      [t.admin.createPromoCode({ code: 'BADTS', amountMillicredits: 1n, expiresAt: { seconds: 10n ** 15n, nanos: 0 } }), 'expires_at'],
      [t.admin.getPromoCode({ code: 'no/slash' }), 'code'],
      [t.admin.disablePromoCode({ code: '' }), 'code'],
      [t.billing.redeem({ userId: 'u-valid', idempotencyKey: key(), code: 'bad code' }), 'code'],
      [t.billing.redeem({ userId: 'bad user', idempotencyKey: key(), code: 'ANY' }), 'user_id'],
      [t.billing.redeem({ userId: 'u-valid', idempotencyKey: '', code: 'ANY' }), 'idempotency_key'],
    ];
    for (const [call, field] of cases) {
      const { error, detail } = await failure(call);
      expect(error.code, field).toBe(Code.InvalidArgument);
      expect(detail?.reason, field).toBe(ErrorReason.INVALID_FIELD);
      expect(detail?.field, field).toBe(field);
    }
    const rows = await t.app.db.query(`select code from promo_codes where code in ('ZERO','NEGATIVE','HUGE','MAXNEG','MAXBIG','PAST','BADTS')`);
    expect(rows).toHaveLength(0);
    expect(await t.app.db.query(`select 1 from user_accounts where user_id = 'u-valid'`)).toHaveLength(0);
  });
});

describe('redeeming', () => {
  it('grants the amount as a PROMO transaction from system:promo, matching case-insensitively', async () => {
    await createCode('WELCOME', 3_000n);
    const res = await redeem('promo-user', 'welcome');
    expect(res.transaction?.type).toBe(TransactionType.PROMO);
    expect(res.transaction?.amountMillicredits).toBe(3_000n);
    expect(res.transaction?.operation).toBe('WELCOME');
    expect(res.transaction?.balanceAfterMillicredits).toBe(3_000n);
    expect(res.balance?.balanceMillicredits).toBe(3_000n);
    const postings = await t.app.db.query<{ account: string; amount: string }>(
      'select account, amount_millicredits::text as amount from postings where transaction_id = $1::bigint order by account',
      [res.transaction!.id],
    );
    expect(postings).toEqual([
      { account: 'system:promo', amount: '-3000' },
      { account: 'user:promo-user', amount: '3000' },
    ]);
    const code = await t.admin.getPromoCode({ code: 'WELCOME' });
    expect(code.promoCode?.redemptions).toBe(1n);
  });

  it('replays a redemption under the same key with the same transaction, and changes nothing', async () => {
    await createCode('REPLAY', 1_500n);
    const k = key('replay');
    const first = await redeem('replay-user', 'REPLAY', k);
    const second = await redeem('replay-user', 'replay', k);
    expect(second.transaction?.id).toBe(first.transaction?.id);
    expect(second.balance?.balanceMillicredits).toBe(1_500n);
    expect((await t.billing.getBalance({ userId: 'replay-user' })).balance?.balanceMillicredits).toBe(1_500n);
    expect((await t.admin.getPromoCode({ code: 'REPLAY' })).promoCode?.redemptions).toBe(1n);
    await createCode('OTHER', 1_000n);
    const reused = await failure(redeem('replay-user', 'OTHER', k));
    expect(reused.detail?.reason).toBe(ErrorReason.IDEMPOTENCY_KEY_REUSED);
  });

  it('refuses a second redemption by the same user with ALREADY_REDEEMED', async () => {
    await createCode('ONCE', 1_000n);
    await redeem('once-user', 'ONCE');
    const { error, detail } = await failure(redeem('once-user', 'once'));
    expect(error.code).toBe(Code.AlreadyExists);
    expect(detail?.reason).toBe(ErrorReason.PROMO_CODE_ALREADY_REDEEMED);
    expect(detail?.subject).toBe('ONCE');
  });

  it('refuses unknown, expired, disabled and exhausted codes with their reasons, leaving no trace', async () => {
    const unknown = await failure(redeem('refused-user', 'NO-SUCH-CODE'));
    expect(unknown.error.code).toBe(Code.NotFound);
    expect(unknown.detail?.reason).toBe(ErrorReason.PROMO_CODE_NOT_FOUND);

    const expiresAtMs = Date.now() + 1_000;
    await createCode('SOON-GONE', 1_000n, 0n, expiresAtMs);
    await new Promise((resolve) => setTimeout(resolve, expiresAtMs + 100 - Date.now()));
    const expired = await failure(redeem('refused-user', 'soon-gone'));
    expect(expired.error.code).toBe(Code.FailedPrecondition);
    expect(expired.detail?.reason).toBe(ErrorReason.PROMO_CODE_EXPIRED);

    await createCode('STOPPED', 1_000n);
    const disabled = await t.admin.disablePromoCode({ code: 'stopped' });
    expect(disabled.promoCode?.disabled).toBe(true);
    expect((await t.admin.disablePromoCode({ code: 'STOPPED' })).promoCode?.disabled).toBe(true);
    const refused = await failure(redeem('refused-user', 'STOPPED'));
    expect(refused.error.code).toBe(Code.FailedPrecondition);
    expect(refused.detail?.reason).toBe(ErrorReason.PROMO_CODE_DISABLED);

    await createCode('JUST-ONE', 1_000n, 1n);
    await redeem('first-comer', 'JUST-ONE');
    const exhausted = await failure(redeem('refused-user', 'JUST-ONE'));
    expect(exhausted.error.code).toBe(Code.ResourceExhausted);
    expect(exhausted.detail?.reason).toBe(ErrorReason.PROMO_CODE_EXHAUSTED);

    const notFound = await failure(t.admin.disablePromoCode({ code: 'NOPE' }));
    expect(notFound.detail?.reason).toBe(ErrorReason.PROMO_CODE_NOT_FOUND);
    expect(await t.app.db.query(`select 1 from user_accounts where user_id = 'refused-user'`)).toHaveLength(0);
    expect((await t.admin.getPromoCode({ code: 'JUST-ONE' })).promoCode?.redemptions).toBe(1n);
  });
});

describe('under concurrency', () => {
  it('50 users redeeming a code capped at 10: exactly 10 succeed, the rest are EXHAUSTED', async () => {
    await createCode('CAPPED10', 2_000n, 10n);
    const users = Array.from({ length: 50 }, (_, i) => `cap-user-${i}`);
    const outcomes = await Promise.all(users.map((u) => outcome(redeem(u, 'capped10'))));
    const won = outcomes.filter((o) => o.ok);
    expect(won).toHaveLength(10);
    for (const o of won) expect(o.value.transaction?.amountMillicredits).toBe(2_000n);
    // The schema's cap constraint would also stop an 11th, but as an internal error.
    const lost = outcomes.filter((o) => !o.ok);
    expect(lost).toHaveLength(40);
    for (const o of lost) {
      expect(refusal(o)).toBe(refused(Code.ResourceExhausted, ErrorReason.PROMO_CODE_EXHAUSTED));
      expect([o.detail?.field, o.detail?.subject]).toEqual(['code', 'CAPPED10']);
    }
    expect((await t.admin.getPromoCode({ code: 'CAPPED10' })).promoCode?.redemptions).toBe(10n);
    const rows = await t.app.db.query(`select count(*)::int as n from promo_redemptions where code = 'CAPPED10'`);
    expect(rows[0]?.n).toBe(10);
    // Losers leave no trace: only the winners have an account, holding the code's amount.
    const accounts = await t.app.db.query(`select balance_millicredits::text as b from user_accounts where user_id like 'cap-user-%'`);
    expect(accounts).toEqual(Array.from({ length: 10 }, () => ({ b: '2000' })));
  });

  it('one user redeeming one code 20 times with different keys: exactly one succeeds', async () => {
    await createCode('DOUBLE-DIP', 4_000n);
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => outcome(redeem('dipper', 'DOUBLE-DIP'))));
    expect(outcomes.filter((o) => o.ok)).toHaveLength(1);
    const lost = outcomes.filter((o) => !o.ok);
    expect(lost).toHaveLength(19);
    for (const o of lost) {
      expect(refusal(o)).toBe(refused(Code.AlreadyExists, ErrorReason.PROMO_CODE_ALREADY_REDEEMED));
      expect(o.detail?.subject).toBe('DOUBLE-DIP');
    }
    expect((await t.billing.getBalance({ userId: 'dipper' })).balance?.balanceMillicredits).toBe(4_000n);
    expect((await t.admin.getPromoCode({ code: 'DOUBLE-DIP' })).promoCode?.redemptions).toBe(1n);
  });

  it('20 concurrent replays of one key execute once', async () => {
    await createCode('SAME-KEY', 1_000n);
    const k = key('same');
    const results = await Promise.all(Array.from({ length: 20 }, () => redeem('same-key-user', 'SAME-KEY', k)));
    expect(new Set(results.map((r) => r.transaction?.id)).size).toBe(1);
    expect((await t.billing.getBalance({ userId: 'same-key-user' })).balance?.balanceMillicredits).toBe(1_000n);
  });

  it('leaves the ledger consistent', async () => {
    const report = await verifyLedger(t.app.db);
    expect(report.violations).toEqual([]);
    const drift = await t.app.db.query(`
      select c.code from promo_codes c
       where c.redemptions <> (select count(*) from promo_redemptions r where r.code = c.code)`);
    expect(drift).toEqual([]);
  });
});
