// Tracing (src/telemetry.ts, src/rpc/tracing.ts): in this process with the SDK's in-memory
// exporter, a call's server span continues the caller's traceparent, its database work
// shows as pg spans under it, and an error sets its status; as a real process, the spans
// reach an OTLP/HTTP receiver started by the test.
import { spans, tracing } from '../support/tracing-memory.js';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { Code } from '@connectrpc/connect';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace';
import { afterAll, describe, expect, it } from 'vitest';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { failure, useTestApp } from '../support/app.js';
import { loadConfig } from '../../src/config.js';
import { build, interceptors, readContract } from '../../src/app.js';
import { databaseSettings, openDatabase } from '../../src/storage/database.js';
import { createMetrics } from '../../src/rpc/metrics.js';
import pino from 'pino';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { ServiceProcesses } from '../support/process.js';

afterAll(async () => {
  await tracing.shutdown();
});

const CHARGE = 'billing.v1.BillingService/Charge';

function traceparent(): { header: string; traceId: string; parentSpanId: string } {
  const traceId = randomBytes(16).toString('hex');
  const parentSpanId = randomBytes(8).toString('hex');
  return { header: `00-${traceId}-${parentSpanId}-01`, traceId, parentSpanId };
}

/** Every span whose ancestors (within the exported spans) include `root`. */
function descendants(all: readonly ReadableSpan[], root: ReadableSpan): ReadableSpan[] {
  const ids = new Set([root.spanContext().spanId]);
  const found: ReadableSpan[] = [];
  for (let grew = true; grew; ) {
    grew = false;
    for (const s of all) {
      const parent = s.parentSpanContext?.spanId;
      if (parent && ids.has(parent) && !ids.has(s.spanContext().spanId)) {
        ids.add(s.spanContext().spanId);
        found.push(s);
        grew = true;
      }
    }
  }
  return found;
}

function callSpan(traceId: string, name: string): ReadableSpan {
  const found = spans.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId && s.name === name);
  expect(found).toHaveLength(1);
  return found[0]!;
}

describe('in process, in-memory exporter', () => {
  const t = useTestApp({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1' } });

  it('a Charge is a server span continuing the traceparent, with pg spans under it', async () => {
    const tp = traceparent();
    const userId = `trace-${randomBytes(4).toString('hex')}`;
    const headers = { traceparent: tp.header };
    await t.billing.grant({ userId, idempotencyKey: 'g', grant: { case: 'amountMillicredits', value: 10_000n }, reason: 'trace' }, { headers });
    await t.billing.charge({ userId, idempotencyKey: 'c', product: 'muse', usage: { case: 'amountMillicredits', value: 1_500n } }, { headers });
    const span = callSpan(tp.traceId, CHARGE);
    expect(span.kind).toBe(SpanKind.SERVER);
    expect(span.parentSpanContext?.spanId).toBe(tp.parentSpanId);
    expect(span.attributes).toMatchObject({ 'rpc.system': 'connect_rpc', 'rpc.service': 'billing.v1.BillingService', 'rpc.method': 'Charge', 'rpc.grpc.status_code': 0 });
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
    const below = descendants(spans.getFinishedSpans(), span);
    const pg = below.filter((s) => s.instrumentationScope.name.includes('pg'));
    expect(pg.length, `spans under the call: ${below.map((s) => s.name).join(', ')}`).toBeGreaterThan(0);
    expect(pg.every((s) => s.spanContext().traceId === tp.traceId && s.kind === SpanKind.CLIENT)).toBe(true);
  });

  it('a refused call sets the span status to ERROR with its code', async () => {
    const tp = traceparent();
    const { error } = await failure(
      t.billing.charge({ userId: `poor-${randomBytes(4).toString('hex')}`, idempotencyKey: 'c', product: 'muse', usage: { case: 'amountMillicredits', value: 1_500n } }, { headers: { traceparent: tp.header } }),
    );
    expect(error.code).toBe(Code.FailedPrecondition);
    const span = callSpan(tp.traceId, CHARGE);
    expect(span.status).toEqual({ code: SpanStatusCode.ERROR, message: 'failed_precondition' });
    expect(span.attributes['rpc.grpc.status_code']).toBe(Code.FailedPrecondition);
  });

  it('without a traceparent the call starts a trace of its own', async () => {
    const before = new Set(spans.getFinishedSpans().map((s) => s.spanContext().spanId));
    await t.billing.getBalance({ userId: 'nobody' });
    const fresh = spans.getFinishedSpans().filter((s) => !before.has(s.spanContext().spanId) && s.name === 'billing.v1.BillingService/GetBalance');
    expect(fresh).toHaveLength(1);
    expect(fresh[0]!.parentSpanContext).toBeUndefined();
  });
});

describe('the access log and the span', () => {
  it("a call without a traceparent is logged with its span's trace id", async () => {
    const database = await createTestDatabase();
    const config = loadConfig({ PORT: '0', BILLING_DATA_DIR: 'memory://', DATABASE_URL: database.url, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1' });
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
    const db = await openDatabase({ databaseUrl: database.url, ...databaseSettings(config), dataDir: 'memory://' });
    const app = await build(config, { db, metrics: false, jobs: false, log });
    try {
      const userId = `logged-${randomBytes(4).toString('hex')}`;
      const billing = createClient(BillingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${app.server.port}` }));
      await billing.getBalance({ userId });
      const access = lines.filter((l) => l.event === 'access' && l.userId === userId);
      expect(access).toHaveLength(1);
      const traceId = access[0]!.traceId;
      expect(traceId).toMatch(/^[0-9a-f]{32}$/);
      const span = spans.getFinishedSpans().filter((s) => s.name === 'billing.v1.BillingService/GetBalance' && s.spanContext().traceId === traceId);
      expect(span).toHaveLength(1);
    } finally {
      await app.close();
      await db.close();
      await database.drop();
    }
  });
});

/** An OTLP/HTTP receiver: keeps every trace export's body (protobuf) and answers 200. */
async function receiver(): Promise<{ url: string; bodies: Buffer[]; close(): Promise<void> }> {
  const bodies: Buffer[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/v1/traces') bodies.push(Buffer.concat(chunks));
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, bodies, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

// The exports are protobuf: a span's name and trace id appear in it as their bytes. Enough
// to see that the call's span and a pg span of the same trace arrived.
describe.each([
  ['tsx (npm run dev)', ['--import', 'tsx', 'src/main.ts']],
  ['compiled (npm start)', ['dist/src/main.js']],
])('as a process, %s, to an OTLP receiver', (_label, args) => {
  const processes = new ServiceProcesses();
  let database: TestDatabase | undefined;
  let otlp: Awaited<ReturnType<typeof receiver>> | undefined;
  afterAll(async () => {
    await processes.killAll();
    await otlp?.close();
    await database?.drop();
  });

  it('exports the RPC span and its pg spans', async () => {
    if (args[0] === 'dist/src/main.js') await import('node:child_process').then(({ execFileSync }) => execFileSync('npm', ['run', 'build'], { stdio: 'ignore' }));
    database = await createTestDatabase();
    otlp = await receiver();
    const s = await processes.start('traced', { DATABASE_URL: database.url, BILLING_DATA_DIR: 'memory://', OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url, OTEL_BSP_SCHEDULE_DELAY: '100' }, 90_000, args);
    const billing = createClient(BillingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${s.port}` }));
    const tp = traceparent();
    const headers = { traceparent: tp.header };
    await billing.grant({ userId: 'p', idempotencyKey: 'g', grant: { case: 'amountMillicredits', value: 5_000n }, reason: 'trace' }, { headers });
    await billing.charge({ userId: 'p', idempotencyKey: 'c', product: 'muse', usage: { case: 'amountMillicredits', value: 1_000n } }, { headers });
    const traceId = Buffer.from(tp.traceId, 'hex');
    const seen = () => Buffer.concat(otlp!.bodies);
    // Spans are exported in batches every 100 ms: wait for both to arrive (the test's timeout bounds this).
    while (!(seen().includes(CHARGE) && seen().includes('pg.query'))) await new Promise((resolve) => setTimeout(resolve, 50));
    const all = seen();
    expect(all.includes(traceId)).toBe(true);
    expect(all.includes(Buffer.from('service.name'))).toBe(true);
    expect(all.includes(Buffer.from('billing'))).toBe(true);
  });
});

describe('batched units (one lane, many concurrent charges)', () => {
  const t = useTestApp({ env: { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1', LEDGER_BATCH_LANES: '1', DATABASE_WORK_MAX: '1000' } });

  it('each batch has its own span, under its first call and linked with every call it carries', async () => {
    const calls = Array.from({ length: 40 }, (_, i) => ({ userId: `batch-${randomBytes(4).toString('hex')}-${i}`, tp: traceparent() }));
    await Promise.all(calls.map((c) => t.billing.grant({ userId: c.userId, idempotencyKey: 'g', grant: { case: 'amountMillicredits', value: 5_000n }, reason: 'trace' })));
    await Promise.all(
      calls.map((c) => t.billing.charge({ userId: c.userId, idempotencyKey: 'c', product: 'muse', usage: { case: 'amountMillicredits', value: 1_000n } }, { headers: { traceparent: c.tp.header } })),
    );
    const all = spans.getFinishedSpans();
    const byId = new Map(all.map((s) => [s.spanContext().spanId, s]));
    const batches = all.filter((s) => s.name === 'ledger.batch');
    const carried = batches.filter((b) => calls.some((c) => b.spanContext().traceId === c.tp.traceId));
    expect(Math.max(...carried.map((b) => Number(b.attributes['billing.batch.units']))), 'no batch carried more than one unit').toBeGreaterThan(1);
    for (const c of calls) {
      const call = callSpan(c.tp.traceId, CHARGE);
      // Its batch: a child of its span, or one its span links to, that links back to it.
      const batch = batches.find((b) => b.parentSpanContext?.spanId === call.spanContext().spanId) ?? byId.get(call.links.find((l) => byId.get(l.context.spanId)?.name === 'ledger.batch')?.context.spanId ?? '');
      expect(batch, `the batch of ${c.userId}`).toBeDefined();
      expect(batch!.links.map((l) => l.context.spanId)).toContain(call.spanContext().spanId);
      // A batch's pg spans are under the batch span, never directly under another call's span.
      expect(descendants(all, batch!).some((s) => s.instrumentationScope.name.includes('pg'))).toBe(true);
      for (const child of all.filter((s) => s.parentSpanContext?.spanId === call.spanContext().spanId)) {
        if (child.instrumentationScope.name.includes('pg')) expect.fail(`a pg span directly under ${c.userId}'s Charge: ${child.name}`);
      }
    }
  });
});

describe('configuration', () => {
  const env = { BILLING_DATA_DIR: 'memory://' };
  const chain = (config: ReturnType<typeof loadConfig>) => interceptors(config, pino({ level: 'silent' }), createMetrics(), readContract()).length;

  it('is off without an endpoint or with OTEL_SDK_DISABLED=true: no tracing interceptor', () => {
    const off = loadConfig(env);
    const disabled = loadConfig({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_SDK_DISABLED: 'true' });
    const on = loadConfig({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318', OTEL_SERVICE_NAME: 'billing-eu' });
    expect(off.tracing).toBeUndefined();
    expect(disabled.tracing).toBeUndefined();
    expect(on.tracing).toEqual({ serviceName: 'billing-eu' });
    expect(chain(on)).toBe(chain(off) + 1);
    expect(loadConfig({ ...env, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://otel.example/v1/traces' }).tracing).toEqual({ serviceName: 'billing' });
  });

  it('refuses an endpoint that is not an http(s) URL, naming the variable', () => {
    expect(() => loadConfig({ ...env, OTEL_EXPORTER_OTLP_ENDPOINT: 'localhost:4317' })).toThrow(/OTEL_EXPORTER_OTLP_ENDPOINT: must be an http:\/\/ or https:\/\/ URL/);
  });
});
