// The time a unit of work judges expiry and the UTC day by.
//
// PostgreSQL's now() is when the transaction began, and a transaction may wait a long time
// for an account lock. Two requests on one account would then judge a hold's expiry out of
// lock order: the one that locked second could capture a hold the first had just found
// expired, because it began earlier. So the account lock (AccountStore.lockAll, account-sql.ts) records the clock at the moment the lock
// is granted, and every statement of the unit of work reads that instant. Outside a unit of
// work (plain reads, the sweeper) it is now().

/** SQL for the instant the account lock was granted in this transaction, else now(). */
export const AS_OF = "coalesce(nullif(current_setting('billing.as_of', true), '')::timestamptz, now())";

/**
 * SQL that locks the account rows of the user ids in $1 (sorted), in that order, and records
 * AS_OF as each lock is granted: the value left is the instant the last lock was held.
 */
export const LOCK_ACCOUNTS_SQL = `select set_config('billing.as_of', clock_timestamp()::text, true) as as_of
  from (select a.user_id from user_accounts a where a.user_id = any($1::text[]) order by a.user_id for update) locked`;
