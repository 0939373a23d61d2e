// The history's SQL: a user's transactions, newest first, a keyset page at a time.
import type { SqlSession } from '../../storage/database.js';
import type { TransactionType } from '../kernel/names.js';
import { mapTransaction, TRANSACTION_COLUMNS, type TransactionRow } from '../kernel/transactions-sql.js';

/** One page of a user's history, newest first, strictly older than beforeId if given. */
export async function listTransactions(
  s: Pick<SqlSession, 'query'>,
  userId: string,
  options: { beforeId?: string; types?: readonly TransactionType[]; limit: number; includePrice?: boolean },
): Promise<TransactionRow[]> {
  const rows = await s.query(
    // Qualified column names: a bare "id" in ORDER BY would sort the text alias of the
    // select list ("10" < "9"), while the cursor compares numbers.
    // The price only when asked for: emitting and parsing its jsonb is a good part of a page's cost.
    `select ${TRANSACTION_COLUMNS}${options.includePrice ? ', t.price' : ''} from transactions t
      where t.user_id = $1 and ($2::bigint is null or t.id < $2::bigint)
        and ($3::text[] is null or t.type = any($3::text[]))
      order by t.id desc limit $4`,
    [userId, options.beforeId ?? null, options.types && options.types.length > 0 ? options.types : null, options.limit],
  );
  return rows.map(mapTransaction);
}
