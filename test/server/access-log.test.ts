// The access log and the audit trail, read from the captured log of a real server on real
// PostgreSQL: one access line per RPC with every field, the request id echoed, levels and
// ISO times; an audit event naming the actor for each privileged call, with its row in
// audit_events (before → after) for those that change state, none for a replay or a
// refusal, and none left behind when the change rolls back. Canary secrets (a token, a
// wallet mnemonic, an RPC URL's key) must appear nowhere in the captured log.
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { create } from '@bufbuild/protobuf';
import { Code, type ConnectError, createClient, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport } from '@connectrpc/connect-node';
import * as bip39 from 'bip39';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { Plan } from '../../gen/billing/v1/types_pb.js';
import { WalletService } from '../../gen/billing/v1/wallet_service_pb.js';
import { HealthCheckRequestSchema, Health } from '../../gen/health/v1/health_pb.js';
import { type App, build } from '../../src/app.js';
import { type Config, loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { levelOf, saneRequestId, traceIdOfTraceparent } from '../../src/rpc/access-log.js';
import { codeName } from '../../src/rpc/codes.js';
import { databaseSettings, type Database, openDatabase } from '../../src/storage/database.js';
import { awayFromUtcMidnight, failure, key } from '../support/app.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const hex = () => randomBytes(8).toString('hex');
/** Canaries: each must be absent from every captured line. */
const ADMIN_TOKEN = `canary-admin-token-${hex()}`;
const WRONG_TOKEN = `canary-wrong-token-${hex()}`;
/** The admin token's configured name: the actor of every call made with it. */
const ACTOR = 'ops-console';
const MNEMONIC = bip39.generateMnemonic(256);
const RPC_KEY = `CANARYKEY${hex()}`;

/** The fields of every access line, and pino's own. */
const ACCESS_FIELDS = ['actor', 'code', 'durationMs', 'event', 'level', 'msg', 'procedure', 'reason', 'replay', 'requestId', 'service', 'time', 'traceId', 'userId'];
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`;

type Line = Record<string, unknown>;

/** A pino destination that keeps every line written. */
class Captured extends Writable {
  text = '';
  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
  lines(): Line[] {
    return this.text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Line);
  }
}

interface Server {
  app: App;
  db: Database;
  database: TestDatabase;
  config: Config;
  log: Captured;
  url: string;
}

async function startServer(): Promise<Server> {
  const database = await createTestDatabase();
  const config = loadConfig({
    PORT: '0',
    BILLING_CONFIG: 'config/mu.json',
    BILLING_DATA_DIR: 'memory://',
    DATABASE_URL: database.url,
    LOG_LEVEL: 'info',
    BILLING_TOKENS: `${ACTOR}:${ADMIN_TOKEN}=spend+grant+admin+wallet`,
    WALLET_SEED: MNEMONIC,
    // A chain that never answers: the wallet is configured but not ready (UNAVAILABLE, logged at warn).
    BASE_RPC_URL: `http://127.0.0.1:9/v2/${RPC_KEY}`,
  });
  const db = await openDatabase({ databaseUrl: database.url, ...databaseSettings(config), dataDir: 'memory://', poolSizeMax: 8 });
  const log = new Captured();
  const app = await build(config, { db, metrics: false, jobs: false, log: createLogger('info', log) });
  return { app, db, database, config, log, url: `http://127.0.0.1:${app.server.port}` };
}

/** Adds the bearer token to every call. */
const bearer =
  (token: string): Interceptor =>
  (next) =>
  (req) => {
    req.header.set('authorization', `Bearer ${token}`);
    return next(req);
  };

/** One RPC of the script: its request id and what its access line must say. */
interface Expected {
  requestId: string;
  procedure: string;
  code: string;
  reason: string | null;
  actor: string | null;
  userId: string | null;
  replay: boolean;
  level: 'info' | 'warn' | 'error';
  traceId: string | null;
  /** The x-request-id the caller got back (header on success, error metadata on failure). */
  echoed: string | null;
}

let s: Server;
beforeAll(async () => {
  s = await startServer();
});
afterAll(async () => {
  await s?.app.close();
  await s?.db.close();
  await s?.database.drop();
});

describe('the access log and the audit trail of a scripted run', () => {
  const expected: Expected[] = [];
  /** Privileged calls: the audit event each must produce, by request id (null: none). */
  const audited = new Map<string, { action: string; subject: string; before: unknown; after: unknown; stored: boolean } | null>();
  const actor = ACTOR;

  beforeAll(async () => {
    await awayFromUtcMidnight(s.app.db);
    const grpc = createGrpcTransport({ baseUrl: s.url, interceptors: [bearer(ADMIN_TOKEN)] });
    const billing = createClient(BillingService, grpc);
    const admin = createClient(AdminService, grpc);
    const wallet = createClient(WalletService, grpc);
    const health = createClient(Health, grpc);
    const anonymous = createClient(BillingService, createGrpcTransport({ baseUrl: s.url, interceptors: [bearer(WRONG_TOKEN)] }));
    const connect = createClient(AdminService, createConnectTransport({ baseUrl: s.url, httpVersion: '1.1', interceptors: [bearer(ADMIN_TOKEN)] }));

    let n = 0;
    /** Runs one call with a fresh request id; records what its access line must say. */
    const call = async (
      run: (headers: Record<string, string>, onHeader: (h: Headers) => void) => Promise<unknown>,
      line: Omit<Expected, 'requestId' | 'echoed' | 'level' | 'actor' | 'traceId' | 'replay' | 'code' | 'reason'> &
        Partial<Pick<Expected, 'level' | 'actor' | 'traceId' | 'replay' | 'code' | 'reason'>>,
      headers: Record<string, string> = {},
    ): Promise<string> => {
      n += 1;
      const requestId = headers['x-request-id'] ?? `script-${n}-${hex()}`;
      let echoed: string | null = null;
      try {
        await run({ 'x-request-id': requestId, ...headers }, (h) => (echoed = h.get('x-request-id')));
      } catch (error) {
        echoed = (error as ConnectError).metadata.get('x-request-id');
      }
      expected.push({ code: 'ok', reason: null, level: 'info', actor: actor ?? null, traceId: null, replay: false, ...line, requestId, echoed });
      return requestId;
    };
    const B = 'billing.v1.BillingService/';
    const A = 'billing.v1.AdminService/';

    await call((headers, onHeader) => billing.getBalance({ userId: 'alice' }, { headers: { ...headers, traceparent: TRACEPARENT }, onHeader }), {
      procedure: `${B}GetBalance`,
      userId: 'alice',
      traceId: TRACE_ID,
    });
    // A traceparent that is not W3C (version ff) is ignored.
    await call((headers, onHeader) => billing.getBalance({ userId: 'alice' }, { headers: { ...headers, traceparent: `ff-${TRACE_ID}-00f067aa0ba902b7-01` }, onHeader }), {
      procedure: `${B}GetBalance`,
      userId: 'alice',
    });

    // Plans and entitlements.
    let id = await call((headers, onHeader) => admin.setPlan({ userId: 'alice', plan: Plan.PRO }, { headers, onHeader }), { procedure: `${A}SetPlan`, userId: 'alice' });
    audited.set(id, { action: 'SetPlan', subject: 'user:alice', before: null, after: { plan: 'PRO' }, stored: true });
    id = await call((headers, onHeader) => admin.setPlan({ userId: 'alice', plan: Plan.ADMIN }, { headers, onHeader }), { procedure: `${A}SetPlan`, userId: 'alice' });
    audited.set(id, { action: 'SetPlan', subject: 'user:alice', before: { plan: 'PRO' }, after: { plan: 'ADMIN' }, stored: true });
    id = await call((headers, onHeader) => admin.setEntitlement({ userId: 'alice', entitlement: 'm4l', active: true }, { headers, onHeader }), {
      procedure: `${A}SetEntitlement`,
      userId: 'alice',
    });
    audited.set(id, { action: 'SetEntitlement', subject: 'user:alice', before: { entitlement: 'm4l', active: false }, after: { entitlement: 'm4l', active: true }, stored: true });

    // A grant, and its replay: the replay is marked and audited no second time.
    const grantKey = key('grant');
    const grant = (headers: Record<string, string>, onHeader: (h: Headers) => void) =>
      billing.grant({ userId: 'bob', idempotencyKey: grantKey, grant: { case: 'amountMillicredits', value: 10_000n }, reason: 'welcome' }, { headers, onHeader });
    id = await call(grant, { procedure: `${B}Grant`, userId: 'bob' });
    audited.set(id, { action: 'Grant', subject: 'user:bob', before: { balanceMillicredits: '0' }, after: 'grant', stored: true });
    id = await call(grant, { procedure: `${B}Grant`, userId: 'bob', replay: true });
    audited.set(id, null);

    // A charge (not audited), its replay, a refund of part of it, and a refund refused.
    const chargeKey = key('charge');
    let chargeId = '';
    const charge = async (headers: Record<string, string>, onHeader: (h: Headers) => void) => {
      const r = await billing.charge({ userId: 'bob', idempotencyKey: chargeKey, product: 'search', usage: { case: 'amountMillicredits', value: 6_000n } }, { headers, onHeader });
      chargeId = r.transaction!.id;
    };
    await call(charge, { procedure: `${B}Charge`, userId: 'bob' });
    await call(charge, { procedure: `${B}Charge`, userId: 'bob', replay: true });
    id = await call(
      (headers, onHeader) => billing.refund({ userId: 'bob', idempotencyKey: key('refund'), transactionId: chargeId, amountMillicredits: 2_000n, reason: 'sorry' }, { headers, onHeader }),
      { procedure: `${B}Refund`, userId: 'bob' },
    );
    audited.set(id, { action: 'Refund', subject: 'user:bob', before: { balanceMillicredits: '4000' }, after: 'refund', stored: true });
    id = await call(
      (headers, onHeader) => billing.refund({ userId: 'bob', idempotencyKey: key('refund'), transactionId: chargeId, amountMillicredits: 9_000n, reason: 'too much' }, { headers, onHeader }),
      { procedure: `${B}Refund`, userId: 'bob', code: 'failed_precondition', reason: 'REFUND_EXCEEDS_CHARGE' },
    );
    audited.set(id, null);

    // Promo codes: created, created again identically (a replay), disabled.
    const code = `CANARYPROMO${hex().toUpperCase()}`.slice(0, 24);
    const promoTerms = { code, amountMillicredits: 1_000n, maxRedemptions: 10n };
    const promoState = { code, amountMillicredits: '1000', maxRedemptions: '10', expiresAt: null };
    id = await call((headers, onHeader) => admin.createPromoCode(promoTerms, { headers, onHeader }), { procedure: `${A}CreatePromoCode`, userId: null });
    audited.set(id, { action: 'CreatePromoCode', subject: `promo:${code}`, before: null, after: { ...promoState, disabled: false }, stored: true });
    id = await call((headers, onHeader) => admin.createPromoCode(promoTerms, { headers, onHeader }), { procedure: `${A}CreatePromoCode`, userId: null, replay: true });
    audited.set(id, null);
    id = await call((headers, onHeader) => admin.disablePromoCode({ code }, { headers, onHeader }), { procedure: `${A}DisablePromoCode`, userId: null });
    audited.set(id, { action: 'DisablePromoCode', subject: `promo:${code}`, before: { ...promoState, disabled: false }, after: { ...promoState, disabled: true }, stored: true });

    // The daily top-up raises carol (FREE, 1 credit) to 5 credits; bob (6 credits) is above the target.
    await call(
      (headers, onHeader) => billing.grant({ userId: 'carol', idempotencyKey: key('grant'), grant: { case: 'amountMillicredits', value: 1_000n }, reason: 'seed' }, { headers, onHeader }),
      { procedure: `${B}Grant`, userId: 'carol' },
      {},
    ).then((grantId) => audited.set(grantId, { action: 'Grant', subject: 'user:carol', before: { balanceMillicredits: '0' }, after: 'grant', stored: true }));
    const day = new Date().toISOString().slice(0, 10);
    id = await call((headers, onHeader) => admin.runDailyTopUp({}, { headers, onHeader }), { procedure: `${A}RunDailyTopUp`, userId: null });
    audited.set(id, { action: 'RunDailyTopUp', subject: `day:${day}`, before: null, after: 'top-up', stored: true });
    id = await call((headers, onHeader) => admin.verifyLedger({}, { headers, onHeader }), { procedure: `${A}VerifyLedger`, userId: null });
    audited.set(id, { action: 'VerifyLedger', subject: 'ledger', before: null, after: 'verify', stored: false });

    // Refused by auth: no actor. The wrong token is a canary too.
    await call((headers, onHeader) => anonymous.getBalance({ userId: 'alice' }, { headers, onHeader }), {
      procedure: `${B}GetBalance`,
      userId: 'alice',
      actor: null,
      code: 'unauthenticated',
    });
    // Refused while decoding (Connect JSON with an unknown field): after auth, with an empty message.
    await call(
      async (headers, onHeader) => {
        const res = await fetch(`${s.url}/billing.v1.AdminService/SetPlan`, {
          method: 'POST',
          headers: { ...headers, 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
          body: JSON.stringify({ userId: 'alice', plan: 'PLAN_FREE', planz: 1 }),
        });
        onHeader(res.headers);
        expect(res.status).toBe(400);
      },
      { procedure: `${A}SetPlan`, userId: null, code: 'invalid_argument', reason: 'INVALID_FIELD' },
    ).then((refusedId) => audited.set(refusedId, null));
    // Over the size limit: refused while reading, logged all the same.
    await call(
      async (headers, onHeader) => {
        const res = await fetch(`${s.url}/billing.v1.AdminService/SetPlan`, {
          method: 'POST',
          headers: { ...headers, 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
          body: JSON.stringify({ userId: 'x'.repeat(s.config.requestBytesMax), plan: 'PLAN_FREE' }),
        });
        onHeader(res.headers);
        expect(res.status).toBe(429);
      },
      { procedure: `${A}SetPlan`, userId: null, code: 'resource_exhausted', reason: 'REQUEST_TOO_LARGE' },
    ).then((refusedId) => audited.set(refusedId, null));
    // Refused by the rules over Connect (invalid plan): no audit event.
    id = await call((headers, onHeader) => connect.setPlan({ userId: 'alice', plan: Plan.UNSPECIFIED }, { headers, onHeader }), {
      procedure: `${A}SetPlan`,
      userId: 'alice',
      code: 'invalid_argument',
      reason: 'INVALID_FIELD',
    });
    audited.set(id, null);
    // A wallet that is configured but not ready: UNAVAILABLE, at warn.
    await call((headers, onHeader) => wallet.getDepositAddress({ userId: 'dora' }, { headers, onHeader }), {
      procedure: 'billing.v1.WalletService/GetDepositAddress',
      userId: 'dora',
      code: 'unavailable',
      reason: 'WALLET_NOT_READY',
      level: 'warn',
    });
    // An open service: no actor.
    await call((headers, onHeader) => health.check(create(HealthCheckRequestSchema, {}), { headers, onHeader }), {
      procedure: 'grpc.health.v1.Health/Check',
      userId: null,
      actor: null,
    });
  });

  it('has one access line per RPC with every field, its level, an ISO time and the request id echoed', () => {
    const lines = s.log.lines().filter((l) => l.event === 'access');
    expect(lines.map((l) => l.requestId).sort()).toEqual(expected.map((e) => e.requestId).sort());
    for (const e of expected) {
      const line = lines.find((l) => l.requestId === e.requestId)!;
      const context = `${e.procedure} ${e.requestId}`;
      expect(Object.keys(line).sort(), context).toEqual(ACCESS_FIELDS);
      expect(line.time, context).toMatch(ISO_TIME);
      expect(line.msg, context).toBe('rpc');
      expect(line.service, context).toBe('billing');
      expect(typeof line.durationMs === 'number' && line.durationMs >= 0, context).toBe(true);
      const { requestId, procedure, code, reason, actor: who, userId, replay, level, traceId } = e;
      expect(
        { requestId: line.requestId, procedure: line.procedure, code: line.code, reason: line.reason, actor: line.actor, userId: line.userId, replay: line.replay, level: line.level, traceId: line.traceId },
        context,
      ).toEqual({ requestId, procedure, code, reason, actor: who, userId, replay, level, traceId });
      expect(e.echoed, `${context}: x-request-id echoed`).toBe(e.requestId);
    }
  });

  it('names the caller as auth does (CALLER), the same in every line', () => {
    const lines = s.log.lines().filter((l) => l.event === 'access' && l.code !== 'unauthenticated' && l.procedure !== 'grpc.health.v1.Health/Check');
    expect(new Set(lines.map((l) => l.actor))).toEqual(new Set([actor]));
  });

  it('logs one audit event per privileged call that did something, naming the actor, before and after', () => {
    const events = s.log.lines().filter((l) => l.event === 'audit');
    const wanted = [...audited].filter(([, a]) => a !== null);
    expect(events.map((e) => e.requestId).sort()).toEqual(wanted.map(([requestId]) => requestId).sort());
    for (const [requestId, a] of wanted) {
      const event = events.find((e) => e.requestId === requestId)!;
      expect(event.msg).toBe('audit');
      expect(event.level).toBe('info');
      expect(event.time).toMatch(ISO_TIME);
      expect({ action: event.action, actor: event.actor, subject: event.subject, before: event.before }).toEqual({
        action: a!.action,
        actor,
        subject: a!.subject,
        before: a!.before,
      });
      if (a!.subject.startsWith('user:')) expect(event.userId).toBe(a!.subject.slice('user:'.length));
      if (a!.subject.startsWith('promo:')) expect(event.code).toBe(a!.subject.slice('promo:'.length));
      if (typeof a!.after !== 'string') expect(event.after).toEqual(a!.after);
    }
    const after = (action: string, subject: string) => events.filter((e) => e.action === action && e.subject === subject).map((e) => e.after);
    expect(after('Grant', 'user:bob')).toEqual([
      { balanceMillicredits: '10000', amountMillicredits: '10000', transactionId: expect.stringMatching(/^\d+$/), sku: '', reason: 'welcome', reference: '' },
    ]);
    expect(after('Refund', 'user:bob')).toEqual([
      { balanceMillicredits: '6000', amountMillicredits: '2000', transactionId: expect.stringMatching(/^\d+$/), refundedTransactionId: expect.stringMatching(/^\d+$/), product: 'search', reason: 'sorry' },
    ]);
    const day = new Date().toISOString().slice(0, 10);
    expect(after('RunDailyTopUp', `day:${day}`)).toEqual([{ day, accountsToppedUp: '1', totalMillicredits: '4000', complete: true }]);
    expect(after('VerifyLedger', 'ledger')).toEqual([{ ok: true, accountsChecked: '3', transactionsChecked: expect.stringMatching(/^\d+$/), violations: 0 }]);
  });

  it('stores each state change in audit_events with its actor, before, after and request id; nothing for reads, replays or refusals', async () => {
    const rows = await s.db.query<{ actor: string; action: string; subject: string; before: unknown; after: Record<string, unknown> | null; request_id: string; at: Date }>(
      'select actor, action, subject, before, after, request_id, at from audit_events order by id',
    );
    const stored = [...audited].filter(([, a]) => a?.stored);
    expect(rows.map((r) => r.request_id)).toEqual(stored.map(([requestId]) => requestId));
    rows.forEach((row, i) => {
      const a = stored[i]![1]!;
      expect({ actor: row.actor, action: row.action, subject: row.subject, before: row.before }).toEqual({ actor, action: a.action, subject: a.subject, before: a.before });
      if (typeof a.after !== 'string') expect(row.after).toEqual(a.after);
      expect(Number.isNaN(Date.parse(String(row.at))), String(row.at)).toBe(false);
    });
    // A grant's row names the ledger transaction it recorded.
    const grantRow = rows.find((r) => r.action === 'Grant' && r.subject === 'user:bob')!;
    const [transaction] = await s.db.query<{ type: string; amount: string }>('select type, amount_millicredits::text as amount from transactions where id = $1::bigint', [
      grantRow.after!.transactionId,
    ]);
    expect(transaction).toEqual({ type: 'GRANT', amount: '10000' });
    // The top-up's row is the batch's: one account, from 1 to 5 credits.
    const topUp = rows.find((r) => r.action === 'RunDailyTopUp')!;
    expect(topUp.after).toMatchObject({ accountsToppedUp: '1', totalMillicredits: '4000' });
    // The table is append-only.
    await expect(s.db.query('delete from audit_events')).rejects.toThrow('append-only');
  });

  it('spells each outcome as the metrics label it', async () => {
    // Each (procedure, code) of the access lines is counted as many times by billing_rpc_calls_total.
    const counted = new Map<string, number>();
    for (const line of s.log.lines().filter((l) => l.event === 'access')) {
      const label = `procedure="${String(line.procedure)}",code="${String(line.code)}"`;
      counted.set(label, (counted.get(label) ?? 0) + 1);
    }
    const metrics = await s.app.metrics.registry.metrics();
    const calls = [...metrics.matchAll(/^billing_rpc_calls_total\{(.*)\} (\d+)$/gm)].map((m) => [m[1]!, Number(m[2])] as const);
    expect(new Map(calls)).toEqual(counted);
    expect([...counted.keys()].some((label) => label.includes('code="invalid_argument"'))).toBe(true);
  });

  it('writes no canary secret anywhere in the log', () => {
    const text = s.log.text;
    expect(text.length).toBeGreaterThan(0);
    for (const secret of [ADMIN_TOKEN, WRONG_TOKEN, MNEMONIC, MNEMONIC.split(' ').slice(0, 3).join(' '), RPC_KEY]) {
      expect(text.includes(secret), `a canary (${secret.slice(0, 12)}…) is in the log`).toBe(false);
    }
  });
});

describe('a privileged change that fails', () => {
  it('leaves no audit row when it is refused', async () => {
    const billing = createClient(BillingService, createGrpcTransport({ baseUrl: s.url, interceptors: [bearer(ADMIN_TOKEN)] }));
    const before = await s.db.query<{ n: string }>('select count(*)::text as n from audit_events');
    const refused = await failure(
      billing.refund({ userId: 'erin', idempotencyKey: key('refund'), transactionId: '1', amountMillicredits: 0n, reason: 'not hers' }),
    );
    expect(refused.detail?.reason).toBe(ErrorReason.TRANSACTION_NOT_FOUND);
    const sku = await failure(billing.grant({ userId: 'erin', idempotencyKey: key('grant'), grant: { case: 'sku', value: 'no_such_sku' }, reason: '' }));
    expect(sku.detail?.reason).toBe(ErrorReason.UNKNOWN_SKU);
    const admin = createClient(AdminService, createGrpcTransport({ baseUrl: s.url, interceptors: [bearer(ADMIN_TOKEN)] }));
    const promo = await failure(admin.disablePromoCode({ code: 'NO_SUCH_CODE' }));
    expect(promo.detail?.reason).toBe(ErrorReason.PROMO_CODE_NOT_FOUND);
    expect(await s.db.query<{ n: string }>('select count(*)::text as n from audit_events')).toEqual(before);
    expect(await s.db.query("select 1 from audit_events where subject = 'user:erin'")).toEqual([]);
  });

  it('rolls back with its audit row: a grant and a plan change whose audit insert cannot finish leave neither', async () => {
    const grpc = createGrpcTransport({ baseUrl: s.url, interceptors: [bearer(ADMIN_TOKEN)] });
    const billing = createClient(BillingService, grpc);
    const admin = createClient(AdminService, grpc);
    await admin.setPlan({ userId: 'frank', plan: Plan.PRO });
    // Another session holds audit_events so that no row can go in: the changes wait on their
    // audit insert until their deadline passes, and must then roll back whole.
    const blocker = new pg.Client({ connectionString: s.database.url });
    await blocker.connect();
    try {
      await blocker.query('begin');
      await blocker.query('lock table audit_events in exclusive mode');
      const grant = await failure(
        billing.grant(
          { userId: 'frank', idempotencyKey: key('grant'), grant: { case: 'amountMillicredits', value: 7_000n }, reason: 'blocked' },
          { timeoutMs: 1_500, headers: { 'x-request-id': 'blocked-grant' } },
        ),
      );
      const plan = await failure(admin.setPlan({ userId: 'frank', plan: Plan.ADMIN }, { timeoutMs: 1_500, headers: { 'x-request-id': 'blocked-plan' } }));
      // The client's timer may fire a moment before the server's statement timeout: hold the
      // table until the server has given up its insert, so that it cannot slip in just in time.
      await noneWaitingFor(blocker, 'audit_events');
      expect([grant.error.code, plan.error.code]).toEqual([Code.DeadlineExceeded, Code.DeadlineExceeded]);
    } finally {
      await blocker.query('rollback');
      await blocker.end();
    }
    expect(await s.db.query("select type from transactions where user_id = 'frank'")).toEqual([]);
    const balance = await billing.getBalance({ userId: 'frank' });
    expect([balance.balance?.balanceMillicredits, balance.balance?.plan]).toEqual([0n, Plan.PRO]);
    const rows = await s.db.query<{ action: string; after: unknown }>("select action, after from audit_events where subject = 'user:frank' order by id");
    expect(rows).toEqual([{ action: 'SetPlan', after: { plan: 'PRO' } }]);
    // Nothing committed, nothing published; the access lines say deadline_exceeded, at warn.
    const lines = s.log.lines().filter((l) => l.requestId === 'blocked-grant' || l.requestId === 'blocked-plan');
    expect(lines.map((l) => [l.event, l.code, l.level])).toEqual([
      ['access', 'deadline_exceeded', 'warn'],
      ['access', 'deadline_exceeded', 'warn'],
    ]);
  });
});

/** Waits (up to 10 s) until no session waits for a lock on `table`. */
async function noneWaitingFor(client: pg.Client, table: string): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const { rows } = await client.query<{ n: number }>('select count(*)::int as n from pg_locks where not granted and relation = $1::regclass', [table]);
    if (rows[0]!.n === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`a session still waits for ${table}`);
}

describe('the pieces of a line', () => {
  it('levels outcomes: ok and client errors at info, retryable at warn, faults at error', async () => {
    const { ConnectError } = await import('@connectrpc/connect');
    const level = (code: Code) => levelOf(new ConnectError('x', code));
    expect(levelOf(undefined)).toBe('info');
    expect([Code.InvalidArgument, Code.NotFound, Code.AlreadyExists, Code.PermissionDenied, Code.Unauthenticated, Code.FailedPrecondition, Code.ResourceExhausted, Code.Canceled].map(level)).toEqual(
      Array(8).fill('info'),
    );
    expect([Code.Unavailable, Code.Aborted, Code.DeadlineExceeded].map(level)).toEqual(['warn', 'warn', 'warn']);
    expect([Code.Internal, Code.Unknown, Code.DataLoss].map(level)).toEqual(['error', 'error', 'error']);
    expect(levelOf(new Error('not a ConnectError'))).toBe('error');
    expect(codeName(new ConnectError('x', Code.DeadlineExceeded))).toBe('deadline_exceeded');
    expect(codeName(new ConnectError('x', Code.InvalidArgument))).toBe('invalid_argument');
  });

  it('keeps a sane request id and replaces any other', () => {
    expect(saneRequestId('abc-123_XYZ.=:')).toBe('abc-123_XYZ.=:');
    expect(saneRequestId('x'.repeat(128))).toBe('x'.repeat(128));
    for (const insane of [null, '', 'x'.repeat(129), 'has space', 'tab\there', 'new\nline', 'é']) expect(saneRequestId(insane)).toBeUndefined();
  });

  it('replaces an insane x-request-id with a generated UUID, echoed back', async () => {
    const billing = createClient(BillingService, createGrpcTransport({ baseUrl: s.url, interceptors: [bearer(ADMIN_TOKEN)] }));
    let echoed: string | null = null;
    await billing.getBalance({ userId: 'alice' }, { headers: { 'x-request-id': 'two words' }, onHeader: (h) => (echoed = h.get('x-request-id')) });
    expect(echoed).toMatch(UUID);
    expect(s.log.lines().filter((l) => l.event === 'access' && l.requestId === echoed)).toHaveLength(1);
  });

  it('reads the trace id of a valid W3C traceparent only', () => {
    expect(traceIdOfTraceparent(TRACEPARENT)).toBe(TRACE_ID);
    expect(traceIdOfTraceparent(`01-${TRACE_ID}-00f067aa0ba902b7-01-future`)).toBe(TRACE_ID);
    for (const bad of [
      null,
      '',
      `ff-${TRACE_ID}-00f067aa0ba902b7-01`,
      `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`,
      `00-${TRACE_ID}-${'0'.repeat(16)}-01`,
      `00-${TRACE_ID.toUpperCase()}-00f067aa0ba902b7-01`,
      `00-${TRACE_ID}-00f067aa0ba902b7-01-extra`,
      `00-${TRACE_ID.slice(1)}-00f067aa0ba902b7-01`,
    ]) {
      expect(traceIdOfTraceparent(bad), String(bad)).toBeUndefined();
    }
  });
});
