// `npx tsx bench/top-up.ts`: one daily top-up run over a million FREE accounts.
//
//   1. creates a throwaway PostgreSQL database and migrates it,
//   2. seeds BENCH_TOP_UP_ACCOUNTS FREE accounts with set-based SQL (generate_series):
//      balances spread over 0–10 credits, each non-zero one backed by a GRANT
//      transaction and its postings, so the ledger is the size and shape a real one is,
//   3. times one top-up run (the measured figure), then a second run of the same day
//      (which must top up nothing), and VerifyLedger over the result,
//   4. prints the figures (and one JSON line) and drops the database.
//
// Environment: BENCH_TOP_UP_ACCOUNTS (1,000,000), BENCH_TOP_UP_BATCH (10,000 accounts
// per statement), BENCH_KEEP_DB=1 (keep the database), TEST_DATABASE_URL (admin URL, see
// test/support/postgres.ts). bench/run.ts may import runTopUpBench() instead.
import { fileURLToPath, pathToFileURL } from 'node:url';
import { loadConfig } from '../src/config.js';
import { DailyTopUps, TOP_UP_BATCH_SIZE_DEFAULT, utcDay } from '../src/ledger/top-up/top-up.js';
import { verifyLedger } from '../src/ledger/verify/verify.js';
import { type Database, openDatabase, type SqlSession } from '../src/storage/database.js';
import { createTestDatabase } from '../test/support/postgres.js';

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

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const started = process.hrtime.bigint();
  const value = await fn();
  return [value, Number(process.hrtime.bigint() - started) / 1e9];
}

export async function runTopUpBench(options: TopUpBenchOptions): Promise<TopUpBenchResult> {
  const database = await createTestDatabase('billing_bench_top_up');
  const db = await openDatabase({ databaseUrl: database.url, dataDir: 'memory://', poolSizeMax: 2 });
  try {
    const [, seedSeconds] = await timed(() => seed(db, options.accounts));
    const catalogue = loadConfig({ BILLING_CONFIG: MUSE_CONFIG }).catalogue;
    const eligible = await db.query<{ n: string }>(
      `select count(*)::text as n from user_accounts where plan = 'FREE' and balance_millicredits < $1::bigint`,
      [catalogue.dailyTopUpTargetMillicredits.toString()],
    );
    const topUps = new DailyTopUps(db, catalogue, { batchSize: options.batchSize });
    const day = utcDay(new Date());
    const [first, topUpSeconds] = await timed(() => topUps.run(day));
    const [second, rerunSeconds] = await timed(() => topUps.run(day));
    if (second.accountsToppedUp !== 0n) throw new Error(`the re-run topped up ${second.accountsToppedUp} accounts`);
    const [report, verifySeconds] = await timed(() => verifyLedger(db));
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
    };
  } finally {
    await db.close();
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
