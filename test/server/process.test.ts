// The service as a process, the way the quick start runs it: starts on the embedded
// database with no setup, answers curl-style JSON, enforces tokens, stops on SIGTERM.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { ServiceProcesses } from '../support/process.js';

const processes = new ServiceProcesses();
const dirs: string[] = [];
const databases: TestDatabase[] = [];

/** Spawns `tsx src/main.ts` on this Node and waits for its "listening" log line. */
async function startService(env: Record<string, string>) {
  const s = await processes.start('service', env);
  return { ...s, exit: s.exit.then(({ code }) => code) };
}

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'billing-data-'));
  dirs.push(dir);
  return dir;
}

afterAll(async () => {
  await processes.killAll();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  for (const database of databases) await database.drop();
});

async function postJson(port: number, path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe('the service process', () => {
  it('starts on the embedded database with no setup, answers JSON, and stops on SIGTERM', async () => {
    const dir = dataDir();
    const s = await startService({ BILLING_DATA_DIR: dir });
    expect(s.output()).toContain('running OPEN for local development');
    const res = await postJson(s.port, '/billing.v1.BillingService/GetBalance', { userId: 'u1' });
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ balance: { userId: 'u1', plan: 'PLAN_FREE' } });
    const granted = await postJson(s.port, '/billing.v1.BillingService/Grant', {
      userId: 'u1',
      idempotencyKey: 'welcome',
      amountMillicredits: '5000',
      reason: 'welcome credits',
    });
    expect([granted.status, granted.json]).toMatchObject([200, { balance: { balanceMillicredits: '5000' } }]);
    s.child.kill('SIGTERM');
    expect(await s.exit).toBe(0);
    // The data survives a restart.
    const again = await startService({ BILLING_DATA_DIR: dir });
    const after = await postJson(again.port, '/billing.v1.BillingService/GetBalance', { userId: 'u1' });
    expect(after.json).toMatchObject({ balance: { balanceMillicredits: '5000' } });
    again.child.kill('SIGTERM');
    expect(await again.exit).toBe(0);
  });

  it('enforces bearer tokens and scopes; health stays open', async () => {
    const spendToken = 'spend-token-0123456789';
    const s = await startService({
      BILLING_DATA_DIR: dataDir(),
      HOST: '127.0.0.1',
      BILLING_TOKENS: `${spendToken}=spend,admin-token-0123456789=admin`,
    });
    const anonymous = await postJson(s.port, '/billing.v1.BillingService/GetBalance', { userId: 'u1' });
    expect([anonymous.status, anonymous.json.code]).toEqual([401, 'unauthenticated']);
    const unknown = await postJson(s.port, '/billing.v1.BillingService/GetBalance', { userId: 'u1' }, { authorization: 'Bearer nope-nope-nope-nope' });
    expect([unknown.status, unknown.json.code]).toEqual([401, 'unauthenticated']);
    const auth = { authorization: `Bearer ${spendToken}` };
    const ok = await postJson(s.port, '/billing.v1.BillingService/GetBalance', { userId: 'u1' }, auth);
    expect(ok.status).toBe(200);
    const wrongScope = await postJson(
      s.port,
      '/billing.v1.BillingService/Grant',
      { userId: 'u1', idempotencyKey: 'k', amountMillicredits: '1', reason: 'r' },
      auth,
    );
    expect([wrongScope.status, wrongScope.json.code]).toEqual([403, 'permission_denied']);
    const health = await postJson(s.port, '/grpc.health.v1.Health/Check', {});
    expect(health.json).toEqual({ status: 'SERVING' });
    s.child.kill('SIGTERM');
    expect(await s.exit).toBe(0);
  });

  it('refuses to start in production without tokens, listing every configuration error', async () => {
    const refused = processes.spawn('refused', { NODE_ENV: 'production', PORT: 'not-a-port', BILLING_DATA_DIR: dataDir() });
    const { code } = await refused.exit;
    expect(code).toBe(1);
    expect(refused.output()).toContain('BILLING_TOKENS');
    expect(refused.output()).toContain('PORT');
  });

  it('two service processes on one PostgreSQL database run the same day\'s top-up once', async () => {
    const database = await createTestDatabase();
    databases.push(database);
    const env = { DATABASE_URL: database.url, BILLING_DATA_DIR: dataDir() };
    const a = await startService(env);
    const b = await startService(env);
    // Every call must succeed: proto3 JSON omits zero counts, so a refused call's error body
    // would otherwise read as "0 accounts topped up".
    const call = async (port: number, method: string, body: unknown) => {
      const res = await postJson(port, method, body);
      expect([method, res.status, res.json.code]).toEqual([method, 200, undefined]);
      return res;
    };
    const seed: [string, string, string][] = [
      ['low', 'PLAN_FREE', '1000'],
      ['empty', 'PLAN_FREE', '0'],
      ['rich', 'PLAN_FREE', '7000'],
      ['pro', 'PLAN_PRO', '1000'],
    ];
    for (const [user, plan, amount] of seed) {
      await call(a.port, '/billing.v1.AdminService/SetPlan', { userId: user, plan });
      if (amount !== '0') {
        await call(b.port, '/billing.v1.BillingService/Grant', { userId: user, idempotencyKey: `seed-${user}`, amountMillicredits: amount, reason: 'seed' });
      }
    }
    const [ra, rb] = await Promise.all([
      call(a.port, '/billing.v1.AdminService/RunDailyTopUp', {}),
      call(b.port, '/billing.v1.AdminService/RunDailyTopUp', {}),
    ]);
    const topped = [ra, rb].map((r) => BigInt(String(r.json.accountsToppedUp ?? '0')));
    expect(topped[0]! + topped[1]!).toBe(2n);
    const again = await call(b.port, '/billing.v1.AdminService/RunDailyTopUp', {});
    expect(again.json).toEqual({}); // nothing topped up, nothing credited: both zero fields omitted
    const balance = async (user: string) =>
      ((await call(a.port, '/billing.v1.BillingService/GetBalance', { userId: user })).json.balance as Record<string, string>)
        .balanceMillicredits;
    expect([await balance('low'), await balance('empty'), await balance('rich'), await balance('pro')]).toEqual([
      '5000', '5000', '7000', '1000',
    ]);
    const verify = await call(b.port, '/billing.v1.AdminService/VerifyLedger', {});
    expect(verify.json.ok).toBe(true);
    a.child.kill('SIGTERM');
    b.child.kill('SIGTERM');
    expect([await a.exit, await b.exit]).toEqual([0, 0]);
  });
});
