// Hostile input: every bad field is INVALID_ARGUMENT naming the field, and writes nothing.
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { failure, key, startTestApp, type TestApp } from '../support/app.js';

let t: TestApp;

async function rowCounts(): Promise<string> {
  const rows = await t.app.db.query(`select
    (select count(*) from user_accounts) as a, (select count(*) from transactions) as t,
    (select count(*) from postings) as p, (select count(*) from idempotency_keys) as k`);
  return JSON.stringify(rows[0]);
}

beforeAll(async () => {
  t = await startTestApp();
  await t.billing.grant({ userId: 'victim', idempotencyKey: 'seed', grant: { case: 'amountMillicredits', value: 10_000n }, reason: 'seed' });
});

afterAll(async () => {
  await t?.close();
});

const amount = (value: bigint) => ({ case: 'amountMillicredits' as const, value });
const long = (n: number) => 'x'.repeat(n);

const chargeBase = { userId: 'victim', idempotencyKey: 'c-1', product: 'muse', usage: amount(1n) };
const grantBase = { userId: 'victim', idempotencyKey: 'g-1', grant: amount(1n), reason: 'r' };

interface Case {
  name: string;
  call: () => Promise<unknown>;
  field: string;
  reason?: ErrorReason;
}

const cases: Case[] = [
  { name: 'zero charge', call: () => t.billing.charge({ ...chargeBase, usage: amount(0n) }), field: 'amount_millicredits' },
  { name: 'negative charge', call: () => t.billing.charge({ ...chargeBase, usage: amount(-5n) }), field: 'amount_millicredits' },
  { name: 'charge over 10^12', call: () => t.billing.charge({ ...chargeBase, usage: amount(1_000_000_000_001n) }), field: 'amount_millicredits' },
  { name: 'int64 max charge', call: () => t.billing.charge({ ...chargeBase, usage: amount(9_223_372_036_854_775_807n) }), field: 'amount_millicredits' },
  { name: 'int64 min grant', call: () => t.billing.grant({ ...grantBase, grant: amount(-9_223_372_036_854_775_808n) }), field: 'amount_millicredits' },
  { name: 'zero grant', call: () => t.billing.grant({ ...grantBase, grant: amount(0n) }), field: 'amount_millicredits' },
  { name: 'no usage', call: () => t.billing.charge({ ...chargeBase, usage: { case: undefined } }), field: 'usage' },
  { name: 'empty user id', call: () => t.billing.charge({ ...chargeBase, userId: '' }), field: 'user_id' },
  { name: 'over-long user id', call: () => t.billing.charge({ ...chargeBase, userId: long(129) }), field: 'user_id' },
  { name: 'user id with a slash', call: () => t.billing.getBalance({ userId: 'a/b' }), field: 'user_id' },
  { name: 'user id with unicode', call: () => t.billing.grant({ ...grantBase, userId: 'añb' }), field: 'user_id' },
  { name: 'empty key', call: () => t.billing.charge({ ...chargeBase, idempotencyKey: '' }), field: 'idempotency_key' },
  { name: 'over-long key', call: () => t.billing.grant({ ...grantBase, idempotencyKey: long(256) }), field: 'idempotency_key' },
  { name: 'key with control chars', call: () => t.billing.grant({ ...grantBase, idempotencyKey: 'a\nb' }), field: 'idempotency_key' },
  { name: 'empty product', call: () => t.billing.charge({ ...chargeBase, product: '' }), field: 'product' },
  { name: 'product with spaces', call: () => t.billing.charge({ ...chargeBase, product: 'my product' }), field: 'product' },
  {
    name: 'unknown operation',
    call: () => t.billing.charge({ ...chargeBase, usage: { case: 'operation', value: { name: 'nope.op', quantity: 1n } } }),
    field: 'operation.name',
    reason: ErrorReason.UNKNOWN_OPERATION,
  },
  {
    name: 'negative quantity',
    call: () => t.billing.charge({ ...chargeBase, usage: { case: 'operation', value: { name: 'sample.generate', quantity: -1n } } }),
    field: 'operation.quantity',
  },
  {
    name: 'huge quantity',
    call: () => t.billing.charge({ ...chargeBase, usage: { case: 'operation', value: { name: 'sample.generate', quantity: 10_001n } } }),
    field: 'operation.quantity',
  },
  { name: 'unknown SKU', call: () => t.billing.grant({ ...grantBase, grant: { case: 'sku', value: 'boost_9000' } }), field: 'sku', reason: ErrorReason.UNKNOWN_SKU },
  { name: 'grant with neither', call: () => t.billing.grant({ ...grantBase, grant: { case: undefined } }), field: 'grant' },
  { name: 'amount grant without reason', call: () => t.billing.grant({ ...grantBase, reason: '' }), field: 'reason' },
  { name: 'over-long reference', call: () => t.billing.grant({ ...grantBase, reference: long(256) }), field: 'reference' },
  {
    name: 'too many metadata entries',
    call: () => t.billing.charge({ ...chargeBase, metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) }),
    field: 'metadata',
  },
  { name: 'over-long metadata value', call: () => t.billing.charge({ ...chargeBase, metadata: { k: long(513) } }), field: 'metadata[k]' },
  { name: 'refund of a non-id', call: () => t.billing.refund({ userId: 'victim', idempotencyKey: 'r', transactionId: 'abc', reason: 'x' }), field: 'transaction_id' },
  { name: 'refund with negative amount', call: () => t.billing.refund({ userId: 'victim', idempotencyKey: 'r', transactionId: '1', amountMillicredits: -1n, reason: 'x' }), field: 'amount_millicredits' },
  { name: 'refund without reason', call: () => t.billing.refund({ userId: 'victim', idempotencyKey: 'r', transactionId: '1', reason: '' }), field: 'reason' },
  { name: 'page size over 100', call: () => t.billing.listTransactions({ userId: 'victim', pageSize: 101 }), field: 'page_size' },
  { name: 'negative page size', call: () => t.billing.listTransactions({ userId: 'victim', pageSize: -1 }), field: 'page_size' },
];

describe('hostile input', () => {
  it.each(cases)('$name → INVALID_ARGUMENT naming $field, nothing written', async ({ call, field, reason }) => {
    const before = await rowCounts();
    const { error, detail } = await failure(call());
    expect(error.code).toBe(Code.InvalidArgument);
    expect(detail?.field).toBe(field);
    expect(detail?.reason).toBe(reason ?? ErrorReason.INVALID_FIELD);
    expect(error.rawMessage).toContain(field.split('[')[0]);
    expect(await rowCounts()).toBe(before);
  });

  it('refuses a request body over the configured limit', async () => {
    const res = await fetch(`${t.url}/billing.v1.BillingService/GetBalance`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ userId: long(400_000) }),
    });
    expect(res.ok).toBe(false);
    const body = (await res.json()) as { code: string };
    expect(body.code).toBe('resource_exhausted');
  });

  it('refuses a grant that would take the balance past the account limit', async () => {
    const user = 'rich';
    // 1,000 grants of the largest amount reach the limit of 10^15 exactly.
    for (let batch = 0; batch < 40; batch += 1) {
      await Promise.all(
        Array.from({ length: 25 }, () =>
          t.billing.grant({ userId: user, idempotencyKey: key('rich'), grant: amount(1_000_000_000_000n), reason: 'r' }),
        ),
      );
    }
    const { balance } = await t.billing.getBalance({ userId: user });
    expect(balance?.balanceMillicredits).toBe(1_000_000_000_000_000n);
    const { detail } = await failure(t.billing.grant({ userId: user, idempotencyKey: key(), grant: amount(1n), reason: 'r' }));
    expect(detail?.reason).toBe(ErrorReason.BALANCE_LIMIT_EXCEEDED);
  });
});
