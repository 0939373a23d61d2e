// Ledger transactions as stored: the row type and how a row is read. The history
// (history/), refunds (credits/) and the write (posting-sql.ts) share these columns.
import type { Row } from '../../storage/database.js';
import { toBigint } from '../../storage/rows.js';
import type { TransactionType } from './names.js';
import { priceRecord } from './replay.js';
import type { PriceBreakdown } from './views.js';

export interface TransactionRow {
  id: string;
  userId: string;
  type: TransactionType;
  amountMillicredits: bigint;
  balanceAfterMillicredits: bigint;
  product: string;
  operation: string;
  reference: string;
  reason: string;
  idempotencyKey: string;
  metadata: Record<string, string>;
  waivedReason?: string;
  refundedTransactionId?: string;
  reservationId?: string;
  /** A charge's price breakdown (transactions.price, in the replay record's bigint form); absent otherwise. */
  price?: PriceBreakdown;
  createdAtMs: number;
}

/**
 * The select list that mapTransaction reads, over `transactions t`; without the price, which a
 * reader that wants it selects too (`t.price`; history/sql.ts).
 */
export const TRANSACTION_COLUMNS = `t.id::text as id, t.user_id, t.type, t.amount_millicredits::text as amount,
  t.balance_after_millicredits::text as balance_after, t.product, t.operation, t.reference, t.reason, t.idempotency_key,
  t.metadata, t.waived_reason, t.refunded_transaction_id::text as refunded_id, t.reservation_id::text as reservation_id,
  floor(extract(epoch from t.created_at) * 1000)::text as created_ms`;

export function mapTransaction(row: Row): TransactionRow {
  const base: TransactionRow = {
    id: String(row.id),
    userId: String(row.user_id),
    type: row.type as TransactionType,
    amountMillicredits: toBigint(row.amount),
    balanceAfterMillicredits: toBigint(row.balance_after),
    product: String(row.product),
    operation: String(row.operation),
    reference: String(row.reference),
    reason: String(row.reason),
    idempotencyKey: String(row.idempotency_key ?? ''),
    metadata: (row.metadata as Record<string, string> | null) ?? {},
    createdAtMs: Number(row.created_ms),
  };
  if (typeof row.waived_reason === 'string') base.waivedReason = row.waived_reason;
  if (typeof row.refunded_id === 'string') base.refundedTransactionId = row.refunded_id;
  if (typeof row.reservation_id === 'string') base.reservationId = row.reservation_id;
  if (row.price !== null && row.price !== undefined) base.price = priceRecord.parse(row.price);
  return base;
}
