// Posting a ledger transaction: the balance update, the transaction row, its postings and
// the idempotency record, in one statement inside the unit of work (unit-of-work.ts).
import type { SqlSession } from '../../storage/database.js';
import { toBigint } from '../../storage/rows.js';
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

/**
 * Writes one ledger transaction in one statement. Returns the new transaction's id and
 * time. Throws if the stored balance disagrees with what the caller computed.
 */
export async function appendTransaction(s: SqlSession, w: LedgerWrite): Promise<{ id: string; createdAtMs: number }> {
  const rows = await s.query(
    `with acct as (
       update user_accounts
          set balance_millicredits = balance_millicredits + $2::bigint,
              updated_at = now()
        where user_id = $1
        returning balance_millicredits
     ), txn as (
       insert into transactions (user_id, type, amount_millicredits, balance_after_millicredits, product, operation,
                                 reference, reason, idempotency_key, metadata, waived_reason, refunded_transaction_id,
                                 reservation_id)
       select $1, $3, $2::bigint, acct.balance_millicredits, $4, $5, $6, $7, $8, $9::jsonb, $10, $11::bigint, $16::bigint
         from acct
       returning id, balance_after_millicredits, created_at
     ), post as (
       insert into postings (transaction_id, account, amount_millicredits)
       select txn.id, p.account, p.amount from txn, unnest($12::text[], $13::bigint[]) as p (account, amount)
     ), idem as (
       insert into idempotency_keys (user_id, idempotency_key, request_hash, result)
       select $1, $8, $14,
              jsonb_set(jsonb_set($15::jsonb, '{transaction,id}', to_jsonb(txn.id::text)),
                        '{transaction,createdAtMs}', to_jsonb(floor(extract(epoch from txn.created_at) * 1000)::bigint))
         from txn
     )
     select id::text as id, balance_after_millicredits::text as balance_after,
            floor(extract(epoch from created_at) * 1000)::text as created_ms
       from txn`,
    [
      w.userId,
      w.amountMillicredits.toString(),
      w.type,
      w.product,
      w.operation,
      w.reference,
      w.reason,
      w.idempotencyKey,
      JSON.stringify(w.metadata),
      w.waivedReason ?? null,
      w.refundedTransactionId ?? null,
      w.postings.map((p) => p.account),
      w.postings.map((p) => p.amountMillicredits.toString()),
      w.requestHash,
      w.replayJson,
      w.reservationId ?? null,
    ],
  );
  const row = rows[0];
  if (!row) throw new Error(`ledger write for ${w.userId} updated no account`);
  const balanceAfter = toBigint(row.balance_after);
  if (balanceAfter !== w.balanceAfterMillicredits) {
    throw new Error(`ledger drift for ${w.userId}: expected balance ${w.balanceAfterMillicredits}, stored ${balanceAfter}`);
  }
  return { id: String(row.id), createdAtMs: Number(row.created_ms) };
}
