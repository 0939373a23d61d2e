// A PostgreSQL cluster of a test's own, for tests that stop and restart the database: the
// shared server on 5432 is never touched. initdb and pg_ctl (PostgreSQL 15's binaries) in
// a temporary directory, on a free loopback port; run as the postgres user when the tests
// run as root (initdb refuses root). Stopped and removed on close(), and, should the test
// process end first, by an exit hook.
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, chownSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

const BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin';

export interface Cluster {
  /** postgres:// URL of the database "billing" on this cluster. */
  readonly url: string;
  readonly port: number;
  /** `pg_ctl restart -m <mode>`: resolves once the server accepts connections again. */
  restart(mode: 'fast' | 'immediate'): Promise<void>;
  stop(mode: 'fast' | 'immediate'): Promise<void>;
  start(): Promise<void>;
  /** Stops the server (if up) and removes its directory. */
  close(): void;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** The uid/gid to run PostgreSQL as: ourselves, or postgres when we are root. */
function runAs(): { uid: number; gid: number; user?: string } {
  const uid = process.getuid?.() ?? 0;
  if (uid !== 0) return { uid, gid: process.getgid?.() ?? 0 };
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  return { uid: id('-u'), gid: id('-g'), user: 'postgres' };
}

export async function startCluster(): Promise<Cluster> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'billing-pg-'));
  const data = join(dir, 'data');
  const log = join(dir, 'log');
  const who = runAs();
  chmodSync(dir, 0o700);
  chownSync(dir, who.uid, who.gid);
  const argv = (bin: string, args: string[]): [string, string[]] => {
    const command = join(BIN, bin);
    return who.user ? ['runuser', ['-u', who.user, '--', command, ...args]] : [command, args];
  };
  // Asynchronous, so that the service in this process keeps serving while pg_ctl waits.
  const run = async (bin: string, args: string[]) => {
    await promisify(execFile)(...argv(bin, args), { timeout: 120_000 });
  };
  await run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8']);
  // Loopback TCP only, a socket directory of its own; fsync stays on (the service refuses
  // a cluster without it).
  const options = `-c port=${port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${dir} -c max_connections=60`;
  const ctlArgs = (...args: string[]) => ['-D', data, '-l', log, '-o', options, '-w', '-t', '60', ...args];
  const ctl = (...args: string[]) => run('pg_ctl', ctlArgs(...args));
  let running = false;
  // Synchronous: it also runs from the exit hook, where nothing asynchronous completes.
  const stopNow = () => {
    if (!running) return;
    running = false;
    try {
      execFileSync(...argv('pg_ctl', ctlArgs('stop', '-m', 'immediate')), { stdio: 'ignore', timeout: 60_000 });
    } catch {
      // already down
    }
  };
  const onExit = () => {
    stopNow();
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);
  try {
    running = true;
    await ctl('start');
    const admin = new pg.Client({ connectionString: `postgresql://postgres@127.0.0.1:${port}/postgres` });
    await admin.connect();
    await admin.query('create database billing');
    await admin.end();
  } catch (error) {
    onExit();
    process.removeListener('exit', onExit);
    throw error;
  }
  return {
    url: `postgresql://postgres@127.0.0.1:${port}/billing`,
    port,
    restart: async (mode) => {
      running = true;
      await ctl('restart', '-m', mode);
    },
    stop: async (mode) => {
      await ctl('stop', '-m', mode);
      running = false;
    },
    start: async () => {
      running = true;
      await ctl('start');
    },
    close: () => {
      onExit();
      process.removeListener('exit', onExit);
    },
  };
}
