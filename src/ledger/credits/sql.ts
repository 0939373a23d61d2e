// Refunds' SQL: the charge a refund points at, with what has been refunded of it so far.
import type { SqlSession } from '../../storage/database.js';
import { toBigint } from '../../storage/rows.js';
import { mapTransaction, TRANSACTION_COLUMNS, type TransactionRow } from '../kernel/transactions-sql.js';

/** A transaction of the user and how much has been refunded against it, under the account lock. */
export async function findChargeForRefund(
  s: SqlSession,
  userId: string,
  transactionId: string,
): Promise<{ charge: TransactionRow; refundedMillicredits: bigint } | undefined> {
  const rows = await s.query(
    `select ${TRANSACTION_COLUMNS},
       (select coalesce(sum(r.amount_millicredits), 0) from transactions r
         where r.refunded_transaction_id = t.id)::text as refunded
     from transactions t where t.id = $1::bigint and t.user_id = $2`,
    [transactionId, userId],
  );
  const row = rows[0];
  return row ? { charge: mapTransaction(row), refundedMillicredits: toBigint(row.refunded) } : undefined;
}
