// The daily free top-up's SQL, two statements per batch of accounts: a read that bounds the
// batch (its window of user_ids) and one set-based write that tops the window up. Each write
// is its own database transaction, so row locks are held for one statement only and a run
// over a million accounts never holds them all.
import type { SqlSession } from '../../storage/database.js';
import { USER_ACCOUNT_PREFIX } from '../kernel/names.js';

export interface TopUpWindowInput {
  /** The UTC day, "YYYY-MM-DD". */
  day: string;
  targetMillicredits: bigint;
  /** Keyset cursor: only accounts with user_id greater than this ('' for the first window). */
  afterUserId: string;
  batchSize: number;
}

export interface TopUpBatchInput {
  /** The UTC day, "YYYY-MM-DD". */
  day: string;
  targetMillicredits: bigint;
  /** The window: accounts with afterUserId < user_id <= upToUserId. */
  afterUserId: string;
  upToUserId: string;
  /** The system account the credits come from. */
  source: string;
  /** Stored on each top-up transaction; the daily_top_ups primary key is the real guard. */
  idempotencyKey: string;
  reason: string;
}

export interface TopUpBatchResult {
  accountsToppedUp: bigint;
  totalMillicredits: bigint;
}

/*
 * The window: the last user_id of the next batchSize candidates after the cursor, from the
 * statement's snapshot, without locking. It only bounds a batch and advances the cursor,
 * even when every candidate turns out to be taken by a concurrent run by the time its batch
 * runs. OFFSET 0 keeps the NOT EXISTS a probe of daily_top_ups' primary key per candidate:
 * as an anti-join the planner read every claim of the day again for every batch (quadratic;
 * a third of a batch's time by the end of a million accounts).
 */
const TOP_UP_WINDOW_SQL = `
  select max(w.user_id) as last_user_id, count(*)::int as candidates from (
    select a.user_id from user_accounts a
     where a.plan = 'FREE' and a.balance_millicredits < $2::bigint and a.user_id > $3
       and not exists (select 1 from daily_top_ups d where d.user_id = a.user_id and d.day = $1::date offset 0)
     order by a.user_id
     limit $4) w`;

/*
 * How one batch stays correct beside charges, holds and other runs (replicas, re-runs, the
 * other batch of this run, whose window is disjoint):
 *
 * - `scan` reads the window's candidates from the statement's snapshot, without locking.
 *   The window's bounds are in the claims' NOT EXISTS too, so whatever join the planner
 *   picks reads the claims of this window only.
 * - `locked` locks those rows FOR UPDATE in user_id order (the order every multi-row
 *   locker uses, so runs cannot deadlock each other). A row changed by a committed
 *   charge, grant or another run is re-read and re-checked against plan and target, so
 *   `balance` is the value under our lock, which nothing can change until we commit.
 * - `claimed` inserts (user_id, day) into daily_top_ups: the primary key makes a user's
 *   second top-up of the day a no-op, whatever raced it. Only claimed users are credited.
 *   Each claim draws its transaction id here, before the transaction row exists; the
 *   foreign key is checked at the end of the statement, when it does.
 * - `credited` raises the balance by a delta computed under the lock (never a blind
 *   overwrite), and the transaction and its two postings go in with it.
 *
 * A window holds batchSize candidates when it is read, plus the accounts that enter its
 * key range before the batch runs (milliseconds later); a range keeps the planner's
 * estimates of a window near its size even in a cached generic plan.
 */
const TOP_UP_BATCH_SQL = `
  with scan as (
    select a.user_id from user_accounts a
     where a.plan = 'FREE' and a.balance_millicredits < $2::bigint and a.user_id > $3 and a.user_id <= $4
       and not exists (select 1 from daily_top_ups d
                        where d.user_id = a.user_id and d.day = $1::date and d.user_id > $3 and d.user_id <= $4)
  ), locked as (
    select a.user_id, a.balance_millicredits as balance from user_accounts a
     where a.user_id in (select user_id from scan)
       and a.plan = 'FREE' and a.balance_millicredits < $2::bigint
     order by a.user_id
     for update of a
  ), claimed as (
    insert into daily_top_ups (user_id, day, transaction_id)
    select l.user_id, $1::date, nextval(pg_get_serial_sequence('transactions', 'id')) from locked l order by l.user_id
    on conflict (user_id, day) do nothing
    returning user_id, transaction_id
  ), credited as (
    update user_accounts a
       set balance_millicredits = a.balance_millicredits + ($2::bigint - l.balance), updated_at = now()
      from claimed c join locked l on l.user_id = c.user_id
     -- The array form makes the planner probe the primary key for the claimed rows instead
     -- of hashing the whole table on every batch (it cannot estimate a CTE's size).
     where a.user_id = c.user_id and a.user_id = any (array(select user_id from claimed))
    returning a.user_id, c.transaction_id, $2::bigint - l.balance as amount, a.balance_millicredits as balance_after
  ), txn as (
    insert into transactions (id, user_id, type, amount_millicredits, balance_after_millicredits, reference, reason,
                              idempotency_key)
    select c.transaction_id, c.user_id, 'DAILY_TOP_UP', c.amount, c.balance_after, $1, $7, $6 from credited c
  ), post as (
    insert into postings (transaction_id, account, amount_millicredits)
    select c.transaction_id, p.account, p.amount from credited c
     cross join lateral (values ($5, -c.amount), ('${USER_ACCOUNT_PREFIX}' || c.user_id, c.amount)) as p (account, amount)
  )
  select count(*)::text as accounts, coalesce(sum(amount), 0)::text as total from credited`;

export interface TopUpWindow {
  /** The window's upper bound (inclusive). */
  readonly upToUserId: string;
  /** How many candidates it held when read: the run's progress counts them. */
  readonly candidates: number;
}

/** The next window after the cursor; undefined when no candidate is left. */
export async function topUpWindow(s: Pick<SqlSession, 'query'>, input: TopUpWindowInput): Promise<TopUpWindow | undefined> {
  const rows = await s.query(TOP_UP_WINDOW_SQL, [input.day, input.targetMillicredits.toString(), input.afterUserId, input.batchSize]);
  const last = rows[0]?.last_user_id;
  return typeof last === 'string' ? { upToUserId: last, candidates: Number(rows[0]?.candidates ?? 0) } : undefined;
}

/*
 * How many accounts a run for the day has to look at: the candidates of every window, read
 * once at the start for the progress lines' total. Same predicate as the window's.
 */
const TOP_UP_CANDIDATES_SQL = `
  select count(*)::text as candidates from user_accounts a
   where a.plan = 'FREE' and a.balance_millicredits < $2::bigint
     and not exists (select 1 from daily_top_ups d where d.user_id = a.user_id and d.day = $1::date offset 0)`;

/** The number of accounts still to top up for the day (a snapshot; the run may find more or fewer). */
export async function topUpCandidates(s: Pick<SqlSession, 'query'>, day: string, targetMillicredits: bigint): Promise<number> {
  const rows = await s.query(TOP_UP_CANDIDATES_SQL, [day, targetMillicredits.toString()]);
  return Number(rows[0]?.candidates ?? 0);
}

/** Tops up the eligible accounts of one window; one statement, one transaction. */
export async function topUpBatch(s: Pick<SqlSession, 'query'>, input: TopUpBatchInput): Promise<TopUpBatchResult> {
  const rows = await s.query(TOP_UP_BATCH_SQL, [
    input.day,
    input.targetMillicredits.toString(),
    input.afterUserId,
    input.upToUserId,
    input.source,
    input.idempotencyKey,
    input.reason,
  ]);
  const row = rows[0];
  if (!row) throw new Error('top-up batch returned no summary row');
  return { accountsToppedUp: BigInt(String(row.accounts)), totalMillicredits: BigInt(String(row.total)) };
}

/** What the daily top-up did for one UTC day, over every recorded run of it (daily_top_up_days). */
export interface TopUpDayRow {
  day: string;
  accountsToppedUp: bigint;
  totalMillicredits: bigint;
  runs: number;
  failedRuns: number;
  lastStartedAtMs: number;
  lastFinishedAtMs: number;
  lastFailed: boolean;
}

/** One ended run of a day, to add to its row. */
export interface TopUpRunRecord {
  day: string;
  accountsToppedUp: bigint;
  totalMillicredits: bigint;
  failed: boolean;
  startedAtMs: number;
  finishedAtMs: number;
}

/*
 * Adds one ended run to its day's row; one statement. Concurrent runs of the day (replicas)
 * serialise on the row, so the sums stay exact; the "last" columns follow the run that ended
 * last, whichever commits last.
 */
const RECORD_TOP_UP_RUN_SQL = `
  insert into daily_top_up_days as d
    (day, accounts_topped_up, total_millicredits, runs, failed_runs, last_started_at, last_finished_at, last_failed)
  values ($1::date, $2::bigint, $3::bigint, 1, $4::bigint, $5::timestamptz, $6::timestamptz, $7::boolean)
  on conflict (day) do update set
    accounts_topped_up = d.accounts_topped_up + excluded.accounts_topped_up,
    total_millicredits = d.total_millicredits + excluded.total_millicredits,
    runs = d.runs + 1,
    failed_runs = d.failed_runs + excluded.failed_runs,
    last_started_at = case when excluded.last_finished_at >= d.last_finished_at then excluded.last_started_at else d.last_started_at end,
    last_failed = case when excluded.last_finished_at >= d.last_finished_at then excluded.last_failed else d.last_failed end,
    last_finished_at = greatest(d.last_finished_at, excluded.last_finished_at)`;

export async function recordTopUpRun(s: Pick<SqlSession, 'query'>, run: TopUpRunRecord): Promise<void> {
  await s.query(RECORD_TOP_UP_RUN_SQL, [
    run.day,
    run.accountsToppedUp.toString(),
    run.totalMillicredits.toString(),
    run.failed ? 1 : 0,
    new Date(run.startedAtMs).toISOString(),
    new Date(run.finishedAtMs).toISOString(),
    run.failed,
  ]);
}

/** The day whose run ended last, or undefined before any run has ended. */
export async function lastTopUpDay(s: Pick<SqlSession, 'query'>): Promise<TopUpDayRow | undefined> {
  const rows = await s.query(
    `select to_char(day, 'YYYY-MM-DD') as day, accounts_topped_up::text as accounts, total_millicredits::text as total,
            runs::text as runs, failed_runs::text as failed_runs, last_failed,
            floor(extract(epoch from last_started_at) * 1000)::text as started_ms,
            floor(extract(epoch from last_finished_at) * 1000)::text as finished_ms
       from daily_top_up_days order by last_finished_at desc, day desc limit 1`,
  );
  const row = rows[0];
  if (!row) return undefined;
  return {
    day: String(row.day),
    accountsToppedUp: BigInt(String(row.accounts)),
    totalMillicredits: BigInt(String(row.total)),
    runs: Number(row.runs),
    failedRuns: Number(row.failed_runs),
    lastStartedAtMs: Number(row.started_ms),
    lastFinishedAtMs: Number(row.finished_ms),
    lastFailed: row.last_failed === true,
  };
}
