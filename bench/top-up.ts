// `npx tsx bench/top-up.ts`: one daily top-up run over a million FREE accounts.
//
//   1. creates a throwaway PostgreSQL database and migrates it,
//   2. seeds BENCH_TOP_UP_ACCOUNTS FREE accounts with set-based SQL (generate_series):
//      balances spread over 0–10 credits, each non-zero one backed by a GRANT
//      transaction and its postings, so the ledger is the size and shape a real one is,
//   3. copies the seeded database (CREATE DATABASE … TEMPLATE) and times, on the copy, the
//      baseline: ONE SQL statement doing what the job writes for every eligible account
//      (the same locks, daily_top_ups claims, balance updates, transactions and postings,
//      with no batching, cursor or round trips); then drops the copy,
//   4. times one top-up run on the original (the measured figure), then a second run of
//      the same day (which must top up nothing), and VerifyLedger over the result; the
//      job and the baseline must have topped up the same accounts by the same total,
//   5. prints the figures (and one JSON line) and drops the database.
// A CHECKPOINT before each timed part lets neither inherit the other's dirty pages.
//
// Environment: BENCH_TOP_UP_ACCOUNTS (1,000,000), BENCH_TOP_UP_BATCH (10,000 accounts
// per statement), BENCH_KEEP_DB=1 (keep the database), TEST_DATABASE_URL (admin URL, see
// test/support/postgres.ts). bench/run.ts may import runTopUpBench() instead.
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import { loadConfig } from '../src/config.js';
import { DailyTopUps, TOP_UP_BATCH_SIZE_DEFAULT, utcDay } from '../src/ledger/top-up/top-up.js';
import { verifyLedger } from '../src/ledger/verify/verify.js';
import { type Database, openDatabase, type SqlSession } from '../src/storage/database.js';
import { SYSTEM_DAILY_TOP_UP, USER_ACCOUNT_PREFIX } from '../src/ledger/kernel/names.js';
import { ADMIN_URL, createTestDatabase, type TestDatabase } from '../test/support/postgres.js';

const MUSE_CONFIG = fileURLToPath(new URL('../config/muse.json', import.meta.url));

export interface TopUpBenchOptions {
  accounts: number;
  batchSize: number;
  keepDatabase: boolean;
}

export interface TopUpBenchResult {
  accounts: number;
  batchSize: number;
  seedSeconds: number;
  eligibleAccounts: number;
  toppedUp: number;
  topUpSeconds: number;
  /** Accounts topped up per second of the measured run. */
  rowsPerSecond: number;
  rerunSeconds: number;
  verifySeconds: number;
  verifyOk: boolean;
  /** The one-statement SQL baseline on a copy of the same seeded state, same run. */
  baselineSeconds: number;
  /** Accounts the baseline topped up per second. */
  baselineRowsPerSecond: number;
  /** Job seconds over baseline seconds (1.0 = as fast as one statement). */
  topUpOverBaseline: number;
}

function envInteger(name: string, fallback: number, min: number, max: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) throw new Error(`${name} must be an integer in [${min}, ${max}]`);
  return value;
}

/**
 * Seeds FREE accounts whose balances (0–10,000 milli-credits) their postings back. The
 * seed is not what is measured, so it runs without the service's statement timeout.
 */
async function seed(db: Database, accounts: number): Promise<void> {
  await db.transaction(async (s) => {
    await s.query('set local statement_timeout = 0');
    await seedRows(s, accounts);
  });
  await db.query('analyze');
}

async function seedRows(db: SqlSession, accounts: number): Promise<void> {
  await db.query(
    `insert into user_accounts (user_id, balance_millicredits, plan)
     select 'bench-top-up-' || i, (i::bigint * 7919) % 10001, 'FREE' from generate_series(1, $1::int) as i`,
    [accounts],
  );
  await db.query(`
    with seeded as (
      insert into transactions (user_id, type, amount_millicredits, balance_after_millicredits, reason, idempotency_key)
      select user_id, 'GRANT', balance_millicredits, balance_millicredits, 'bench seed', 'bench-seed'
        from user_accounts where balance_millicredits > 0
      returning id, user_id, amount_millicredits as amount
    )
    insert into postings (transaction_id, account, amount_millicredits)
    select s.id, p.account, p.amount from seeded s
     cross join lateral (values ('system:grants', -s.amount), ('user:' || s.user_id, s.amount)) as p (account, amount)`);
}

/**
 * The baseline: the job's writes for every eligible account in ONE statement (sql.ts's
 * batch statement without its window, cursor and summary), so the gap to the job is what
 * batching, round trips and commits cost.
 */
const BASELINE_SQL = `
  with locked as (
    select a.user_id, a.balance_millicredits as balance from user_accounts a
     where a.plan = 'FREE' and a.balance_millicredits < $2::bigint
       and not exists (select 1 from daily_top_ups d where d.user_id = a.user_id and d.day = $1::date)
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
     where a.user_id = c.user_id
    returning a.user_id, c.transaction_id, $2::bigint - l.balance as amount, a.balance_millicredits as balance_after
  ), txn as (
    insert into transactions (id, user_id, type, amount_millicredits, balance_after_millicredits, reference, reason,
                              idempotency_key)
    select c.transaction_id, c.user_id, 'DAILY_TOP_UP', c.amount, c.balance_after, $1, $5, $4 from credited c
  ), post as (
    insert into postings (transaction_id, account, amount_millicredits)
    select c.transaction_id, p.account, p.amount from credited c
     cross join lateral (values ($3, -c.amount), ('${USER_ACCOUNT_PREFIX}' || c.user_id, c.amount)) as p (account, amount)
  )
  select count(*)::text as accounts, coalesce(sum(amount), 0)::text as total from credited`;

async function baseline(db: Database, day: string, target: bigint): Promise<{ accounts: bigint; total: bigint }> {
  const rows = await db.transaction(async (s) => {
    await s.query('set local statement_timeout = 0');
    return s.query<{ accounts: string; total: string }>(BASELINE_SQL, [
      day, target.toString(), SYSTEM_DAILY_TOP_UP, `daily-top-up:${day}`, 'daily free top-up',
    ]);
  });
  return { accounts: BigInt(rows[0]?.accounts ?? 0), total: BigInt(rows[0]?.total ?? 0) };
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A file-level copy of a database nobody is connected to. */
async function copyDatabase(source: TestDatabase): Promise<TestDatabase> {
  const name = `${source.name}_baseline`;
  await admin((c) => c.query(`create database ${name} template ${source.name} strategy file_copy`));
  const url = new URL(source.url);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    drop: () => admin(async (c) => void (await c.query(`drop database if exists ${name} with (force)`))),
  };
}

const checkpoint = () => admin(async (c) => void (await c.query('checkpoint')));

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const started = process.hrtime.bigint();
  const value = await fn();
  return [value, Number(process.hrtime.bigint() - started) / 1e9];
}

export async function runTopUpBench(options: TopUpBenchOptions): Promise<TopUpBenchResult> {
  const database = await createTestDatabase('billing_bench_top_up');
  let copy: TestDatabase | undefined;
  let db: Database | undefined;
  try {
    const open = (url: string) => openDatabase({ databaseUrl: url, dataDir: 'memory://', poolSizeMax: 2 });
    db = await open(database.url);
    const [, seedSeconds] = await timed(() => seed(db!, options.accounts));
    const catalogue = loadConfig({ BILLING_CONFIG: MUSE_CONFIG }).catalogue;
    const target = catalogue.dailyTopUpTargetMillicredits;
    const eligible = await db.query<{ n: string }>(
      `select count(*)::text as n from user_accounts where plan = 'FREE' and balance_millicredits < $1::bigint`,
      [target.toString()],
    );
    const day = utcDay(new Date());

    // The baseline, on a copy of the seeded state: the template must have no connection.
    await db.close();
    db = undefined;
    copy = await copyDatabase(database);
    const copyDb = await open(copy.url);
    let base: { accounts: bigint; total: bigint };
    let baselineSeconds: number;
    try {
      await checkpoint();
      [base, baselineSeconds] = await timed(() => baseline(copyDb, day, target));
    } finally {
      await copyDb.close();
    }
    await copy.drop();
    copy = undefined;

    db = await open(database.url);
    const topUps = new DailyTopUps(db, catalogue, { batchSize: options.batchSize });
    await checkpoint();
    const [first, topUpSeconds] = await timed(() => topUps.run(day));
    const [second, rerunSeconds] = await timed(() => topUps.run(day));
    if (second.accountsToppedUp !== 0n) throw new Error(`the re-run topped up ${second.accountsToppedUp} accounts`);
    if (base.accounts !== first.accountsToppedUp || base.total !== first.totalMillicredits) {
      throw new Error(`the baseline topped up ${base.accounts} accounts by ${base.total}, the job ${first.accountsToppedUp} by ${first.totalMillicredits}`);
    }
    const [report, verifySeconds] = await timed(() => verifyLedger(db!));
    const toppedUp = Number(first.accountsToppedUp);
    return {
      accounts: options.accounts,
      batchSize: options.batchSize,
      seedSeconds,
      eligibleAccounts: Number(eligible[0]?.n ?? 0),
      toppedUp,
      topUpSeconds,
      rowsPerSecond: toppedUp / topUpSeconds,
      rerunSeconds,
      verifySeconds,
      verifyOk: report.ok,
      baselineSeconds,
      baselineRowsPerSecond: Number(base.accounts) / baselineSeconds,
      topUpOverBaseline: topUpSeconds / baselineSeconds,
    };
  } finally {
    await db?.close();
    await copy?.drop();
    if (options.keepDatabase) process.stderr.write(`kept database ${database.name}\n`);
    else await database.drop();
  }
}

function print(r: TopUpBenchResult): void {
  const lines = [
    `daily top-up over ${r.accounts.toLocaleString('en')} FREE accounts (${r.batchSize.toLocaleString('en')} per statement)`,
    `  seed (generate_series, GRANT + postings)  ${r.seedSeconds.toFixed(1)} s`,
    `  top-up run                                ${r.topUpSeconds.toFixed(2)} s, ${r.toppedUp.toLocaleString('en')} of ` +
      `${r.eligibleAccounts.toLocaleString('en')} eligible accounts, ${Math.round(r.rowsPerSecond).toLocaleString('en')} rows/s`,
    `  baseline: one SQL statement, same state   ${r.baselineSeconds.toFixed(2)} s, ` +
      `${Math.round(r.baselineRowsPerSecond).toLocaleString('en')} rows/s (job ${r.topUpOverBaseline.toFixed(2)}× its time)`,
    `  re-run, same day                          ${r.rerunSeconds.toFixed(2)} s, 0 accounts`,
    `  VerifyLedger                              ${r.verifySeconds.toFixed(1)} s, ${r.verifyOk ? 'ok' : 'VIOLATIONS'}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n${JSON.stringify(r)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const result = await runTopUpBench({
    accounts: envInteger('BENCH_TOP_UP_ACCOUNTS', 1_000_000, 1, 10_000_000),
    batchSize: envInteger('BENCH_TOP_UP_BATCH', TOP_UP_BATCH_SIZE_DEFAULT, 1, 1_000_000),
    keepDatabase: process.env.BENCH_KEEP_DB === '1',
  });
  print(result);
  if (!result.verifyOk || result.toppedUp !== result.eligibleAccounts) process.exitCode = 1;
}
