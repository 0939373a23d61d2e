// Issue 8's hostile-input table, over real sockets against real PostgreSQL. Every RPC of
// BillingService and AdminService gets every hostile value of every field kind (the rows
// come from walking the generated descriptors, see test/hostile/table.ts), over gRPC
// binary and over Connect JSON sent as exact bytes. Each answer must be the expected
// non-INTERNAL code with an ErrorDetail naming the field, and every table of the database
// must be byte-for-byte what it was before the row. Then every RPC of all three services
// against every kind of credential, and the open services without one.
//
// Lone surrogates over gRPC: the generated client encodes strings with TextEncoder, which
// turns a lone surrogate into U+FFFD before it leaves the process, so the server cannot
// see one. The binary half therefore sends what a lone surrogate becomes on the wire in
// CESU-8 / WTF-8 (bytes ED A0 80), which is invalid UTF-8 and must be refused like any
// other invalid UTF-8 in a string field; a separate test pins what the generated client
// does (the server receives and keeps U+FFFD, a valid character).
import { create, fromJson, type DescMethodUnary, type JsonObject } from '@bufbuild/protobuf';
import { WireType } from '@bufbuild/protobuf/wire';
import { Code, createClient } from '@connectrpc/connect';
import { createConnectTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService, GetBalanceRequestSchema } from '../../gen/billing/v1/billing_service_pb.js';
import { ErrorReasonSchema } from '../../gen/billing/v1/errors_pb.js';
import { WalletService } from '../../gen/billing/v1/wallet_service_pb.js';
import { Health, HealthCheckResponse_ServingStatus } from '../../gen/health/v1/health_pb.js';
import { ServerReflection } from '../../gen/grpc/reflection/v1/reflection_pb.js';
import { changedTables, snapshotter, type Snapshot } from '../hostile/snapshot.js';
import { baselineCalls, type Ctx, type Fixture, hostileRows, PROCEDURES, type Row, type Via } from '../hostile/table.js';
import { callGrpc, closeConnections, describeOutcome, grpcTransport, type Outcome, postConnectJson } from '../hostile/wire.js';
import { awayFromUtcMidnight, key, startTestApp, type TestApp } from '../support/app.js';

const TOKENS = {
  spend: 'hostile-spend-token-0001',
  grant: 'hostile-grant-token-0002',
  admin: 'hostile-admin-token-0003',
  wallet: 'hostile-wallet-token-0004',
} as const;
type Scope = keyof typeof TOKENS;
const SCOPES = Object.keys(TOKENS) as Scope[];
const ALL_SCOPES_TOKEN = 'hostile-all-scopes-token-0005';
const UNKNOWN_TOKEN = 'hostile-unknown-token-0006';

let t: TestApp;
let snapshot: () => Promise<Snapshot>;
let fixture: Fixture;
let rows: Row[];
let ctx: Ctx;

/** A reason's number, looked up by name so that the contract owns the numbers; undefined if it has no such reason. */
function reasonNumber(name: string): number | undefined {
  return ErrorReasonSchema.values.find((r) => r.localName === name)?.number;
}

beforeAll(async () => {
  const tokens = [...SCOPES.map((s) => `${TOKENS[s]}=${s}`), `${ALL_SCOPES_TOKEN}=${SCOPES.join('+')}`].join(',');
  t = await startTestApp({ env: { BILLING_TOKENS: tokens, HOST: '127.0.0.1' } });
  // "Tomorrow" and "in the future" are fixed when the rows are made; they must stay so for the run.
  await awayFromUtcMidnight(t.app.db, 120);
  const authorization = `Bearer ${ALL_SCOPES_TOKEN}`;
  ctx = { url: t.url, authorization, grpc: grpcTransport(t.url, authorization), grpcOnNewConnection: () => grpcTransport(t.url, authorization) };
  fixture = await createFixture(ctx);
  rows = hostileRows(fixture);
  snapshot = await snapshotter(t.app.db);
});

afterAll(async () => {
  // Connections the client leaves open would hold the server's shutdown for its full grace period.
  closeConnections();
  await t?.close();
});

async function createFixture(c: Ctx): Promise<Fixture> {
  const billing = createClient(BillingService, c.grpc);
  const admin = createClient(AdminService, c.grpc);
  const richUser = 'hostile-rich';
  await billing.grant({ userId: richUser, idempotencyKey: key('fund'), grant: { case: 'amountMillicredits', value: 1_000_000_000n }, reason: 'funds' });
  const charge = await billing.charge({ userId: richUser, idempotencyKey: key('c'), product: 'muse', usage: { case: 'amountMillicredits', value: 100_000n } });
  const hold = await billing.reserve({ userId: richUser, idempotencyKey: key('h'), product: 'muse', amount: { case: 'amountMillicredits', value: 1_000n }, ttlSeconds: 3_600 });
  await admin.createPromoCode({ code: 'HOSTILE_REDEEM', amountMillicredits: 1_000n });
  await admin.createPromoCode({ code: 'HOSTILE_DISABLE', amountMillicredits: 1_000n });
  let counter = 0;
  return {
    richUser,
    chargeId: charge.transaction!.id,
    reservationId: hold.reservation!.id,
    promoCode: 'HOSTILE_REDEEM',
    disableCode: 'HOSTILE_DISABLE',
    now: new Date(),
    fresh: (prefix) => `${prefix}-${(counter += 1)}`,
  };
}

function fieldMatches(expected: string | RegExp, actual: string): boolean {
  return typeof expected === 'string' ? expected === actual : expected.test(actual);
}

/** What is wrong with one row's answer and the database after it; empty when the row passes. */
function problemsOf(row: Row, outcome: Outcome, changed: readonly string[]): string[] {
  const problems: string[] = [];
  if (outcome.code !== row.code) problems.push(`expected ${Code[row.code]}`);
  const detail = outcome.detail;
  if (row.field !== null) {
    if (!detail) problems.push('no ErrorDetail');
    else if (!fieldMatches(row.field, detail.field)) problems.push(`expected field ${String(row.field)}`);
  } else if (detail && detail.field !== '') {
    problems.push('expected field ""');
  }
  if (row.reason !== undefined && detail?.reason !== reasonNumber(row.reason)) problems.push(`expected reason ${row.reason}`);
  if (changed.length > 0) problems.push(`DATABASE CHANGED (${changed.join(', ')})`);
  return problems;
}

async function send(row: Row): Promise<Outcome> {
  try {
    return await row.send(ctx);
  } catch (error) {
    return { code: Code.Unknown, detail: undefined, message: `transport error: ${(error as Error).message}` };
  }
}

/** Runs rows one at a time, fingerprinting the database between them; returns the failures. */
async function runRowsOneByOne(selected: readonly Row[]): Promise<string[]> {
  const failures: string[] = [];
  let before = await snapshot();
  for (const row of selected) {
    const outcome = await send(row);
    const after = await snapshot();
    const problems = problemsOf(row, outcome, changedTables(before, after));
    if (problems.length > 0) failures.push(`${row.label}: ${problems.join('; ')}; got ${describeOutcome(outcome)}`);
    before = after;
  }
  return failures;
}

/** Sends every row with at most `limit` in flight; outcomes in row order. */
async function sendAll(selected: readonly Row[], limit: number): Promise<Outcome[]> {
  const outcomes: Outcome[] = new Array<Outcome>(selected.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < selected.length; i = next++) outcomes[i] = await send(selected[i]!);
  };
  await Promise.all(Array.from({ length: limit }, worker));
  return outcomes;
}

const IN_FLIGHT = 8;

/**
 * Runs a group of rows concurrently between two fingerprints of the database. Most groups
 * write nothing; one that did is replayed a row at a time (every baseline makes fresh
 * keys and users, so a row that wrote once writes again) to name the rows that write.
 */
async function runRows(selected: readonly Row[]): Promise<string[]> {
  const before = await snapshot();
  const outcomes = await sendAll(selected, IN_FLIGHT);
  const changed = changedTables(before, await snapshot());
  if (changed.length > 0) {
    const replayed = await runRowsOneByOne(selected);
    // A replay of an idempotent request writes nothing: keep the first run's evidence.
    const named = replayed.some((failure) => failure.includes('DATABASE CHANGED'));
    return named ? replayed : [...replayed, `DATABASE CHANGED (${changed.join(', ')}) by this group; no single row wrote when replayed`];
  }
  return selected.flatMap((row, i) => {
    const outcome = outcomes[i]!;
    const problems = problemsOf(row, outcome, []);
    return problems.length > 0 ? [`${row.label}: ${problems.join('; ')}; got ${describeOutcome(outcome)}`] : [];
  });
}

describe('hostile input table', () => {
  for (const via of ['grpc', 'json'] as const satisfies readonly Via[]) {
    for (const procedure of PROCEDURES) {
      it(`${via} ${procedure}`, async () => {
        const selected = rows.filter((r) => r.transport === via && r.procedure === procedure);
        expect(selected.length).toBeGreaterThan(0);
        const failures = await runRows(selected);
        expect(failures, `${failures.length} of ${selected.length} rows failed`).toEqual([]);
      });
    }
  }

  it('covers both transports with a table of the expected size', () => {
    const count = (via: Via) => rows.filter((r) => r.transport === via).length;
    // A refactor that silently drops whole kinds of values would shrink these.
    expect(count('json')).toBeGreaterThan(1100);
    expect(count('grpc')).toBeGreaterThan(500);
  });
});

describe('what binary protobuf cannot make hostile', () => {
  it('ignores an unknown field over gRPC, as protobuf requires', async () => {
    const message = create(GetBalanceRequestSchema, { userId: fixture.richUser });
    message.$unknown = [{ no: 999, wireType: WireType.Varint, data: Uint8Array.from([0x01]) }];
    const outcome = await callGrpc(ctx.grpc, BillingService.method.getBalance, message);
    expect(describeOutcome(outcome)).toBe('OK');
  });

  it('keeps a connection usable after refusing oversized messages on it', async () => {
    // Another caller's calls may share this HTTP/2 connection (a proxy multiplexes many);
    // refusing one client's oversized messages must not take the connection down with them.
    const transport = grpcTransport(t.url, ctx.authorization);
    const oversized = create(GetBalanceRequestSchema, { userId: 'x'.repeat(4_000_000) });
    const answers: string[] = [];
    for (let i = 0; i < 8; i += 1) answers.push(describeOutcome(await callGrpc(transport, BillingService.method.getBalance, oversized)));
    const after = await callGrpc(transport, BillingService.method.getBalance, create(GetBalanceRequestSchema, { userId: fixture.richUser }));
    expect(answers.filter((a) => !a.startsWith('ResourceExhausted')), 'each oversized message is RESOURCE_EXHAUSTED').toEqual([]);
    expect(describeOutcome(after), 'a normal call afterwards on the same connection').toBe('OK');
  });

  it('receives a lone surrogate from the generated client as U+FFFD and keeps it', async () => {
    const billing = createClient(BillingService, ctx.grpc);
    const granted = await billing.grant({
      userId: 'hostile-surrogate',
      idempotencyKey: key('sur'),
      grant: { case: 'amountMillicredits', value: 1n },
      reason: 'surrogate',
      reference: 'a\ud800b',
    });
    expect(granted.transaction?.reference).toBe('a\ufffdb');
    const [row] = await t.app.db.query<{ reference: string }>('select reference from transactions where id = $1', [granted.transaction!.id]);
    expect(row?.reference).toBe('a\ufffdb');
  });
});

// ---- scopes ----

/** The scope each method needs, as the contract's comments state it. */
function scopeOf(service: string, method: string): Scope {
  if (service === AdminService.typeName) return 'admin';
  // GetWatcherStatus is an operator's view of the deposit watchers (wallet_service.proto).
  if (service === WalletService.typeName) return method === 'GetWatcherStatus' ? 'admin' : 'wallet';
  return method === 'Grant' || method === 'Refund' ? 'grant' : 'spend';
}

/** A request that reaches the handler and is refused there, or only reads: nothing is written either way. */
function harmless(method: DescMethodUnary): JsonObject {
  return method === AdminService.method.runDailyTopUp ? { date: 'not-a-date' } : {};
}

interface Credential {
  readonly label: string;
  readonly authorization: string | undefined;
  /** undefined: auth must pass (the answer is neither UNAUTHENTICATED nor PERMISSION_DENIED). */
  readonly code: Code | undefined;
}

function credentials(scope: Scope): Credential[] {
  return [
    { label: 'no token', authorization: undefined, code: Code.Unauthenticated },
    { label: 'unknown token', authorization: `Bearer ${UNKNOWN_TOKEN}`, code: Code.Unauthenticated },
    ...SCOPES.filter((s) => s !== scope).map((s) => ({ label: `${s} token`, authorization: `Bearer ${TOKENS[s]}`, code: Code.PermissionDenied })),
    { label: `${scope} token`, authorization: `Bearer ${TOKENS[scope]}`, code: undefined },
  ];
}

/** Broken authorization headers around a valid token: none may pass. */
const BAD_HEADERS: readonly string[] = [
  `Bearer ${TOKENS.spend}x`,
  `Bearer ${TOKENS.spend.slice(0, -1)}`,
  `Basic ${TOKENS.spend}`,
  `Bearer ${'a'.repeat(600)}`,
  'Bearer',
  TOKENS.spend,
];

const UNARY_METHODS = [BillingService, AdminService, WalletService].flatMap((s) => s.methods) as DescMethodUnary[];

async function callAs(via: Via, method: DescMethodUnary, authorization: string | undefined): Promise<Outcome> {
  const procedure = `${method.parent.typeName}/${method.name}`;
  const body = harmless(method);
  if (via === 'json') return postConnectJson(t.url, procedure, JSON.stringify(body), authorization);
  return callGrpc(grpcTransport(t.url, authorization), method, fromJson(method.input, body));
}

function authProblem(expected: Code | undefined, outcome: Outcome): string | undefined {
  if (expected !== undefined) return outcome.code === expected ? undefined : `expected ${Code[expected]}`;
  if (outcome.code === Code.Unauthenticated || outcome.code === Code.PermissionDenied) return 'auth did not pass';
  if (outcome.code === Code.Internal) return 'INTERNAL';
  return undefined;
}

describe('scopes: every RPC against every credential', () => {
  for (const via of ['grpc', 'json'] as const satisfies readonly Via[]) {
    it(`${via}: each RPC needs its own scope, and nothing is written on the way`, async () => {
      const before = await snapshot();
      const failures: string[] = [];
      for (const method of UNARY_METHODS) {
        const scope = scopeOf(method.parent.typeName, method.name);
        for (const credential of credentials(scope)) {
          const outcome = await callAs(via, method, credential.authorization);
          const problem = authProblem(credential.code, outcome);
          if (problem) failures.push(`${method.parent.typeName}/${method.name} with ${credential.label}: ${problem}; got ${describeOutcome(outcome)}`);
        }
      }
      for (const header of BAD_HEADERS) {
        const outcome = await callAs(via, BillingService.method.getBalance, header);
        if (outcome.code !== Code.Unauthenticated) failures.push(`GetBalance with authorization "${header.slice(0, 40)}": got ${describeOutcome(outcome)}`);
      }
      expect(UNARY_METHODS).toHaveLength(22);
      expect(failures).toEqual([]);
      expect(changedTables(before, await snapshot())).toEqual([]);
    });
  }
});

describe('open services need no token', () => {
  it('answers health checks over gRPC and Connect JSON', async () => {
    const health = createClient(Health, grpcTransport(t.url));
    expect((await health.check({ service: '' })).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
    const json = await postConnectJson(t.url, 'grpc.health.v1.Health/Check', '{"service":"billing.v1.BillingService"}');
    expect(describeOutcome(json)).toBe('OK');
    expect(JSON.parse(json.body ?? '{}')).toEqual({ status: 'SERVING' });
  });

  it('lists the services by reflection over gRPC and over Connect JSON on HTTP/2', async () => {
    const sessionManager = new Http2SessionManager(t.url);
    const transports = [grpcTransport(t.url), createConnectTransport({ baseUrl: t.url, httpVersion: '2', useBinaryFormat: false, sessionManager })];
    for (const transport of transports) {
      const reflection = createClient(ServerReflection, transport);
      const names: string[] = [];
      async function* requests() {
        yield { messageRequest: { case: 'listServices' as const, value: '' } };
      }
      for await (const response of reflection.serverReflectionInfo(requests())) {
        if (response.messageResponse.case === 'listServicesResponse') names.push(...response.messageResponse.value.service.map((s) => s.name));
      }
      expect(names).toEqual(expect.arrayContaining([BillingService.typeName, AdminService.typeName, WalletService.typeName]));
    }
    sessionManager.abort();
  });
});

// Last, because it writes: a row proves something only if its request without the hostile
// value would have been accepted.
describe('the baselines the rows are built on', () => {
  it('accepts every baseline over both transports', async () => {
    const failures: string[] = [];
    for (const call of baselineCalls(fixture)) {
      const outcome = await call.send(ctx);
      if (outcome.code !== undefined) failures.push(`${call.transport} ${call.label}: ${describeOutcome(outcome)}`);
    }
    expect(failures).toEqual([]);
  });
});
