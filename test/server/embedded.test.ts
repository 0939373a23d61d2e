// Smoke test of the core RPCs on the embedded database (PGlite in memory): the quick
// start's database, with its single connection shared by concurrent requests.
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { failure, key, outcome, refusal, refused, startTestApp, type TestApp } from '../support/app.js';

let t: TestApp;

beforeAll(async () => {
  // 40 charges at once: past the default admission bound (32); see test/server/db-faults.test.ts.
  t = await startTestApp({ embedded: true, env: { DATABASE_WORK_MAX: '256' } });
});

afterAll(async () => {
  await t?.close();
});

describe('embedded database', () => {
  it('runs GetBalance, Grant, Charge, Refund and ListTransactions', async () => {
    expect(t.app.db.kind).toBe('pglite');
    const user = 'embedded-user';
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(0n);
    const granted = await t.billing.grant({ userId: user, idempotencyKey: key(), grant: { case: 'sku', value: 'boost_110' } });
    expect(granted.balance?.balanceMillicredits).toBe(110_000n);
    const charged = await t.billing.charge({
      userId: user,
      idempotencyKey: key(),
      product: 'muse',
      usage: { case: 'operation', value: { name: 'midi.generate', quantity: 2n } },
    });
    expect(charged.chargedMillicredits).toBe(2_000n);
    const refunded = await t.billing.refund({ userId: user, idempotencyKey: key(), transactionId: charged.transaction!.id, reason: 'smoke' });
    expect(refunded.balance?.balanceMillicredits).toBe(110_000n);
    const history = await t.billingHttp1.listTransactions({ userId: user });
    expect(history.transactions.map((tx) => tx.amountMillicredits)).toEqual([2_000n, -2_000n, 110_000n]);
  });

  it('serialises concurrent charges on its one connection without overdrawing', async () => {
    const user = 'embedded-hot';
    await t.billing.grant({ userId: user, idempotencyKey: key(), grant: { case: 'amountMillicredits', value: 10_000n }, reason: 'r' });
    const outcomes = await Promise.all(
      Array.from({ length: 40 }, () =>
        outcome(t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: { case: 'amountMillicredits', value: 1_000n } })),
      ),
    );
    expect(outcomes.filter((o) => o.ok)).toHaveLength(10);
    const lost = outcomes.filter((o) => !o.ok);
    expect(lost).toHaveLength(30);
    for (const o of lost) expect(refusal(o)).toBe(refused(Code.FailedPrecondition, ErrorReason.INSUFFICIENT_BALANCE));
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(0n);
    const { error, detail } = await failure(
      t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: { case: 'amountMillicredits', value: 1n } }),
    );
    expect([error.code, detail?.reason]).toEqual([Code.FailedPrecondition, ErrorReason.INSUFFICIENT_BALANCE]);
    const same = key('dup');
    const dupes = await Promise.all(
      Array.from({ length: 8 }, () =>
        t.billing.grant({ userId: user, idempotencyKey: same, grant: { case: 'amountMillicredits', value: 3n }, reason: 'r' }),
      ),
    );
    expect(new Set(dupes.map((d) => d.transaction?.id)).size).toBe(1);
    expect((await verifyLedger(t.app.db)).violations).toEqual([]);
  });
});
