// The six defects of issue 8, each pinned by a test that failed on the code before its
// fix: history order across digit boundaries, ids above int64, long deadlines, unknown
// JSON fields, JSON decode errors without a typed detail, and captures that did not say
// which hold they captured.
import { Code } from '@connectrpc/connect';
import fc from 'fast-check';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { TransactionType } from '../../gen/billing/v1/types_pb.js';
import { failure, fund, key, useTestApp } from '../support/app.js';

const t = useTestApp();

/** Posts raw bytes to a Connect JSON endpoint and returns the status and parsed body. */
async function postJson(path: string, body: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${t.url}/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body,
  });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

/** The first billing.v1.ErrorDetail of a Connect JSON error body, decoded from its debug form. */
function jsonDetail(json: Record<string, unknown>): Record<string, unknown> | undefined {
  const details = (json.details ?? []) as { type: string; debug?: Record<string, unknown> }[];
  return details.find((d) => d.type === 'billing.v1.ErrorDetail')?.debug;
}

describe('history order and paging', () => {
  it('lists newest first by numeric id across digit boundaries, and pages return every row once', async () => {
    // Interleave two users so that one user's ids cross 9→10 and 99→100 with gaps.
    const user = 'digits';
    const mine: string[] = [];
    for (let i = 0; i < 60; i += 1) {
      mine.push((await fund(t, user, 1_000n)).transaction!.id);
      await fund(t, 'digits-other', 1n);
    }
    expect(mine.some((id) => id.length === 1) && mine.some((id) => id.length === 3)).toBe(true);
    const newestFirst = [...mine].reverse();
    const all = await t.billing.listTransactions({ userId: user, pageSize: 100 });
    expect(all.transactions.map((x) => x.id)).toEqual(newestFirst);
    for (const pageSize of [1, 2, 3, 7, 10, 59]) {
      const seen: string[] = [];
      let pageToken = '';
      do {
        const page = await t.billing.listTransactions({ userId: user, pageSize, pageToken });
        expect(page.transactions.length).toBeLessThanOrEqual(pageSize);
        seen.push(...page.transactions.map((x) => x.id));
        pageToken = page.nextPageToken;
      } while (pageToken !== '');
      expect(seen, `page_size ${pageSize}`).toEqual(newestFirst);
    }
  });
});

describe('paging property', () => {
  // Seeded: PAGING_SEED replays a failure; the seed is printed either way.
  const seed = Number(process.env.PAGING_SEED ?? Date.now() % 2 ** 31);
  const params = { seed, numRuns: Number(process.env.PAGING_RUNS ?? 12), endOnFailure: true };

  it('every transaction that existed when paging started appears exactly once, newest first, with writes in between', async () => {
    console.log(`paging property (transactions): PAGING_SEED=${seed}`);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 25 }),
        fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 12 }),
        async (count, pageSizes, writesBetween) => {
          run += 1;
          const user = `paging-${seed}-${run}`;
          const before: string[] = [];
          for (let i = 0; i < count; i += 1) {
            before.push((await fund(t, user, 1n)).transaction!.id);
            if (i % 3 === 0) await fund(t, `${user}-noise`, 1n);
          }
          const seen: string[] = [];
          let pageToken = '';
          for (let page = 0; ; page += 1) {
            const pageSize = pageSizes[page % pageSizes.length]!;
            const res = await t.billing.listTransactions({ userId: user, pageSize, pageToken });
            expect(res.transactions.length).toBeLessThanOrEqual(pageSize);
            seen.push(...res.transactions.map((x) => x.id));
            for (let w = 0; w < (writesBetween[page] ?? 0); w += 1) await fund(t, user, 1n);
            pageToken = res.nextPageToken;
            if (pageToken === '') break;
          }
          // Rows written while paging are newer than the first page, so they never show up later.
          expect(seen, `seed ${seed}`).toEqual([...before].reverse());
        },
      ),
      params,
    );
  });

  it('every promo code appears exactly once, newest first, with codes created in between', async () => {
    console.log(`paging property (promo codes): PAGING_SEED=${seed}`);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 12 }),
        fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 6 }),
        async (count, pageSizes) => {
          run += 1;
          for (let i = 0; i < count; i += 1) {
            await t.admin.createPromoCode({ code: `P${seed}X${run}X${i}`, amountMillicredits: 1_000n });
          }
          const expected = await allPromoCodes(100);
          const seen: string[] = [];
          let pageToken = '';
          for (let page = 0; ; page += 1) {
            const res = await t.admin.listPromoCodes({ pageSize: pageSizes[page % pageSizes.length]!, pageToken });
            seen.push(...res.promoCodes.map((c) => c.code));
            await t.admin.createPromoCode({ code: `Q${seed}X${run}X${page}`, amountMillicredits: 1_000n });
            pageToken = res.nextPageToken;
            if (pageToken === '') break;
          }
          expect(seen, `seed ${seed}`).toEqual(expected);
          expect(new Set(seen).size).toBe(seen.length);
        },
      ),
      params,
    );
  });
});

/** Every promo code, newest first, read in pages of pageSize. */
async function allPromoCodes(pageSize: number): Promise<string[]> {
  const codes: string[] = [];
  let pageToken = '';
  do {
    const res = await t.admin.listPromoCodes({ pageSize, pageToken });
    codes.push(...res.promoCodes.map((c) => c.code));
    pageToken = res.nextPageToken;
  } while (pageToken !== '');
  return codes;
}

describe('ids above int64', () => {
  const tooBig = '9223372036854775808';

  it('refuses Refund.transaction_id, reservation_id and page tokens past 2^63-1 as INVALID_ARGUMENT naming the field', async () => {
    const user = 'int64-edge';
    await fund(t, user, 10_000n);
    const cases: [Promise<unknown>, string][] = [
      [t.billing.refund({ userId: user, idempotencyKey: key(), transactionId: tooBig, reason: 'x' }), 'transaction_id'],
      [t.billing.release({ userId: user, idempotencyKey: key(), reservationId: tooBig }), 'reservation_id'],
      [
        t.billing.charge({
          userId: user,
          idempotencyKey: key(),
          product: 'muse',
          usage: { case: 'amountMillicredits', value: 1n },
          reservationId: tooBig,
        }),
        'reservation_id',
      ],
      [t.billing.listTransactions({ userId: user, pageToken: Buffer.from(`t1.${tooBig}`).toString('base64url') }), 'page_token'],
    ];
    for (const [call, field] of cases) {
      const { error, detail } = await failure(call);
      expect(error.code, field).toBe(Code.InvalidArgument);
      expect(detail?.reason).toBe(ErrorReason.INVALID_FIELD);
      expect(detail?.field).toBe(field);
    }
    // The largest id is still a valid id: it is just not found.
    const max = await failure(t.billing.refund({ userId: user, idempotencyKey: key(), transactionId: '9223372036854775807', reason: 'x' }));
    expect(max.detail?.reason).toBe(ErrorReason.TRANSACTION_NOT_FOUND);
    const balance = await t.billing.getBalance({ userId: user });
    expect(balance.balance?.balanceMillicredits).toBe(10_000n);
  });
});

describe('deadlines', () => {
  it('caps a 120 s deadline at the server maximum instead of refusing it (gRPC and Connect)', async () => {
    const grpc = await t.billing.getBalance({ userId: 'deadline' }, { timeoutMs: 120_000 });
    expect(grpc.balance?.balanceMillicredits).toBe(0n);
    const connect = await t.billingHttp1.getBalance({ userId: 'deadline' }, { timeoutMs: 120_000 });
    expect(connect.balance?.balanceMillicredits).toBe(0n);
    const raw = await postJson('billing.v1.BillingService/GetBalance', '{"userId":"deadline"}', { 'connect-timeout-ms': '9999999999' });
    expect(raw.status).toBe(200);
  });
});

describe('Connect JSON decoding', () => {
  it('refuses an unknown field by name and changes nothing', async () => {
    const user = 'typo-user';
    await fund(t, user, 700n);
    const typo = await postJson(
      'billing.v1.BillingService/Charge',
      JSON.stringify({ userId: user, idempotencyKey: key(), product: 'muse', amountMillicredits: '1000', allowPartail: true }),
    );
    expect(typo.status).toBe(400);
    expect(typo.json.code).toBe('invalid_argument');
    expect(jsonDetail(typo.json)).toMatchObject({ reason: 'ERROR_REASON_INVALID_FIELD', field: 'allowPartail' });
    const nested = await postJson(
      'billing.v1.BillingService/Quote',
      JSON.stringify({ userId: user, product: 'muse', tokenUsage: { model: 'gpt-5-mini', tokensInn: '5' } }),
    );
    expect(jsonDetail(nested.json)).toMatchObject({ field: 'token_usage.tokensInn' });
    const balance = await t.billing.getBalance({ userId: user });
    expect(balance.balance?.balanceMillicredits).toBe(700n);
  });

  it('gives every decode failure a typed detail, an accurate message, and counts it', async () => {
    const cases: [string, string, RegExp][] = [
      ['"9223372036854775808"', 'amount_millicredits', /out of range/],
      ['"1.5"', 'amount_millicredits', /not an integer/],
      ['"abc"', 'amount_millicredits', /not an integer/],
      ['"1e3"', 'amount_millicredits', /not an integer/],
      ['9007199254740993', 'amount_millicredits', /string/],
    ];
    for (const [value, field, message] of cases) {
      const body = `{"userId":"dec","idempotencyKey":"k1","product":"muse","amountMillicredits":${value}}`;
      const res = await postJson('billing.v1.BillingService/Charge', body);
      expect(res.json.code, value).toBe('invalid_argument');
      expect(String(res.json.message), value).toMatch(message);
      expect(jsonDetail(res.json), value).toMatchObject({ reason: 'ERROR_REASON_INVALID_FIELD', field });
    }
    const bool = await postJson('billing.v1.BillingService/Charge', '{"userId":"dec","allowPartial":"yes"}');
    expect(jsonDetail(bool.json)).toMatchObject({ field: 'allow_partial' });
    const garbage = await postJson('billing.v1.BillingService/Charge', '{"userId":');
    expect(garbage.json.code).toBe('invalid_argument');
    expect(jsonDetail(garbage.json)).toMatchObject({ reason: 'ERROR_REASON_MALFORMED_REQUEST' });
    const metrics = await t.app.metrics.registry.metrics();
    const counted = /billing_rpc_calls_total\{procedure="billing\.v1\.BillingService\/Charge",code="invalid_argument"\} (\d+)/.exec(metrics);
    expect(Number(counted?.[1])).toBeGreaterThanOrEqual(cases.length + 2);
    const rows = await t.app.db.query("select 1 from user_accounts where user_id = 'dec'");
    expect(rows).toHaveLength(0);
  });
});

describe('captures', () => {
  it('records the captured hold on the charge transaction and shows it in history', async () => {
    const user = 'capture-user';
    await fund(t, user, 10_000n);
    const hold = await t.billing.reserve({ userId: user, idempotencyKey: key(), product: 'muse', amount: { case: 'amountMillicredits', value: 3_000n } });
    const reservationId = hold.reservation!.id;
    const charged = await t.billing.charge({
      userId: user,
      idempotencyKey: key(),
      product: 'muse',
      usage: { case: 'amountMillicredits', value: 2_000n },
      reservationId,
    });
    expect(charged.transaction?.reservationId).toBe(reservationId);
    const plain = await t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: { case: 'amountMillicredits', value: 1n } });
    expect(plain.transaction?.reservationId).toBe('');
    const history = await t.billing.listTransactions({ userId: user, types: [TransactionType.CHARGE] });
    expect(history.transactions.map((x) => x.reservationId)).toEqual(['', reservationId]);
  });
});

describe('found by the bank and model tests', () => {
  it('a capture that waited for the account lock past the hold\'s expiry finds it expired', async () => {
    // The capture's transaction begins before the hold expires, then waits for the lock
    // while it does. Judged by the transaction's start (now()) it captured a hold that had
    // expired before it could lock, and its concurrent copies disagreed on the outcome.
    const user = 'expiry-wait';
    await fund(t, user, 10_000n);
    const hold = await t.billing.reserve({ userId: user, idempotencyKey: key(), product: 'muse', amount: { case: 'amountMillicredits', value: 2_000n }, ttlSeconds: 1 });
    const blocker = new pg.Client({ connectionString: t.database!.url });
    await blocker.connect();
    try {
      await blocker.query('begin');
      await blocker.query('select 1 from user_accounts where user_id = $1 for update', [user]);
      const capture = failure(
        t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: { case: 'amountMillicredits', value: 1_000n }, reservationId: hold.reservation!.id }),
      );
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      await blocker.query('commit');
      const { detail } = await capture;
      expect(detail?.reason).toBe(ErrorReason.RESERVATION_EXPIRED);
    } finally {
      await blocker.end();
    }
    const after = await t.billing.getBalance({ userId: user });
    expect(after.balance).toMatchObject({ balanceMillicredits: 10_000n, reservedMillicredits: 0n });
  });

  it('an expired hold of 0 cannot be captured', async () => {
    const user = 'zero-hold';
    await t.admin.setPlan({ userId: user, plan: 3 }); // PLAN_ADMIN: every hold is 0
    const hold = await t.billing.reserve({ userId: user, idempotencyKey: key(), product: 'muse', amount: { case: 'amountMillicredits', value: 1n }, ttlSeconds: 1 });
    expect(hold.reservation?.amountMillicredits).toBe(0n);
    await t.app.db.query("update reservations set expires_at = now() - interval '1 second' where id = $1", [hold.reservation!.id]);
    const { detail } = await failure(
      t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: { case: 'amountMillicredits', value: 5n }, reservationId: hold.reservation!.id }),
    );
    expect(detail?.reason).toBe(ErrorReason.RESERVATION_EXPIRED);
  });
});
