// Grants and refunds: a backend credits a user, from system:grants (a SKU of the
// catalogue or an explicit amount) or back from a product's revenue against one of the
// user's charges, never more than remains of it.
import { BillingError, invalidField } from '../../domain/errors.js';
import {
  checkAmount,
  checkId,
  checkIdempotencyKey,
  checkMetadata,
  checkName,
  checkText,
  checkUserId,
  REASON_LENGTH_MAX,
  REFERENCE_LENGTH_MAX,
} from '../../domain/validation.js';
import { creditDecision, TRANSACTION_RESULT } from '../kernel/credit.js';
import { requestHash } from '../kernel/idempotency-sql.js';
import { revenueAccount, SYSTEM_GRANTS } from '../kernel/names.js';
import type { Kernel } from '../kernel/unit-of-work.js';
import type { TransactionResult } from '../kernel/views.js';
import { findChargeForRefund } from './sql.js';

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

export class Credits {
  constructor(private readonly kernel: Kernel) {}

  async grant(input: GrantInput): Promise<TransactionResult> {
    const userId = checkUserId(input.userId);
    const idempotencyKey = checkIdempotencyKey(input.idempotencyKey);
    const reference = checkText(input.reference, 'reference', REFERENCE_LENGTH_MAX, false);
    const metadata = checkMetadata(input.metadata);
    const { amount, sku } = this.resolveGrant(input);
    const reason = checkText(input.reason, 'reason', REASON_LENGTH_MAX, sku === '');
    const hash = requestHash('Grant', [sku, amount, reason, reference, metadata]);
    return this.kernel.post(TRANSACTION_RESULT, { userId, idempotencyKey, requestHash: hash }, async (_s, account) =>
      creditDecision(this.kernel.catalogue, account, 'GRANT', SYSTEM_GRANTS, amount, {
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
    const amount = this.kernel.catalogue.skus.get(grant.sku);
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
    return this.kernel.post(TRANSACTION_RESULT, { userId, idempotencyKey, requestHash: hash }, async (s, account) => {
      const found = await findChargeForRefund(s, userId, input.transactionId);
      const facts = { field: 'transaction_id', subject: input.transactionId };
      if (!found) throw new BillingError('TRANSACTION_NOT_FOUND', `transaction ${input.transactionId} not found for this user`, facts);
      if (found.charge.type !== 'CHARGE') {
        throw new BillingError('NOT_A_CHARGE', `transaction ${input.transactionId} is a ${found.charge.type}, not a charge`, facts);
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
      return creditDecision(this.kernel.catalogue, account, 'REFUND', revenueAccount(found.charge.product), amount, {
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
