// The one unit of work behind every balance change: lock the account, replay or refuse a
// used idempotency key, let the operation decide, write everything in one statement.
import { createHash } from 'node:crypto';
import { BillingError } from '../domain/errors.js';
import { type Database, sqlState, type SqlSession } from '../storage/database.js';
import {
  type AccountRow,
  appendTransaction,
  bigintReplacer,
  findIdempotent,
  type IdempotentReplay,
  type LedgerWrite,
  lockAccount,
  reviveBigints,
  type TransactionRow,
} from '../storage/ledger-sql.js';

/** A stable fingerprint of a validated request: same request, same hash. */
export function requestHash(operation: string, fields: readonly unknown[]): string {
  return createHash('sha256').update(JSON.stringify([operation, ...fields], bigintReplacer)).digest('hex');
}

export interface MutationKey {
  userId: string;
  idempotencyKey: string;
  requestHash: string;
}

/** What an operation decided under the lock: the write and the result it will return. */
export interface Decision<R extends { transaction: TransactionRow }> {
  write: Omit<LedgerWrite, 'userId' | 'idempotencyKey' | 'requestHash' | 'result'>;
  /** The result, with a placeholder transaction id and time filled in after the write. */
  result: R;
}

function replayOrRefuse<R>(key: MutationKey, replay: IdempotentReplay): R {
  if (replay.requestHash !== key.requestHash) {
    throw new BillingError(
      'IDEMPOTENCY_KEY_REUSED',
      `idempotency_key "${key.idempotencyKey}" was already used by this user for a different request`,
      { field: 'idempotency_key' },
    );
  }
  return reviveBigints<R>(replay.result);
}

/**
 * Runs one idempotent balance change. `decide` runs under the account's row lock and may
 * run extra statements (e.g. capture a hold) before returning its decision; it throws a
 * BillingError to refuse, which rolls everything back and records nothing under the key.
 */
export async function mutate<R extends { transaction: TransactionRow }>(
  db: Database,
  key: MutationKey,
  decide: (s: SqlSession, account: AccountRow) => Promise<Decision<R>>,
): Promise<R> {
  try {
    return await db.transaction(async (s) => {
      const { account, replay } = await lockAccount(s, key.userId, key.idempotencyKey);
      if (replay) return replayOrRefuse<R>(key, replay);
      const { write, result } = await decide(s, account);
      assertBalanced(write);
      const stored = await appendTransaction(s, {
        ...write,
        userId: key.userId,
        idempotencyKey: key.idempotencyKey,
        requestHash: key.requestHash,
        result,
      });
      result.transaction.id = stored.id;
      result.transaction.createdAtMs = stored.createdAtMs;
      return result;
    });
  } catch (error) {
    // A concurrent duplicate committed first: its key row made our insert fail. Replay it.
    const { code, constraint } = sqlState(error);
    if (code === '23505' && constraint === 'idempotency_keys_pkey') {
      const replay = await findIdempotent(db, key.userId, key.idempotencyKey);
      if (replay) return replayOrRefuse<R>(key, replay);
    }
    throw error;
  }
}

/** Double entry: the postings of a transaction sum to zero and move the user's balance. */
function assertBalanced(write: Decision<{ transaction: TransactionRow }>['write']): void {
  const sum = write.postings.reduce((total, p) => total + p.amountMillicredits, 0n);
  if (sum !== 0n) throw new Error(`unbalanced postings (sum ${sum}) for a ${write.type}`);
  if (write.postings.some((p) => p.amountMillicredits === 0n)) throw new Error('zero posting');
}
