// The one unit of work behind every change of a user's money or holds: lock the account →
// replay or refuse a used idempotency key → let the rule decide → write (a balanced ledger
// transaction, or a change that moves no money) and record the result under the key. Units
// that arrive together share one database transaction and one commit (batch.ts).
import type { Catalogue } from '../../domain/catalogue.js';
import { BillingError } from '../../domain/errors.js';
import type { Database, SqlSession } from '../../storage/database.js';
import { type AccountFacet, type AccountRow, AccountStore } from './account-sql.js';
import { BATCH_LANES_DEFAULT, BATCH_UNITS_MAX_DEFAULT, type BatchOptions, Batches, type Step, type Unit } from './batch.js';
import type { StoredReplay } from './idempotency-sql.js';
import type { LedgerObserver } from './observer.js';
import type { LedgerWrite } from './posting-sql.js';
import { Reads } from './reads.js';
import { decodeReplay, encodeReplay, type ReplayKind } from './replay.js';
import { balanceView, type BalanceView, type TransactionView } from './views.js';

interface MutationKey {
  userId: string;
  idempotencyKey: string;
  /** requestHash() of the validated request. */
  requestHash: string;
  /** The operation named in requestHash ('Charge', 'Grant', …); replays are counted by it. */
  operation: string;
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
  private readonly batches: Batches;
  private readonly reads: Reads;

  constructor(
    readonly db: Database,
    readonly catalogue: Catalogue,
    facets: readonly AccountFacet[],
    batching: Partial<BatchOptions> = {},
    observer: LedgerObserver = {},
  ) {
    this.accounts = new AccountStore(facets);
    // Each unit is admitted on its own (storage/admission.ts); a batch carries admitted units.
    this.batches = new Batches(db.unadmitted ?? db, this.accounts, {
      lanes: batching.lanes ?? BATCH_LANES_DEFAULT,
      unitsMax: batching.unitsMax ?? BATCH_UNITS_MAX_DEFAULT,
    }, observer);
    // Each read is admitted on its own, like each unit; a read statement carries admitted reads.
    this.reads = new Reads(db.unadmitted ?? db, this.accounts);
  }

  /** How the units of work were batched since start (batch.ts). */
  get batchStats(): Readonly<Batches['stats']> {
    return { ...this.batches.stats };
  }

  /** How balance reads were coalesced since start (reads.ts). */
  get readStats(): Readonly<Reads['stats']> {
    return { ...this.reads.stats };
  }

  /** The balance of a user as things stand, without locking; 0 on FREE for a user never seen. */
  async balance(userId: string): Promise<BalanceView> {
    return balanceView(this.catalogue, await this.db.admit(() => this.reads.read(userId)));
  }

  /**
   * One idempotent ledger transaction. `decide` runs under the account's row lock and may
   * run statements of its own first (capture a hold, count a free operation); the ledger
   * write and the idempotency record then go in with the batch's (batch.ts).
   */
  post<R extends { transaction: TransactionView }>(
    kind: ReplayKind<R>,
    key: MutationKey,
    decide: (s: SqlSession, account: AccountRow) => Promise<Decision<R>>,
  ): Promise<R> {
    return this.submit(kind, key, async (s, account) => {
      const { write, result, afterWrite } = await decide(s, account);
      assertBalanced(write);
      return {
        result,
        write: { ...write, userId: key.userId, idempotencyKey: key.idempotencyKey, requestHash: key.requestHash, replayJson: encodeReplay(kind, result) },
        ...(afterWrite ? { afterWrite } : {}),
        placed: (id, createdAtMs) => {
          result.transaction.id = id;
          result.transaction.createdAtMs = createdAtMs;
        },
      };
    });
  }

  /** One idempotent change that moves no money (a hold placed or released). */
  record<R>(kind: ReplayKind<R>, key: MutationKey, apply: (s: SqlSession, account: AccountRow) => Promise<R>): Promise<R> {
    return this.submit(kind, key, async (s, account) => {
      const result = await apply(s, account);
      return { result, replayJson: encodeReplay(kind, result) };
    });
  }

  /**
   * Runs a unit under the user's account lock unless its key already has a result, in the
   * next batch of the account's lane. A BillingError from the unit rolls back what it did
   * and leaves no trace under the key.
   */
  private submit<R>(kind: ReplayKind<R>, key: MutationKey, decide: (s: SqlSession, account: AccountRow) => Promise<Step>): Promise<R> {
    const unit: Unit = { ...key, decide, replay: (stored) => replayOrRefuse(kind, key, stored) };
    return this.db.admit(() => this.batches.run(unit) as Promise<R>);
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
