// The account as every rule sees it, read and locked here. A user's row in user_accounts
// holds the balance, the stored reserved amount, the plan and the entitlements; rules that
// keep state of their own about an account (holds that expired, free operations used
// today) add it through an AccountFacet, so the kernel reads them in the same statement
// without knowing the rules.
import type { Plan } from '../../domain/catalogue.js';
import type { Row, SqlSession } from '../../storage/database.js';
import { toBigint } from '../../storage/rows.js';
import { LOCK_ACCOUNTS_SQL } from './clock.js';
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
  private readonly findSql: string;

  constructor(private readonly facets: readonly AccountFacet[]) {
    this.columns = [
      'a.user_id, a.balance_millicredits::text as balance, a.reserved_millicredits::text as reserved, a.plan, a.entitlements',
      ...facets.map((f) => f.columns),
    ].join(',\n  ');
    this.findSql = `select ${this.columns} from user_accounts a where a.user_id = $1`;
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
    const rows = await s.query(this.findSql, [userId]);
    return rows[0] ? this.map(rows[0]) : undefined;
  }

  /** Reads an account without locking it; a user never seen reads as empty. */
  async read(s: Pick<SqlSession, 'query'>, userId: string): Promise<AccountRow> {
    return (await this.find(s, userId)) ?? this.empty(userId);
  }

  /** Reads accounts without locking them; users never seen read as empty. */
  async readMany(s: Pick<SqlSession, 'query'>, userIds: readonly string[]): Promise<Map<string, AccountRow>> {
    const distinct = [...new Set(userIds)];
    // One user (an idle service) reads with the single-row statement every other read uses.
    const rows = distinct.length === 1
      ? await s.query(this.findSql, distinct)
      : await s.query(`select ${this.columns} from user_accounts a where a.user_id = any($1::text[])`, [distinct]);
    const found = new Map(rows.map((row) => [String(row.user_id), this.map(row)] as const));
    for (const userId of distinct) if (!found.has(userId)) found.set(userId, this.empty(userId));
    return found;
  }

  private empty(userId: string): AccountRow {
    return this.facets.reduce((account, f) => (f.unseen ? f.unseen(account) : account), baseAccount(userId));
  }

  /** Reads an account that must exist (it was just written). */
  async reread(s: Pick<SqlSession, 'query'>, userId: string): Promise<AccountRow> {
    const account = await this.find(s, userId);
    if (!account) throw new Error(`account ${userId} missing right after it was written`);
    return account;
  }

  /**
   * Locks the accounts of `userIds` (creating those never seen) for the rest of the
   * transaction, in user-id order, so two transactions locking overlapping sets take their
   * locks in the same order. Every balance change of a user happens after this lock, so the
   * check-then-write under it is safe. The lock records the clock (clock.ts) once all are held.
   */
  async lockAll(s: SqlSession, userIds: readonly string[]): Promise<{ created: string[] }> {
    // The statement orders the locks; the insert of accounts never seen goes in one order too.
    const distinct = [...new Set(userIds)].sort();
    let locked = await s.query(LOCK_ACCOUNTS_SQL, [distinct]);
    let created: string[] = [];
    if (locked.length < distinct.length) {
      const inserted = await s.query(
        'insert into user_accounts (user_id) select unnest($1::text[]) on conflict (user_id) do nothing returning user_id',
        [distinct],
      );
      created = inserted.map((row) => String(row.user_id));
      locked = await s.query(LOCK_ACCOUNTS_SQL, [distinct]);
    }
    if (locked.length !== distinct.length) throw new Error(`locked ${locked.length} of ${distinct.length} accounts`);
    return { created };
  }

  /** Removes accounts this transaction created and nothing then used (every unit of theirs was refused). */
  async forget(s: SqlSession, userIds: readonly string[]): Promise<void> {
    if (userIds.length > 0) await s.query('delete from user_accounts where user_id = any($1::text[])', [userIds]);
  }

  /**
   * Reads locked accounts and what is recorded under the idempotency keys asked for, and
   * runs the facets' afterLock once per account. Call it in a statement of its own after
   * lockAll: a statement that waited for FOR UPDATE re-reads only the locked row; its joins
   * and subqueries come from the snapshot it started with, before the previous holder of
   * the lock committed (its idempotency record, captured holds, free operations).
   */
  async readLocked(
    s: SqlSession,
    userIds: readonly string[],
    keys: readonly string[],
  ): Promise<Map<string, { account: AccountRow; replays: Map<string, StoredReplay> }>> {
    const rows = await s.query(
      `select ${this.columns},
              (select coalesce(jsonb_agg(jsonb_build_array(k.idempotency_key, k.request_hash, k.result)), '[]'::jsonb)
                 from idempotency_keys k where k.user_id = a.user_id and k.idempotency_key = any($2::text[])) as replays
         from user_accounts a where a.user_id = any($1::text[])`,
      [[...new Set(userIds)], [...new Set(keys)]],
    );
    const read = new Map<string, { account: AccountRow; replays: Map<string, StoredReplay> }>();
    for (const row of rows) {
      const account = this.map(row);
      for (const facet of this.facets) if (facet.afterLock) await facet.afterLock(s, row, account);
      const replays = new Map<string, StoredReplay>();
      for (const [key, requestHash, result] of row.replays as [string, string, unknown][]) replays.set(key, { requestHash, result });
      read.set(account.userId, { account, replays });
    }
    for (const userId of userIds) if (!read.has(userId)) throw new Error(`account ${userId} vanished while being locked`);
    return read;
  }
}
