// `npm run bench`: end-to-end throughput and latency of the real service against a fresh
// PostgreSQL database, beside the database's own limit for the same charge transaction.
//
//   1. builds the server (`npm run build` → dist/) and starts dist/src/main.js as a child
//      process on this same Node; with BENCH_SERVER=tsx, or when the build fails, it starts
//      src/main.ts under tsx instead and says that its memory is not production's,
//   2. creates a throwaway database (dropped at the end), seeds BENCH_USERS users and one
//      hot user through Grant, and gives each of those users one page (50) of past charges
//      with COPY, so ListTransactions returns full pages,
//   3. runs bench/load.ts in another process, BENCH_WARMUP_SECONDS + BENCH_SECONDS each:
//      charge-spread, then charge-spread-half-rate (open loop at half the charge-spread rate
//      just measured), charge-hot, get-balance-spread, list-transactions-spread, closed loops
//      with BENCH_CONCURRENCY calls in flight, while sampling the server's RSS and CPU and
//      the load generator's CPU,
//   4. GetBalance once more with h2load (Debian's nghttp2-client) when it is installed,
//   5. stops the server and runs pgbench with bench/charge.sql (spread, then hot),
//   6. with BENCH_HISTORY=<n>: starts the server again, COPYs n past charges into the ledger
//      (bench/history.ts), and runs charge-spread, get-balance-spread and
//      list-transactions-spread again, then VerifyLedger,
//   7. seeds BENCH_TOP_UP_ACCOUNTS FREE accounts in another database and times one daily
//      top-up run over them (bench/top-up.ts),
//   8. prints a table and each goal of issue 12 (met or not), and writes .bench/last.json.
//
// Environment: BENCH_SECONDS (10), BENCH_WARMUP_SECONDS (2), BENCH_CONCURRENCY (64),
// BENCH_USERS (1000), BENCH_PGBENCH_CLIENTS (16), BENCH_CLIENT (lean | connect: the load
// generator's gRPC client, see bench/load.ts), BENCH_CONNECTIONS (1: HTTP/2 connections of
// the lean client), BENCH_H2LOAD=0 (skip h2load), BENCH_HISTORY (0: transactions to seed
// for the history run), BENCH_SERVER (build | tsx), BENCH_CPU_PROF=1 (server writes a V8
// CPU profile to .bench/prof/ on exit), BENCH_KEEP_DB=1 (keep the database for inspection
// instead of dropping it), TEST_DATABASE_URL (admin URL, see test/support/postgres.ts).
// Only 127.0.0.1 is contacted.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { create, toBinary } from '@bufbuild/protobuf';
import { BillingService, GetBalanceRequestSchema } from '../gen/billing/v1/billing_service_pb.js';
import { PAGE_SIZE_DEFAULT } from '../src/domain/request.js';
import { verifyLedger } from '../src/ledger/verify/verify.js';
import { openDatabase } from '../src/storage/database.js';
import { createTestDatabase, type TestDatabase } from '../test/support/postgres.js';
import { type Goal, goals, printGoals } from './goals.js';
import { h2loadPath, H2LOAD_MISSING, runH2load } from './h2load.js';
import { type HistoryResult, seedHistory } from './history.js';
import type { ScenarioName, ScenarioResult } from './load.js';
import { runTopUpBench } from './top-up.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BENCH_DIR = join(ROOT, 'bench');

function envNumber(name: string, fallback: number, min: number, max: number): number {
  const text = process.env[name];
  if (text === undefined || text === '') return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < min || value > max) throw new Error(`${name} must be a number in [${min}, ${max}]`);
  return value;
}

const SECONDS = envNumber('BENCH_SECONDS', 10, 1, 300);
const WARMUP_SECONDS = envNumber('BENCH_WARMUP_SECONDS', 2, 0, 60);
const CONCURRENCY = envNumber('BENCH_CONCURRENCY', 64, 1, 1024);
const USERS = envNumber('BENCH_USERS', 1000, 1, 100_000);
const PGBENCH_CLIENTS = envNumber('BENCH_PGBENCH_CLIENTS', 16, 1, 64);
const CPU_PROF = process.env.BENCH_CPU_PROF === '1';
const KEEP_DB = process.env.BENCH_KEEP_DB === '1';
/** Accounts seeded for the daily top-up run; 0 skips it. */
const TOP_UP_ACCOUNTS = envNumber('BENCH_TOP_UP_ACCOUNTS', 1_000_000, 0, 5_000_000);
/** Transactions BENCH_HISTORY seeds before the history run; 0 skips it. */
const HISTORY = envNumber('BENCH_HISTORY', 0, 0, 100_000_000);
const CLIENT = process.env.BENCH_CLIENT ?? 'lean';
const H2LOAD = process.env.BENCH_H2LOAD !== '0';
const SERVER_MODE = process.env.BENCH_SERVER ?? 'build';
if (SERVER_MODE !== 'build' && SERVER_MODE !== 'tsx') throw new Error('BENCH_SERVER must be "build" or "tsx"');
/** In this order: the half-rate scenario takes its rate from the charge-spread before it. */
const SCENARIOS: ScenarioName[] = ['charge-spread', 'charge-spread-half-rate', 'charge-hot', 'get-balance-spread', 'list-transactions-spread'];
const HISTORY_SCENARIOS: ScenarioName[] = ['charge-spread', 'get-balance-spread', 'list-transactions-spread'];

// Users are "bench-user-1" … "bench-user-N"; the hot user is "bench-user-0", so pgbench's
// charge.sql reaches both with one numeric variable.
const USER_PREFIX = 'bench-user-';
const HOT_USER = `${USER_PREFIX}0`;
/** Per spread user: far more than BENCH_SECONDS of 1-milli-credit charges can spend. */
const SPREAD_GRANT = 1_000_000_000n;
/** The hot user: the largest single grant (10^12), enough for every hot charge. */
const HOT_GRANT = 1_000_000_000_000n;

const HOST = '127.0.0.1';
const CLK_TCK = 100; // Linux USER_HZ, the unit of utime/stime in /proc/<pid>/stat

const log = (message: string) => process.stderr.write(`[bench] ${message}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- children and cleanup

const children = new Set<ChildProcess>();
/** The run's database, dropped on every way out (unless BENCH_KEEP_DB=1). */
let database: TestDatabase | undefined;

async function dropDatabase(): Promise<void> {
  if (!database) return;
  const db = database;
  database = undefined;
  if (KEEP_DB) {
    log(`kept database ${db.name} (BENCH_KEEP_DB=1)`);
    return;
  }
  await Promise.race([db.drop(), sleep(10_000).then(() => Promise.reject(new Error('timed out')))]).catch((error: unknown) =>
    log(`could not drop ${db.name}: ${(error as Error).message}`),
  );
}

/** Runs a TypeScript file on this same Node binary with tsx's loader (no npx wrapper). */
function spawnTs(file: string, env: NodeJS.ProcessEnv, nodeArgs: string[] = []): ChildProcess {
  const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', file], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  track(child);
  return child;
}

/** Runs a compiled JavaScript file on this same Node binary, no loader. */
function spawnJs(file: string, env: NodeJS.ProcessEnv, nodeArgs: string[] = []): ChildProcess {
  const child = spawn(process.execPath, [...nodeArgs, file], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  return child;
}

function track(child: ChildProcess): void {
  children.add(child);
  child.once('exit', () => children.delete(child));
}

function killAll(signal: NodeJS.Signals): void {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill(signal);
}

process.once('exit', () => killAll('SIGKILL'));

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((r) => child.once('exit', (code) => r(code)));
}

/** SIGTERM, then SIGKILL after graceMs. */
async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited(child);
  clearTimeout(timer);
}

function prefixLines(stream: NodeJS.ReadableStream | null, prefix: string): void {
  if (!stream) return;
  createInterface({ input: stream }).on('line', (line) => process.stderr.write(`${prefix} ${line}\n`));
}

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolvePort(port));
    });
  });
}

// ---------------------------------------------------------------- /proc sampling

interface ProcStatus {
  rssKiB: number;
  hwmKiB: number;
}

function procStatus(pid: number): ProcStatus | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? Number.NaN);
    return { rssKiB: field('VmRSS'), hwmKiB: field('VmHWM') };
  } catch {
    return undefined;
  }
}

/** utime + stime of a process, in seconds. */
function procCpuSeconds(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the ")" that closes comm: state is field 3, utime 14, stime 15.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
  } catch {
    return Number.NaN;
  }
}

/** Busy and total jiffies of the whole machine. */
function machineCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  const total = values.reduce((a, b) => a + b, 0);
  const idle = (values[3] ?? 0) + (values[4] ?? 0);
  return { busy: total - idle, total };
}

async function machineBusyPercent(ms: number): Promise<number> {
  const a = machineCpu();
  await sleep(ms);
  const b = machineCpu();
  return Math.round(((b.busy - a.busy) / (b.total - a.total)) * 1000) / 10;
}

function procExe(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, 4).join(' ');
  } catch {
    return '?';
  }
}

// ---------------------------------------------------------------- the server

/** How the server is started: compiled JavaScript (production's way) or TypeScript under tsx. */
interface ServerStart {
  mode: 'compiled' | 'tsx';
  /** What runs, relative to the project root. */
  entry: string;
  /** Why, when it is not compiled. */
  warning?: string;
  buildSeconds?: number;
  /** Node's flags from package.json's start script (production's heap settings), compiled only. */
  nodeFlags: string[];
}

/** Where `npm run build` puts the entry point: tsconfig.build.json's rootDir "." today, "src" if it changes. */
const COMPILED_MAINS = ['dist/src/main.js', 'dist/main.js'];

/** `npm run build` (tsc → dist/), unless BENCH_SERVER=tsx; a failed build falls back to tsx. */
async function prepareServerStart(): Promise<ServerStart> {
  const tsx = (warning: string): ServerStart => {
    log(`WARNING: ${warning}; the server runs under tsx, so its memory and start-up are not production's`);
    return { mode: 'tsx', entry: 'src/main.ts', warning, nodeFlags: [] };
  };
  if (SERVER_MODE === 'tsx') return tsx('BENCH_SERVER=tsx');
  const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts?: Record<string, string> }).scripts ?? {};
  if (!scripts.build) return tsx('package.json has no build script');
  const started = Date.now();
  log(`npm run build (${scripts.build})`);
  const child = spawn('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  track(child);
  prefixLines(child.stdout, '[build]');
  prefixLines(child.stderr, '[build]');
  const code = await exited(child);
  const buildSeconds = Math.round((Date.now() - started) / 100) / 10;
  if (code !== 0) return tsx(`npm run build failed (exit ${code})`);
  // The entry `npm start` runs. The build is incremental (an unchanged source keeps its old
  // output), so an entry counts as fresh when it is not older than src/main.ts.
  const words = (scripts.start ?? '').split(/\s+/);
  const named = words.find((word) => word.endsWith('.js'));
  const fresh = (file: string) => {
    try {
      return statSync(join(ROOT, file)).mtimeMs >= statSync(join(ROOT, 'src/main.ts')).mtimeMs;
    } catch {
      return false;
    }
  };
  const entry = [...(named ? [named] : []), ...COMPILED_MAINS].find(fresh);
  if (!entry) return tsx(`npm run build left no fresh ${[named, ...COMPILED_MAINS].filter(Boolean).join(', ')}`);
  // The flags `npm start` gives node (e.g. the V8 heap bounds): the bench runs what production runs.
  const nodeFlags = words.filter((word) => word.startsWith('--'));
  log(`built in ${buildSeconds} s; the server runs node ${[...nodeFlags, entry].join(' ')}`);
  return { mode: 'compiled', entry, buildSeconds, nodeFlags };
}

interface Server {
  child: ChildProcess;
  pid: number;
  url: string;
  metricsPort: number;
}

async function startServer(database: TestDatabase, start: ServerStart): Promise<Server> {
  const [port, metricsPort] = [await freePort(), await freePort()];
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    METRICS_PORT: String(metricsPort),
    HOST,
    DATABASE_URL: database.url,
    BILLING_CONFIG: 'config/muse.json',
    LOG_LEVEL: 'warn',
    // Not "production": that requires bearer tokens, and the bench runs in open mode.
    NODE_ENV: 'development',
    // Throughput is measured without the admission edge: every call in flight is admitted
    // (set DATABASE_WORK_MAX to bench the edge itself).
    DATABASE_WORK_MAX: process.env.DATABASE_WORK_MAX ?? String(Math.max(CONCURRENCY * 2, 32)),
  };
  delete env.BILLING_TOKENS; // open mode on loopback: no bearer tokens needed
  const nodeArgs = [...start.nodeFlags, ...(CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${join(ROOT, '.bench', 'prof')}`] : [])];
  const child = start.mode === 'compiled' ? spawnJs(start.entry, env, nodeArgs) : spawnTs(start.entry, env, nodeArgs);
  if (child.pid === undefined) throw new Error('could not start the server');
  prefixLines(child.stdout, '[server]');
  prefixLines(child.stderr, '[server]');
  const url = `http://${HOST}:${port}`;
  const client = createClient(BillingService, createGrpcTransport({ baseUrl: url }));
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`the server exited while starting (code ${child.exitCode}, signal ${child.signalCode})`);
    }
    try {
      await client.getBalance({ userId: 'bench-probe' }, { timeoutMs: 1000 });
      break;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`the server did not answer within 60 s: ${ConnectError.from(error).message}`);
      await sleep(200);
    }
  }
  return { child, pid: child.pid, url, metricsPort };
}

async function seed(url: string): Promise<void> {
  const client = createClient(BillingService, createGrpcTransport({ baseUrl: url }));
  const grant = (userId: string, amount: bigint) =>
    client.grant(
      { userId, idempotencyKey: `bench-seed-${userId}`, grant: { case: 'amountMillicredits', value: amount }, reason: 'bench seed' },
      { timeoutMs: 30_000 },
    );
  await grant(HOT_USER, HOT_GRANT);
  let next = 1;
  const worker = async () => {
    while (next <= USERS) {
      const user = next++;
      await grant(`${USER_PREFIX}${user}`, SPREAD_GRANT);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
}

// ---------------------------------------------------------------- scenarios

interface ScenarioReport extends Omit<ScenarioResult, 'scenario'> {
  /** A load.ts scenario, or "get-balance-spread-h2load". */
  scenario: string;
  /** h2load only: its mean latency (it reports no percentiles), and its command line. */
  meanMs?: number;
  command?: string;
  /** Server process CPU during the measured window, % of one core (the machine has os.availableParallelism()). */
  serverCpuPercent: number;
  /** Whole machine busy during the measured window, % of all cores. */
  machineCpuPercent: number;
  serverRssMiBEnd: number;
  /** Mean time inside the server's handler (its metrics interceptor) during the window, ms. */
  serverMeanMs: number;
}

/** The server's Prometheus text, as series → value ("" if it cannot be read). */
async function scrapeMetrics(port: number): Promise<Map<string, number>> {
  const series = new Map<string, number>();
  try {
    const response = await fetch(`http://${HOST}:${port}/metrics`, { signal: AbortSignal.timeout(2000) });
    for (const line of (await response.text()).split('\n')) {
      if (line.startsWith('#') || line === '') continue;
      const space = line.lastIndexOf(' ');
      series.set(line.slice(0, space), Number(line.slice(space + 1)));
    }
  } catch {
    // metrics are a nice-to-have
  }
  return series;
}

const SCENARIO_PROCEDURE: Record<ScenarioName, string> = {
  'charge-spread': 'billing.v1.BillingService/Charge',
  'charge-spread-half-rate': 'billing.v1.BillingService/Charge',
  'charge-hot': 'billing.v1.BillingService/Charge',
  'get-balance-spread': 'billing.v1.BillingService/GetBalance',
  'list-transactions-spread': 'billing.v1.BillingService/ListTransactions',
};

function meanHandlerMs(before: Map<string, number>, after: Map<string, number>, procedure: string): number {
  const key = (suffix: string) => `billing_rpc_duration_seconds_${suffix}{procedure="${procedure}"}`;
  const sum = (after.get(key('sum')) ?? Number.NaN) - (before.get(key('sum')) ?? 0);
  const count = (after.get(key('count')) ?? Number.NaN) - (before.get(key('count')) ?? 0);
  return count > 0 ? Math.round((sum / count) * 1000 * 100) / 100 : Number.NaN;
}

/** The server's CPU, machine CPU and metrics at the start of a measured window. */
interface Marks {
  serverCpu: number;
  machine: { busy: number; total: number };
  at: number;
  metrics: Promise<Map<string, number>>;
}

function mark(server: Server): Marks {
  return { serverCpu: procCpuSeconds(server.pid), machine: machineCpu(), at: performance.now(), metrics: scrapeMetrics(server.metricsPort) };
}

/** Server and machine CPU since `marks`, % of one core and % of all cores. */
function cpuSince(server: Server, marks: Marks): { serverCpuPercent: number; machineCpuPercent: number } {
  const serverCpu = procCpuSeconds(server.pid);
  const machine = machineCpu();
  const elapsed = (performance.now() - marks.at) / 1000;
  return {
    serverCpuPercent: Math.round(((serverCpu - marks.serverCpu) / elapsed) * 1000) / 10,
    machineCpuPercent: Math.round(((machine.busy - marks.machine.busy) / (machine.total - marks.machine.total)) * 1000) / 10,
  };
}

function rssSampler(server: Server, onRss: (kib: number) => void): NodeJS.Timeout {
  return setInterval(() => {
    const status = procStatus(server.pid);
    if (status) onRss(Math.max(status.rssKiB, status.hwmKiB));
  }, 200);
}

async function runScenarios(server: Server, scenarioNames: ScenarioName[], onRss: (kib: number) => void): Promise<ScenarioReport[]> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    BENCH_URL: server.url,
    BENCH_CLIENT: CLIENT,
    BENCH_SCENARIOS: scenarioNames.join(','),
    BENCH_WARMUP_MS: String(WARMUP_SECONDS * 1000),
    BENCH_MEASURE_MS: String(SECONDS * 1000),
    BENCH_CONCURRENCY: String(CONCURRENCY),
    BENCH_USERS: String(USERS),
    BENCH_USER_PREFIX: USER_PREFIX,
    BENCH_HOT_USER: HOT_USER,
  };
  const load = spawnTs('bench/load.ts', env);
  prefixLines(load.stderr, '[load]');
  const budgetMs = scenarioNames.length * (WARMUP_SECONDS + SECONDS) * 1000 + 60_000;
  const killer = setTimeout(() => {
    log(`load generator exceeded ${budgetMs} ms; killing it`);
    load.kill('SIGKILL');
  }, budgetMs);
  const reports: Promise<ScenarioReport>[] = [];
  let marks: Marks | undefined;
  const sampler = rssSampler(server, onRss);
  const lines = createInterface({ input: load.stdout! });
  lines.on('line', (line) => {
    let event: { event: string; scenario?: string };
    try {
      event = JSON.parse(line);
    } catch {
      process.stderr.write(`[load] ${line}\n`);
      return;
    }
    if (event.event === 'measure-start') {
      marks = mark(server);
      log(`${event.scenario}: measuring for ${SECONDS} s`);
    } else if (event.event === 'result') {
      const result = event as unknown as ScenarioResult;
      const status = procStatus(server.pid);
      const started = marks;
      const report: ScenarioReport = {
        ...result,
        ...(marks ? cpuSince(server, marks) : { serverCpuPercent: Number.NaN, machineCpuPercent: Number.NaN }),
        serverRssMiBEnd: status ? Math.round(status.rssKiB / 102.4) / 10 : Number.NaN,
        serverMeanMs: Number.NaN,
      };
      reports.push(
        Promise.all([started?.metrics, scrapeMetrics(server.metricsPort)]).then(([before, after]) => ({
          ...report,
          serverMeanMs: before ? meanHandlerMs(before, after, SCENARIO_PROCEDURE[result.scenario]) : Number.NaN,
        })),
      );
      log(
        `${result.scenario}: ${result.callsPerSecond} calls/s, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms, ` +
          `load generator ${result.loadCpuPercent}% of a core`,
      );
      marks = undefined;
    }
  });
  const code = await exited(load);
  clearTimeout(killer);
  clearInterval(sampler);
  if (code !== 0) throw new Error(`the load generator failed (exit code ${code})`);
  if (reports.length !== scenarioNames.length) {
    throw new Error(`the load generator reported ${reports.length} of ${scenarioNames.length} scenarios`);
  }
  return Promise.all(reports);
}

// ---------------------------------------------------------------- pgbench

interface PgbenchResult {
  name: string;
  tps: number;
  transactions: number;
  failed: number;
  latencyMsAvg: number;
  /** Whole machine busy while pgbench ran, % of all cores. */
  machineCpuPercent: number;
  command: string;
}

async function pgbench(database: TestDatabase, name: string, userMin: number, userMax: number): Promise<PgbenchResult> {
  const url = new URL(database.url);
  const args = [
    '-n',
    '-f', join(BENCH_DIR, 'charge.sql'),
    '-c', String(PGBENCH_CLIENTS),
    '-j', '2',
    '-T', String(SECONDS),
    '-D', `user_min=${userMin}`,
    '-D', `user_max=${userMax}`,
    '-h', HOST,
    '-p', url.port || '5432',
    '-U', decodeURIComponent(url.username || 'postgres'),
    database.name,
  ];
  const command = `pgbench ${args.join(' ')}`;
  log(`pgbench ${name}: ${command}`);
  const child = spawn('pgbench', args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PGCONNECT_TIMEOUT: '10' } });
  track(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), (SECONDS + 30) * 1000);
  const before = machineCpu();
  const code = await exited(child);
  const after = machineCpu();
  clearTimeout(killer);
  const tps = Number(/^tps = ([\d.]+)/m.exec(stdout)?.[1] ?? Number.NaN);
  if (code !== 0 || !Number.isFinite(tps)) {
    throw new Error(`pgbench ${name} failed (exit ${code}):\n${stdout}\n${stderr}`);
  }
  const number = (pattern: RegExp) => Number(pattern.exec(stdout)?.[1] ?? Number.NaN);
  return {
    name,
    tps: Math.round(tps * 10) / 10,
    transactions: number(/^number of transactions actually processed: (\d+)/m),
    failed: number(/^number of failed transactions: (\d+)/m) || 0,
    latencyMsAvg: number(/^latency average = ([\d.]+) ms/m),
    machineCpuPercent: Math.round(((after.busy - before.busy) / (after.total - before.total)) * 1000) / 10,
    command,
  };
}

// ---------------------------------------------------------------- h2load

/** GetBalance of one bench user with h2load, beside the lean client's get-balance-spread. */
async function h2loadGetBalance(server: Server, onRss: (kib: number) => void): Promise<ScenarioReport | undefined> {
  if (!H2LOAD) return undefined;
  if (!h2loadPath()) {
    log(H2LOAD_MISSING);
    return undefined;
  }
  mkdirSync(join(ROOT, '.bench'), { recursive: true });
  let marks: Marks | undefined;
  const sampler = rssSampler(server, onRss);
  try {
    const procedure = SCENARIO_PROCEDURE['get-balance-spread'];
    const result = await runH2load({
      url: `${server.url}/${procedure}`,
      message: toBinary(GetBalanceRequestSchema, create(GetBalanceRequestSchema, { userId: `${USER_PREFIX}1` })),
      bodyFile: join(ROOT, '.bench', 'h2load-get-balance.bin'),
      connections: 1,
      streams: CONCURRENCY,
      seconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      onMeasureStart: () => {
        marks = mark(server);
        log(`get-balance-spread-h2load: measuring for ${SECONDS} s`);
      },
      track,
    });
    const cpu = cpuSince(server, marks!);
    const [before, after] = await Promise.all([marks!.metrics, scrapeMetrics(server.metricsPort)]);
    // h2load sees HTTP statuses only; the server's own count tells the gRPC errors.
    const errors: Record<string, number> = {};
    for (const [series, value] of after) {
      const match = /^billing_rpc_calls_total\{procedure="([^"]+)",code="([^"]+)"\}$/.exec(series);
      if (!match || match[1] !== procedure || match[2] === 'ok') continue;
      const n = value - (before.get(series) ?? 0);
      if (n > 0) errors[match[2]!] = n;
    }
    const grpcErrors = Object.values(errors).reduce((a, b) => a + b, 0);
    if (result.failed > 0) errors.h2loadFailed = result.failed;
    const status = procStatus(server.pid);
    log(`get-balance-spread-h2load: ${result.callsPerSecond} calls/s, mean ${result.meanMs} ms, h2load ${result.loadCpuPercent}% of a core`);
    return {
      event: 'result',
      scenario: 'get-balance-spread-h2load',
      client: 'h2load',
      seconds: result.seconds,
      calls: result.requests,
      ok: result.succeeded - grpcErrors,
      errors,
      callsPerSecond: result.callsPerSecond,
      p50Ms: Number.NaN,
      p90Ms: Number.NaN,
      p99Ms: Number.NaN,
      meanMs: result.meanMs,
      maxMs: result.maxMs,
      loadCpuPercent: result.loadCpuPercent,
      ...cpu,
      serverRssMiBEnd: status ? Math.round(status.rssKiB / 102.4) / 10 : Number.NaN,
      serverMeanMs: meanHandlerMs(before, after, procedure),
      command: result.command,
    };
  } catch (error) {
    log(`h2load run failed, reported without it: ${(error as Error).message}`);
    return undefined;
  } finally {
    clearInterval(sampler);
  }
}

// ---------------------------------------------------------------- history

interface HistoryReport {
  seeding: HistoryResult;
  scenarios: ScenarioReport[];
  verifyOk: boolean;
  verifySeconds: number;
}

async function historyRun(db: TestDatabase, start: ServerStart, onRss: (kib: number) => void): Promise<HistoryReport> {
  const server = await startServer(db, start);
  try {
    const seed = Number(process.env.BENCH_HISTORY_SEED ?? Math.floor(Math.random() * 2 ** 31));
    log(`history: seeding ${HISTORY.toLocaleString('en')} transactions with COPY (BENCH_HISTORY_SEED=${seed})`);
    const seeding = await seedHistory({ databaseUrl: db.url, transactions: HISTORY, users: USERS, userPrefix: USER_PREFIX, seed });
    log(
      `history: seeded ${seeding.transactions.toLocaleString('en')} transactions + ${seeding.postings.toLocaleString('en')} postings ` +
        `in ${seeding.totalSeconds} s (COPY ${seeding.copySeconds} s, ANALYZE ${seeding.analyzeSeconds} s)`,
    );
    const scenarios = await runScenarios(server, HISTORY_SCENARIOS, onRss);
    const status = procStatus(server.pid);
    if (status) onRss(Math.max(status.rssKiB, status.hwmKiB));
    await stopChild(server.child, 15_000);
    const verifyStart = Date.now();
    const ledger = await openDatabase({ databaseUrl: db.url, dataDir: 'memory://', poolSizeMax: 2 });
    let verifyOk = false;
    try {
      const report = await verifyLedger(ledger);
      verifyOk = report.ok;
      if (!report.ok) log(`history: VerifyLedger found violations: ${JSON.stringify(report).slice(0, 2000)}`);
    } finally {
      await ledger.close();
    }
    const verifySeconds = Math.round((Date.now() - verifyStart) / 100) / 10;
    log(`history: VerifyLedger ${verifyOk ? 'ok' : 'FAILED'} in ${verifySeconds} s`);
    return { seeding, scenarios, verifyOk, verifySeconds };
  } finally {
    await stopChild(server.child, 5_000);
  }
}

// ---------------------------------------------------------------- report

const cell = (value: number | undefined, digits = 2) => (value !== undefined && Number.isFinite(value) ? value.toFixed(digits) : '-');

function table(reports: ScenarioReport[]): string {
  const header = ['scenario', 'client', 'calls/s', 'p50 ms', 'p99 ms', 'max ms', 'errors', 'calls', 'in-handler ms', 'server CPU', 'load CPU', 'machine CPU'];
  const rows = reports.map((r) => [
    r.scenario,
    r.client,
    cell(r.callsPerSecond, 1),
    cell(r.p50Ms),
    cell(r.p99Ms),
    cell(r.maxMs),
    Object.keys(r.errors).length === 0 ? '0' : Object.entries(r.errors).map(([code, n]) => `${code}:${n}`).join(' '),
    String(r.calls),
    cell(r.serverMeanMs),
    `${r.serverCpuPercent}%`,
    `${r.loadCpuPercent}%`,
    `${r.machineCpuPercent}%`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const format = (row: string[]) => row.map((c, i) => (i === 0 || i === 1 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [format(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(format)].join('\n');
}

function notes(reports: ScenarioReport[]): string[] {
  const lines: string[] = [];
  for (const r of reports) {
    if (r.targetCallsPerSecond !== undefined) {
      lines.push(
        `${r.scenario}: open loop at ${r.targetCallsPerSecond} calls/s (half of charge-spread), latency from the scheduled send time; ` +
          `${r.lateSends} of ${r.calls} calls sent > 1 ms late (max lag ${r.maxSendLagMs} ms), ${r.unsent} not sent`,
      );
    }
    if (r.meanMs !== undefined) lines.push(`${r.scenario}: h2load reports no percentiles; mean ${r.meanMs} ms, max ${r.maxMs} ms; one user's body every call`);
  }
  return lines;
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const startedAt = Date.now();
  log(`node ${process.version} (${process.execPath}); ${SECONDS} s per scenario after ${WARMUP_SECONDS} s warm-up, ${CONCURRENCY} in flight`);
  if (!process.version.startsWith('v24.')) log(`WARNING: running on Node ${process.version}; run it with \`npm run bench\` (Node 24)`);
  const serverStart = await prepareServerStart();
  const background = await machineBusyPercent(1000);
  log(`machine busy before the run: ${background}% of ${os.availableParallelism()} cores`);
  if (background > 20) log('WARNING: something else is using the CPU; the numbers below will be lower and noisier');
  const db = await createTestDatabase('billing_bench');
  database = db;
  log(`database ${db.name}`);
  let server: Server | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    log(`${signal}: stopping`);
    killAll('SIGKILL');
    void dropDatabase().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const serverStartedAt = Date.now();
    server = await startServer(db, serverStart);
    log(`server pid ${server.pid} (${procExe(server.pid)}) on ${server.url}, ready after ${Date.now() - serverStartedAt} ms`);
    const startup = procStatus(server.pid);
    let peakKiB = startup?.hwmKiB ?? 0;
    const onRss = (kib: number) => (peakKiB = Math.max(peakKiB, kib));
    const seedStart = Date.now();
    await seed(server.url);
    log(`seeded ${USERS} users + 1 hot user in ${Date.now() - seedStart} ms`);
    // One default page (PAGE_SIZE_DEFAULT) of past charges per spread user, so that
    // list-transactions-spread lists full pages on the "empty" ledger too, and the history run
    // compares ledger sizes rather than page lengths.
    const page = await seedHistory({
      databaseUrl: db.url, transactions: USERS * PAGE_SIZE_DEFAULT, users: USERS, userPrefix: USER_PREFIX, seed: 1, spread: 'even',
    });
    log(`seeded one page of history per user (${page.transactions} charges, COPY) in ${page.totalSeconds} s`);
    const scenarios = await runScenarios(server, SCENARIOS, onRss);
    const h2load = await h2loadGetBalance(server, onRss);
    if (h2load) scenarios.push(h2load);
    const finalStatus = procStatus(server.pid);
    if (finalStatus) onRss(Math.max(finalStatus.rssKiB, finalStatus.hwmKiB));
    const finalMetrics = await scrapeMetrics(server.metricsPort);
    const mib = (bytes: number | undefined) => (bytes === undefined ? null : Math.round(bytes / 104857.6) / 10);
    const memory = {
      rssAfterStartupMiB: startup ? Math.round(startup.rssKiB / 102.4) / 10 : null,
      rssAtEndMiB: finalStatus ? Math.round(finalStatus.rssKiB / 102.4) / 10 : null,
      heapTotalAtEndMiB: mib(finalMetrics.get('nodejs_heap_size_total_bytes')),
      heapUsedAtEndMiB: mib(finalMetrics.get('nodejs_heap_size_used_bytes')),
      externalAtEndMiB: mib(finalMetrics.get('nodejs_external_memory_bytes')),
    };
    const hotBalance = await createClient(BillingService, createGrpcTransport({ baseUrl: server.url }))
      .getBalance({ userId: HOT_USER }, { timeoutMs: 5000 })
      .then((r) => r.balance?.balanceMillicredits)
      .catch((error: unknown) => `error ${Code[ConnectError.from(error).code]}`);
    await stopChild(server.child, 15_000);
    log(`server stopped (exit ${server.child.exitCode ?? server.child.signalCode})`);

    // The database alone, with the server stopped so it does not compete for the CPU.
    const pgSpread = await pgbench(db, 'spread', 1, USERS);
    const pgHot = await pgbench(db, 'hot', 0, 0);
    // History: the same calls again on a ledger of HISTORY more transactions.
    const history = HISTORY > 0 ? await historyRun(db, serverStart, onRss) : undefined;
    // The daily free top-up over a million accounts, on a database of its own.
    const topUp = TOP_UP_ACCOUNTS > 0
      ? await runTopUpBench({ accounts: TOP_UP_ACCOUNTS, batchSize: 10_000, keepDatabase: false })
      : undefined;
    // Added to runTopUpBench's result by the top-up work (issue 12); absent before it.
    const topUpBaseline = (topUp as { baselineSeconds?: number } | undefined)?.baselineSeconds;

    const peakMiB = Math.round(peakKiB / 102.4) / 10;
    const byName = (list: ScenarioReport[]) => Object.fromEntries(list.map((r) => [r.scenario, r.callsPerSecond]));
    const goalList: Goal[] = goals({
      callsPerSecond: byName(scenarios),
      halfRateP99Ms: scenarios.find((r) => r.scenario === 'charge-spread-half-rate')?.p99Ms,
      pgbenchSpreadTps: pgSpread.tps,
      pgbenchHotTps: pgHot.tps,
      serverPeakRssMiB: peakMiB,
      topUpSeconds: topUp?.topUpSeconds,
      topUpAccounts: topUp?.accounts,
      historyCallsPerSecond: history ? byName(history.scenarios) : undefined,
    });
    const out = (text: string) => process.stdout.write(text);
    out(`\n${table(scenarios)}\n`);
    for (const line of notes(scenarios)) out(`${line}\n`);
    if (history) {
      out(`\nafter seeding ${history.seeding.transactions.toLocaleString('en')} transactions (COPY in ${history.seeding.totalSeconds} s, ` +
        `ANALYZE included; VerifyLedger ${history.verifyOk ? 'ok' : 'FAILED'} in ${history.verifySeconds} s):\n${table(history.scenarios)}\n`);
    }
    out(`\nserver: ${serverStart.mode === 'compiled' ? `compiled (${serverStart.entry})` : `tsx (${serverStart.warning})`}\n`);
    out(`server peak RSS: ${peakMiB} MiB\n`);
    out(`pgbench charge (spread): ${pgSpread.tps} tps\n`);
    out(`pgbench charge (hot): ${pgHot.tps} tps\n`);
    if (topUp) {
      out(
        `daily top-up: ${topUp.toppedUp} of ${topUp.accounts} accounts in ${topUp.topUpSeconds.toFixed(1)} s ` +
          `(${Math.round(topUp.rowsPerSecond)} rows/s)` +
          (topUpBaseline !== undefined ? `; one-statement SQL baseline ${topUpBaseline.toFixed(1)} s` : '') +
          `; re-run ${topUp.rerunSeconds.toFixed(1)} s; VerifyLedger ${topUp.verifyOk ? 'ok' : 'FAILED'} in ${topUp.verifySeconds.toFixed(1)} s\n`,
      );
    }
    out(`\n${printGoals(goalList)}\n`);
    const report = {
      at: new Date().toISOString(),
      node: process.version,
      cores: os.availableParallelism(),
      machineBusyBeforePercent: background,
      config: {
        seconds: SECONDS, warmupSeconds: WARMUP_SECONDS, concurrency: CONCURRENCY, users: USERS, pgbenchClients: PGBENCH_CLIENTS,
        client: CLIENT, history: HISTORY,
      },
      server: serverStart,
      scenarios: scenarios.map(({ event: _event, ...rest }) => rest),
      serverPeakRssMiB: peakMiB,
      serverMemory: memory,
      hotUserBalanceAfterMillicredits: String(hotBalance),
      pgbench: { spread: pgSpread, hot: pgHot },
      ...(history
        ? { history: { ...history, scenarios: history.scenarios.map(({ event: _event, ...rest }) => rest) } }
        : {}),
      ...(topUp ? { topUp } : {}),
      goals: goalList,
      totalSeconds: Math.round((Date.now() - startedAt) / 100) / 10,
    };
    mkdirSync(join(ROOT, '.bench'), { recursive: true });
    writeFileSync(join(ROOT, '.bench', 'last.json'), `${JSON.stringify(report, null, 2)}\n`);
    log(
      `server memory: RSS ${memory.rssAfterStartupMiB} MiB after startup, ${memory.rssAtEndMiB} MiB at the end ` +
        `(V8 heap ${memory.heapUsedAtEndMiB} MiB used of ${memory.heapTotalAtEndMiB} MiB, external ${memory.externalAtEndMiB} MiB)`,
    );
    log(`wrote .bench/last.json; total ${report.totalSeconds} s`);
  } finally {
    killAll('SIGTERM');
    if (server) await stopChild(server.child, 5_000);
    killAll('SIGKILL');
    await dropDatabase();
  }
}

// Whatever happens, the run ends: the sum of its phases plus a margin.
const phaseSeconds = (WARMUP_SECONDS + SECONDS) * (SCENARIOS.length + 1 + (HISTORY > 0 ? HISTORY_SCENARIOS.length : 0));
const overall = setTimeout(
  () => {
    log('overall time limit reached; killing children');
    killAll('SIGKILL');
    void dropDatabase().finally(() => process.exit(2));
  },
  (phaseSeconds + 2 * (SECONDS + 30) + 240 + (TOP_UP_ACCOUNTS > 0 ? 300 : 0) + (HISTORY > 0 ? 300 + HISTORY / 5_000 : 0)) * 1000,
);
overall.unref();

main().then(
  () => process.exit(0),
  (error: unknown) => {
    log(`failed: ${(error as Error).stack ?? String(error)}`);
    killAll('SIGKILL');
    process.exit(1);
  },
);
