// The one unit of work behind every change of a user's money or holds, in one database
// transaction: lock the account → replay or refuse a used idempotency key → let the rule
// decide → write (a balanced ledger transaction, or a change that moves no money) and
// record the result under the key.
import type { Catalogue } from '../../domain/catalogue.js';
import { BillingError } from '../../domain/errors.js';
import { type Database, sqlState, type SqlSession } from '../../storage/database.js';
import { type AccountFacet, type AccountRow, AccountStore } from './account-sql.js';
import { findIdempotent, insertIdempotency, type StoredReplay } from './idempotency-sql.js';
import { appendTransaction, type LedgerWrite } from './posting-sql.js';
import { decodeReplay, encodeReplay, type ReplayKind } from './replay.js';
import { balanceView, type BalanceView, type TransactionView } from './views.js';

interface MutationKey {
  userId: string;
  idempotencyKey: string;
  /** requestHash() of the validated request. */
  requestHash: string;
}

/** What a rule decided under the lock: the write and the result it returns. */
export interface Decision<R extends { transaction: TransactionView }> {
  write: Omit<LedgerWrite, 'userId' | 'idempotencyKey' | 'requestHash' | 'replayJson'>;
  /** The result, with a placeholder transaction id and time filled in after the write. */
  result: R;
  /** Rows that must reference the new transaction (e.g. a promo redemption), same transaction. */
  afterWrite?: (s: SqlSession, transactionId: string) => Promise<void>;
}

/** The kernel every rule is built on: the database, the catalogue and the account store. */
export class Kernel {
  readonly accounts: AccountStore;

  constructor(
    readonly db: Database,
    readonly catalogue: Catalogue,
    facets: readonly AccountFacet[],
  ) {
    this.accounts = new AccountStore(facets);
  }

  /** The balance of a user as things stand, without locking; 0 on FREE for a user never seen. */
  async balance(userId: string): Promise<BalanceView> {
    return balanceView(this.catalogue, await this.accounts.read(this.db, userId));
  }

  /**
   * One idempotent ledger transaction. `decide` runs under the account's row lock and may
   * run statements of its own first (capture a hold, count a free operation); the ledger
   * write and the idempotency record then go in as one statement.
   */
  post<R extends { transaction: TransactionView }>(
    kind: ReplayKind<R>,
    key: MutationKey,
    decide: (s: SqlSession, account: AccountRow) => Promise<Decision<R>>,
  ): Promise<R> {
    return this.runIdempotent(kind, key, async (s, account) => {
      const { write, result, afterWrite } = await decide(s, account);
      assertBalanced(write);
      const stored = await appendTransaction(s, {
        ...write,
        userId: key.userId,
        idempotencyKey: key.idempotencyKey,
        requestHash: key.requestHash,
        replayJson: encodeReplay(kind, result),
      });
      result.transaction.id = stored.id;
      result.transaction.createdAtMs = stored.createdAtMs;
      if (afterWrite) await afterWrite(s, stored.id);
      return result;
    });
  }

  /** One idempotent change that moves no money (a hold placed or released). */
  record<R>(kind: ReplayKind<R>, key: MutationKey, apply: (s: SqlSession, account: AccountRow) => Promise<R>): Promise<R> {
    return this.runIdempotent(kind, key, async (s, account) => {
      const result = await apply(s, account);
      await insertIdempotency(s, { ...key, resultJson: encodeReplay(kind, result) });
      return result;
    });
  }

  /**
   * Runs `body` under the user's account lock unless the key already has a result. The body
   * must record its result under the key in the same transaction; a concurrent duplicate
   * that committed first makes that insert fail, and its result is replayed instead. A
   * BillingError from the body rolls everything back and leaves no trace under the key.
   */
  private async runIdempotent<R>(
    kind: ReplayKind<R>,
    key: MutationKey,
    body: (s: SqlSession, account: AccountRow) => Promise<R>,
  ): Promise<R> {
    try {
      return await this.db.transaction(async (s) => {
        const { account, replay } = await this.accounts.lock(s, key.userId, key.idempotencyKey);
        return replay ? replayOrRefuse(kind, key, replay) : body(s, account);
      });
    } catch (error) {
      const { code, constraint } = sqlState(error);
      if (code === '23505' && constraint === 'idempotency_keys_pkey') {
        const replay = await findIdempotent(this.db, key.userId, key.idempotencyKey);
        if (replay) return replayOrRefuse(kind, key, replay);
      }
      throw error;
    }
  }
}

function replayOrRefuse<R>(kind: ReplayKind<R>, key: MutationKey, replay: StoredReplay): R {
  if (replay.requestHash !== key.requestHash) {
    throw new BillingError(
      'IDEMPOTENCY_KEY_REUSED',
      `idempotency_key "${key.idempotencyKey}" was already used by this user for a different request`,
      { field: 'idempotency_key' },
    );
  }
  return decodeReplay(kind, replay.result);
}

/** Double entry: the postings of a transaction sum to zero, none of them zero. */
function assertBalanced(write: Decision<{ transaction: TransactionView }>['write']): void {
  const sum = write.postings.reduce((total, p) => total + p.amountMillicredits, 0n);
  if (sum !== 0n) throw new Error(`unbalanced postings (sum ${sum}) for a ${write.type}`);
  if (write.postings.some((p) => p.amountMillicredits === 0n)) throw new Error('zero posting');
}
