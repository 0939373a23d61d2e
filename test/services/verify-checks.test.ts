// VerifyLedger's refund and capture checks: clean on real traffic, and each finds the row
// that breaks it when the database is corrupted on purpose (bypassing the service).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { key } from '../support/app.js';
import { startServices, type TestServices } from '../support/services.js';

let t: TestServices;

beforeAll(async () => {
  t = await startServices();
});

afterAll(async () => {
  await t?.close();
});

async function chargeAndRefund(user: string) {
  await t.billing.grant({ userId: user, idempotencyKey: key(), grant: { case: 'amountMillicredits', value: 10_000n }, reason: 'funds' });
  const hold = await t.billing.reserve({ userId: user, idempotencyKey: key(), product: 'muse', amount: { case: 'amountMillicredits', value: 2_000n } });
  const charge = await t.billing.charge({
    userId: user,
    idempotencyKey: key(),
    product: 'muse',
    usage: { case: 'amountMillicredits', value: 1_500n },
    reservationId: hold.reservation!.id,
  });
  const refund = await t.billing.refund({ userId: user, idempotencyKey: key(), transactionId: charge.transaction!.id, amountMillicredits: 500n, reason: 'r' });
  return { hold: hold.reservation!.id, charge: charge.transaction!.id, refund: refund.transaction!.id };
}

function invariants(report: Awaited<ReturnType<typeof verifyLedger>>) {
  return report.violations.map((v) => [v.invariant, v.transactionId]);
}

describe('VerifyLedger refund and capture checks', () => {
  it('is clean after captures and refunds', async () => {
    await chargeAndRefund('vc-clean');
    const report = await verifyLedger(t.app.db);
    expect(report.violations).toEqual([]);
  });

  it('finds refunds that add up to more than their charge', async () => {
    const { charge, refund } = await chargeAndRefund('vc-over');
    // The refund now claims more than its charge debited; the cap check names the charge.
    await t.app.db.query(`update transactions set amount_millicredits = 2000 where id = $1`, [refund]);
    expect(invariants(await verifyLedger(t.app.db))).toContainEqual(['refunds_within_charge', charge]);
    await t.app.db.query(`update transactions set amount_millicredits = 500 where id = $1`, [refund]);
  });

  it('finds a capture whose hold is not captured', async () => {
    const { hold, charge } = await chargeAndRefund('vc-hold');
    await t.app.db.query(`update reservations set status = 'RELEASED' where id = $1`, [hold]);
    expect(invariants(await verifyLedger(t.app.db))).toContainEqual(['capture_matches_hold', charge]);
    await t.app.db.query(`update reservations set status = 'CAPTURED' where id = $1`, [hold]);
    expect((await verifyLedger(t.app.db)).violations).toEqual([]);
  });
});
