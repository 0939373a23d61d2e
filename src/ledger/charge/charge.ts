// Charge and Quote. A charge is one decision over a price and, when it captures one, a
// hold: price the usage for the account under its lock (pricing.ts), capture the hold
// (holds/), count the free operations it used (free-operations/), and debit what the
// price asks from what is available, or what is available under allow_partial.
import { z } from 'zod';
import type { Catalogue } from '../../domain/catalogue.js';
import { BillingError } from '../../domain/errors.js';
import { minBigint } from '../../domain/money.js';
import { sortedMetadata } from '../../domain/request.js';
import { addFreeUsage } from '../free-operations/free-operations.js';
import { lockActiveHold } from '../holds/holds.js';
import { settleReservation, type ReservationRow } from '../holds/sql.js';
import type { AccountRow } from '../kernel/account-sql.js';
import { placeholderTransaction } from '../kernel/credit.js';
import { requestHash } from '../kernel/idempotency-sql.js';
import { revenueAccount, userAccount } from '../kernel/names.js';
import { balanceRecord, priceRecord, replayKind, type Same, storedBigint, transactionRecord } from '../kernel/replay.js';
import type { Decision, Kernel } from '../kernel/unit-of-work.js';
import { balanceView, type BalanceView, type TransactionView } from '../kernel/views.js';
import { checkPriceable, type PriceBreakdown, type PricedUsage, priceUsage, type Usage, type WaivedReason } from './pricing.js';
import { asEstimate, normalUsage } from './usage.js';

export interface ChargeInput {
  userId: string;
  idempotencyKey: string;
  product: string;
  usage: Usage | undefined;
  reservationId?: string;
  allowPartial: boolean;
  reference: string;
  metadata: Record<string, string>;
}

export interface ChargeResult {
  transaction: TransactionView;
  chargedMillicredits: bigint;
  shortfallMillicredits: bigint;
  waivedReason?: WaivedReason;
  price: PriceBreakdown;
  balance: BalanceView;
}

export interface QuoteInput {
  userId: string;
  product: string;
  usage: Usage | undefined;
}

export interface QuoteResult {
  costMillicredits: bigint;
  price: PriceBreakdown;
  waivedReason?: WaivedReason;
}

const chargeRecord = z.object({
  transaction: transactionRecord,
  chargedMillicredits: storedBigint,
  shortfallMillicredits: storedBigint,
  waivedReason: z
    .enum(['FINISH_TOOL_CALLS', 'FINISH_ERROR', 'ADMIN_PLAN', 'ENTITLEMENT', 'FREE_DAILY_OPERATION', 'ZERO_PRICE'])
    .optional(),
  price: priceRecord,
  balance: balanceRecord,
});
const chargeMatchesView: Same<z.output<typeof chargeRecord>, ChargeResult> = true;
void chargeMatchesView;

/** The replay record of Charge. */
export const CHARGE_RESULT = replayKind<ChargeResult>('charge', chargeRecord);

export interface ChargeRequest {
  userId: string;
  idempotencyKey: string;
  product: string;
  allowPartial: boolean;
  reference: string;
  metadata: Record<string, string>;
}

/**
 * What a charge writes, given the account under its lock, the usage priced for it and the
 * hold it captures (already ended by the caller). Debits min(price, available), where the
 * hold's amount counts as available; refuses a shortfall unless allow_partial.
 */
export function chargeDecision(
  catalogue: Catalogue,
  request: ChargeRequest,
  account: AccountRow,
  priced: PricedUsage,
  hold: ReservationRow | undefined,
): Decision<ChargeResult> {
  const held = hold?.amountMillicredits ?? 0n;
  const available = account.balanceMillicredits - account.reservedMillicredits + held;
  const cost = priced.chargeMillicredits;
  if (cost > available && !request.allowPartial) {
    throw new BillingError('INSUFFICIENT_BALANCE', `insufficient balance: the charge needs ${cost} milli-credits, ${available} available`, {
      requiredMillicredits: cost,
      availableMillicredits: available,
    });
  }
  const charged = minBigint(cost, available);
  const after: AccountRow = {
    ...account,
    balanceMillicredits: account.balanceMillicredits - charged,
    reservedMillicredits: account.reservedMillicredits - held,
    freeOperationsRemaining: account.freeOperationsRemaining - priced.freeOperationsUsed,
  };
  const waived = priced.waivedReason ? { waivedReason: priced.waivedReason } : {};
  const transaction = placeholderTransaction({
    userId: request.userId,
    type: 'CHARGE',
    amountMillicredits: -charged,
    balanceAfterMillicredits: after.balanceMillicredits,
    product: request.product,
    operation: priced.operation,
    reference: request.reference,
    reason: '',
    idempotencyKey: request.idempotencyKey,
    metadata: request.metadata,
    ...waived,
    ...(hold ? { reservationId: hold.id } : {}),
  });
  return {
    result: {
      transaction,
      chargedMillicredits: charged,
      shortfallMillicredits: cost - charged,
      ...waived,
      price: priced.price,
      balance: balanceView(catalogue, after),
    },
    // The row keeps the price for the history; the reply has it once, as its own `price`.
    write: {
      ...transaction,
      price: priced.price,
      postings: charged > 0n
        ? [
            { account: userAccount(request.userId), amountMillicredits: -charged },
            { account: revenueAccount(request.product), amountMillicredits: charged },
          ]
        : [],
    },
  };
}

export class Charges {
  constructor(private readonly kernel: Kernel) {}

  /** Prices a usage for the user as things stand, without charging or locking. */
  async quote(input: QuoteInput): Promise<QuoteResult> {
    const usage = normalUsage(asEstimate(input.usage));
    const account = await this.kernel.accounts.read(this.kernel.db, input.userId);
    const priced = priceUsage(this.kernel.catalogue, usage, account);
    return {
      costMillicredits: priced.chargeMillicredits,
      price: priced.price,
      ...(priced.waivedReason ? { waivedReason: priced.waivedReason } : {}),
    };
  }

  async charge(input: ChargeInput): Promise<ChargeResult> {
    const { userId, idempotencyKey, product, reference } = input;
    const usage = normalUsage(input.usage);
    const metadata = sortedMetadata(input.metadata);
    const reservationId = input.reservationId ?? '';
    // Unknown models and operations are refused before any lock is taken.
    checkPriceable(this.kernel.catalogue, usage);
    const request: ChargeRequest = { userId, idempotencyKey, product, allowPartial: input.allowPartial, reference, metadata };
    const hash = requestHash('Charge', [product, usage, reservationId, input.allowPartial, reference, metadata]);
    return this.kernel.post(CHARGE_RESULT, { userId, idempotencyKey, requestHash: hash, operation: 'Charge' }, async (s, account) => {
      const hold = reservationId ? await lockActiveHold(s, userId, reservationId) : undefined;
      const priced = priceUsage(this.kernel.catalogue, usage, account);
      const decision = chargeDecision(this.kernel.catalogue, request, account, priced, hold);
      // A captured hold is released first: its amount was available to this charge.
      if (hold) await settleReservation(s, hold, 'CAPTURED');
      if (priced.freeOperationsUsed > 0n) await addFreeUsage(s, userId, priced.freeOperationsUsed);
      return decision;
    });
  }
}
