// The hostile-input table: for every RPC of BillingService and AdminService, a valid
// request (a "baseline") that would succeed and, for mutations, write; and for every field
// of the request, found by walking the generated descriptor, the hostile values of its
// kind put into that baseline. Because the baseline would succeed, a hostile value that
// the server quietly accepts or reinterprets shows up as a success or as a changed
// database, not as a pass.
import { create, fromJson, ScalarType, type DescField, type DescMessage, type DescMethodUnary, type JsonObject, type JsonValue, type Message } from '@bufbuild/protobuf';
import { TimestampSchema } from '@bufbuild/protobuf/wkt';
import { WireType } from '@bufbuild/protobuf/wire';
import { Code, type Transport } from '@connectrpc/connect';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import * as v from './values.js';
import { type Hostile, type JsonInput, Raw, Wire } from './values.js';
import { callGrpc, type Outcome, postConnectJson } from './wire.js';

/** Rows and objects created once before the table runs; each baseline call gets fresh keys and users. */
export interface Fixture {
  readonly richUser: string;
  /** A charge of the rich user with plenty left to refund. */
  readonly chargeId: string;
  /** An active hold of the rich user. */
  readonly reservationId: string;
  /** A code no fresh user has redeemed. */
  readonly promoCode: string;
  /** A code only the DisablePromoCode baseline names. */
  readonly disableCode: string;
  readonly now: Date;
  fresh(prefix: string): string;
}

export interface Ctx {
  readonly url: string;
  readonly authorization: string;
  readonly grpc: Transport;
  /** A gRPC transport on a new connection, for a row that may cost its connection. */
  grpcOnNewConnection(): Transport;
}

/** gRPC is binary protobuf over HTTP/2; json is Connect JSON over HTTP/1.1. */
export type Via = 'grpc' | 'json';

export interface Row {
  readonly transport: Via;
  readonly procedure: string;
  readonly label: string;
  readonly code: Code;
  /**
   * The ErrorDetail.field the answer must carry; null where no field can be named (over the
   * size limit, a body that does not decode at all): a detail is then optional, and names "".
   */
  readonly field: string | RegExp | null;
  /** The ErrorDetail.reason the answer must carry, by its name in billing.v1.ErrorReason, where it matters. */
  readonly reason?: string;
  send(ctx: Ctx): Promise<Outcome>;
}

type Baseline = (f: Fixture) => JsonObject;

interface RpcSpec {
  readonly method: DescMethodUnary;
  /** Valid requests, one per choice of a oneof; a field goes into the first that holds its top-level key. */
  readonly baselines: readonly Baseline[];
  /** Values added to the generic ones of a field's kind, by snake_case path. */
  readonly extra?: Readonly<Record<string, readonly Hostile[]>>;
}

const M = { ...BillingService.method, ...AdminService.method };

function tokenUsage(finishReason = 'stop'): JsonObject {
  return { model: 'gpt-5-mini', tokensIn: '1000', tokensOut: '1000', finishReason };
}
const OPERATION: JsonObject = { name: 'sample.generate', quantity: '1' };
const STRING_EXTRA = {
  user_id: v.USER_ID,
  idempotency_key: v.IDEMPOTENCY_KEY,
  product: v.NAME,
  'token_usage.model': [...v.NAME.slice(0, 1), { label: 'unknown model', json: 'gpt-0', grpc: 'gpt-0' }],
  'token_usage.finish_reason': [{ label: 'unknown reason', json: 'bogus', grpc: 'bogus' }, { label: 'upper case', json: 'STOP', grpc: 'STOP' }],
  'operation.name': [...v.NAME, { label: 'unknown operation', json: 'no.such.op', grpc: 'no.such.op' }],
  reference: v.TEXT_255,
};

function specs(now: Date): RpcSpec[] {
  return [
    { method: M.getBalance, baselines: [(f) => ({ userId: f.richUser })], extra: STRING_EXTRA },
    {
      method: M.listTransactions,
      baselines: [(f) => ({ userId: f.richUser, pageSize: 10 })],
      extra: { ...STRING_EXTRA, page_token: v.TRANSACTION_PAGE_TOKEN },
    },
    {
      method: M.listHolds,
      baselines: [(f) => ({ userId: f.richUser, pageSize: 10 })],
      extra: { ...STRING_EXTRA, page_token: v.HOLD_PAGE_TOKEN },
    },
    {
      method: M.quote,
      baselines: [
        (f) => ({ userId: f.richUser, product: 'muse', tokenUsage: tokenUsage() }),
        (f) => ({ userId: f.richUser, product: 'muse', operation: OPERATION }),
      ],
      extra: STRING_EXTRA,
    },
    {
      method: M.reserve,
      baselines: [
        (f) => ({ userId: f.richUser, idempotencyKey: f.fresh('res'), amountMillicredits: '1000', ttlSeconds: 600, product: 'muse' }),
        (f) => ({ userId: f.richUser, idempotencyKey: f.fresh('res'), tokenUsage: tokenUsage(), ttlSeconds: 600, product: 'muse' }),
        (f) => ({ userId: f.richUser, idempotencyKey: f.fresh('res'), operation: OPERATION, ttlSeconds: 600, product: 'muse' }),
      ],
      extra: STRING_EXTRA,
    },
    {
      method: M.release,
      baselines: [(f) => ({ userId: f.richUser, idempotencyKey: f.fresh('rel'), reservationId: f.reservationId })],
      extra: { ...STRING_EXTRA, reservation_id: v.ids({ emptyMeansNone: false }) },
    },
    {
      method: M.charge,
      baselines: [
        (f) => ({
          userId: f.richUser,
          idempotencyKey: f.fresh('chg'),
          product: 'muse',
          amountMillicredits: '1000',
          allowPartial: false,
          reference: 'run-1',
          metadata: { run: '1' },
        }),
        (f) => ({ userId: f.richUser, idempotencyKey: f.fresh('chg'), product: 'muse', tokenUsage: tokenUsage() }),
        (f) => ({ userId: f.richUser, idempotencyKey: f.fresh('chg'), product: 'muse', operation: OPERATION }),
      ],
      extra: { ...STRING_EXTRA, reservation_id: v.ids({ emptyMeansNone: true }) },
    },
    {
      method: M.refund,
      baselines: [(f) => ({ userId: f.richUser, idempotencyKey: f.fresh('ref'), transactionId: f.chargeId, amountMillicredits: '1000', reason: 'goodwill' })],
      extra: { ...STRING_EXTRA, transaction_id: v.ids({ emptyMeansNone: false }), reason: [...v.TEXT_255, { label: 'empty', json: '', grpc: '' }] },
    },
    {
      method: M.grant,
      baselines: [
        (f) => ({ userId: f.richUser, idempotencyKey: f.fresh('gr'), amountMillicredits: '1000', reason: 'support', reference: 'inv-1', metadata: { a: 'b' } }),
        (f) => ({ userId: f.richUser, idempotencyKey: f.fresh('gr'), sku: 'boost_50' }),
      ],
      extra: {
        ...STRING_EXTRA,
        reason: [...v.TEXT_255, { label: 'empty (required with an amount)', json: '', grpc: '' }],
        sku: [...v.NAME, { label: 'unknown SKU', json: 'boost_9000', grpc: 'boost_9000' }],
      },
    },
    {
      method: M.redeem,
      baselines: [(f) => ({ userId: f.fresh('redeemer'), idempotencyKey: f.fresh('rd'), code: f.promoCode })],
      extra: { ...STRING_EXTRA, code: v.PROMO_CODE },
    },
    { method: M.setPlan, baselines: [(f) => ({ userId: f.fresh('planner'), plan: 'PLAN_PRO' })], extra: STRING_EXTRA },
    {
      method: M.setEntitlement,
      baselines: [(f) => ({ userId: f.fresh('entitled'), entitlement: 'm4l', active: true })],
      extra: { ...STRING_EXTRA, entitlement: v.NAME },
    },
    {
      method: M.createPromoCode,
      baselines: [(f) => ({
        code: f.fresh('NEW').replace(/[^A-Za-z0-9_-]/g, '_'),
        amountMillicredits: '1000',
        maxRedemptions: '10',
        expiresAt: new Date(now.getTime() + 86_400_000).toISOString(),
      })],
      extra: { code: v.PROMO_CODE },
    },
    { method: M.getPromoCode, baselines: [(f) => ({ code: f.promoCode })], extra: { code: v.PROMO_CODE } },
    { method: M.listPromoCodes, baselines: [() => ({ pageSize: 10 })], extra: { page_token: v.PROMO_PAGE_TOKEN } },
    { method: M.disablePromoCode, baselines: [(f) => ({ code: f.disableCode })], extra: { code: v.PROMO_CODE } },
    // An empty date means today: the baseline would run the day's top-up.
    { method: M.runDailyTopUp, baselines: [() => ({ date: '' })], extra: { date: v.dates(now) } },
    { method: M.verifyLedger, baselines: [() => ({})] },
    { method: M.getJobProgress, baselines: [() => ({})] },
  ];
}

type Kind = 'string' | 'int64' | 'int32' | 'bool' | 'enum' | 'enumList' | 'map' | 'timestamp' | 'message';

interface Leaf {
  readonly fields: readonly DescField[];
  readonly path: string;
  readonly kind: Kind;
}

function kindOf(field: DescField): Kind {
  switch (field.fieldKind) {
    case 'scalar':
      if (field.scalar === ScalarType.STRING) return 'string';
      if (field.scalar === ScalarType.INT64) return 'int64';
      if (field.scalar === ScalarType.INT32) return 'int32';
      if (field.scalar === ScalarType.BOOL) return 'bool';
      break;
    case 'enum':
      return 'enum';
    case 'list':
      if (field.listKind === 'enum') return 'enumList';
      break;
    case 'map':
      if (field.mapKind === 'scalar' && field.scalar === ScalarType.STRING) return 'map';
      break;
    case 'message':
      return field.message.typeName === TimestampSchema.typeName ? 'timestamp' : 'message';
  }
  // A new field kind in the contract needs its own hostile values here.
  throw new Error(`the hostile table has no values for ${field.parent.typeName}.${field.name}`);
}

/** Every field of a request, nested messages included (a message field is a leaf too). */
function leaves(schema: DescMessage, parents: readonly DescField[] = []): Leaf[] {
  return schema.fields.flatMap((field) => {
    const fields = [...parents, field];
    const leaf: Leaf = { fields, path: fields.map((f) => f.name).join('.'), kind: kindOf(field) };
    return leaf.kind === 'message' && field.message ? [leaf, ...leaves(field.message, fields)] : [leaf];
  });
}

function hostileValues(leaf: Leaf, extra: readonly Hostile[], now: Date): readonly Hostile[] {
  const generic: Record<Kind, readonly Hostile[]> = {
    string: v.STRING,
    int64: [...v.INT64_JSON, ...v.INT64_GRPC],
    int32: [...v.INT32_JSON, ...v.INT32_GRPC],
    bool: v.BOOL_JSON,
    enum: v.PLAN,
    enumList: v.TRANSACTION_TYPES,
    map: v.METADATA,
    timestamp: v.timestamps(now),
    message: v.MESSAGE_JSON,
  };
  return [...generic[leaf.kind], ...extra];
}

// ---- putting a value into a request ----

function serialize(value: JsonInput): string {
  const raws: string[] = [];
  const text = JSON.stringify(value, (_key, item: unknown) => (item instanceof Raw ? `\u0000RAW${raws.push(item.text) - 1}\u0000` : item));
  return text.replace(/"\\u0000RAW(\d+)\\u0000"/g, (_m, i: string) => raws[Number(i)] ?? '');
}

function withJson(base: JsonObject, fields: readonly DescField[], value: JsonInput): { [key: string]: JsonInput } {
  const root: { [key: string]: JsonInput } = structuredClone(base);
  let target = root;
  fields.forEach((field, i) => {
    if (i === fields.length - 1) target[field.jsonName] = value;
    else target = target[field.jsonName] as { [key: string]: JsonInput };
  });
  return root;
}

type Fields = Record<string, unknown> & { $unknown?: { no: number; wireType: WireType; data: Uint8Array }[] };

function varint(n: number): number[] {
  const out: number[] = [];
  let rest = n;
  while (rest > 0x7f) {
    out.push((rest & 0x7f) | 0x80);
    rest >>>= 7;
  }
  out.push(rest);
  return out;
}

/** Sets a field of a generated message; raw Wire bytes replace the field on the wire instead. */
function setGrpc(message: Message, fields: readonly DescField[], value: unknown): void {
  let target = message as unknown as Fields;
  for (const [i, field] of fields.entries()) {
    const last = i === fields.length - 1;
    const holder = field.oneof ? field.oneof.localName : field.localName;
    if (!last) {
      const next = target[holder] as { value?: unknown } | undefined;
      target = (field.oneof ? next?.value : next) as Fields;
      continue;
    }
    if (value instanceof Wire) {
      target[holder] = field.oneof ? { case: undefined } : field.fieldKind === 'map' ? {} : '';
      const data = Uint8Array.from([...varint(value.bytes.length), ...value.bytes]);
      target.$unknown = [{ no: field.number, wireType: WireType.LengthDelimited, data }];
    } else {
      const made = field.fieldKind === 'message' ? create(TimestampSchema, value as object) : value;
      target[holder] = field.oneof ? { case: field.localName, value: made } : made;
    }
  }
}

function grpcMessage(method: DescMethodUnary, base: JsonObject): Message {
  return fromJson(method.input, base);
}

// ---- rows ----

function procedureOf(method: DescMethodUnary): string {
  return `${method.parent.typeName}/${method.name}`;
}

function baselineFor(spec: RpcSpec, leaf: Leaf, f: Fixture): Baseline {
  const top = leaf.fields[0]!;
  const found = spec.baselines.find((b) => top.jsonName in b(f));
  if (found) return found;
  if (top.oneof) throw new Error(`${procedureOf(spec.method)}: no baseline sets ${top.name}`);
  return spec.baselines[0]!;
}

/** Matches what `field` matches, or "". */
function orNone(field: string | RegExp): RegExp {
  const source = typeof field === 'string' ? field.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') : field.source.replace(/^\^|\$$/g, '');
  return new RegExp(`^(?:${source})?$`, 's');
}

function fieldRows(spec: RpcSpec, f: Fixture): Row[] {
  const procedure = procedureOf(spec.method);
  return leaves(spec.method.input).flatMap((leaf) => {
    const base = baselineFor(spec, leaf, f);
    return hostileValues(leaf, spec.extra?.[leaf.path] ?? [], f.now).flatMap((h): Row[] => {
      const expected = { procedure, code: h.code ?? Code.InvalidArgument, field: h.field ?? leaf.path };
      const label = `${leaf.path} = ${h.label}`;
      const rows: Row[] = [];
      if (h.json !== undefined) {
        const json = h.json;
        rows.push({ ...expected, transport: 'json', label, send: (c) => postConnectJson(c.url, procedure, serialize(withJson(base(f), leaf.fields, json)), c.authorization) });
      }
      if (h.grpc !== undefined && leaf.kind !== 'message') {
        const value = h.grpc;
        rows.push({
          ...expected,
          // Invalid UTF-8 makes the whole message undecodable protobuf: naming the field is
          // better, but a refusal of the message with field "" is as correct.
          ...(value instanceof Wire ? { field: orNone(expected.field) } : {}),
          transport: 'grpc',
          label,
          send: (c) => {
            const message = grpcMessage(spec.method, base(f));
            setGrpc(message, leaf.fields, value);
            return callGrpc(c.grpc, spec.method, message);
          },
        });
      }
      return rows;
    });
  });
}

/** Unknown keys, a oneof set twice, undecodable bodies and the size limit: per RPC, not per field. */
function requestRows(spec: RpcSpec, f: Fixture): Row[] {
  const procedure = procedureOf(spec.method);
  const base = spec.baselines[0]!;
  const json = (label: string, code: Code, field: string | RegExp | null, body: () => string | Buffer): Row => ({
    transport: 'json', procedure, label, code, field, send: (c) => postConnectJson(c.url, procedure, body(), c.authorization),
  });
  const rows: Row[] = [
    json('unknown field "bogusField"', Code.InvalidArgument, 'bogusField', () => serialize({ ...base(f), bogusField: 1 })),
    json('unknown field in snake_case "bogus_field"', Code.InvalidArgument, 'bogus_field', () => serialize({ ...base(f), bogus_field: 'x' })),
    ...v.MALFORMED_BODIES.map((m) => ({ ...json(`body: ${m.label}`, Code.InvalidArgument, null, () => m.body), reason: 'MALFORMED_REQUEST' })),
    json('10 MB body', Code.ResourceExhausted, null, () => serialize(tenMegabytes(spec, base(f)))),
  ];
  for (const b of spec.baselines) {
    const sample = b(f);
    for (const nested of ['tokenUsage', 'operation'] as const) {
      if (!(nested in sample)) continue;
      const snake = nested === 'tokenUsage' ? 'token_usage' : 'operation';
      const typo = nested === 'tokenUsage' ? 'tokensInn' : 'quantityy';
      rows.push(json(`unknown nested field "${snake}.${typo}"`, Code.InvalidArgument, `${snake}.${typo}`, () => {
        const body = b(f);
        return serialize({ ...body, [nested]: { ...(body[nested] as JsonObject), [typo]: '1' } });
      }));
    }
  }
  rows.push(...oneofTwiceRows(spec, f, json));
  const sample = base(f);
  const twice = spec.method.input.fields.find((x) => !x.oneof && x.jsonName !== x.name && sample[x.jsonName] !== undefined);
  if (twice) {
    // One field under both of its JSON names, with different values: a proxy that checks one
    // spelling and a server that uses the other must not disagree.
    rows.push(json(`${twice.name} under both its JSON and proto names`, Code.InvalidArgument, twice.name, () => {
      const body = base(f);
      return serialize({ ...body, [twice.name]: otherValue(body[twice.jsonName]!) });
    }));
  }
  rows.push(...grpcRequestRows(spec, f));
  if (spec.method === M.charge) {
    rows.push(json('the typo "allowPartail": true', Code.InvalidArgument, 'allowPartail', () => serialize({ ...base(f), allowPartail: true })));
  }
  return rows;
}

/** A different value of the same JSON type, so both spellings decode but disagree. */
function otherValue(value: JsonValue): JsonValue {
  if (typeof value === 'string') return /^\d+$/.test(value) ? String(BigInt(value) + 1n) : `${value}-other`;
  if (typeof value === 'number') return value + 1;
  if (typeof value === 'boolean') return !value;
  return value;
}

/** Two members of one oneof in one JSON object: the oneof is named. */
function oneofTwiceRows(spec: RpcSpec, f: Fixture, json: (label: string, code: Code, field: string, body: () => string) => Row): Row[] {
  const rows: Row[] = [];
  for (const oneof of spec.method.input.oneofs) {
    const members = spec.baselines.filter((b) => oneof.fields.some((m) => m.jsonName in b(f)));
    if (members.length < 2) continue;
    const [first, second] = members as [Baseline, Baseline];
    rows.push(json(`oneof ${oneof.name} set twice`, Code.InvalidArgument, oneof.name, () => serialize({ ...second(f), ...first(f) })));
  }
  return rows;
}

function tenMegabytes(spec: RpcSpec, base: JsonObject): JsonObject {
  const field = spec.method.input.fields.find((x) => kindOf(x) === 'string' && !x.oneof);
  return { ...base, [field?.jsonName ?? 'padding']: 'x'.repeat(v.TEN_MB) };
}

function grpcRequestRows(spec: RpcSpec, f: Fixture): Row[] {
  const procedure = procedureOf(spec.method);
  const withUnknown = (data: () => Uint8Array, wireType: WireType, newConnection = false) => (c: Ctx) => {
    const message = grpcMessage(spec.method, spec.baselines[0]!(f)) as Message & Fields;
    message.$unknown = [{ no: 999, wireType, data: data() }];
    return callGrpc(newConnection ? c.grpcOnNewConnection() : c.grpc, spec.method, message);
  };
  const big = () => Buffer.concat([Buffer.from(varint(v.TEN_MB)), Buffer.alloc(v.TEN_MB, 0x78)]);
  return [
    // A varint cut off by the end of the message: not a protobuf message at all.
    { transport: 'grpc', procedure, label: 'truncated varint at the end of the message', code: Code.InvalidArgument, field: null, send: withUnknown(() => Uint8Array.from([0xff]), WireType.Varint) },
    { transport: 'grpc', procedure, label: 'length prefix past the end of the message', code: Code.InvalidArgument, field: null, send: withUnknown(() => Uint8Array.from([0x7f, 0x61]), WireType.LengthDelimited) },
    {
      transport: 'grpc', procedure, label: '10 MB message', code: Code.ResourceExhausted, field: null,
      // Refused oversized messages add up on their HTTP/2 connection until the server drops
      // it (see the connection test in hostile.test.ts): each one gets its own connection here.
      send: withUnknown(big, WireType.LengthDelimited, true),
    },
  ];
}

/** The whole table. Throws if an RPC of either service has no spec. */
export function hostileRows(f: Fixture): Row[] {
  const all = specs(f.now);
  for (const method of [...BillingService.methods, ...AdminService.methods]) {
    if (!all.some((s) => s.method === method)) throw new Error(`the hostile table has no spec for ${procedureOf(method as DescMethodUnary)}`);
  }
  return all.flatMap((spec) => [...fieldRows(spec, f), ...requestRows(spec, f)]);
}

export const PROCEDURES = [...BillingService.methods, ...AdminService.methods].map((m) => procedureOf(m as DescMethodUnary));

/** One valid request as a row would send it, hostile value left out. */
export interface BaselineCall {
  readonly transport: Via;
  readonly label: string;
  send(ctx: Ctx): Promise<Outcome>;
}

/** Every baseline over both transports: each must succeed, or the rows built on it prove little. */
export function baselineCalls(f: Fixture): BaselineCall[] {
  return specs(f.now).flatMap((spec) =>
    spec.baselines.flatMap((b, i): BaselineCall[] => {
      const label = `${procedureOf(spec.method)} baseline ${i + 1}`;
      return [
        { transport: 'json', label, send: (c) => postConnectJson(c.url, procedureOf(spec.method), serialize(b(f)), c.authorization) },
        { transport: 'grpc', label, send: (c) => callGrpc(c.grpc, spec.method, grpcMessage(spec.method, b(f))) },
      ];
    }),
  );
}
