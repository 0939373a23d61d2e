// The ops console in a real headless Chromium (Debian's, driven by playwright-core) against
// the real server on PostgreSQL: the static files at /console/, finding a user, the balance
// and the paged history, the active holds, grant, refund, set plan, a double-clicked grant paying once, and a
// token without the "grant" scope seeing the refusal explained. Takes the README's
// screenshots (docs/console-user.png, docs/console-promo.png) and checks a phone width.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { timestampDate } from '@bufbuild/protobuf/wkt';
import { Plan, TransactionType } from '../../gen/billing/v1/types_pb.js';
import { credits } from '../../console/src/money.js';
import { key, startTestApp, type TestApp } from '../support/app.js';
import { BASE_CHAIN_ID, BASE_USDC, type Chain, placeBaseFixtures, startAnvil } from '../support/chain.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const OPERATOR = 'operator-token-0123456789';
const SUPPORT = 'support-token-0123456789';
const USER = 'console-alice';
let t: TestApp;
let browser: Browser;

beforeAll(async () => {
  execFileSync(process.execPath, ['console/build.mjs'], { cwd: ROOT, stdio: 'inherit' });
  t = await startTestApp({ env: { BILLING_TOKENS: `operator:${OPERATOR}=spend+grant+admin,support:${SUPPORT}=spend` } });
  // launch() gives Chromium a fresh, temporary user-data-dir of its own.
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await t?.close();
});

const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } });

/** A page with the token pasted, on the given console route. */
async function open(token: string, hash: string, width = 1280): Promise<Page> {
  const page = await browser.newPage({ viewport: { width, height: 900 } });
  await page.goto(`${t.url}/console/`);
  await page.getByLabel('Bearer token').fill(token);
  await page.getByRole('button', { name: 'Use token' }).click();
  await page.goto(`${t.url}/console/${hash}`);
  return page;
}

async function grants(userId: string): Promise<bigint[]> {
  const page = await t.billing.listTransactions({ userId, pageSize: 100, types: [TransactionType.GRANT] }, auth(OPERATOR));
  return page.transactions.map((tx) => tx.amountMillicredits);
}

describe('static files at /console/', () => {
  it('serves index.html and the hashed bundles with their types, cache headers and a CSP', async () => {
    const index = await fetch(`${t.url}/console/`);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(index.headers.get('cache-control')).toBe('no-cache');
    expect(index.headers.get('content-security-policy')).toContain("script-src 'self'");
    const html = await index.text();
    const script = /src="\.\/(main-[A-Z0-9]{8}\.js)"/.exec(html)?.[1];
    expect(script).toBeDefined();
    const js = await fetch(`${t.url}/console/${script}`, { method: 'HEAD' });
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(js.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect((await fetch(`${t.url}/console`, { redirect: 'manual' })).headers.get('location')).toBe('/console/');
  });

  it('serves nothing outside its directory and only to GET and HEAD', async () => {
    for (const p of ['/console/..%2Fpackage.json', '/console/../package.json', '/console/%2e%2e/src/main.ts', '/console/.tsbuildinfo', '/console/x/index.html']) {
      const res = await fetch(`${t.url}${p}`);
      expect(res.status, p).toBe(404);
      expect(await res.text(), p).not.toContain('credits-billing');
    }
    const post = await fetch(`${t.url}/console/`, { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    expect((await fetch(`${t.url}/nothing`)).status).toBe(404);
  });
});

describe('the user page', () => {
  beforeAll(async () => {
    // 12 grants and a charge: two pages of 10 in the console's history.
    for (let i = 1; i <= 12; i++) {
      await t.billing.grant({ userId: USER, idempotencyKey: key('seed'), grant: { case: 'amountMillicredits', value: BigInt(i * 1000) }, reason: `seed ${i}` }, auth(OPERATOR));
    }
    await t.billing.charge({ userId: USER, idempotencyKey: key('charge'), product: 'search', usage: { case: 'amountMillicredits', value: 4_000n }, reference: 'req-42' }, auth(OPERATOR));
  });

  it('finds a user, shows the balance and the history, pages it, filters it, expands a row', async () => {
    const page = await open(OPERATOR, '#/user/');
    await page.getByLabel('User id').fill(USER);
    await page.getByRole('button', { name: 'Look up' }).click();
    // 1 + 2 + … + 12 = 78 credits granted, 4 charged.
    await expect.poll(() => page.locator('[data-field="Balance"]').textContent()).toBe('74.000');
    expect(await page.locator('[data-field="Plan"]').textContent()).toBe('FREE');
    const rows = page.getByTestId('history-row');
    await expect.poll(() => rows.count()).toBe(10);
    expect(await rows.first().textContent()).toContain('charge');
    await page.getByRole('button', { name: 'Older' }).click();
    await expect.poll(() => page.getByRole('region', { name: 'History' }).locator('caption').textContent()).toContain('page 2');
    await expect.poll(() => rows.count()).toBe(3);
    expect(await rows.last().textContent()).toContain('seed 1');
    await page.getByRole('button', { name: 'Newer' }).click();
    await page.getByLabel('Type').selectOption({ label: 'charge' });
    await expect.poll(() => rows.count()).toBe(1);
    await rows.first().getByRole('button', { name: /Show/ }).click();
    await expect.poll(() => page.locator('.details').textContent()).toContain('req-42');
    await page.close();
  });

  it("expands a charge to its price breakdown: the token formula's terms, the unrounded cost", async () => {
    const user = 'console-priced';
    await t.billing.grant({ userId: user, idempotencyKey: key('priced'), grant: { case: 'amountMillicredits', value: 10_000n }, reason: 'for a run' }, auth(OPERATOR));
    // 20,000 in + 4 × 5,000 out = 40,000 effective tokens ÷ 20,000 × 0.5 = 1 credit.
    const usage = { case: 'tokenUsage' as const, value: { model: 'gpt-5-mini', tokensIn: 20_000n, tokensOut: 5_000n, finishReason: 'stop' } };
    const charged = await t.billing.charge({ userId: user, idempotencyKey: key('priced'), product: 'muse', usage }, auth(OPERATOR));
    expect(charged.chargedMillicredits).toBe(1_000n);
    const page = await open(OPERATOR, `#/user/${user}`);
    const rows = page.getByTestId('history-row');
    await expect.poll(() => rows.count()).toBe(2);
    await rows.first().getByRole('button', { name: /Show/ }).click();
    const details = page.locator('.details');
    await expect.poll(() => details.textContent()).toContain('Price1.000 credits');
    const text = (await details.textContent()) ?? '';
    expect(text).toContain('Effective tokens40,000 (tokens in + 4 × tokens out)');
    expect(text).toContain('Token formula40,000 ÷ 20,000 × 0.5 credits');
    expect(text).toMatch(/Unrounded cost1000(\.0+)? milli-credits, rounded up to a tenth of a credit/);
    expect(text).not.toContain('Minimum applied');
    await page.close();
  });

  it('grants with a reason and shows the new row, refunds a charge, sets the plan, grants and revokes entitlements', async () => {
    const page = await open(OPERATOR, `#/user/${USER}`);
    await page.getByLabel('Amount (credits)').fill('6.5');
    await page.getByLabel('Reason', { exact: true }).fill('goodwill for ticket 7');
    await page.getByRole('button', { name: 'Grant…' }).click();
    const dialog = page.getByRole('dialog');
    expect(await dialog.textContent()).toContain(`add 6.500 credits to ${USER}`);
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    await expect.poll(() => page.locator('[data-field="Balance"]').textContent()).toBe('80.500');
    await expect.poll(() => page.getByTestId('history-row').first().textContent()).toContain('goodwill for ticket 7');

    await page.getByLabel('Type').selectOption({ label: 'charge' });
    await expect.poll(() => page.getByTestId('history-row').count()).toBe(1);
    await page.getByTestId('history-row').first().getByRole('button', { name: /Show/ }).click();
    await page.getByLabel('Refund amount').fill('1.25');
    await page.getByLabel('Refund reason').fill('search failed');
    await page.getByRole('button', { name: 'Refund…' }).click();
    expect(await dialog.textContent()).toContain('1.250 credits of charge');
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    await expect.poll(() => page.locator('[data-field="Balance"]').textContent()).toBe('81.750');

    await page.getByLabel('New plan').selectOption({ label: 'PRO' });
    await page.getByRole('button', { name: 'Set plan…' }).click();
    expect(await dialog.textContent()).toContain('from FREE to PRO');
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    await expect.poll(() => page.locator('[data-field="Plan"]').textContent()).toBe('PRO');
    const balance = await t.billing.getBalance({ userId: USER }, auth(OPERATOR));
    expect(balance.balance?.plan).toBe(Plan.PRO);
    expect(balance.balance?.balanceMillicredits).toBe(81_750n);

    await page.getByLabel('Entitlement to grant').fill('m4l');
    await page.getByRole('button', { name: 'Grant entitlement…' }).click();
    expect(await dialog.textContent()).toContain(`give ${USER} the entitlement "m4l"`);
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    await expect.poll(() => page.locator('[data-field="Entitlements"]').textContent()).toBe('m4l');
    await page.getByLabel('Entitlement to grant').fill('beta');
    await page.getByRole('button', { name: 'Grant entitlement…' }).click();
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    await expect.poll(() => page.locator('[data-field="Entitlements"]').textContent()).toBe('beta, m4l');
    await page.getByRole('button', { name: 'Revoke… beta' }).click();
    expect(await dialog.textContent()).toContain(`take the entitlement "beta" from ${USER}`);
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    await expect.poll(() => page.locator('[data-field="Entitlements"]').textContent()).toBe('m4l');
    expect((await t.billing.getBalance({ userId: USER }, auth(OPERATOR))).balance?.entitlements).toEqual(['m4l']);
    await page.getByLabel('Type').selectOption({ label: 'all' });
    await expect.poll(() => page.getByTestId('history-row').count()).toBe(10);
    await page.getByTestId('history-row').nth(1).getByRole('button', { name: /Show/ }).click();
    await page.screenshot({ path: path.join(ROOT, 'docs/console-user.png'), fullPage: true });
    await page.close();
  });

  it('pays a double-clicked grant once', async () => {
    const userId = 'console-double';
    const page = await open(OPERATOR, `#/user/${userId}`);
    await page.getByLabel('Amount (credits)').fill('3');
    await page.getByLabel('Reason', { exact: true }).fill('double click');
    await page.getByRole('button', { name: 'Grant…' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).dblclick();
    await expect.poll(() => page.locator('[data-field="Balance"]').textContent()).toBe('3.000');
    expect(await grants(userId)).toEqual([3_000n]);
    await page.close();
  });

  it('keeps the key after a network error: the retry replays the grant, which pays once', async () => {
    const userId = 'console-retry';
    const page = await open(OPERATOR, `#/user/${userId}`);
    const keys: string[] = [];
    let dropped = 0;
    await page.route('**/billing.v1.BillingService/Grant', async (route) => {
      keys.push((JSON.parse(route.request().postData() ?? '{}') as { idempotencyKey: string }).idempotencyKey);
      // The first grant reaches the server and is paid; its answer is lost on the way back.
      const response = await route.fetch();
      if (dropped++ === 0) return route.abort('connectionreset');
      return route.fulfill({ response });
    });
    await page.getByLabel('Amount (credits)').fill('4');
    await page.getByLabel('Reason', { exact: true }).fill('lost answer');
    await page.getByRole('button', { name: 'Grant…' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    await expect.poll(() => dialog.getByRole('alert').textContent()).toContain('cannot pay twice');
    expect(await grants(userId)).toEqual([4_000n]);
    await dialog.getByRole('button', { name: 'Retry' }).click();
    await expect.poll(() => page.locator('[data-field="Balance"]').textContent()).toBe('4.000');
    expect(keys).toHaveLength(2);
    expect(keys[1]).toBe(keys[0]);
    expect(await grants(userId)).toEqual([4_000n]);
    await page.close();
  });

  it('explains the refusal to a token without the grant scope', async () => {
    const userId = 'console-support';
    const page = await open(SUPPORT, `#/user/${userId}`);
    await page.getByLabel('Amount (credits)').fill('2');
    await page.getByLabel('Reason', { exact: true }).fill('not allowed');
    await page.getByRole('button', { name: 'Grant…' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.getByRole('button', { name: 'Confirm' }).click();
    const alert = dialog.getByRole('alert');
    await expect.poll(() => alert.textContent()).toContain('the caller "support" lacks the "grant" scope');
    expect(await alert.textContent()).toContain('The "grant" scope is what grants and refunds need. Paste a token with that scope');
    expect(await grants(userId)).toEqual([]);
    await page.close();
  });

  it('renders at a phone width without horizontal scrolling of the page', async () => {
    const page = await open(OPERATOR, `#/user/${USER}`, 390);
    await expect.poll(() => page.getByTestId('history-row').count()).toBe(10);
    // Run in the page, where `document` exists (the test's tsconfig has no DOM types).
    const widths = await page.evaluate('[document.documentElement.scrollWidth, document.documentElement.clientWidth]') as number[];
    expect(widths[0]).toBeLessThanOrEqual(widths[1]!);
    await page.screenshot({ path: path.join(ROOT, 'docs/console-phone.png'), fullPage: true });
    await page.close();
  });
});

describe('holds on the user page', () => {
  it('shows a hold placed through the API with its amount and expiry, and the empty state once it is released', async () => {
    const userId = 'console-holder';
    await t.billing.grant({ userId, idempotencyKey: key('fund'), grant: { case: 'amountMillicredits', value: 10_000n }, reason: 'funds' }, auth(OPERATOR));
    const { reservation } = await t.billing.reserve(
      { userId, idempotencyKey: key('hold'), product: 'muse', amount: { case: 'amountMillicredits', value: 2_500n }, ttlSeconds: 3600 },
      auth(SUPPORT),
    );
    const expires = timestampDate(reservation!.expiresAt!).toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
    const page = await open(SUPPORT, `#/user/${userId}`);
    const holds = page.getByRole('region', { name: 'Holds' });
    await expect.poll(() => holds.locator('caption').textContent()).toContain('Active holds');
    const rows = page.getByTestId('hold-row');
    await expect.poll(() => rows.count()).toBe(1);
    const text = (await rows.first().textContent()) ?? '';
    expect(text).toContain(reservation!.id);
    expect(text).toContain('2.500');
    expect(text).toContain(expires);
    expect(text).toMatch(/in (60|59) min/);
    expect(await page.locator('[data-field="Reserved"]').textContent()).toBe('2.500');
    await t.billing.release({ userId, idempotencyKey: key('release'), reservationId: reservation!.id }, auth(SUPPORT));
    await page.reload();
    await expect.poll(() => holds.textContent()).toContain('No active holds.');
    expect(await rows.count()).toBe(0);
    await page.close();
  });
});

describe('the promo page', () => {
  it('creates a code, lists it with its redemptions, disables it', async () => {
    await t.admin.createPromoCode({ code: 'WELCOME10', amountMillicredits: 10_000n, maxRedemptions: 100n }, auth(OPERATOR));
    await t.billing.redeem({ userId: USER, idempotencyKey: key('redeem'), code: 'WELCOME10' }, auth(OPERATOR));
    const page = await open(OPERATOR, '#/promo');
    await page.getByLabel('Code', { exact: true }).fill('spring25');
    await page.getByLabel('Amount (credits)').fill('25');
    await page.getByLabel('Max redemptions').fill('500');
    await page.getByRole('button', { name: 'Create…' }).click();
    expect(await page.getByRole('dialog').textContent()).toContain('create code SPRING25');
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    const rows = page.getByTestId('promo-row');
    await expect.poll(() => rows.count()).toBe(2);
    expect(await rows.first().textContent()).toContain('SPRING25');
    expect(await rows.last().textContent()).toContain('1 / 100');
    await rows.first().getByRole('button', { name: /Disable/ }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    await expect.poll(() => rows.first().textContent()).toContain('disabled');
    expect((await t.admin.getPromoCode({ code: 'SPRING25' }, auth(OPERATOR))).promoCode?.disabled).toBe(true);
    await page.screenshot({ path: path.join(ROOT, 'docs/console-promo.png'), fullPage: true });
    await page.close();
  });
});

describe('the health page', () => {
  it('shows the last daily top-up after one ran over the API, and no deposit watchers without chains', async () => {
    // Before any run: said so, not an error.
    const before = await open(OPERATOR, '#/health');
    await expect.poll(() => before.getByTestId('last-top-up').textContent()).toContain('No daily top-up has run yet');
    await before.close();
    await t.admin.setPlan({ userId: 'console-health', plan: Plan.FREE }, auth(OPERATOR));
    const run = await t.admin.runDailyTopUp({ date: '' }, auth(OPERATOR));
    expect(run.accountsToppedUp).toBeGreaterThanOrEqual(1n);
    const page = await open(OPERATOR, '#/health');
    const last = page.getByTestId('last-top-up');
    await expect.poll(() => last.textContent()).toContain(`${String(run.accountsToppedUp)} accounts`);
    const text = (await last.textContent()) ?? '';
    const day = new Date().toISOString().slice(0, 10);
    expect(text).toContain(`Day ${day}: finished at ${day}`);
    expect(text).toContain(`${credits(run.totalMillicredits)} credits`);
    expect(text).not.toContain('failed');
    expect(await page.getByRole('heading', { name: 'Deposit watchers' }).count()).toBe(1);
    await expect.poll(() => page.getByTestId('watchers-empty').textContent()).toBe('no chains configured');
    await page.screenshot({ path: path.join(ROOT, 'docs/console-health.png'), fullPage: true });
    await page.close();
    // A token without the admin scope is told which scope it lacks.
    const support = await open(SUPPORT, '#/health');
    await expect.poll(() => support.getByRole('alert').first().textContent()).toContain('"admin" scope');
    await support.close();
  });
});

describe('deposits on the user page', () => {
  // A fixed 24-word test mnemonic (never holds funds), as in test/server/deposits.test.ts.
  const SEED = `${'abandon '.repeat(23)}art`;
  /** Anvil's finalized block trails its head by this many blocks. */
  const FINALITY = 64;
  let chain: Chain;
  let w: TestApp;

  beforeAll(async () => {
    chain = await startAnvil({ chainId: BASE_CHAIN_ID });
    await placeBaseFixtures(chain);
    w = await startTestApp({ catalogue: 'mu', env: { BASE_RPC_URL: chain.url, WALLET_SEED: SEED, BILLING_TOKENS: `operator:${OPERATOR}=spend+grant+admin+wallet` } });
  }, 120_000);

  afterAll(async () => {
    await w?.close();
    await chain?.stop();
  });

  it('shows the deposit address with a QR code per chain, and a credited deposit with its status and confirmations', async () => {
    const userId = 'console-depositor';
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${w.url}/console/`);
    await page.getByLabel('Bearer token').fill(OPERATOR);
    await page.getByRole('button', { name: 'Use token' }).click();
    await page.goto(`${w.url}/console/#/user/${userId}`);
    await page.getByRole('button', { name: /Show deposit address/ }).click();
    const { address } = await w.wallet.getDepositAddress({ userId }, auth(OPERATOR));
    await expect.poll(() => page.getByTestId('deposit-address').textContent()).toBe(address);
    const qr = page.getByRole('img', { name: `QR code paying ${address} on base` });
    await expect.poll(async () => (await qr.getAttribute('src'))?.slice(0, 22)).toBe('data:image/png;base64,');

    await chain.mintToken(BASE_USDC, await chain.funder.getAddress(), 100_000_000n);
    const sent = await chain.transferToken(BASE_USDC, address, 5_000_000n);
    await chain.mine(FINALITY + 1);
    for (let i = 0; i < 3; i++) await w.app.wallet.pollAll();
    await page.reload();
    const row = page.getByTestId('deposit-row');
    await expect.poll(() => row.count()).toBe(1);
    const text = (await row.textContent()) ?? '';
    expect(text).toContain(sent.hash);
    expect(text).toContain('credited');
    expect(text).toContain('393.700');

    // The health page shows the Base watcher with the chain's numbers: scanned to the head.
    const status = (await w.wallet.getWatcherStatus({}, auth(OPERATOR))).watchers;
    expect(status).toHaveLength(1);
    const head = await chain.head();
    await page.goto(`${w.url}/console/#/health`);
    const watcher = page.getByTestId('watcher-row');
    await expect.poll(() => watcher.count()).toBe(1);
    const cells = await watcher.locator('td').allTextContents();
    expect(cells[0]).toContain(`(${BASE_CHAIN_ID}`);
    expect(cells.slice(2, 7)).toEqual([String(head), String(head - FINALITY), String(head), '0', '0']);
    await page.close();
  });
});
