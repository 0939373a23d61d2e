// Interop: a client any gRPC user could write without our code. @grpc/grpc-js with
// @grpc/proto-loader built straight from proto/ (not gen/, not @connectrpc) calls the real
// service over h2c; errors are read back from the grpc-status-details-bin trailer. A plain
// HTTP/1.1 JSON call with Node's fetch checks the Connect protocol on the same port.
import { fileURLToPath } from 'node:url';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { startTestApp, type TestApp } from '../support/app.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const LOADER_OPTIONS: protoLoader.Options = { longs: String, enums: String, defaults: true, oneofs: true, keepCase: false };

// Our contract, as proto-loader sees it: billing_service.proto (with types.proto and
// google/protobuf/timestamp.proto through its imports) and errors.proto for ErrorDetail.
const billingDefinition = protoLoader.loadSync(['billing/v1/billing_service.proto', 'billing/v1/errors.proto'], {
  ...LOADER_OPTIONS,
  includeDirs: [`${root}proto`],
});
// The upstream reflection and health protos, as shipped with their npm packages.
const standardDefinition = protoLoader.loadSync(
  [
    `${root}node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto`,
    `${root}node_modules/grpc-health-check/proto/health/v1/health.proto`,
  ],
  LOADER_OPTIONS,
);

// google.rpc.Status, declared inline (wire-compatible; Any is {type_url, value}).
const StatusType = protobuf
  .parse(
    `syntax = "proto3";
     message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
     message Any { string type_url = 1; bytes value = 2; }`,
    { keepCase: true },
  )
  .root.lookupType('Status');
interface RpcStatus {
  code: number;
  message: string;
  details: { type_url: string; value: Uint8Array }[];
}

// What proto-loader hands back (camelCase, int64 as strings, enums as names).
interface Balance {
  userId: string;
  balanceMillicredits: string;
  reservedMillicredits: string;
  availableMillicredits: string;
  lowBalance: boolean;
  canStart: boolean;
  plan: string;
  entitlements: string[];
  freeOperationsRemaining: string;
}
interface Transaction {
  id: string;
  userId: string;
  type: string;
  amountMillicredits: string;
  balanceAfterMillicredits: string;
  product: string;
  operation: string;
  idempotencyKey: string;
  reason: string;
  createdAt: { seconds: string; nanos: number } | null;
}
interface ErrorDetail {
  reason: string;
  field: string;
  requiredMillicredits: string;
  availableMillicredits: string;
  subject: string;
}

let testApp: TestApp;
const clients: grpc.Client[] = [];

function client(definition: protoLoader.PackageDefinition, fqService: string): grpc.Client {
  const loaded = grpc.loadPackageDefinition(definition);
  const Ctor = fqService.split('.').reduce<unknown>((o, k) => (o as grpc.GrpcObject)[k], loaded) as grpc.ServiceClientConstructor;
  const c = new Ctor(`127.0.0.1:${testApp.app.server.port}`, grpc.credentials.createInsecure());
  clients.push(c);
  return c;
}

type UnaryMethod = (
  req: object,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: unknown) => void,
) => void;

function unary<Res>(c: grpc.Client, method: string, req: object): Promise<Res> {
  const fn = (c as unknown as Record<string, UnaryMethod>)[method];
  if (!fn) throw new Error(`no method ${method}`);
  return new Promise((resolve, reject) =>
    fn.call(c, req, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res as Res))),
  );
}

/** The ServiceError a call failed with; throws if it succeeded. */
async function failure(call: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await call;
  } catch (error) {
    return error as grpc.ServiceError;
  }
  throw new Error('expected the call to fail, but it succeeded');
}

/** Decodes the grpc-status-details-bin trailer and the billing.v1.ErrorDetail it carries. */
function errorDetails(error: grpc.ServiceError): { status: RpcStatus; detail: ErrorDetail } {
  const [bin] = error.metadata.get('grpc-status-details-bin');
  expect(Buffer.isBuffer(bin)).toBe(true);
  const status = StatusType.toObject(StatusType.decode(bin as Buffer), { defaults: true }) as RpcStatus;
  expect(status.details).toHaveLength(1);
  const any = status.details[0]!;
  expect(any.type_url).toMatch(/\/billing\.v1\.ErrorDetail$/);
  const ErrorDetailType = billingDefinition['billing.v1.ErrorDetail'] as protoLoader.MessageTypeDefinition<object, ErrorDetail>;
  return { status, detail: ErrorDetailType.deserialize(Buffer.from(any.value)) };
}

beforeAll(async () => {
  testApp = await startTestApp();
});

afterAll(async () => {
  for (const c of clients) c.close();
  await testApp?.close();
});

describe('grpc-js client built from proto/', () => {
  const user = `grpcjs-${process.pid}-${Date.now()}`;
  const grantKey = `grant-${user}`;
  const grantRequest = { userId: user, idempotencyKey: grantKey, amountMillicredits: '5000', reason: 'interop test' };
  let billing: grpc.Client;
  let grantTransactionId: string;

  beforeAll(() => {
    billing = client(billingDefinition, 'billing.v1.BillingService');
  });

  it('loads the contract with its imports, google/protobuf/timestamp.proto included', () => {
    expect(billingDefinition['google.protobuf.Timestamp']).toBeDefined();
    expect(billingDefinition['billing.v1.ErrorDetail']).toBeDefined();
    expect(Object.keys(billingDefinition['billing.v1.BillingService'] as object)).toContain('GetBalance');
  });

  it('GetBalance of a new user is 0 on PLAN_FREE', async () => {
    const res = await unary<{ balance: Balance }>(billing, 'GetBalance', { userId: user });
    expect(res.balance).toMatchObject({
      userId: user,
      balanceMillicredits: '0',
      reservedMillicredits: '0',
      availableMillicredits: '0',
      plan: 'PLAN_FREE',
      entitlements: [],
    });
  });

  it('Grant of an explicit amount returns the transaction and the new balance', async () => {
    const res = await unary<{ transaction: Transaction; balance: Balance }>(billing, 'Grant', grantRequest);
    expect(res.transaction).toMatchObject({
      userId: user,
      type: 'TRANSACTION_TYPE_GRANT',
      amountMillicredits: '5000',
      balanceAfterMillicredits: '5000',
      idempotencyKey: grantKey,
      reason: 'interop test',
    });
    expect(res.transaction.id).not.toBe('');
    expect(Number(res.transaction.createdAt?.seconds)).toBeGreaterThan(0);
    expect(res.balance).toMatchObject({ userId: user, balanceMillicredits: '5000', availableMillicredits: '5000' });
    grantTransactionId = res.transaction.id;
  });

  it('Charge of a catalogue operation debits its price', async () => {
    const res = await unary<{ transaction: Transaction; chargedMillicredits: string; shortfallMillicredits: string; waivedReason: string; balance: Balance }>(
      billing,
      'Charge',
      { userId: user, idempotencyKey: `charge-${user}`, product: 'muse', operation: { name: 'sample.generate' } },
    );
    expect(res.chargedMillicredits).toBe('2000');
    expect(res.shortfallMillicredits).toBe('0');
    expect(res.waivedReason).toBe('WAIVED_REASON_UNSPECIFIED');
    expect(res.transaction).toMatchObject({
      type: 'TRANSACTION_TYPE_CHARGE',
      amountMillicredits: '-2000',
      balanceAfterMillicredits: '3000',
      product: 'muse',
      operation: 'sample.generate',
    });
    expect(res.balance).toMatchObject({ balanceMillicredits: '3000', availableMillicredits: '3000' });
  });

  it('an unaffordable Charge is FAILED_PRECONDITION with an ErrorDetail in grpc-status-details-bin', async () => {
    const error = await failure(
      unary(billing, 'Charge', { userId: user, idempotencyKey: `too-much-${user}`, product: 'muse', amountMillicredits: '10000' }),
    );
    expect(error.code).toBe(grpc.status.FAILED_PRECONDITION);
    const { status, detail } = errorDetails(error);
    expect(status.code).toBe(grpc.status.FAILED_PRECONDITION);
    expect(status.message).toBe('insufficient balance: the charge needs 10000 milli-credits, 3000 available');
    // connect-node percent-encodes grpc-message with encodeURIComponent; grpc-js decodes it
    // with decodeURI, which leaves reserved characters (":" and "," here) as %3A and %2C.
    expect(decodeURIComponent(error.details)).toBe(status.message);
    expect(detail).toMatchObject({
      reason: 'ERROR_REASON_INSUFFICIENT_BALANCE',
      requiredMillicredits: '10000',
      availableMillicredits: '3000',
    });
    // Nothing changed.
    const after = await unary<{ balance: Balance }>(billing, 'GetBalance', { userId: user });
    expect(after.balance.balanceMillicredits).toBe('3000');
  });

  it('replaying the Grant with the same key returns the same transaction and changes nothing', async () => {
    const res = await unary<{ transaction: Transaction; balance: Balance }>(billing, 'Grant', grantRequest);
    expect(res.transaction.id).toBe(grantTransactionId);
    expect(res.transaction.amountMillicredits).toBe('5000');
    const after = await unary<{ balance: Balance }>(billing, 'GetBalance', { userId: user });
    expect(after.balance.balanceMillicredits).toBe('3000');
  });

  it('the same key with another amount is ALREADY_EXISTS (IDEMPOTENCY_KEY_REUSED)', async () => {
    const error = await failure(unary(billing, 'Grant', { ...grantRequest, amountMillicredits: '6000' }));
    expect(error.code).toBe(grpc.status.ALREADY_EXISTS);
    expect(errorDetails(error).detail.reason).toBe('ERROR_REASON_IDEMPOTENCY_KEY_REUSED');
  });
});

describe('standard services over grpc-js', () => {
  it('server reflection v1 lists every service', async () => {
    const reflection = client(standardDefinition, 'grpc.reflection.v1.ServerReflection');
    const call = (reflection as unknown as { ServerReflectionInfo(): grpc.ClientDuplexStream<object, object> }).ServerReflectionInfo();
    const responses = await new Promise<{ messageResponse: string; listServicesResponse?: { service: { name: string }[] } }[]>(
      (resolve, reject) => {
        const out: { messageResponse: string; listServicesResponse?: { service: { name: string }[] } }[] = [];
        call.on('data', (res: (typeof out)[number]) => out.push(res));
        call.on('error', reject);
        call.on('end', () => resolve(out));
        call.write({ host: '', listServices: '*' });
        call.end();
      },
    );
    expect(responses).toHaveLength(1);
    expect(responses[0]!.messageResponse).toBe('listServicesResponse');
    const names = responses[0]!.listServicesResponse!.service.map((s) => s.name);
    expect(names).toEqual(
      expect.arrayContaining([
        'billing.v1.BillingService',
        'billing.v1.AdminService',
        'billing.v1.WalletService',
        'grpc.health.v1.Health',
        'grpc.reflection.v1.ServerReflection',
        'grpc.reflection.v1alpha.ServerReflection',
      ]),
    );
  });

  it('grpc.health.v1.Health/Check is SERVING', async () => {
    const health = client(standardDefinition, 'grpc.health.v1.Health');
    expect(await unary<{ status: string }>(health, 'Check', { service: '' })).toEqual({ status: 'SERVING' });
    expect(await unary<{ status: string }>(health, 'Check', { service: 'billing.v1.BillingService' })).toEqual({ status: 'SERVING' });
  });
});

describe('HTTP/1.1 JSON with fetch', () => {
  it('GetBalance over the Connect protocol', async () => {
    const res = await fetch(`${testApp.url}/billing.v1.BillingService/GetBalance`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ userId: 'u1' }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    const body = (await res.json()) as { balance?: { userId?: string; plan?: string } };
    expect(body.balance?.userId).toBe('u1');
    expect(body.balance?.plan).toBe('PLAN_FREE');
  });
});
