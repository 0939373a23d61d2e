// The lock on the embedded database's data directory (src/storage/datadir-lock.ts), with real
// processes: a second service on the same directory exits 1 naming the directory and the
// holder's pid instead of dying in PGlite (`RuntimeError: Aborted()`); the CLIs that open the
// database directly refuse the same way; once the holder stops the lock is free; a lock left
// by a process killed with -9 is taken over. Then `npm start` stops cleanly on SIGTERM and
// SIGINT sent to npm itself: exit 0, the service gone, the lock released.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LOCK_FILE } from '../../src/storage/datadir-lock.js';
import { killService, ServiceProcesses, stopService } from '../support/process.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const processes = new ServiceProcesses();
const dirs: string[] = [];

afterAll(async () => {
  await processes.killAll();
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

function dataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'billing-lock-'));
  dirs.push(dir);
  return dir;
}

/** Runs a CLI (src/cli/<name>.ts) on the data directory; its exit code and output. */
function cli(name: string, dir: string): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', `src/cli/${name}.ts`], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', BILLING_DATA_DIR: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, output })));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('the data directory lock', () => {
  it('refuses a second service and the CLIs while a service holds the directory, and frees it when it stops', async () => {
    const dir = dataDir();
    const first = await processes.start('first', { BILLING_DATA_DIR: dir });
    const pid = first.child.pid!;
    expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')).pid).toBe(pid);

    const second = processes.spawn('second', { BILLING_DATA_DIR: dir });
    expect((await second.exit).code).toBe(1);
    const message = `the data directory ${dir} is in use by another process: pid ${pid} `;
    expect(second.output()).toContain(message);
    expect(second.output()).not.toContain('Aborted');
    expect(second.output()).not.toMatch(/\n\s+at /); // a message, not a stack trace

    for (const name of ['migrate', 'verify-ledger']) {
      const refused = await cli(name, dir);
      expect([name, refused.code]).toEqual([name, 1]);
      expect(refused.output).toContain(message);
    }
    // The refusals left the holder's lock alone, and it still serves.
    expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')).pid).toBe(pid);

    expect(await stopService(first)).toBe(0);
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
    const verified = await cli('verify-ledger', dir);
    expect([verified.code, verified.output]).toEqual([0, expect.stringContaining('ok: ')]);
    const third = await processes.start('third', { BILLING_DATA_DIR: dir });
    expect(await stopService(third)).toBe(0);
  }, 180_000);

  it('takes over the lock of a process killed with -9', async () => {
    const dir = dataDir();
    const killed = await processes.start('killed', { BILLING_DATA_DIR: dir });
    expect(await killService(killed)).toBe('SIGKILL');
    // Left behind, naming a pid that is gone.
    const stale = JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number };
    expect(stale.pid).toBe(killed.child.pid);
    expect(isAlive(stale.pid)).toBe(false);
    const next = await processes.start('next', { BILLING_DATA_DIR: dir });
    expect(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')).pid).toBe(next.child.pid);
    expect(await stopService(next)).toBe(0);
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
  }, 180_000);
});

describe('npm start', () => {
  /** Node pids the runs below saw holding a lock: killed at the end if a run left one behind. */
  const servers: number[] = [];
  afterAll(() => {
    for (const pid of servers) if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  });

  // npm runs the script through `sh -c` and forwards SIGTERM and SIGINT to that shell. Without
  // `exec` in the script the shell died of the signal and left node running, orphaned, with
  // the lock held, and npm exited 143. Both runs build first (prestart), as a user's does.
  it.each(['SIGTERM', 'SIGINT'] as const)('stops cleanly on %s sent to npm: exit 0, the server gone, the lock released', async (signal) => {
    const dir = dataDir();
    const npm = spawn('npm', ['start'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', PORT: '0', METRICS_PORT: '0', BILLING_DATA_DIR: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    npm.stdout.on('data', (d: Buffer) => (output += d.toString()));
    npm.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      npm.once('exit', (code, sig) => resolve({ code, signal: sig })),
    );
    const deadline = Date.now() + 150_000;
    while (!/"billing service listening"/.test(output)) {
      if (npm.exitCode !== null) throw new Error(`npm start exited before listening:\n${output}`);
      if (Date.now() > deadline) throw new Error(`npm start did not start:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const server = (JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number }).pid;
    servers.push(server);
    expect(server).not.toBe(npm.pid); // the lock is the server's, npm's child

    npm.kill(signal);
    expect(await exit).toEqual({ code: 0, signal: null });
    expect(output).toContain(`"signal":"${signal}","msg":"shutting down"`);
    // npm waited for the server: gone, and its lock with it.
    expect(isAlive(server)).toBe(false);
    expect(existsSync(join(dir, LOCK_FILE))).toBe(false);
  }, 200_000);
});
