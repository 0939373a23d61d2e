// The ops CLI as operators run it: `npm run build`, then bin/billing.js (the package's "bin",
// what `npx billing` runs) spawned as a real process against a real server on PostgreSQL
// with tokens configured. Every command in table and --json form, asserting what it prints;
// refusals with their exit codes; and the progress of the long jobs, in the log and in the
// CLI's bar (a pipe here, so the bar's lines).
import { execFile } from 'node:child_process';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import { Plan } from '../../gen/billing/v1/types_pb.js';
import { JobProgress } from '../../src/jobs/progress.js';
import { DailyTopUps } from '../../src/ledger/top-up/top-up.js';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { awayFromUtcMidnight, key, useTestApp } from '../support/app.js';
import { type Ran, runCommand } from '../support/process.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const execFileAsync = promisify(execFile);

const OPS_TOKEN = 'ops-canary-token-0123456789abcdef';
const SPEND_TOKEN = 'spend-only-token-0123456789abcdef';
const TOKENS = `ops:${OPS_TOKEN}=spend+grant+admin+wallet,support:${SPEND_TOKEN}=spend`;

beforeAll(async () => {
  // The CLI's "bin" runs the compiled tree.
  await execFileAsync('npm', ['run', 'build'], { cwd: ROOT });
}, 180_000);

const t = useTestApp({ env: { BILLING_TOKENS: TOKENS } });
const auth = { headers: { authorization: `Bearer ${OPS_TOKEN}` } };

/** Runs bin/billing.js on this Node with only PATH, BILLING_URL and the token in its environment. */
async function cli(args: readonly string[], env: Record<string, string> = {}, command: readonly string[] = [process.execPath, 'bin/billing.js']): Promise<Ran> {
  const [file, ...pre] = command;
  return check(
    await runCommand(file!, [...pre, ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', BILLING_URL: t.url, BILLING_TOKEN: OPS_TOKEN, ...env },
      timeout: 120_000,
    }),
  );
}

/** Whatever a command prints, the token is not in it. */
function check(ran: Ran): Ran {
  expect(ran.stdout + ran.stderr).not.toContain(OPS_TOKEN);
  expect(ran.stdout + ran.stderr).not.toContain(SPEND_TOKEN);
  return ran;
}

async function json(args: readonly string[]): Promise<Record<string, any>> {
  const ran = await cli(['--json', ...args]);
  expect(ran.stderr.replace(/.*EBADENGINE.*\n/g, ''), ran.stderr).toBe('');
  expect(ran.code).toBe(0);
  return JSON.parse(ran.stdout) as Record<string, any>;
}

async function table(args: readonly string[]): Promise<string> {
  const ran = await cli(['--no-progress', ...args]);
  expect(ran.code, ran.stderr).toBe(0);
  return ran.stdout;
}

describe('billing CLI commands', () => {
  it('grant and balance: exact decimal credits in, milli-credits as strings in JSON', async () => {
    const granted = await json(['grant', 'cli-alice', '12.5', '--reason', 'welcome credit', '--reference', 'ticket-1']);
    expect(granted.idempotencyKey).toMatch(/^cli-[0-9a-f-]{36}$/);
    expect(granted.transaction).toMatchObject({ userId: 'cli-alice', type: 'TRANSACTION_TYPE_GRANT', amountMillicredits: '12500', reason: 'welcome credit' });
    expect(granted.balance).toMatchObject({ balanceMillicredits: '12500', availableMillicredits: '12500', plan: 'PLAN_FREE' });

    const balance = await json(['balance', 'cli-alice']);
    expect(balance.balance).toMatchObject({ userId: 'cli-alice', balanceMillicredits: '12500', reservedMillicredits: '0' });
    const text = await table(['balance', 'cli-alice']);
    expect(text).toMatch(/balance\s*│\s*12\.5\s/);
    expect(text).toMatch(/plan\s*│\s*FREE\s/);

    const human = await table(['grant', 'cli-alice', '0.005', '--reason', 'rounding']);
    expect(human).toMatch(/amount\s*│\s*0\.005\s/);
    expect(human).toMatch(/balance\s*│\s*12\.505\s/);
  });

  it('a retried grant with the same --idempotency-key pays once', async () => {
    const k = key('cli-retry');
    const first = await json(['grant', 'cli-retry', '3', '--reason', 'retry me', '--idempotency-key', k]);
    const again = await json(['grant', 'cli-retry', '3', '--reason', 'retry me', '--idempotency-key', k]);
    expect(again.idempotencyKey).toBe(k);
    expect(again.transaction.id).toBe(first.transaction.id);
    expect((await json(['balance', 'cli-retry'])).balance.balanceMillicredits).toBe('3000');
  });

  it('history lists transactions newest first, a page at a time', async () => {
    for (const amount of ['1', '2', '3']) await json(['grant', 'cli-history', amount, '--reason', `grant ${amount}`]);
    const all = await json(['history', 'cli-history']);
    expect(all.transactions.map((x: any) => x.amountMillicredits)).toEqual(['3000', '2000', '1000']);
    expect(all.transactions.map((x: any) => x.balanceAfterMillicredits)).toEqual(['6000', '3000', '1000']);

    const first = await json(['history', 'cli-history', '--page-size', '2']);
    expect(first.transactions.map((x: any) => x.reason)).toEqual(['grant 3', 'grant 2']);
    expect(first.nextPageToken).not.toBe('');
    const second = await json(['history', 'cli-history', '--page-size', '2', '--page-token', first.nextPageToken]);
    expect(second.transactions.map((x: any) => x.reason)).toEqual(['grant 1']);

    const text = await table(['history', 'cli-history', '--page-size', '2']);
    const rows = text.split('\n').filter((line) => line.includes('GRANT'));
    expect(rows).toHaveLength(2);
    expect(rows[0]).toContain('grant 3');
    expect(rows[1]).toContain('grant 2');
    expect(text).toContain(`next page: --page-token ${first.nextPageToken}`);
  });

  it('refund returns part of a charge, then the rest', async () => {
    await json(['grant', 'cli-refund', '10', '--reason', 'funds']);
    const charge = await t.billing.charge(
      { userId: 'cli-refund', idempotencyKey: key('charge'), product: 'muse', usage: { case: 'amountMillicredits', value: 4_000n } },
      auth,
    );
    const id = charge.transaction!.id;
    const part = await json(['refund', id, '--user', 'cli-refund', '--amount', '1.25', '--reason', 'partial outage']);
    expect(part.idempotencyKey).toMatch(/^cli-/);
    expect(part.transaction).toMatchObject({ type: 'TRANSACTION_TYPE_REFUND', amountMillicredits: '1250', refundedTransactionId: id });
    expect(part.balance.balanceMillicredits).toBe('7250');
    const rest = await table(['refund', id, '--user', 'cli-refund', '--reason', 'the rest']);
    expect(rest).toMatch(/amount\s*│\s*2\.75\s/);
    expect(rest).toMatch(/balance\s*│\s*10\s/);
  });

  it('set-plan and entitlement change what the balance shows', async () => {
    const pro = await json(['set-plan', 'cli-plan', 'pro']);
    expect(pro.balance.plan).toBe('PLAN_PRO');
    expect(await table(['set-plan', 'cli-plan', 'ADMIN'])).toMatch(/plan\s*│\s*ADMIN\s/);
    const on = await json(['entitlement', 'cli-plan', 'm4l', '--on']);
    expect(on.balance.entitlements).toEqual(['m4l']);
    expect(await table(['entitlement', 'cli-plan', 'm4l', '--off'])).toMatch(/entitlements\s*│\s*-\s/);
    expect((await json(['balance', 'cli-plan'])).balance).toMatchObject({ plan: 'PLAN_ADMIN', entitlements: [] });
  });

  it('promo create, list and disable', async () => {
    const created = await json(['promo', 'create', 'cli-spring', '2.5', '--max-redemptions', '10', '--expires', '2099-01-01T00:00:00Z']);
    expect(created.promoCode).toMatchObject({ code: 'CLI-SPRING', amountMillicredits: '2500', maxRedemptions: '10', disabled: false });
    expect(created.promoCode.expiresAt).toBe('2099-01-01T00:00:00Z');
    const text = await table(['promo', 'create', 'cli-summer', '1']);
    expect(text).toMatch(/CLI-SUMMER\s*│\s*1\s*│\s*0\s*│\s*unlimited\s*│\s*never\s*│\s*no/);

    const listed = await json(['promo', 'list']);
    expect(listed.promoCodes.map((p: any) => p.code).slice(0, 2)).toEqual(['CLI-SUMMER', 'CLI-SPRING']);
    expect(await table(['promo', 'list'])).toContain('CLI-SPRING');

    const disabled = await json(['promo', 'disable', 'cli-spring']);
    expect(disabled.promoCode).toMatchObject({ code: 'CLI-SPRING', disabled: true });
    expect(await table(['promo', 'disable', 'CLI-SUMMER'])).toMatch(/CLI-SUMMER.*│\s*yes\s*│/);
  });

  it('top-up run reports what it did and shows its progress; a re-run reports zeros', async () => {
    await awayFromUtcMidnight(t.app.db, 60);
    for (let i = 0; i < 25; i += 1) await t.admin.setPlan({ userId: `cli-free-${String(i).padStart(2, '0')}`, plan: Plan.FREE }, auth);
    const ran = await cli(['--json', 'top-up', 'run'], { BILLING_PROGRESS_POLL_MS: '20' });
    expect(ran.code, ran.stderr).toBe(0);
    const result = JSON.parse(ran.stdout) as Record<string, string>;
    // At least the 25 new accounts; users of the other tests that are FREE and below 5 credits too.
    const toppedUp = Number(result.accountsToppedUp);
    expect(toppedUp).toBeGreaterThanOrEqual(25);
    expect(BigInt(result.totalMillicredits!)).toBeGreaterThanOrEqual(25n * 5_000n);
    // Not a terminal: the bar's lines on stderr, the last one the whole run.
    const lines = [...ran.stderr.matchAll(/daily top-up \|.*\| (\d+)\/(\d+) accounts \| [\d.]+\/s \| ETA /g)];
    expect(lines.length, ran.stderr).toBeGreaterThan(0);
    expect(lines.at(-1)!.slice(1, 3)).toEqual([String(toppedUp), String(toppedUp)]);

    const again = await cli(['--no-progress', 'top-up', 'run']);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/accounts topped up\s*│\s*0\s/);
    expect(again.stdout).toMatch(/credits added\s*│\s*0\s/);
    expect(again.stderr).not.toContain('daily top-up |');
  });

  it('verify: ok with counts, in both forms, with its progress', async () => {
    const ran = await cli(['verify'], { BILLING_PROGRESS_POLL_MS: '20' });
    expect(ran.code, ran.stderr).toBe(0);
    expect(ran.stdout).toMatch(/^ok: \d+ accounts, \d+ transactions, 0 violations$/m);
    expect(ran.stderr).toMatch(/verify ledger \|.*\| 12\/12 checks/);
    const report = await json(['--no-progress', 'verify']);
    expect(report).toMatchObject({ ok: true, violations: [] });
    expect(Number(report.accountsChecked)).toBeGreaterThan(0);
  });

  it('verify exits 1 and lists the violation when the ledger is broken', async () => {
    await json(['grant', 'cli-broken', '1', '--reason', 'to break']);
    await t.app.db.query(`update user_accounts set balance_millicredits = balance_millicredits + 1 where user_id = 'cli-broken'`);
    try {
      const ran = await cli(['--no-progress', 'verify']);
      expect(ran.code).toBe(1);
      expect(ran.stdout).toMatch(/balance_matches_postings\s*│\s*user:cli-broken/);
      expect(ran.stdout).toMatch(/^VIOLATIONS: /m);
    } finally {
      await t.app.db.query(`update user_accounts set balance_millicredits = balance_millicredits - 1 where user_id = 'cli-broken'`);
    }
  });

  it('deposits with the wallet off: the reason, exit code 3', async () => {
    const ran = await cli(['deposits', 'cli-alice']);
    expect(ran.code).toBe(3);
    expect(ran.stdout).toBe('');
    expect(ran.stderr).toContain('billing: failed_precondition: crypto deposits are off');
    expect(ran.stderr).toContain('reason: WALLET_DISABLED');
    const asJson = await cli(['--json', 'deposits', 'cli-alice']);
    expect(asJson.code).toBe(3);
    expect(JSON.parse(asJson.stderr.trim().split('\n').at(-1)!)).toMatchObject({ error: { code: 'failed_precondition', reason: 'WALLET_DISABLED' } });
  });

  it('refusals: insufficient scope, no token, bad field, bad usage — each with its exit code and reason', async () => {
    const scope = await cli(['set-plan', 'cli-x', 'pro'], { BILLING_TOKEN: SPEND_TOKEN });
    expect(scope.code).toBe(3);
    expect(scope.stderr).toContain('billing: permission_denied: the caller "support" lacks the "admin" scope');

    const none = await cli(['balance', 'cli-x'], { BILLING_TOKEN: '' });
    expect(none.code).toBe(3);
    expect(none.stderr).toContain('billing: unauthenticated:');

    const field = await cli(['--json', 'balance', 'not a user id!']);
    expect(field.code).toBe(3);
    expect(JSON.parse(field.stderr.trim().split('\n').at(-1)!)).toMatchObject({ error: { code: 'invalid_argument', reason: 'INVALID_FIELD', field: 'user_id' } });
    const refund = await cli(['refund', '999999999', '--user', 'cli-x', '--reason', 'nothing there']);
    expect(refund.code).toBe(3);
    expect(refund.stderr).toContain('reason: TRANSACTION_NOT_FOUND');

    // Refused before anything is sent: exit code 2, the balance unchanged.
    for (const args of [
      ['grant', 'cli-usage', '1.2345', '--reason', 'too fine'],
      ['grant', 'cli-usage', '-1', '--reason', 'negative'],
      ['grant', 'cli-usage', '1e3', '--reason', 'exponent'],
      ['grant', 'cli-usage', '5'],
      ['set-plan', 'cli-usage', 'gold'],
      ['entitlement', 'cli-usage', 'm4l'],
      ['history', 'cli-usage', '--page-size', 'lots'],
      ['no-such-command'],
    ]) {
      const ran = await cli(args);
      expect(ran.code, `${args.join(' ')}: ${ran.stderr}`).toBe(2);
      expect(ran.stderr).toMatch(/^billing: /);
    }
    expect((await cli(['grant', 'cli-usage', '1.2345', '--reason', 'x'])).stderr).toContain('amount: "1.2345" is finer than a milli-credit');
    expect((await cli(['balance', 'x'], { BILLING_URL: 'ftp://nowhere' })).code).toBe(2);
    expect((await json(['balance', 'cli-usage'])).balance.balanceMillicredits).toBe('0');
  });

  it('`npx billing` in the project folder runs this project\'s bin', async () => {
    const ran = await cli(['--json', 'balance', 'cli-alice'], {}, ['npx', '--no-install', 'billing']);
    expect(ran.code, ran.stderr).toBe(0);
    expect(JSON.parse(ran.stdout).balance.balanceMillicredits).toBe('12505');
  });
});

/** A pino logger whose lines a test reads back. */
function capturedLog(): { log: pino.Logger; lines: () => Record<string, any>[] } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return {
    log: pino({ level: 'info' }, stream),
    lines: () => chunks.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>),
  };
}

describe('progress of the long jobs in the log', () => {
  const p = useTestApp();

  it('a top-up over many batches logs a start line, progress (done/total, rate, ETA) and a finish line', async () => {
    await awayFromUtcMidnight(p.app.db, 60);
    const accounts = 45;
    for (let i = 0; i < accounts; i += 1) await p.admin.setPlan({ userId: `progress-${String(i).padStart(2, '0')}`, plan: Plan.FREE });
    const { log, lines } = capturedLog();
    // Interval 0: a line after every batch, so the test sees each one whatever the timing.
    const progress = new JobProgress({ log, intervalMs: 0 });
    const result = await new DailyTopUps(p.app.db, p.app.ledger.catalogue, { batchSize: 10, progress }).run('');
    expect(result.accountsToppedUp).toBe(BigInt(accounts));

    const logged = lines();
    expect(logged[0]).toMatchObject({ msg: 'daily top-up started', job: 'daily_top_up', run: 1, total: accounts, unit: 'accounts' });
    const steps = logged.filter((l) => l.msg.startsWith('daily top-up progress'));
    // Five windows (10, 10, 10, 10, 5), counted as the two connections finish them.
    const done = steps.map((l) => l.done as number);
    expect(done).toHaveLength(5);
    expect(done.every((d, i) => i === 0 || d > done[i - 1]!)).toBe(true);
    expect(done.at(-1)).toBe(accounts);
    for (const step of steps) {
      expect(step).toMatchObject({ total: accounts, unit: 'accounts' });
      expect(step.ratePerSecond).toBeGreaterThan(0);
      expect(typeof step.etaSeconds).toBe('number');
      expect(step.percent).toBe(Math.floor((step.done * 100) / accounts));
      expect(step.msg).toMatch(/^daily top-up progress: \d+\/45 accounts, [\d.]+\/s, ETA \d+s$/);
    }
    expect(steps.at(-1)!.etaSeconds).toBe(0);
    expect(logged.at(-1)).toMatchObject({ msg: 'daily top-up finished', done: accounts, total: accounts, accountsToppedUp: String(accounts) });
    expect(progress.latest('daily_top_up')).toMatchObject({ run: 1, done: accounts, total: accounts, failed: false });

    // GetJobProgress reports the server's own runs: none yet on this app, then the RPC's.
    expect((await p.admin.getJobProgress({})).dailyTopUp).toBeUndefined();
    await p.admin.runDailyTopUp({ date: '' });
    const reported = (await p.admin.getJobProgress({})).dailyTopUp!;
    expect(reported).toMatchObject({ run: 1n, unit: 'accounts', done: 0n, total: 0n, failed: false });
    expect(reported.finishedAt).toBeDefined();
  });

  it('VerifyLedger logs its checks done of the total', async () => {
    const { log, lines } = capturedLog();
    const progress = new JobProgress({ log, intervalMs: 0 });
    expect((await verifyLedger(p.app.db, progress)).ok).toBe(true);
    const logged = lines();
    expect(logged[0]).toMatchObject({ msg: 'verify ledger started', total: 12, unit: 'checks' });
    expect(logged.filter((l) => l.msg.startsWith('verify ledger progress')).map((l) => l.done)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(logged.at(-1)).toMatchObject({ msg: 'verify ledger finished', ok: true, violations: 0, done: 12, total: 12 });
  });
});
