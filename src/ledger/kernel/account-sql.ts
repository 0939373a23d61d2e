// The account as every rule sees it, read and locked here. A user's row in user_accounts
// holds the balance, the stored reserved amount, the plan and the entitlements; rules that
// keep state of their own about an account (holds that expired, free operations used
// today) add it through an AccountFacet, so the kernel reads them in the same statement
// without knowing the rules.
import type { Plan } from '../../domain/catalogue.js';
import type { Row, SqlSession } from '../../storage/database.js';
import { toBigint } from '../../storage/rows.js';
import { LOCK_ACCOUNT_SQL } from './clock.js';
import type { StoredReplay } from './idempotency-sql.js';

export interface AccountRow {
  userId: string;
  balanceMillicredits: bigint;
  /** What holds keep from being spent now (the holds facet nets out expired holds). */
  reservedMillicredits: bigint;
  plan: Plan;
  /** Sorted. */
  entitlements: string[];
  /** Daily free operations left today (the free-operations facet). */
  freeOperationsRemaining: bigint;
}

/** A rule's contribution to the account read. */
export interface AccountFacet {
  /**
   * Select-list expressions over `user_accounts a`, judged at AS_OF (clock.ts), each aliased
   * with a name unique to the facet.
   */
  readonly columns: string;
  /** Folds the facet's columns into the account state. */
  read(row: Row, account: AccountRow): AccountRow;
  /**
   * Runs once the account is locked, before the operation decides, with the row just read
   * (e.g. ends expired holds so the stored amounts match what counts).
   */
  afterLock?(s: SqlSession, row: Row, account: AccountRow): Promise<void>;
  /** The facet's part of an account never written (no row to read). */
  unseen?(account: AccountRow): AccountRow;
}

/**
 * The kernel's part of an account: what user_accounts stores. A facet fills in the rest;
 * without the free-operations facet no operation is free (fail closed).
 */
function baseAccount(userId: string): AccountRow {
  return { userId, balanceMillicredits: 0n, reservedMillicredits: 0n, plan: 'FREE', entitlements: [], freeOperationsRemaining: 0n };
}

/** Reads and locks accounts with a fixed set of facets. */
export class AccountStore {
  private readonly columns: string;

  constructor(private readonly facets: readonly AccountFacet[]) {
    this.columns = [
      'a.user_id, a.balance_millicredits::text as balance, a.reserved_millicredits::text as reserved, a.plan, a.entitlements',
      ...facets.map((f) => f.columns),
    ].join(',\n  ');
  }

  private map(row: Row): AccountRow {
    const base: AccountRow = {
      ...baseAccount(String(row.user_id)),
      balanceMillicredits: toBigint(row.balance),
      reservedMillicredits: toBigint(row.reserved),
      plan: row.plan as Plan,
      entitlements: [...((row.entitlements as string[] | null) ?? [])].sort(),
    };
    return this.facets.reduce((account, facet) => facet.read(row, account), base);
  }

  private async find(s: Pick<SqlSession, 'query'>, userId: string): Promise<AccountRow | undefined> {
    const rows = await s.query(`select ${this.columns} from user_accounts a where a.user_id = $1`, [userId]);
    return rows[0] ? this.map(rows[0]) : undefined;
  }

  /** Reads an account without locking it; a user never seen reads as empty. */
  async read(s: Pick<SqlSession, 'query'>, userId: string): Promise<AccountRow> {
    return (await this.find(s, userId)) ?? this.facets.reduce((account, f) => (f.unseen ? f.unseen(account) : account), baseAccount(userId));
  }

  /** Reads an account that must exist (it was just written). */
  async reread(s: Pick<SqlSession, 'query'>, userId: string): Promise<AccountRow> {
    const account = await this.find(s, userId);
    if (!account) throw new Error(`account ${userId} missing right after it was written`);
    return account;
  }

  /**
   * Locks the user's account row (creating it if needed) for the rest of the transaction,
   * and returns any result already recorded under the idempotency key. Every balance change
   * of the user happens after this lock, so the check-then-write below it is safe.
   *
   * Two statements: the lock (which also records the clock, clock.ts), then the read. A
   * statement that waited for FOR UPDATE re-reads only the locked row; its joins and
   * subqueries come from the snapshot it started with, before the previous holder of the lock
   * committed (its idempotency record, captured holds, free operations). The read runs in a
   * new statement, with a snapshot taken while the lock is held.
   */
  async lock(s: SqlSession, userId: string, idempotencyKey: string): Promise<{ account: AccountRow; replay?: StoredReplay }> {
    let locked = await s.query(LOCK_ACCOUNT_SQL, [userId]);
    if (!locked[0]) {
      await s.query('insert into user_accounts (user_id) values ($1) on conflict (user_id) do nothing', [userId]);
      locked = await s.query(LOCK_ACCOUNT_SQL, [userId]);
    }
    const rows = await s.query(
      `select ${this.columns}, k.request_hash, k.result
         from user_accounts a
         left join idempotency_keys k on k.user_id = a.user_id and k.idempotency_key = $2
        where a.user_id = $1`,
      [userId, idempotencyKey],
    );
    const row = rows[0];
    if (!locked[0] || !row) throw new Error(`account ${userId} vanished while being locked`);
    const account = this.map(row);
    for (const facet of this.facets) if (facet.afterLock) await facet.afterLock(s, row, account);
    return typeof row.request_hash === 'string'
      ? { account, replay: { requestHash: row.request_hash, result: row.result } }
      : { account };
  }
}
