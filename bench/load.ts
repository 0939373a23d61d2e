// Load generator, run as its own process by bench/run.ts (never inside the server's process).
// Per scenario, a warm-up and then a measured window, writing one JSON line per event on stdout:
//   {"event":"measure-start","scenario":…}   (the runner samples the server's CPU here)
//   {"event":"result",…}                      (at the end of the measured window)
// Closed-loop scenarios keep BENCH_CONCURRENCY calls in flight (a call is sent when the
// previous answer arrives). The open-loop one, charge-spread-half-rate, sends on a fixed
// schedule at half the charge-spread rate this process just measured, and times each call
// from its scheduled send time, so time spent queued in the client counts (no coordinated
// omission).
//
// Clients (BENCH_CLIENT): "lean" (default) is bench/grpc-lean.ts, gRPC framed by hand on
// node:http2 with pre-encoded bodies; "connect" is connect-node's gRPC transport, the client
// this bench used before (kept to compare what the generator itself costs).
// Configuration comes from the environment the runner sets (see LoadConfig below).
import { performance } from 'node:perf_hooks';
import { create, toBinary } from '@bufbuild/protobuf';
import { Code, ConnectError, createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import {
  BillingService,
  ChargeRequestSchema,
  GetBalanceRequestSchema,
  ListTransactionsRequestSchema,
} from '../gen/billing/v1/billing_service_pb.js';
import { LeanGrpcClient, protoStringField } from './grpc-lean.js';

export type ScenarioName =
  | 'charge-spread'
  | 'charge-spread-half-rate'
  | 'charge-hot'
  | 'get-balance-spread'
  | 'list-transactions-spread';
export const SCENARIOS: readonly ScenarioName[] = [
  'charge-spread',
  'charge-spread-half-rate',
  'charge-hot',
  'get-balance-spread',
  'list-transactions-spread',
];
export type ClientKind = 'lean' | 'connect';

export interface ScenarioResult {
  event: 'result';
  scenario: ScenarioName;
  /** Which load generator drove it: "lean", "connect" (or "h2load", set by run.ts). */
  client: string;
  seconds: number;
  calls: number;
  ok: number;
  /** Failed calls by gRPC code name (e.g. ResourceExhausted). */
  errors: Record<string, number>;
  callsPerSecond: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** CPU the load generator itself used during the measured window, % of one core. */
  loadCpuPercent: number;
  /** Open loop only: the schedule, calls per second. */
  targetCallsPerSecond?: number;
  /** Open loop only: calls sent more than LATE_MS after their scheduled time. */
  lateSends?: number;
  /** Open loop only: the largest delay between a call's scheduled and actual send, ms. */
  maxSendLagMs?: number;
  /** Open loop only: calls never sent because OPEN_LOOP_IN_FLIGHT_MAX were in flight. */
  unsent?: number;
}

interface LoadConfig {
  url: string;
  scenarios: ScenarioName[];
  client: ClientKind;
  warmupMs: number;
  measureMs: number;
  concurrency: number;
  connections: number;
  users: number;
  userPrefix: string;
  hotUser: string;
  callTimeoutMs: number;
  /** Calls/s of the open-loop scenario; 0 means half of the charge-spread figure measured before it. */
  halfRate: number;
}

/** A call sent later than this after its scheduled time counts as late. */
const LATE_MS = 1;
/** The open loop stops sending (and counts "unsent") past this many calls in flight. */
const OPEN_LOOP_IN_FLIGHT_MAX = 4096;

function readConfig(env: NodeJS.ProcessEnv): LoadConfig {
  const need = (name: string): string => {
    const value = env[name];
    if (!value) throw new Error(`bench/load.ts: ${name} is required`);
    return value;
  };
  const scenarios = need('BENCH_SCENARIOS').split(',') as ScenarioName[];
  for (const s of scenarios) if (!SCENARIOS.includes(s)) throw new Error(`unknown scenario ${s}`);
  const client = (env.BENCH_CLIENT ?? 'lean') as ClientKind;
  if (client !== 'lean' && client !== 'connect') throw new Error('BENCH_CLIENT must be "lean" or "connect"');
  return {
    url: need('BENCH_URL'),
    scenarios,
    client,
    warmupMs: Number(need('BENCH_WARMUP_MS')),
    measureMs: Number(need('BENCH_MEASURE_MS')),
    concurrency: Number(need('BENCH_CONCURRENCY')),
    connections: Number(env.BENCH_CONNECTIONS ?? 1),
    users: Number(need('BENCH_USERS')),
    userPrefix: need('BENCH_USER_PREFIX'),
    hotUser: need('BENCH_HOT_USER'),
    callTimeoutMs: Number(env.BENCH_CALL_TIMEOUT_MS ?? 30_000),
    halfRate: Number(env.BENCH_HALF_RATE ?? 0),
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

// ---------------------------------------------------------------- calls

/** One call of a scenario: resolves to undefined (OK) or the gRPC code name of its failure. */
type Call = () => Promise<string | undefined>;

const CHARGE = '/billing.v1.BillingService/Charge';
const GET_BALANCE = '/billing.v1.BillingService/GetBalance';
const LIST_TRANSACTIONS = '/billing.v1.BillingService/ListTransactions';

function userIds(config: LoadConfig): string[] {
  return Array.from({ length: config.users }, (_, i) => `${config.userPrefix}${i + 1}`);
}

/**
 * Lean calls: every body is encoded with toBinary of the generated schema once, up front.
 * A charge's idempotency key is the one part that changes per call; it is appended to the
 * pre-encoded rest of the request as one more length-delimited field (protobuf fields may come
 * in any order), so a call costs a few buffer copies and no message building.
 */
function leanCall(config: LoadConfig, client: LeanGrpcClient, scenario: ScenarioName, runId: string): Call {
  const users = userIds(config);
  const pick = <T>(items: readonly T[]) => items[Math.floor(Math.random() * items.length)]!;
  const keyField = ChargeRequestSchema.fields.find((f) => f.localName === 'idempotencyKey')!.number;
  const chargeBody = (userId: string) =>
    toBinary(
      ChargeRequestSchema,
      create(ChargeRequestSchema, { userId, product: 'bench', usage: { case: 'amountMillicredits', value: 1n } }),
    );
  let sequence = 0;
  const charge = (body: Uint8Array) => {
    sequence += 1;
    return client.call(CHARGE, [body, protoStringField(keyField, `bench-${scenario}-${runId}-${sequence}`)]);
  };
  switch (scenario) {
    case 'charge-spread':
    case 'charge-spread-half-rate': {
      const bodies = users.map(chargeBody);
      return () => charge(pick(bodies));
    }
    case 'charge-hot': {
      const body = chargeBody(config.hotUser);
      return () => charge(body);
    }
    case 'get-balance-spread': {
      const bodies = users.map((userId) => toBinary(GetBalanceRequestSchema, create(GetBalanceRequestSchema, { userId })));
      return () => client.call(GET_BALANCE, [pick(bodies)]);
    }
    case 'list-transactions-spread': {
      const bodies = users.map((userId) => toBinary(ListTransactionsRequestSchema, create(ListTransactionsRequestSchema, { userId })));
      return () => client.call(LIST_TRANSACTIONS, [pick(bodies)]);
    }
  }
}

/** connect-node calls, as this bench made them before the lean client. */
function connectCall(config: LoadConfig, scenario: ScenarioName, runId: string): Call {
  const client = createClient(BillingService, createGrpcTransport({ baseUrl: config.url }));
  const users = userIds(config);
  const randomUser = () => users[Math.floor(Math.random() * users.length)]!;
  const options = { timeoutMs: config.callTimeoutMs };
  let sequence = 0;
  const settle = (promise: Promise<unknown>) =>
    promise.then(
      () => undefined,
      (error: unknown) => {
        const e = ConnectError.from(error);
        return `${Code[e.code] ?? e.code}`;
      },
    );
  const charge = (userId: string) => {
    sequence += 1;
    return settle(
      client.charge(
        { userId, idempotencyKey: `bench-${scenario}-${runId}-${sequence}`, product: 'bench', usage: { case: 'amountMillicredits', value: 1n } },
        options,
      ),
    );
  };
  switch (scenario) {
    case 'charge-spread':
    case 'charge-spread-half-rate':
      return () => charge(randomUser());
    case 'charge-hot':
      return () => charge(config.hotUser);
    case 'get-balance-spread':
      return () => settle(client.getBalance({ userId: randomUser() }, options));
    case 'list-transactions-spread':
      return () => settle(client.listTransactions({ userId: randomUser() }, options));
  }
}

// ---------------------------------------------------------------- scenarios

interface Window {
  measureStart: number;
  measureEnd: number;
  measuring: () => boolean;
  stopped: () => boolean;
  /** CPU of this process since the measured window began. */
  cpuSinceStart: () => NodeJS.CpuUsage;
  done: () => void;
}

function openWindow(config: LoadConfig, scenario: ScenarioName): Window {
  const measureStart = performance.now() + config.warmupMs;
  let measuring = false;
  let stop = false;
  let cpuAtStart = process.cpuUsage();
  const startTimer = setTimeout(() => {
    measuring = true;
    cpuAtStart = process.cpuUsage();
    emit({ event: 'measure-start', scenario });
  }, config.warmupMs);
  const stopTimer = setTimeout(() => (stop = true), config.warmupMs + config.measureMs);
  return {
    measureStart,
    measureEnd: measureStart + config.measureMs,
    measuring: () => measuring,
    stopped: () => stop,
    cpuSinceStart: () => process.cpuUsage(cpuAtStart),
    done: () => {
      clearTimeout(startTimer);
      clearTimeout(stopTimer);
    },
  };
}

interface Tally {
  latencies: number[];
  errors: Record<string, number>;
  ok: number;
}

function record(tally: Tally, scenario: ScenarioName, latencyMs: number, code: string | undefined): void {
  tally.latencies.push(latencyMs);
  if (code === undefined) {
    tally.ok += 1;
    return;
  }
  if (Object.keys(tally.errors).length === 0) process.stderr.write(`[load] ${scenario}: first error: ${code}\n`);
  tally.errors[code] = (tally.errors[code] ?? 0) + 1;
}

function summarise(config: LoadConfig, scenario: ScenarioName, tally: Tally, cpu: NodeJS.CpuUsage, windowMs: number): ScenarioResult {
  const sorted = Float64Array.from(tally.latencies).sort();
  return {
    event: 'result',
    scenario,
    client: config.client,
    seconds: round(windowMs / 1000, 3),
    calls: tally.latencies.length,
    ok: tally.ok,
    errors: tally.errors,
    callsPerSecond: round(tally.latencies.length / (windowMs / 1000), 1),
    p50Ms: round(percentile(sorted, 50)),
    p90Ms: round(percentile(sorted, 90)),
    p99Ms: round(percentile(sorted, 99)),
    maxMs: round(sorted.length ? sorted[sorted.length - 1]! : Number.NaN),
    loadCpuPercent: round(((cpu.user + cpu.system) / 1000 / windowMs) * 100, 1),
  };
}

/** Closed loop: `concurrency` workers, each sending its next call when its last one answers. */
async function runClosed(config: LoadConfig, call: Call, scenario: ScenarioName): Promise<ScenarioResult> {
  const tally: Tally = { latencies: [], errors: {}, ok: 0 };
  const window = openWindow(config, scenario);
  const worker = async () => {
    while (!window.stopped()) {
      const t0 = performance.now();
      const code = await call();
      const t1 = performance.now();
      // Only calls wholly inside the measured window count.
      if (window.measuring() && !window.stopped() && t0 >= window.measureStart) record(tally, scenario, t1 - t0, code);
      // Fail fast: when a scenario only errors (e.g. the server died), don't spin.
      if (code === Code[Code.Unavailable]) await new Promise((r) => setTimeout(r, 10));
    }
  };
  await Promise.all(Array.from({ length: config.concurrency }, worker));
  window.done();
  const cpu = window.cpuSinceStart();
  const windowMs = Math.min(performance.now(), window.measureEnd) - window.measureStart;
  return summarise(config, scenario, tally, cpu, windowMs);
}

/**
 * Open loop: call i is due at start + i / rate, whatever the answers do. A timer wakes when
 * the next call is due and sends every call due by then; each call's latency runs from its
 * due time, so a call held up in this process (timer late, event loop busy) counts as slow.
 * Calls due in the measured window count, and the scenario waits for their answers.
 */
async function runOpen(config: LoadConfig, call: Call, scenario: ScenarioName, rate: number): Promise<ScenarioResult> {
  const tally: Tally = { latencies: [], errors: {}, ok: 0 };
  const window = openWindow(config, scenario);
  const intervalMs = 1000 / rate;
  const started = performance.now();
  let index = 0;
  let inFlight = 0;
  let late = 0;
  let unsent = 0;
  let maxLagMs = 0;
  const pending: Promise<void>[] = [];
  await new Promise<void>((resolveLoop) => {
    const tick = () => {
      const now = performance.now();
      for (;;) {
        const due = started + index * intervalMs;
        if (due > now) break;
        if (due >= window.measureEnd) return resolveLoop();
        index += 1;
        const counted = due >= window.measureStart;
        if (inFlight >= OPEN_LOOP_IN_FLIGHT_MAX) {
          if (counted) unsent += 1;
          continue;
        }
        const lag = now - due;
        if (counted) {
          if (lag > LATE_MS) late += 1;
          maxLagMs = Math.max(maxLagMs, lag);
        }
        inFlight += 1;
        const sent = call().then((code) => {
          inFlight -= 1;
          if (counted) record(tally, scenario, performance.now() - due, code);
        });
        if (counted) pending.push(sent);
      }
      setTimeout(tick, Math.max(0, started + index * intervalMs - performance.now()));
    };
    tick();
  });
  const cpu = window.cpuSinceStart();
  await Promise.all(pending);
  window.done();
  const result = summarise(config, scenario, tally, cpu, window.measureEnd - window.measureStart);
  return { ...result, targetCallsPerSecond: round(rate, 1), lateSends: late, maxSendLagMs: round(maxLagMs), unsent };
}

async function main(): Promise<void> {
  const config = readConfig(process.env);
  const runId = `${process.pid}-${Date.now().toString(36)}`;
  const lean = config.client === 'lean' ? new LeanGrpcClient(config.url, config.connections, config.callTimeoutMs) : undefined;
  let spreadRate = 0;
  for (const scenario of config.scenarios) {
    const call = lean ? leanCall(config, lean, scenario, runId) : connectCall(config, scenario, runId);
    let result: ScenarioResult;
    if (scenario === 'charge-spread-half-rate') {
      const rate = config.halfRate > 0 ? config.halfRate : spreadRate / 2;
      if (!(rate > 0)) throw new Error('charge-spread-half-rate needs charge-spread before it (or BENCH_HALF_RATE)');
      result = await runOpen(config, call, scenario, rate);
    } else {
      result = await runClosed(config, call, scenario);
    }
    if (scenario === 'charge-spread') spreadRate = result.callsPerSecond;
    emit(result);
  }
  lean?.close();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`[load] failed: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
