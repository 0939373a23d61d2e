// Production runs the compiled JavaScript: `npm run build` (tsc -p tsconfig.build.json) emits
// dist/, and `npm start` runs the command in package.json's "start" script, node with its
// flags on dist/src/main.js, no TypeScript loader. This builds, runs that very command on a
// fresh PostgreSQL database and calls it: the migrations, gen/ code and config/ file resolve
// from the compiled tree, gRPC and Connect answer, and SIGTERM stops it cleanly.
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { afterAll, expect, it } from 'vitest';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const run = promisify(execFile);

let database: TestDatabase | undefined;
afterAll(async () => {
  await database?.drop();
});

/** The arguments `npm start` gives node, from package.json. */
function startArgs(): string[] {
  const script = (JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')) as { scripts: Record<string, string> }).scripts.start!;
  // `exec` makes the shell npm runs the script in become node, so the signals npm forwards
  // reach the server itself (test/server/npm-start.test.ts).
  const [exec, command, ...args] = script.split(/\s+/);
  expect(exec).toBe('exec');
  expect(command).toBe('node');
  // Node flags, then the compiled entry point: no loader (tsx, --import, --require) and no other script.
  expect(args.at(-1)).toMatch(/^dist\/.*\.js$/);
  expect(args.slice(0, -1).filter((a) => !a.startsWith('--') || /^--(import|require|loader|experimental-loader)\b/.test(a) || a.includes('tsx'))).toEqual([]);
  return args;
}

it('npm run build, then the start command serves on PostgreSQL and stops on SIGTERM', async () => {
  await run('npm', ['run', 'build'], { cwd: ROOT });
  database = await createTestDatabase();
  const child = spawn(process.execPath, startArgs(), {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', PORT: '0', METRICS_PORT: '0', DATABASE_URL: database.url, BILLING_DATA_DIR: 'memory://', LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    let port: number | undefined;
    const deadline = Date.now() + 90_000;
    while (port === undefined) {
      const match = /"port":(\d+).*"billing service listening"/.exec(output);
      if (match) port = Number(match[1]);
      else if (child.exitCode !== null) throw new Error(`exited before listening:\n${output}`);
      else if (Date.now() > deadline) throw new Error(`did not start:\n${output}`);
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const url = `http://127.0.0.1:${port}`;
    const billing = createClient(BillingService, createGrpcTransport({ baseUrl: url }));
    // Grant writes through the migrated schema; the catalogue comes from config/muse.json.
    await billing.grant({ userId: 'compiled', idempotencyKey: 'compiled-1', grant: { case: 'amountMillicredits', value: 1234n }, reason: 'compiled' });
    expect((await billing.getBalance({ userId: 'compiled' })).balance?.balanceMillicredits).toBe(1234n);
    const res = await fetch(`${url}/billing.v1.BillingService/GetBalance`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ userId: 'compiled' }),
    });
    expect([res.status, ((await res.json()) as { balance?: { balanceMillicredits?: string } }).balance?.balanceMillicredits]).toEqual([200, '1234']);
    expect(output).toContain('"catalogue":"muse"');
    child.kill('SIGTERM');
    expect(await exit).toBe(0);
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}, 240_000);
