// VerifyLedger over the RPC and the CLI: clean after a concurrent mix of every kind of
// transaction from two service processes, and it finds deliberately corrupted rows.
import { spawn } from 'node:child_process';
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { Plan } from '../../gen/billing/v1/types_pb.js';
import { utcDay } from '../../src/ledger/top-up/top-up.js';
import { key, outcome, refusal, refused, startTestApp, type TestApp } from '../support/app.js';

const ROOT = new URL('../..', import.meta.url).pathname;
let a: TestApp;
let b: TestApp;

beforeAll(async () => {
  // A concurrent mix past the default admission bound (32); see test/server/db-faults.test.ts.
  const env = { DATABASE_WORK_MAX: '256' };
  a = await startTestApp({ env });
  b = await startTestApp({ databaseUrl: a.database!.url, env });
});

afterAll(async () => {
  await b?.close();
  await a?.close();
});

/** Runs `npm run ledger:verify` (its script) against the test database. */
function verifyCli(databaseUrl: string): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/verify-ledger.ts'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', DATABASE_URL: databaseUrl, LOG_LEVEL: 'silent' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, output })));
}

/**
 * Grants, promo redemptions (a code capped at half the users), charges and two top-ups,
 * all at once on two processes. Every call's outcome is checked: grants and top-ups must
 * succeed, a redemption may only lose to the cap, a charge only to a balance not yet
 * funded; afterwards each balance is what the acknowledged calls and the top-ups add up to.
 */
async function busyDay(): Promise<void> {
  await a.admin.createPromoCode({ code: 'VERIFY-ME', amountMillicredits: 1_500n, maxRedemptions: 15n });
  const users = Array.from({ length: 30 }, (_, i) => `v-${i}`);
  await a.admin.setPlan({ userId: 'v-pro', plan: Plan.PRO });
  const work = users.map((userId, i) => {
    const t = i % 2 === 0 ? a : b;
    return Promise.all([
      outcome(t.billing.grant({ userId, idempotencyKey: key(), grant: { case: 'amountMillicredits', value: 3_000n }, reason: 'seed' })),
      outcome(t.billing.redeem({ userId, idempotencyKey: key(), code: 'verify-me' })),
      outcome(t.billing.charge({ userId, idempotencyKey: key(), product: 'muse', usage: { case: 'amountMillicredits', value: 700n } })),
      outcome(t.billing.charge({ userId, idempotencyKey: key(), product: 'muse', usage: { case: 'operation', value: { name: 'midi.generate' } } })),
    ]);
  });
  const topUps = Promise.all([a.admin.runDailyTopUp({ date: utcDay(new Date()) }), b.admin.runDailyTopUp({ date: '' })]);
  const [perUser, [ra, rb]] = await Promise.all([Promise.all(work), topUps]);
  const expected = new Map<string, bigint>();
  let redeemed = 0;
  perUser.forEach(([granted, redemption, ...charges], i) => {
    const user = users[i]!;
    expect(granted.ok && granted.value.transaction?.amountMillicredits, user).toBe(3_000n);
    let balance = 3_000n;
    if (redemption.ok) {
      redeemed += 1;
      balance += redemption.value.transaction!.amountMillicredits;
    } else {
      expect(refusal(redemption), user).toBe(refused(Code.ResourceExhausted, ErrorReason.PROMO_CODE_EXHAUSTED));
    }
    for (const charge of charges) {
      if (charge.ok) balance -= charge.value.chargedMillicredits;
      else expect(refusal(charge), user).toBe(refused(Code.FailedPrecondition, ErrorReason.INSUFFICIENT_BALANCE));
    }
    expected.set(user, balance);
  });
  expect(redeemed).toBe(15);
  const toppedUp = await a.app.db.query<{ user_id: string; amount: string }>(
    "select user_id, amount_millicredits::text as amount from transactions where type = 'DAILY_TOP_UP'",
  );
  expect(BigInt(toppedUp.length)).toBe(ra.accountsToppedUp + rb.accountsToppedUp);
  expect(toppedUp.reduce((sum, r) => sum + BigInt(r.amount), 0n)).toBe(ra.totalMillicredits + rb.totalMillicredits);
  for (const r of toppedUp) expected.set(r.user_id, (expected.get(r.user_id) ?? 0n) + BigInt(r.amount));
  const stored = await a.app.db.query<{ user_id: string; balance: string }>(
    "select user_id, balance_millicredits::text as balance from user_accounts where user_id like 'v-%' and user_id <> 'v-pro'",
  );
  expect(new Map(stored.map((r) => [r.user_id, BigInt(r.balance)]))).toEqual(expected);
}

describe('VerifyLedger', () => {
  it('finds nothing after a concurrent mix of grants, charges, promo codes and top-ups on two processes', async () => {
    await busyDay();
    const report = await a.admin.verifyLedger({});
    expect(report.violations).toEqual([]);
    expect(report.ok).toBe(true);
    const counts = await a.app.db.query<{ accounts: string; transactions: string }>(
      'select (select count(*) from user_accounts)::text as accounts, (select count(*) from transactions)::text as transactions',
    );
    expect(report.accountsChecked).toBe(BigInt(counts[0]!.accounts));
    expect(report.transactionsChecked).toBe(BigInt(counts[0]!.transactions));
    expect(report.transactionsChecked).toBeGreaterThan(60n);
    const cli = await verifyCli(a.database!.url);
    expect(cli.output).toMatch(/^ok: /m);
    expect(cli.code).toBe(0);
  });

  it('finds a balance changed behind the ledger, and a transaction whose postings do not sum to zero', async () => {
    await a.app.db.query(`update user_accounts set balance_millicredits = balance_millicredits + 1 where user_id = 'v-3'`);
    const [victim] = await a.app.db.query<{ id: string }>(`select id::text as id from transactions where user_id = 'v-4' limit 1`);
    await a.app.db.query(`insert into postings (transaction_id, account, amount_millicredits) values ($1::bigint, 'system:stray', 5)`, [
      victim!.id,
    ]);
    const report = await b.admin.verifyLedger({});
    expect(report.ok).toBe(false);
    expect(report.violations).toContainEqual(
      expect.objectContaining({ invariant: 'balance_matches_postings', account: 'user:v-3', transactionId: '' }),
    );
    expect(report.violations).toContainEqual(
      expect.objectContaining({ invariant: 'transaction_sums_to_zero', transactionId: victim!.id, description: 'postings sum to 5' }),
    );
    const [edited] = await a.app.db.query<{ id: string }>(
      `update transactions set balance_after_millicredits = balance_after_millicredits + 7
        where id = (select max(id) from transactions where user_id = 'v-5') returning id::text as id`,
    );
    const chained = await b.admin.verifyLedger({});
    expect(chained.violations).toContainEqual(
      expect.objectContaining({ invariant: 'history_chains', account: 'user:v-5', transactionId: edited!.id }),
    );
    const cli = await verifyCli(a.database!.url);
    expect(cli.code).toBe(1);
    expect(cli.output).toContain('balance_matches_postings\tuser:v-3');
  });
});
