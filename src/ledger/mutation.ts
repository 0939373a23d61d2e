// The one unit of work behind every change of a user's money or holds: lock the account,
// replay or refuse a used idempotency key, let the operation decide and write, record the
// result under the key — all in one database transaction.
import { createHash } from 'node:crypto';
import { BillingError } from '../domain/errors.js';
import { type Database, sqlState, type SqlSession } from '../storage/database.js';
import { insertIdempotency } from '../storage/holds-sql.js';
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

/** What a ledger operation decided under the lock: the write and the result it returns. */
export interface Decision<R extends { transaction: TransactionRow }> {
  write: Omit<LedgerWrite, 'userId' | 'idempotencyKey' | 'requestHash' | 'result'>;
  /** The result, with a placeholder transaction id and time filled in after the write. */
  result: R;
  /** Rows that must reference the new transaction (e.g. a promo redemption), same transaction. */
  afterWrite?: (s: SqlSession, transactionId: string) => Promise<void>;
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
 * Runs `body` under the user's account lock unless the key already has a result. The body
 * must record its result under the key in the same transaction; a concurrent duplicate
 * that committed first makes that insert fail, and its result is replayed instead. A
 * BillingError from the body rolls everything back and leaves no trace under the key.
 */
async function runIdempotent<R>(
  db: Database,
  key: MutationKey,
  body: (s: SqlSession, account: AccountRow) => Promise<R>,
): Promise<R> {
  try {
    return await db.transaction(async (s) => {
      const { account, replay } = await lockAccount(s, key.userId, key.idempotencyKey);
      return replay ? replayOrRefuse<R>(key, replay) : body(s, account);
    });
  } catch (error) {
    const { code, constraint } = sqlState(error);
    if (code === '23505' && constraint === 'idempotency_keys_pkey') {
      const replay = await findIdempotent(db, key.userId, key.idempotencyKey);
      if (replay) return replayOrRefuse<R>(key, replay);
    }
    throw error;
  }
}

/**
 * One idempotent ledger transaction. `decide` runs under the account's row lock and may
 * run statements of its own first (capture a hold, count a free operation); the ledger
 * write and the idempotency record then go in as one statement.
 */
export function mutate<R extends { transaction: TransactionRow }>(
  db: Database,
  key: MutationKey,
  decide: (s: SqlSession, account: AccountRow) => Promise<Decision<R>>,
): Promise<R> {
  return runIdempotent(db, key, async (s, account) => {
    const { write, result, afterWrite } = await decide(s, account);
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
    if (afterWrite) await afterWrite(s, stored.id);
    return result;
  });
}

/** One idempotent change that moves no money (a hold placed or released). */
export function mutateHolds<R>(
  db: Database,
  key: MutationKey,
  apply: (s: SqlSession, account: AccountRow) => Promise<R>,
): Promise<R> {
  return runIdempotent(db, key, async (s, account) => {
    const result = await apply(s, account);
    await insertIdempotency(s, {
      userId: key.userId,
      idempotencyKey: key.idempotencyKey,
      requestHash: key.requestHash,
      resultJson: JSON.stringify(result, bigintReplacer),
    });
    return result;
  });
}

/** Double entry: the postings of a transaction sum to zero, none of them zero. */
function assertBalanced(write: Decision<{ transaction: TransactionRow }>['write']): void {
  const sum = write.postings.reduce((total, p) => total + p.amountMillicredits, 0n);
  if (sum !== 0n) throw new Error(`unbalanced postings (sum ${sum}) for a ${write.type}`);
  if (write.postings.some((p) => p.amountMillicredits === 0n)) throw new Error('zero posting');
}
