// `npm run bench`: end-to-end throughput and latency of the real service against a fresh
// PostgreSQL database, beside the database's own limit for the same charge transaction.
//
//   1. creates a throwaway database (dropped at the end),
//   2. starts src/main.ts as a child process (same Node as this one, tsx loader),
//   3. seeds BENCH_USERS users and one hot user through Grant,
//   4. runs bench/load.ts in another process: charge spread / charge hot / GetBalance spread,
//      BENCH_CONCURRENCY calls in flight, BENCH_WARMUP_SECONDS + BENCH_SECONDS each,
//      while sampling the server's RSS and CPU from /proc,
//   5. stops the server and runs pgbench with bench/charge.sql (spread, then hot),
//   6. seeds BENCH_TOP_UP_ACCOUNTS FREE accounts in another database and times one daily
//      top-up run over them (bench/top-up.ts),
//   7. prints a table and writes .bench/last.json.
//
// Environment: BENCH_SECONDS (10), BENCH_WARMUP_SECONDS (2), BENCH_CONCURRENCY (64),
// BENCH_USERS (1000), BENCH_PGBENCH_CLIENTS (16), BENCH_CPU_PROF=1 (server writes a
// V8 CPU profile to .bench/prof/ on exit), BENCH_KEEP_DB=1 (keep the database for
// inspection instead of dropping it), TEST_DATABASE_URL (admin URL, see
// test/support/postgres.ts). Only 127.0.0.1 is contacted.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { BillingService } from '../gen/billing/v1/billing_service_pb.js';
import { createTestDatabase, type TestDatabase } from '../test/support/postgres.js';
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
const SCENARIOS: ScenarioName[] = ['charge-spread', 'charge-hot', 'get-balance-spread'];

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

interface Server {
  child: ChildProcess;
  pid: number;
  url: string;
  metricsPort: number;
}

async function startServer(database: TestDatabase): Promise<Server> {
  const [port, metricsPort] = [await freePort(), await freePort()];
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: String(port),
    METRICS_PORT: String(metricsPort),
    HOST,
    DATABASE_URL: database.url,
    BILLING_CONFIG: 'config/muse.json',
    LOG_LEVEL: 'warn',
    NODE_ENV: 'development',
    // Throughput is measured without the admission edge: every call in flight is admitted
    // (set DATABASE_WORK_MAX to bench the edge itself).
    DATABASE_WORK_MAX: process.env.DATABASE_WORK_MAX ?? String(Math.max(CONCURRENCY * 2, 32)),
  };
  delete env.BILLING_TOKENS; // open mode on loopback: no bearer tokens needed
  const nodeArgs = CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${join(ROOT, '.bench', 'prof')}`] : [];
  const child = spawnTs('src/main.ts', env, nodeArgs);
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

interface ScenarioReport extends ScenarioResult {
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
  'charge-hot': 'billing.v1.BillingService/Charge',
  'get-balance-spread': 'billing.v1.BillingService/GetBalance',
};

function meanHandlerMs(before: Map<string, number>, after: Map<string, number>, procedure: string): number {
  const key = (suffix: string) => `billing_rpc_duration_seconds_${suffix}{procedure="${procedure}"}`;
  const sum = (after.get(key('sum')) ?? Number.NaN) - (before.get(key('sum')) ?? 0);
  const count = (after.get(key('count')) ?? Number.NaN) - (before.get(key('count')) ?? 0);
  return count > 0 ? Math.round((sum / count) * 1000 * 100) / 100 : Number.NaN;
}

async function runScenarios(server: Server, onRss: (kib: number) => void): Promise<ScenarioReport[]> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    BENCH_URL: server.url,
    BENCH_SCENARIOS: SCENARIOS.join(','),
    BENCH_WARMUP_MS: String(WARMUP_SECONDS * 1000),
    BENCH_MEASURE_MS: String(SECONDS * 1000),
    BENCH_CONCURRENCY: String(CONCURRENCY),
    BENCH_USERS: String(USERS),
    BENCH_USER_PREFIX: USER_PREFIX,
    BENCH_HOT_USER: HOT_USER,
  };
  const load = spawnTs('bench/load.ts', env);
  prefixLines(load.stderr, '[load]');
  const budgetMs = SCENARIOS.length * (WARMUP_SECONDS + SECONDS) * 1000 + 60_000;
  const killer = setTimeout(() => {
    log(`load generator exceeded ${budgetMs} ms; killing it`);
    load.kill('SIGKILL');
  }, budgetMs);
  const reports: Promise<ScenarioReport>[] = [];
  let marks:
    | { serverCpu: number; machine: { busy: number; total: number }; at: number; metrics: Promise<Map<string, number>> }
    | undefined;
  const sampler = setInterval(() => {
    const status = procStatus(server.pid);
    if (status) onRss(Math.max(status.rssKiB, status.hwmKiB));
  }, 200);
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
      marks = {
        serverCpu: procCpuSeconds(server.pid),
        machine: machineCpu(),
        at: performance.now(),
        metrics: scrapeMetrics(server.metricsPort),
      };
      log(`${event.scenario}: measuring for ${SECONDS} s`);
    } else if (event.event === 'result') {
      const result = event as unknown as ScenarioResult;
      const serverCpu = procCpuSeconds(server.pid);
      const machine = machineCpu();
      const elapsed = marks ? (performance.now() - marks.at) / 1000 : Number.NaN;
      const status = procStatus(server.pid);
      const started = marks;
      const report: ScenarioReport = {
        ...result,
        serverCpuPercent: marks ? Math.round(((serverCpu - marks.serverCpu) / elapsed) * 1000) / 10 : Number.NaN,
        machineCpuPercent: marks
          ? Math.round(((machine.busy - marks.machine.busy) / (machine.total - marks.machine.total)) * 1000) / 10
          : Number.NaN,
        serverRssMiBEnd: status ? Math.round(status.rssKiB / 102.4) / 10 : Number.NaN,
        serverMeanMs: Number.NaN,
      };
      reports.push(
        Promise.all([started?.metrics, scrapeMetrics(server.metricsPort)]).then(([before, after]) => ({
          ...report,
          serverMeanMs: before ? meanHandlerMs(before, after, SCENARIO_PROCEDURE[result.scenario]) : Number.NaN,
        })),
      );
      log(`${result.scenario}: ${result.callsPerSecond} calls/s, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms`);
      marks = undefined;
    }
  });
  const code = await exited(load);
  clearTimeout(killer);
  clearInterval(sampler);
  if (code !== 0) throw new Error(`the load generator failed (exit code ${code})`);
  if (reports.length !== SCENARIOS.length) throw new Error(`the load generator reported ${reports.length} of ${SCENARIOS.length} scenarios`);
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

// ---------------------------------------------------------------- report

function table(reports: ScenarioReport[]): string {
  const header = ['scenario', 'calls/s', 'p50 ms', 'p99 ms', 'errors', 'calls', 'in-handler ms', 'server CPU', 'machine CPU'];
  const rows = reports.map((r) => [
    r.scenario,
    r.callsPerSecond.toFixed(1),
    r.p50Ms.toFixed(2),
    r.p99Ms.toFixed(2),
    Object.keys(r.errors).length === 0 ? '0' : Object.entries(r.errors).map(([code, n]) => `${code}:${n}`).join(' '),
    String(r.calls),
    Number.isFinite(r.serverMeanMs) ? r.serverMeanMs.toFixed(2) : '-',
    `${r.serverCpuPercent}%`,
    `${r.machineCpuPercent}%`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const format = (row: string[]) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  return [format(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(format)].join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const startedAt = Date.now();
  log(`node ${process.version} (${process.execPath}); ${SECONDS} s per scenario after ${WARMUP_SECONDS} s warm-up, ${CONCURRENCY} in flight`);
  if (!process.version.startsWith('v24.')) log(`WARNING: running on Node ${process.version}; run it with \`npm run bench\` (Node 24)`);
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
    server = await startServer(db);
    log(`server pid ${server.pid} (${procExe(server.pid)}) on ${server.url}, ready after ${Date.now() - startedAt} ms`);
    const startup = procStatus(server.pid);
    let peakKiB = startup?.hwmKiB ?? 0;
    const onRss = (kib: number) => (peakKiB = Math.max(peakKiB, kib));
    const seedStart = Date.now();
    await seed(server.url);
    log(`seeded ${USERS} users + 1 hot user in ${Date.now() - seedStart} ms`);
    const scenarios = await runScenarios(server, onRss);
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
    // The daily free top-up over a million accounts, on a database of its own.
    const topUp = TOP_UP_ACCOUNTS > 0
      ? await runTopUpBench({ accounts: TOP_UP_ACCOUNTS, batchSize: 10_000, keepDatabase: false })
      : undefined;

    const peakMiB = Math.round(peakKiB / 102.4) / 10;
    process.stdout.write(`\n${table(scenarios)}\n\n`);
    process.stdout.write(`server peak RSS: ${peakMiB} MiB\n`);
    process.stdout.write(`pgbench charge (spread): ${pgSpread.tps} tps\n`);
    process.stdout.write(`pgbench charge (hot): ${pgHot.tps} tps\n`);
    if (topUp) {
      process.stdout.write(
        `daily top-up: ${topUp.toppedUp} of ${topUp.accounts} accounts in ${topUp.topUpSeconds.toFixed(1)} s ` +
          `(${Math.round(topUp.rowsPerSecond)} rows/s); re-run ${topUp.rerunSeconds.toFixed(1)} s; ` +
          `VerifyLedger ${topUp.verifyOk ? 'ok' : 'FAILED'} in ${topUp.verifySeconds.toFixed(1)} s\n`,
      );
    }
    const report = {
      at: new Date().toISOString(),
      node: process.version,
      cores: os.availableParallelism(),
      machineBusyBeforePercent: background,
      config: { seconds: SECONDS, warmupSeconds: WARMUP_SECONDS, concurrency: CONCURRENCY, users: USERS, pgbenchClients: PGBENCH_CLIENTS },
      scenarios: scenarios.map(({ event: _event, ...rest }) => rest),
      serverPeakRssMiB: peakMiB,
      serverMemory: memory,
      hotUserBalanceAfterMillicredits: String(hotBalance),
      pgbench: { spread: pgSpread, hot: pgHot },
      ...(topUp ? { topUp } : {}),
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
const overall = setTimeout(
  () => {
    log('overall time limit reached; killing children');
    killAll('SIGKILL');
    void dropDatabase().finally(() => process.exit(2));
  },
  (SCENARIOS.length * (WARMUP_SECONDS + SECONDS) + 2 * (SECONDS + 30) + 180 + (TOP_UP_ACCOUNTS > 0 ? 300 : 0)) * 1000,
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
