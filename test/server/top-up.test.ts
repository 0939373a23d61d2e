// The daily free top-up against real PostgreSQL: two service processes on one database
// running it at once, re-runs, small overlapping batches, a run racing charges, the date
// rules, the cron job; and subscription invoices granted by SKU.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { Code } from '@connectrpc/connect';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { Plan, TransactionType } from '../../gen/billing/v1/types_pb.js';
import { checkSchedule, scheduleDailyTopUp } from '../../src/jobs/daily-top-up.js';
import { SYSTEM_DAILY_TOP_UP } from '../../src/ledger/kernel/names.js';
import { DailyTopUps, utcDay } from '../../src/ledger/top-up/top-up.js';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { type Database, openDatabase } from '../../src/storage/database.js';
import { awayFromUtcMidnight, failure, key, startTestApp, type TestApp, fund as grantFunds } from '../support/app.js';

const TARGET = 5_000n;
const opened: TestApp[] = [];

/** Two service processes (servers, pools) on one fresh database. */
async function twoApps(): Promise<[TestApp, TestApp]> {
  const a = await startTestApp();
  const b = await startTestApp({ databaseUrl: a.database!.url });
  opened.push(b, a); // closed in this order: the first app drops the database
  return [a, b];
}

afterEach(async () => {
  for (const app of opened.splice(0)) await app.close();
});

function today(): string {
  return utcDay(new Date());
}

async function fund(t: TestApp, userId: string, amount: bigint, plan: Plan = Plan.FREE): Promise<void> {
  await t.admin.setPlan({ userId, plan });
  if (amount > 0n) await grantFunds(t, userId, amount);
}

async function balances(db: Database): Promise<Map<string, bigint>> {
  const rows = await db.query<{ user_id: string; balance: string }>(
    'select user_id, balance_millicredits::text as balance from user_accounts',
  );
  return new Map(rows.map((r) => [r.user_id, BigInt(r.balance)]));
}

async function topUpsOf(db: Database, day: string) {
  return db.query<{ user_id: string; amount: string; balance_after: string; idempotency_key: string; n: number }>(
    `select t.user_id, t.amount_millicredits::text as amount, t.balance_after_millicredits::text as balance_after,
            t.idempotency_key, count(*) over (partition by t.user_id)::int as n
       from transactions t where t.type = 'DAILY_TOP_UP' and t.reference = $1`,
    [day],
  );
}

/** Users whose history does not chain: each balance_after must be the previous one plus the amount. */
async function brokenChains(db: Database): Promise<unknown[]> {
  return db.query(`
    select user_id, id from (
      select user_id, id, amount_millicredits, balance_after_millicredits,
             lag(balance_after_millicredits, 1, 0::bigint) over (partition by user_id order by id) as previous
        from transactions) h
     where previous + amount_millicredits <> balance_after_millicredits`);
}

async function runAll<T>(count: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) await fn(next++);
  }));
}

describe('two service processes topping up the same day at the same time', () => {
  it('raises each FREE balance below 5 credits to 5 exactly once, and leaves everyone else alone', async () => {
    const [a, b] = await twoApps();
    const seeds: [string, bigint, Plan][] = [];
    for (let i = 0; i < 120; i++) seeds.push([`free-${i}`, BigInt((i * 97) % 5_000), Plan.FREE]);
    seeds.push(['free-at-target', TARGET, Plan.FREE], ['free-rich', 7_000n, Plan.FREE], ['free-one-short', 4_999n, Plan.FREE]);
    for (let i = 0; i < 10; i++) seeds.push([`pro-${i}`, BigInt(i * 100), Plan.PRO]);
    seeds.push(['admin-0', 0n, Plan.ADMIN]);
    await runAll(seeds.length, 16, (i) => fund(a, ...seeds[i]!));
    const before = await balances(a.app.db);
    const eligible = seeds.filter(([, amount, plan]) => plan === Plan.FREE && amount < TARGET);
    const expectedTotal = eligible.reduce((sum, [, amount]) => sum + TARGET - amount, 0n);

    const day = today();
    const [ra, rb] = await Promise.all([a.admin.runDailyTopUp({ date: day }), b.admin.runDailyTopUp({ date: day })]);
    expect(ra.accountsToppedUp + rb.accountsToppedUp).toBe(BigInt(eligible.length));
    expect(ra.totalMillicredits + rb.totalMillicredits).toBe(expectedTotal);

    const after = await balances(a.app.db);
    for (const [userId, amount, plan] of seeds) {
      const wanted = plan === Plan.FREE && amount < TARGET ? TARGET : before.get(userId);
      expect(after.get(userId), userId).toBe(wanted);
    }
    const topUps = await topUpsOf(a.app.db, day);
    expect(topUps).toHaveLength(eligible.length);
    for (const row of topUps) {
      expect(row.n, row.user_id).toBe(1);
      expect(BigInt(row.amount)).toBe(TARGET - before.get(row.user_id)!);
      expect(row.balance_after).toBe(TARGET.toString());
      expect(row.idempotency_key).toBe(`daily-top-up:${day}`);
    }

    const again = await Promise.all([a.admin.runDailyTopUp({ date: day }), b.admin.runDailyTopUp({ date: '' })]);
    for (const r of again) {
      expect(r.accountsToppedUp).toBe(0n);
      expect(r.totalMillicredits).toBe(0n);
    }
    expect(await balances(a.app.db)).toEqual(after);
    expect((await verifyLedger(a.app.db)).violations).toEqual([]);
  });

  it('shows the top-up in the user history as a DAILY_TOP_UP from system:daily-top-up', async () => {
    const [a] = await twoApps();
    await fund(a, 'history-user', 1_200n);
    const day = today();
    await a.admin.runDailyTopUp({ date: day });
    const { transactions } = await a.billing.listTransactions({ userId: 'history-user', types: [TransactionType.DAILY_TOP_UP] });
    expect(transactions).toHaveLength(1);
    const tx = transactions[0]!;
    expect(tx.amountMillicredits).toBe(3_800n);
    expect(tx.balanceAfterMillicredits).toBe(5_000n);
    expect(tx.idempotencyKey).toBe(`daily-top-up:${day}`);
    const postings = await a.app.db.query<{ account: string; amount: string }>(
      'select account, amount_millicredits::text as amount from postings where transaction_id = $1::bigint order by account',
      [tx.id],
    );
    expect(postings).toEqual([
      { account: SYSTEM_DAILY_TOP_UP, amount: '-3800' },
      { account: 'user:history-user', amount: '3800' },
    ]);
  });

  it('many small overlapping batches from several runners on both processes still top up each user once', async () => {
    const [a, b] = await twoApps();
    const users = Array.from({ length: 300 }, (_, i) => `batch-${String(i).padStart(3, '0')}`);
    await runAll(users.length, 16, (i) => fund(a, users[i]!, BigInt(i % 4_000)));
    const runners = [
      new DailyTopUps(a.app.db, a.app.ledger.catalogue, { batchSize: 7 }),
      new DailyTopUps(b.app.db, b.app.ledger.catalogue, { batchSize: 13 }),
      new DailyTopUps(a.app.db, a.app.ledger.catalogue, { batchSize: 50 }),
      new DailyTopUps(b.app.db, b.app.ledger.catalogue, { batchSize: 1 }),
    ];
    const day = today(); // once: the runs and the check must name the same day even across 00:00 UTC
    const results = await Promise.all(runners.map((r) => r.run(day)));
    expect(results.reduce((sum, r) => sum + r.accountsToppedUp, 0n)).toBe(300n);
    const topUps = await topUpsOf(a.app.db, day);
    expect(topUps).toHaveLength(300);
    expect(topUps.every((r) => r.n === 1 && r.balance_after === '5000')).toBe(true);
    expect((await verifyLedger(a.app.db)).violations).toEqual([]);
  });
});

describe('a run that stops half-way', () => {
  it('keeps the batches it committed, and a re-run tops up each of the rest exactly once', async () => {
    const [a] = await twoApps();
    const users = Array.from({ length: 60 }, (_, i) => `stop-${String(i).padStart(2, '0')}`);
    await runAll(users.length, 16, (i) => fund(a, users[i]!, BigInt(i * 50)));
    // A connection that gives up on a statement after 1 s: the batch that reaches the row
    // another transaction holds fails, as a run cut by a crash or a lost connection does.
    const impatient = await openDatabase({ databaseUrl: a.database!.url, dataDir: 'memory://', poolSizeMax: 2, statementTimeoutMs: 1_000 });
    const day = today();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const holder = a.app.db.transaction(async (s) => {
      await s.query(`select 1 from user_accounts where user_id = 'stop-30' for update`);
      locked();
      await held;
    });
    try {
      await isLocked;
      const stopped = new DailyTopUps(impatient, a.app.ledger.catalogue, { batchSize: 7, connections: 2 }).run(day);
      await expect(stopped).rejects.toThrow(/statement timeout/);
    } finally {
      release();
      await holder;
      await impatient.close();
    }
    const partial = await topUpsOf(a.app.db, day);
    expect(partial.length).toBeGreaterThan(0);
    expect(partial.length).toBeLessThan(users.length);
    expect(partial.map((r) => r.user_id)).not.toContain('stop-30');

    const rest = await new DailyTopUps(a.app.db, a.app.ledger.catalogue, { batchSize: 7 }).run(day);
    expect(rest.accountsToppedUp).toBe(BigInt(users.length - partial.length));
    const topUps = await topUpsOf(a.app.db, day);
    expect(topUps).toHaveLength(users.length);
    expect(topUps.every((r) => r.n === 1 && r.balance_after === '5000')).toBe(true);
    expect(await balances(a.app.db)).toEqual(new Map(users.map((u) => [u, TARGET])));
    expect((await verifyLedger(a.app.db)).violations).toEqual([]);
  });
});

describe('a top-up racing charges', () => {
  it('keeps every balance, history and VerifyLedger consistent, and still one top-up per user', async () => {
    const [a, b] = await twoApps();
    const users = Array.from({ length: 120 }, (_, i) => `race-${i}`);
    await runAll(users.length, 16, (i) => fund(a, users[i]!, i % 2 === 0 ? 4_900n : 6_000n));
    const start = await balances(a.app.db);
    const charges = users.flatMap((u, i) => [0, 1, 2].map((n) => ({ userId: u, app: (i + n) % 2 === 0 ? a : b })));
    const charging = runAll(charges.length, 24, async (i) => {
      const c = charges[i]!;
      await c.app.billing.charge({
        userId: c.userId,
        idempotencyKey: key('race'),
        product: 'muse',
        usage: { case: 'amountMillicredits', value: 1_000n },
      });
    });
    const day = today();
    const toppingUp = Promise.all([
      new DailyTopUps(a.app.db, a.app.ledger.catalogue, { batchSize: 5 }).run(day),
      new DailyTopUps(b.app.db, b.app.ledger.catalogue, { batchSize: 11 }).run(day),
      b.admin.runDailyTopUp({ date: day }),
    ]);
    await Promise.all([charging, toppingUp]);
    // Everyone is below 5 credits now: the ones the race missed get theirs, nobody a second one.
    await a.admin.runDailyTopUp({ date: day });

    expect((await verifyLedger(a.app.db)).violations).toEqual([]);
    expect(await brokenChains(a.app.db)).toEqual([]);
    const topUps = await topUpsOf(a.app.db, day);
    expect(topUps).toHaveLength(users.length);
    const end = await balances(a.app.db);
    for (const row of topUps) {
      expect(row.n, row.user_id).toBe(1);
      expect(row.balance_after, row.user_id).toBe('5000');
      expect(end.get(row.user_id), row.user_id).toBe(start.get(row.user_id)! - 3_000n + BigInt(row.amount));
    }
  });
});

describe('dates', () => {
  it('refuses a malformed, future or too old date, naming the field', async () => {
    const [a] = await twoApps();
    // "Tomorrow" computed just before 00:00 UTC would be today when the server checks it.
    await awayFromUtcMidnight(a.app.db, 10);
    const dayMs = 86_400_000;
    for (const date of ['2026-13-01', '2026-02-30', 'yesterday', '2026-1-1', utcDay(new Date(Date.now() + dayMs)),
      utcDay(new Date(Date.now() - 8 * dayMs))]) {
      const { error, detail } = await failure(a.admin.runDailyTopUp({ date }));
      expect(error.code, date).toBe(Code.InvalidArgument);
      expect(detail?.reason, date).toBe(ErrorReason.INVALID_FIELD);
      expect(detail?.field, date).toBe('date');
    }
    await fund(a, 'late-user', 0n);
    const yesterday = await a.admin.runDailyTopUp({ date: utcDay(new Date(Date.now() - dayMs)) });
    expect(yesterday.accountsToppedUp).toBe(1n);
  });
});

describe('the last daily top-up (GetJobProgress.last_daily_top_up)', () => {
  it('is stored as each run ends: the day, its accounts and credits over every run, on every replica and after a restart', async () => {
    const [a, b] = await twoApps();
    await awayFromUtcMidnight(a.app.db, 10);
    expect((await b.admin.getJobProgress({})).lastDailyTopUp).toBeUndefined();
    await fund(a, 'last-empty', 0n);
    await fund(a, 'last-low', 1_000n);
    await fund(a, 'last-full', 7_000n);
    const before = Date.now();
    const run = await a.admin.runDailyTopUp({ date: '' });
    expect([run.accountsToppedUp, run.totalMillicredits]).toEqual([2n, 9_000n]);
    // Read from the database: the other replica reports the run it did not do.
    const last = (await b.admin.getJobProgress({})).lastDailyTopUp!;
    expect(last).toMatchObject({ day: today(), accountsToppedUp: 2n, totalMillicredits: 9_000n, runs: 1n, failedRuns: 0n, lastFailed: false });
    const finishedMs = timestampMs(last.lastFinishedAt!);
    expect(timestampMs(last.lastStartedAt!)).toBeGreaterThanOrEqual(before - 1_000);
    expect(finishedMs).toBeGreaterThanOrEqual(timestampMs(last.lastStartedAt!));
    expect(finishedMs).toBeLessThanOrEqual(Date.now() + 1_000);
    // A re-run on the other replica adds a run and nothing else.
    expect((await b.admin.runDailyTopUp({ date: '' })).accountsToppedUp).toBe(0n);
    const again = (await a.admin.getJobProgress({})).lastDailyTopUp!;
    expect(again).toMatchObject({ day: today(), accountsToppedUp: 2n, totalMillicredits: 9_000n, runs: 2n, failedRuns: 0n });
    expect(timestampMs(again.lastFinishedAt!)).toBeGreaterThanOrEqual(finishedMs);
    // A backfilled day that runs later is the last daily top-up.
    await fund(a, 'last-yesterday', 0n);
    const yesterday = utcDay(new Date(Date.now() - 86_400_000));
    await a.admin.runDailyTopUp({ date: yesterday });
    const backfill = (await b.admin.getJobProgress({})).lastDailyTopUp!;
    // Only the new user is below the target now (today's run raised the others).
    expect(backfill).toMatchObject({ day: yesterday, accountsToppedUp: 1n, totalMillicredits: 5_000n, runs: 1n });
    // A new process on the same database (a restart) reports it too; its in-process run is unset.
    const restarted = await startTestApp({ databaseUrl: a.database!.url });
    opened.unshift(restarted);
    const progress = await restarted.admin.getJobProgress({});
    expect(progress.dailyTopUp).toBeUndefined();
    expect(progress.lastDailyTopUp).toEqual(backfill);
  });
});

describe('the scheduled job', () => {
  it('runs the top-up for the UTC day of each tick, and stops', async () => {
    const first = today();
    const days: string[] = [];
    const job = scheduleDailyTopUp(
      {
        run: async (day) => {
          days.push(day);
          return { accountsToppedUp: 0n, totalMillicredits: 0n };
        },
      },
      '* * * * * *',
      pino({ level: 'silent' }),
    );
    await new Promise((resolve) => setTimeout(resolve, 2_200));
    job.stop();
    const seen = days.length;
    expect(seen).toBeGreaterThanOrEqual(1);
    const last = today(); // a tick may fall on either side of 00:00 UTC
    expect(days.filter((d) => d !== first && d !== last)).toEqual([]);
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    expect(days.length).toBe(seen);
  });

  it('an app started with jobs: true sweeps holds and tops up on its schedules; a test app by default runs neither', async () => {
    // The shipped catalogue with both jobs every second, so the test need not wait 30 s.
    const catalogue = JSON.parse(readFileSync(new URL('../../config/muse.json', import.meta.url), 'utf8')) as Record<string, Record<string, unknown>>;
    catalogue.dailyTopUp!.schedule = '* * * * * *';
    catalogue.holds!.sweepSchedule = '* * * * * *';
    const dir = mkdtempSync(join(tmpdir(), 'billing-jobs-'));
    const file = join(dir, 'every-second.json');
    writeFileSync(file, JSON.stringify(catalogue));
    try {
      const withJobs = await startTestApp({ jobs: true, env: { BILLING_CONFIG: file } });
      opened.push(withJobs);
      const without = await startTestApp({ env: { BILLING_CONFIG: file } });
      opened.push(without);
      for (const t of [withJobs, without]) {
        await t.billing.grant({ userId: 'job-user', idempotencyKey: key(), grant: { case: 'amountMillicredits', value: 1_000n }, reason: 'r' });
        await t.billing.reserve({ userId: 'job-user', idempotencyKey: key(), product: 'muse', amount: { case: 'amountMillicredits', value: 500n }, ttlSeconds: 1 });
      }
      // Read the tables directly: a ledger call would expire the user's holds itself.
      const state = (t: TestApp) =>
        t.app.db.query<{ status: string; reserved: string; top_ups: number }>(
          `select r.status, a.reserved_millicredits::text as reserved,
                  (select count(*)::int from transactions x where x.user_id = a.user_id and x.type = 'DAILY_TOP_UP') as top_ups
             from reservations r join user_accounts a using (user_id) where a.user_id = 'job-user'`,
        );
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline) {
        const [row] = await state(withJobs);
        if (row?.status === 'EXPIRED' && row.top_ups === 1) break;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
      expect(await state(withJobs)).toEqual([{ status: 'EXPIRED', reserved: '0', top_ups: 1 }]);
      // Both holds expired at about the same time; give the idle app more than one tick too.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      expect(await state(without)).toEqual([{ status: 'ACTIVE', reserved: '500', top_ups: 0 }]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a schedule cron cannot parse', () => {
    expect(() => checkSchedule('not a schedule')).toThrow(/invalid cron schedule/);
    expect(checkSchedule('0 0 * * *')).toBe('0 0 * * *');
  });
});

describe('subscription invoices', () => {
  it('a PRO invoice granted twice under the same key is one grant of pro_monthly', async () => {
    const [a] = await twoApps();
    const invoice = 'in_1Q2w3E4r5T6y';
    await a.admin.setPlan({ userId: 'subscriber', plan: Plan.PRO });
    const request = { userId: 'subscriber', idempotencyKey: invoice, grant: { case: 'sku' as const, value: 'pro_monthly' }, reference: invoice };
    const [first, second] = await Promise.all([a.billing.grant(request), a.billing.grant(request)]);
    const third = await a.billing.grant(request);
    expect(second.transaction?.id).toBe(first.transaction?.id);
    expect(third.transaction?.id).toBe(first.transaction?.id);
    expect(first.transaction?.amountMillicredits).toBe(200_000n);
    expect(first.transaction?.reference).toBe(invoice);
    expect(first.transaction?.operation).toBe('pro_monthly');
    const { balance } = await a.billing.getBalance({ userId: 'subscriber' });
    expect(balance?.balanceMillicredits).toBe(200_000n);
    expect(balance?.plan).toBe(Plan.PRO);
    const { transactions } = await a.billing.listTransactions({ userId: 'subscriber' });
    expect(transactions).toHaveLength(1);
  });
});
