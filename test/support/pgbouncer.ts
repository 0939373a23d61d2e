// A PgBouncer of the tests' own (Debian's pgbouncer, installed by .ci/run) on a free
// loopback port in transaction mode, in front of the local PostgreSQL. Missing pgbouncer
// fails the test that asks for one: it is never skipped.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADMIN_URL } from './postgres.js';

export interface PgBouncer {
  readonly port: number;
  /** The URL of `database` through the pooler. */
  url(database: string): string;
  /** Its output so far (for a failed assertion). */
  output(): string;
  close(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function binary(): string {
  try {
    return execFileSync('sh', ['-c', 'command -v pgbouncer'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('pgbouncer is not installed (apt-get install -y pgbouncer; .ci/run installs it)');
  }
}

async function accepting(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Starts PgBouncer in transaction mode for every database of the server at ADMIN_URL. */
export async function startPgBouncer(settings: Record<string, string | number> = {}): Promise<PgBouncer> {
  const exe = binary();
  const upstream = new URL(ADMIN_URL);
  const user = decodeURIComponent(upstream.username || 'postgres');
  const dir = mkdtempSync(join(tmpdir(), 'billing-pgbouncer-'));
  chmodSync(dir, 0o755);
  const port = await freePort();
  const ini = {
    listen_addr: '127.0.0.1',
    listen_port: port,
    pool_mode: 'transaction',
    // No password: the test server trusts loopback; every client logs in as the server's user.
    auth_type: 'any',
    max_client_conn: 1000,
    default_pool_size: 20,
    // No unix socket: nothing of the test's left in /tmp.
    unix_socket_dir: '',
    // Deliberately not set: ignore_startup_parameters (the service must not need it).
    // PgBouncer refuses to run as root; as root it drops to the server's OS user.
    ...(process.getuid?.() === 0 ? { user: 'postgres' } : {}),
    ...settings,
  };
  const text = [
    '[databases]',
    `* = host=${upstream.hostname} port=${upstream.port || 5432} user=${user}`,
    '[pgbouncer]',
    ...Object.entries(ini).map(([k, v]) => `${k} = ${v}`),
    '',
  ].join('\n');
  const file = join(dir, 'pgbouncer.ini');
  writeFileSync(file, text, { mode: 0o644 });
  let output = '';
  const child: ChildProcess = spawn(exe, [file], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const close = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 100; i += 1) {
    if (child.exitCode !== null) break;
    if (await accepting(port)) {
      return {
        port,
        url: (database) => `postgresql://${encodeURIComponent(user)}@127.0.0.1:${port}/${database}`,
        output: () => output,
        close,
      };
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  await close();
  throw new Error(`pgbouncer did not start on port ${port}:\n${output}`);
}
