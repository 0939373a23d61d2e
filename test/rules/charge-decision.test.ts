// Rules tier: the charge decision alone, no database and no sockets. For any account,
// price, captured hold and allow_partial, the decision debits min(cost, available) where
// the hold counts as available, refuses a shortfall without allow_partial, and writes
// balanced postings that match the transaction. Seeded: CHARGE_SEED replays a run.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { BillingError } from '../../src/domain/errors.js';
import { chargeDecision } from '../../src/ledger/charge/charge.js';
import type { PricedUsage } from '../../src/ledger/charge/pricing.js';
import type { ReservationRow } from '../../src/ledger/holds/sql.js';
import type { AccountRow } from '../../src/ledger/kernel/account-sql.js';

const SEED = process.env.CHARGE_SEED ? Number(process.env.CHARGE_SEED) : Math.floor(Math.random() * 2 ** 31);
console.log(`charge decision property: CHARGE_SEED=${SEED}`);

const catalogue = loadConfig({ BILLING_CONFIG: 'config/muse.json', BILLING_DATA_DIR: 'memory://' }).catalogue;
const LIMIT = 10n ** 15n;

const scenario = fc
  .record({
    balance: fc.bigInt({ min: 0n, max: LIMIT }),
    reservedShare: fc.bigInt({ min: 0n, max: 100n }),
    heldShare: fc.bigInt({ min: 0n, max: 100n }),
    captures: fc.boolean(),
    cost: fc.bigInt({ min: 0n, max: LIMIT }),
    freeLeft: fc.bigInt({ min: 0n, max: 10n }),
    freeUsedShare: fc.bigInt({ min: 0n, max: 100n }),
    allowPartial: fc.boolean(),
  })
  .map((s) => {
    const reserved = (s.balance * s.reservedShare) / 100n;
    const held = s.captures ? (reserved * s.heldShare) / 100n : undefined;
    return { ...s, reserved, held, freeUsed: (s.freeLeft * s.freeUsedShare) / 100n };
  });

describe('chargeDecision', () => {
  it('debits min(cost, available), counts the hold as available, and balances its postings (property)', () => {
    fc.assert(
      fc.property(scenario, (s) => {
        const account: AccountRow = {
          userId: 'u1',
          balanceMillicredits: s.balance,
          reservedMillicredits: s.reserved,
          plan: 'PRO',
          entitlements: [],
          freeOperationsRemaining: s.freeLeft,
        };
        const priced: PricedUsage = {
          chargeMillicredits: s.cost,
          price: { costMillicredits: s.cost, effectiveTokens: 0n, modelMultiplier: '', tokensPerUnit: 0n, outputWeight: 0n, unroundedCostMillicredits: '', minimumApplied: false, unitPriceMillicredits: 0n, quantity: 0n },
          freeOperationsUsed: s.freeUsed,
          operation: 'op',
        };
        const hold: ReservationRow | undefined = s.held === undefined
          ? undefined
          : { id: '7', userId: 'u1', amountMillicredits: s.held, status: 'ACTIVE', product: 'muse', expiresAtMs: 0, createdAtMs: 0 };
        const request = { userId: 'u1', idempotencyKey: 'k', product: 'muse', allowPartial: s.allowPartial, reference: 'r', metadata: {} };
        const available = s.balance - s.reserved + (s.held ?? 0n);
        let decision;
        try {
          decision = chargeDecision(catalogue, request, account, priced, hold);
        } catch (error) {
          expect(error).toBeInstanceOf(BillingError);
          expect((error as BillingError).reason).toBe('INSUFFICIENT_BALANCE');
          expect((error as BillingError).facts).toMatchObject({ requiredMillicredits: s.cost, availableMillicredits: available });
          expect(s.cost > available && !s.allowPartial).toBe(true);
          return;
        }
        const charged = s.cost < available ? s.cost : available;
        expect(s.cost > available && !s.allowPartial).toBe(false);
        expect(decision.result.chargedMillicredits).toBe(charged);
        expect(decision.result.shortfallMillicredits).toBe(s.cost - charged);
        expect(decision.write.amountMillicredits).toBe(-charged);
        expect(decision.write.balanceAfterMillicredits).toBe(s.balance - charged);
        expect(decision.write.balanceAfterMillicredits >= 0n).toBe(true);
        expect(decision.result.balance.reservedMillicredits).toBe(s.reserved - (s.held ?? 0n));
        expect(decision.result.balance.freeOperationsRemaining).toBe(s.freeLeft - s.freeUsed);
        expect(decision.write.reservationId).toBe(hold?.id);
        const postings = decision.write.postings;
        expect(postings.reduce((sum, p) => sum + p.amountMillicredits, 0n)).toBe(0n);
        expect(postings.every((p) => p.amountMillicredits !== 0n)).toBe(true);
        expect(postings.find((p) => p.account === 'user:u1')?.amountMillicredits ?? 0n).toBe(-charged);
        expect(postings.find((p) => p.account === 'system:revenue:muse')?.amountMillicredits ?? 0n).toBe(charged);
      }),
      { seed: SEED, numRuns: 2000 },
    );
  });
});
