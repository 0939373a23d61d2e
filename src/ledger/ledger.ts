// The ledger's operations: read balances and history, charge, grant and refund. Each
// validates its input, then runs one unit of work (mutation.ts) against the database.
import type { Catalogue } from '../domain/catalogue.js';
import { BillingError, invalidField } from '../domain/errors.js';
import { minBigint } from '../domain/money.js';
import { type PriceBreakdown, priceUsage, type Usage, type WaivedReason } from '../domain/pricing.js';
import {
  checkAmount,
  checkId,
  checkIdempotencyKey,
  checkMetadata,
  checkName,
  checkPageSize,
  checkText,
  checkUserId,
  isId,
  REASON_LENGTH_MAX,
  REFERENCE_LENGTH_MAX,
} from '../domain/validation.js';
import type { Database } from '../storage/database.js';
import {
  type AccountRow,
  findChargeForRefund,
  listTransactions,
  readAccount,
  type TransactionRow,
  type TransactionType,
  userAccount,
} from '../storage/ledger-sql.js';
import { addFreeUsage, settleReservation } from '../storage/holds-sql.js';
import { creditDecision, placeholderTransaction } from './credit.js';
import { checkReservationId, lockActiveHold } from './holds.js';
import { mutate, requestHash } from './mutation.js';
import { cutPage, pageCodec } from './paging.js';
import { asEstimate, checkUsage } from './usage.js';
import {
  balanceView,
  type BalanceView,
  type ChargeResult,
  emptyAccount,
  pricingSubject,
  type TransactionResult,
} from './views.js';

export const SYSTEM_GRANTS = 'system:grants';
export function revenueAccount(product: string): string {
  return `system:revenue:${product}`;
}

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

export interface GrantInput {
  userId: string;
  idempotencyKey: string;
  grant: { kind: 'sku'; sku: string } | { kind: 'amount'; amountMillicredits: bigint } | undefined;
  reason: string;
  reference: string;
  metadata: Record<string, string>;
}

export interface RefundInput {
  userId: string;
  idempotencyKey: string;
  transactionId: string;
  /** 0 means all that remains. */
  amountMillicredits: bigint;
  reason: string;
}

export interface ListInput {
  userId: string;
  pageSize: number;
  pageToken: string;
  types: readonly TransactionType[];
}

const TRANSACTION_PAGES = pageCodec('t1.', isId);

export class Ledger {
  constructor(
    private readonly db: Database,
    readonly catalogue: Catalogue,
  ) {}

  /** An unknown user reads as 0 on the FREE plan; nothing is created. */
  async getBalance(userId: string): Promise<BalanceView> {
    checkUserId(userId);
    const account = (await readAccount(this.db, userId)) ?? emptyAccount(userId);
    return balanceView(this.catalogue, account);
  }

  async listTransactions(input: ListInput): Promise<{ transactions: TransactionRow[]; nextPageToken: string }> {
    checkUserId(input.userId);
    const pageSize = checkPageSize(input.pageSize);
    const beforeId = TRANSACTION_PAGES.decode(input.pageToken);
    const rows = await listTransactions(this.db, input.userId, {
      ...(beforeId ? { beforeId } : {}),
      types: input.types,
      limit: pageSize + 1,
    });
    const { page, nextPageToken } = cutPage(rows, pageSize, TRANSACTION_PAGES, (row) => row.id);
    return { transactions: page, nextPageToken };
  }

  /** Prices a usage for the user as things stand, without charging or locking. */
  async quote(input: QuoteInput): Promise<QuoteResult> {
    const userId = checkUserId(input.userId);
    checkName(input.product, 'product');
    const usage = checkUsage(asEstimate(input.usage));
    const account = (await readAccount(this.db, userId)) ?? emptyAccount(userId);
    const priced = priceUsage(this.catalogue, usage, pricingSubject(this.catalogue, account));
    return {
      costMillicredits: priced.chargeMillicredits,
      price: priced.price,
      ...(priced.waivedReason ? { waivedReason: priced.waivedReason } : {}),
    };
  }

  async charge(input: ChargeInput): Promise<ChargeResult> {
    const userId = checkUserId(input.userId);
    const idempotencyKey = checkIdempotencyKey(input.idempotencyKey);
    const product = checkName(input.product, 'product');
    const usage = checkUsage(input.usage);
    const reference = checkText(input.reference, 'reference', REFERENCE_LENGTH_MAX, false);
    const metadata = checkMetadata(input.metadata);
    const reservationId = input.reservationId ? checkReservationId(input.reservationId) : '';
    // Unknown models and operations are refused before any lock is taken.
    if (usage.kind !== 'amount') priceUsage(this.catalogue, usage, { plan: 'PRO', entitlements: [], freeOperationsRemaining: 0n });
    const hash = requestHash('Charge', [product, usage, reservationId, input.allowPartial, reference, metadata]);
    return mutate<ChargeResult>(this.db, { userId, idempotencyKey, requestHash: hash }, async (s, account) => {
      const hold = reservationId ? await lockActiveHold(s, userId, reservationId) : undefined;
      const held = hold?.amountMillicredits ?? 0n;
      const priced = priceUsage(this.catalogue, usage, pricingSubject(this.catalogue, account));
      // A captured hold is released first: its amount is available to this charge.
      const available = account.balanceMillicredits - account.reservedMillicredits + held;
      const cost = priced.chargeMillicredits;
      if (cost > available && !input.allowPartial) {
        throw new BillingError(
          'INSUFFICIENT_BALANCE',
          `insufficient balance: the charge needs ${cost} milli-credits, ${available} available`,
          { requiredMillicredits: cost, availableMillicredits: available },
        );
      }
      const charged = minBigint(cost, available);
      if (hold) await settleReservation(s, hold, 'CAPTURED', true);
      if (priced.freeOperationsUsed > 0n) await addFreeUsage(s, userId, priced.freeOperationsUsed);
      const after: AccountRow = {
        ...account,
        balanceMillicredits: account.balanceMillicredits - charged,
        reservedMillicredits: account.reservedMillicredits - held,
        freeOperationsUsedToday: account.freeOperationsUsedToday + priced.freeOperationsUsed,
      };
      const transaction = placeholderTransaction({
        userId,
        type: 'CHARGE',
        amountMillicredits: -charged,
        balanceAfterMillicredits: after.balanceMillicredits,
        product,
        operation: priced.operation,
        reference,
        reason: '',
        idempotencyKey,
        metadata,
        ...(priced.waivedReason ? { waivedReason: priced.waivedReason } : {}),
        ...(hold ? { reservationId: hold.id } : {}),
      });
      const result: ChargeResult = {
        transaction,
        chargedMillicredits: charged,
        shortfallMillicredits: cost - charged,
        ...(priced.waivedReason ? { waivedReason: priced.waivedReason } : {}),
        price: priced.price,
        balance: balanceView(this.catalogue, after),
      };
      return {
        result,
        write: {
          ...transaction,
          reservedDeltaMillicredits: -held,
          postings: charged > 0n
            ? [
                { account: userAccount(userId), amountMillicredits: -charged },
                { account: revenueAccount(product), amountMillicredits: charged },
              ]
            : [],
        },
      };
    });
  }

  async grant(input: GrantInput): Promise<TransactionResult> {
    const userId = checkUserId(input.userId);
    const idempotencyKey = checkIdempotencyKey(input.idempotencyKey);
    const reference = checkText(input.reference, 'reference', REFERENCE_LENGTH_MAX, false);
    const metadata = checkMetadata(input.metadata);
    const { amount, sku } = this.resolveGrant(input);
    const reason = checkText(input.reason, 'reason', REASON_LENGTH_MAX, sku === '');
    const hash = requestHash('Grant', [sku, amount, reason, reference, metadata]);
    return mutate<TransactionResult>(this.db, { userId, idempotencyKey, requestHash: hash }, async (_s, account) =>
      creditDecision(this.catalogue, account, 'GRANT', SYSTEM_GRANTS, amount, {
        userId,
        product: '',
        operation: sku,
        reference,
        reason,
        idempotencyKey,
        metadata,
      }),
    );
  }

  private resolveGrant(input: GrantInput): { amount: bigint; sku: string } {
    const grant = input.grant;
    if (!grant) throw invalidField('grant', 'one of sku or amount_millicredits is required');
    if (grant.kind === 'amount') return { amount: checkAmount(grant.amountMillicredits), sku: '' };
    // Checked before the lookup: the refusal below quotes the name.
    checkName(grant.sku, 'sku');
    const amount = this.catalogue.skus.get(grant.sku);
    if (amount === undefined) throw invalidField('sku', `unknown SKU "${grant.sku}"`, 'UNKNOWN_SKU');
    return { amount, sku: grant.sku };
  }

  async refund(input: RefundInput): Promise<TransactionResult> {
    const userId = checkUserId(input.userId);
    const idempotencyKey = checkIdempotencyKey(input.idempotencyKey);
    checkId(input.transactionId, 'transaction_id', 'transaction');
    const requested = input.amountMillicredits === 0n ? 0n : checkAmount(input.amountMillicredits);
    const reason = checkText(input.reason, 'reason', REASON_LENGTH_MAX, true);
    const hash = requestHash('Refund', [input.transactionId, requested, reason]);
    return mutate<TransactionResult>(this.db, { userId, idempotencyKey, requestHash: hash }, async (s, account) => {
      const found = await findChargeForRefund(s, userId, input.transactionId);
      if (!found) {
        throw new BillingError('TRANSACTION_NOT_FOUND', `transaction ${input.transactionId} not found for this user`, {
          field: 'transaction_id',
          subject: input.transactionId,
        });
      }
      if (found.charge.type !== 'CHARGE') {
        throw new BillingError('NOT_A_CHARGE', `transaction ${input.transactionId} is a ${found.charge.type}, not a charge`, {
          field: 'transaction_id',
          subject: input.transactionId,
        });
      }
      const remaining = -found.charge.amountMillicredits - found.refundedMillicredits;
      const amount = requested === 0n ? remaining : requested;
      if (amount > remaining || amount === 0n) {
        throw new BillingError(
          'REFUND_EXCEEDS_CHARGE',
          `refund of ${amount} milli-credits exceeds the ${remaining} that remain of the charge`,
          { field: 'amount_millicredits', requiredMillicredits: amount, availableMillicredits: remaining, subject: input.transactionId },
        );
      }
      return creditDecision(this.catalogue, account, 'REFUND', revenueAccount(found.charge.product), amount, {
        userId,
        product: found.charge.product,
        operation: found.charge.operation,
        reference: found.charge.reference,
        reason,
        idempotencyKey,
        metadata: {},
        refundedTransactionId: found.charge.id,
      });
    });
  }
}
