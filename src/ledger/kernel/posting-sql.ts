// Posting ledger transactions: the balance updates, the transaction rows, their postings and
// idempotency records, in one statement inside a batch of units of work (batch.ts).
import type { SqlSession } from '../../storage/database.js';
import { toBigint } from '../../storage/rows.js';
import { bigintReplacer } from './replay.js';
import type { TransactionRow } from './transactions-sql.js';

interface Posting {
  account: string;
  amountMillicredits: bigint;
}

/** Everything one ledger transaction writes, computed under the account lock. */
export interface LedgerWrite extends Omit<TransactionRow, 'id' | 'createdAtMs'> {
  requestHash: string;
  postings: Posting[];
  /** The replay record (replay.ts) for the key, minus the transaction's id and time, which this write fills in. */
  replayJson: string;
}

/** Where a written transaction landed. */
export interface Stored {
  id: string;
  createdAtMs: number;
}

/**
 * Writes ledger transactions in one statement: each account's balance moves by the sum of
 * its writes, then the transaction rows (in the order given, so ids follow it), their
 * postings and their idempotency records. A user's writes must come in the order they were
 * decided, each with a distinct idempotency key. Returns where each landed, in order.
 * Throws if a stored balance disagrees with the chain of balances the writes computed.
 */
export async function appendTransactions(s: SqlSession, writes: readonly LedgerWrite[]): Promise<Stored[]> {
  if (writes.length === 0) return [];
  const column = <T>(pick: (w: LedgerWrite) => T) => writes.map(pick);
  const postings = writes.flatMap((w, i) => w.postings.map((p) => ({ ord: i + 1, ...p })));
  const rows = await s.query(
    `with w as (
       select * from unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
                            $9::text[], $10::text[], $11::text[], $12::bigint[], $13::bigint[], $14::text[], $15::text[], $16::text[])
         with ordinality as w (user_id, amount, balance_after, type, product, operation, reference, reason, idempotency_key,
                               metadata, waived_reason, refunded_transaction_id, reservation_id, request_hash, replay, price, ord)
     ), acct as (
       update user_accounts a
          set balance_millicredits = a.balance_millicredits + d.delta,
              updated_at = now()
         from (select user_id, sum(amount)::bigint as delta from w group by user_id) d
        where a.user_id = d.user_id
       returning a.user_id, a.balance_millicredits, d.delta
     ), txn as (
       insert into transactions (user_id, type, amount_millicredits, balance_after_millicredits, product, operation,
                                 reference, reason, idempotency_key, metadata, waived_reason, refunded_transaction_id,
                                 reservation_id, price)
       select user_id, type, amount, balance_after, product, operation, reference, reason, idempotency_key, metadata::jsonb,
              waived_reason, refunded_transaction_id, reservation_id, price::jsonb
         from w order by ord
       returning id, user_id, idempotency_key, created_at
     ), placed as (
       select w.*, txn.id, txn.created_at from w join txn on txn.user_id = w.user_id and txn.idempotency_key = w.idempotency_key
     ), post as (
       insert into postings (transaction_id, account, amount_millicredits)
       select placed.id, p.account, p.amount
         from unnest($17::bigint[], $18::text[], $19::bigint[]) with ordinality as p (owner, account, amount, n)
         join placed on placed.ord = p.owner
        order by p.n
     ), idem as (
       insert into idempotency_keys (user_id, idempotency_key, request_hash, result)
       select user_id, idempotency_key, request_hash,
              jsonb_set(jsonb_set(replay::jsonb, '{transaction,id}', to_jsonb(id::text)),
                        '{transaction,createdAtMs}', to_jsonb(floor(extract(epoch from created_at) * 1000)::bigint))
         from placed
     )
     select placed.ord::int as ord, placed.id::text as id, floor(extract(epoch from placed.created_at) * 1000)::text as created_ms,
            acct.balance_millicredits::text as balance, acct.delta::text as delta
       from placed join acct on acct.user_id = placed.user_id
      order by placed.ord`,
    [
      column((w) => w.userId),
      column((w) => w.amountMillicredits.toString()),
      column((w) => w.balanceAfterMillicredits.toString()),
      column((w) => w.type),
      column((w) => w.product),
      column((w) => w.operation),
      column((w) => w.reference),
      column((w) => w.reason),
      column((w) => w.idempotencyKey),
      column((w) => JSON.stringify(w.metadata)),
      column((w) => w.waivedReason ?? null),
      column((w) => w.refundedTransactionId ?? null),
      column((w) => w.reservationId ?? null),
      column((w) => w.requestHash),
      column((w) => w.replayJson),
      column((w) => (w.price ? JSON.stringify(w.price, bigintReplacer) : null)),
      postings.map((p) => p.ord),
      postings.map((p) => p.account),
      postings.map((p) => p.amountMillicredits.toString()),
    ],
  );
  if (rows.length !== writes.length) throw new Error(`ledger write of ${writes.length} transactions stored ${rows.length}`);
  // Each user's chain: the balance before the writes, then each write's amount in order.
  const running = new Map<string, bigint>();
  return rows.map((row, i) => {
    const w = writes[i]!;
    if (Number(row.ord) !== i + 1) throw new Error('ledger write returned its transactions out of order');
    const before = running.get(w.userId) ?? toBigint(row.balance) - toBigint(row.delta);
    const after = before + w.amountMillicredits;
    if (after !== w.balanceAfterMillicredits) {
      throw new Error(`ledger drift for ${w.userId}: expected balance ${w.balanceAfterMillicredits}, stored ${after}`);
    }
    running.set(w.userId, after);
    return { id: String(row.id), createdAtMs: Number(row.created_ms) };
  });
}
