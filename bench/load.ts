// Load generator, run as its own process by bench/run.ts (never inside the server's process).
// Keeps BENCH_CONCURRENCY calls in flight over one HTTP/2 gRPC connection for a warm-up and
// then a measured window per scenario, and writes one JSON line per event on stdout:
//   {"event":"measure-start","scenario":…}   (the runner samples the server's CPU here)
//   {"event":"result",…}                      (at the end of the measured window)
// Configuration comes from the environment the runner sets (see LoadConfig below).
import { performance } from 'node:perf_hooks';
import { Code, ConnectError, createClient, type Client } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { BillingService } from '../gen/billing/v1/billing_service_pb.js';

export type ScenarioName = 'charge-spread' | 'charge-hot' | 'get-balance-spread';
export const SCENARIOS: readonly ScenarioName[] = ['charge-spread', 'charge-hot', 'get-balance-spread'];

export interface ScenarioResult {
  event: 'result';
  scenario: ScenarioName;
  seconds: number;
  calls: number;
  ok: number;
  errors: Record<string, number>;
  callsPerSecond: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** CPU the load generator itself used during the measured window, % of one core. */
  loadCpuPercent: number;
}

interface LoadConfig {
  url: string;
  scenarios: ScenarioName[];
  warmupMs: number;
  measureMs: number;
  concurrency: number;
  users: number;
  userPrefix: string;
  hotUser: string;
  callTimeoutMs: number;
}

function readConfig(env: NodeJS.ProcessEnv): LoadConfig {
  const need = (name: string): string => {
    const value = env[name];
    if (!value) throw new Error(`bench/load.ts: ${name} is required`);
    return value;
  };
  const scenarios = need('BENCH_SCENARIOS').split(',') as ScenarioName[];
  for (const s of scenarios) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s}`);
  return {
    url: need('BENCH_URL'),
    scenarios,
    warmupMs: Number(need('BENCH_WARMUP_MS')),
    measureMs: Number(need('BENCH_MEASURE_MS')),
    concurrency: Number(need('BENCH_CONCURRENCY')),
    users: Number(need('BENCH_USERS')),
    userPrefix: need('BENCH_USER_PREFIX'),
    hotUser: need('BENCH_HOT_USER'),
    callTimeoutMs: Number(env.BENCH_CALL_TIMEOUT_MS ?? 30_000),
  };
}

function emit(line: object): void {
  process.stdout.write(`${JSON.stringify(line, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index]!;
}

const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits;

function makeCall(config: LoadConfig, client: Client<typeof BillingService>, scenario: ScenarioName): () => Promise<unknown> {
  let sequence = 0;
  const runId = `${process.pid}-${Date.now().toString(36)}`;
  const randomUser = () => `${config.userPrefix}${1 + Math.floor(Math.random() * config.users)}`;
  const options = { timeoutMs: config.callTimeoutMs };
  const charge = (userId: string) => {
    sequence += 1;
    return client.charge(
      {
        userId,
        idempotencyKey: `bench-${scenario}-${runId}-${sequence}`,
        product: 'bench',
        usage: { case: 'amountMillicredits', value: 1n },
      },
      options,
    );
  };
  switch (scenario) {
    case 'charge-spread':
      return () => charge(randomUser());
    case 'charge-hot':
      return () => charge(config.hotUser);
    case 'get-balance-spread':
      return () => client.getBalance({ userId: randomUser() }, options);
  }
}

async function runScenario(config: LoadConfig, client: Client<typeof BillingService>, scenario: ScenarioName): Promise<ScenarioResult> {
  const call = makeCall(config, client, scenario);
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  let ok = 0;
  const started = performance.now();
  const measureStart = started + config.warmupMs;
  const measureEnd = measureStart + config.measureMs;
  let measuring = false;
  let cpuAtStart = process.cpuUsage();
  const startTimer = setTimeout(() => {
    measuring = true;
    cpuAtStart = process.cpuUsage();
    emit({ event: 'measure-start', scenario });
  }, config.warmupMs);
  let stop = false;
  const stopTimer = setTimeout(() => (stop = true), config.warmupMs + config.measureMs);

  const worker = async () => {
    while (!stop) {
      const t0 = performance.now();
      let code: string | undefined;
      try {
        await call();
      } catch (error) {
        const e = ConnectError.from(error);
        code = `${Code[e.code] ?? e.code}`;
        if (measuring && Object.keys(errors).length === 0) process.stderr.write(`[load] ${scenario}: first error: ${e.message}\n`);
      }
      const t1 = performance.now();
      // Only calls wholly inside the measured window count.
      if (measuring && !stop && t0 >= measureStart) {
        latencies.push(t1 - t0);
        if (code === undefined) ok += 1;
        else errors[code] = (errors[code] ?? 0) + 1;
      }
      // Fail fast: when a scenario only errors (e.g. the server died), don't spin.
      if (code !== undefined && code === Code[Code.Unavailable]) await new Promise((r) => setTimeout(r, 10));
    }
  };
  await Promise.all(Array.from({ length: config.concurrency }, worker));
  clearTimeout(startTimer);
  clearTimeout(stopTimer);
  const cpu = process.cpuUsage(cpuAtStart);
  const windowMs = Math.min(performance.now(), measureEnd) - measureStart;
  const sorted = Float64Array.from(latencies).sort();
  return {
    event: 'result',
    scenario,
    seconds: round(windowMs / 1000, 3),
    calls: latencies.length,
    ok,
    errors,
    callsPerSecond: round(latencies.length / (windowMs / 1000), 1),
    p50Ms: round(percentile(sorted, 50)),
    p90Ms: round(percentile(sorted, 90)),
    p99Ms: round(percentile(sorted, 99)),
    maxMs: round(sorted.length ? sorted[sorted.length - 1]! : Number.NaN),
    loadCpuPercent: round(((cpu.user + cpu.system) / 1000 / windowMs) * 100, 1),
  };
}

async function main(): Promise<void> {
  const config = readConfig(process.env);
  const transport = createGrpcTransport({ baseUrl: config.url });
  const client = createClient(BillingService, transport);
  for (const scenario of config.scenarios) {
    emit(await runScenario(config, client, scenario));
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`[load] failed: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
