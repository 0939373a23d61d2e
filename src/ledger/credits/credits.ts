// Grants and refunds: a backend credits a user, from system:grants (a SKU of the
// catalogue or an explicit amount) or back from a product's revenue against one of the
// user's charges, never more than remains of it. Both are audited (audit/audit.ts): the row
// goes in after the ledger transaction, as a statement of the unit's own (kernel/batch.ts
// afterWrite: it names the new transaction's id), so it commits or rolls back with it.
import { BillingError, invalidField } from '../../domain/errors.js';
import { sortedMetadata, unchecked } from '../../domain/request.js';
import { type Audit, type AuditAction, auditEvent, type AuditEvent, type AuditState, AuditTrail } from '../audit/audit.js';
import type { AccountRow } from '../kernel/account-sql.js';
import { creditDecision, TRANSACTION_RESULT } from '../kernel/credit.js';
import { requestHash } from '../kernel/idempotency-sql.js';
import { revenueAccount, SYSTEM_GRANTS } from '../kernel/names.js';
import { wasReplayed } from '../kernel/replay.js';
import type { Decision, Kernel } from '../kernel/unit-of-work.js';
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

/** The event of a unit's audit row, once written: published if the unit commits and was not a replay. */
interface PendingAudit {
  event?: AuditEvent;
}

export class Credits {
  constructor(
    private readonly kernel: Kernel,
    private readonly trail: AuditTrail = new AuditTrail(),
  ) {}

  async grant(input: GrantInput, audit?: Audit): Promise<TransactionResult> {
    const { userId, idempotencyKey, reference, reason } = input;
    const metadata = sortedMetadata(input.metadata);
    const { amount, sku } = this.resolveGrant(input);
    // A grant of a SKU is explained by the SKU; an explicit amount needs a reason.
    if (sku === '' && reason === '') throw invalidField('reason', 'is required');
    const hash = requestHash('Grant', [sku, amount, reason, reference, metadata]);
    const pending: PendingAudit = {};
    const result = await this.kernel.post(TRANSACTION_RESULT, { userId, idempotencyKey, requestHash: hash, operation: 'Grant' }, async (_s, account) => {
      const decision = creditDecision(this.kernel.catalogue, account, 'GRANT', SYSTEM_GRANTS, amount, {
        userId,
        product: '',
        operation: sku,
        reference,
        reason,
        idempotencyKey,
        metadata,
      });
      return this.audited(audit, 'Grant', account, decision, { sku, reason, reference }, pending);
    });
    return this.settled(result, pending);
  }

  /**
   * The decision with its audit row (balance before → after) written once its transaction
   * is, in the same database transaction; unchanged without an audit.
   */
  private audited(
    audit: Audit | undefined,
    action: AuditAction,
    account: AccountRow,
    decision: Decision<TransactionResult>,
    facts: AuditState,
    pending: PendingAudit,
  ): Decision<TransactionResult> {
    if (!audit) return decision;
    const before = { balanceMillicredits: account.balanceMillicredits.toString() };
    return {
      ...decision,
      afterWrite: async (s, transactionId) => {
        const after = {
          balanceMillicredits: decision.write.balanceAfterMillicredits.toString(),
          amountMillicredits: decision.write.amountMillicredits.toString(),
          transactionId,
          ...facts,
        };
        const event = auditEvent(audit, action, { kind: 'user', userId: account.userId }, before, after);
        await this.trail.record(s, event);
        // A batch that fails after this runs the unit again: the last event written is the one committed.
        pending.event = event;
      },
    };
  }

  /** Publishes the audit event of a committed unit; a replay wrote none and publishes none. */
  private settled(result: TransactionResult, pending: PendingAudit): TransactionResult {
    if (pending.event && !wasReplayed(result)) this.trail.published(pending.event);
    return result;
  }

  private resolveGrant(input: GrantInput): { amount: bigint; sku: string } {
    const grant = input.grant;
    if (!grant) throw unchecked('a grant without sku or amount');
    if (grant.kind === 'amount') return { amount: grant.amountMillicredits, sku: '' };
    const amount = this.kernel.catalogue.skus.get(grant.sku);
    if (amount === undefined) throw invalidField('sku', `unknown SKU "${grant.sku}"`, 'UNKNOWN_SKU');
    return { amount, sku: grant.sku };
  }

  async refund(input: RefundInput, audit?: Audit): Promise<TransactionResult> {
    const { userId, idempotencyKey, reason } = input;
    const requested = input.amountMillicredits;
    const hash = requestHash('Refund', [input.transactionId, requested, reason]);
    const pending: PendingAudit = {};
    const result = await this.kernel.post(TRANSACTION_RESULT, { userId, idempotencyKey, requestHash: hash, operation: 'Refund' }, async (s, account) => {
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
      const decision = creditDecision(this.kernel.catalogue, account, 'REFUND', revenueAccount(found.charge.product), amount, {
        userId,
        product: found.charge.product,
        operation: found.charge.operation,
        reference: found.charge.reference,
        reason,
        idempotencyKey,
        metadata: {},
        refundedTransactionId: found.charge.id,
      });
      const audited = { refundedTransactionId: found.charge.id, product: found.charge.product, reason };
      return this.audited(audit, 'Refund', account, decision, audited, pending);
    });
    return this.settled(result, pending);
  }
}
