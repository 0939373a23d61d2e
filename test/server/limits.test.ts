// Limits live in the contract: every request field with a shape limit carries a
// (billing.v1.limit) option, every required oneof a (billing.v1.oneof_limit), read from
// the descriptors at start-up (src/rpc/limits.ts) and checked before the handler runs.
// (a) the table covers every field the hand-written checks cover, and a malformed option
// stops the start-up naming the field; (b) for random values of every kind, the edge
// refuses exactly what the hand-written checks refuse, with the same field and message
// (LIMITS_SEED replays a run); (c) over the real server, bad requests are refused after
// authentication, naming the field, and write nothing.
import { create, createFileRegistry, type DescMessage, getOption, type MessageInitShape, setExtension } from '@bufbuild/protobuf';
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FieldOptionsSchema,
  FileDescriptorProtoSchema,
  OneofOptionsSchema,
  TimestampSchema,
} from '@bufbuild/protobuf/wkt';
import { Code } from '@connectrpc/connect';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CreatePromoCodeRequestSchema,
  RunDailyTopUpRequestSchema,
  SetEntitlementRequestSchema,
  SetPlanRequestSchema,
} from '../../gen/billing/v1/admin_service_pb.js';
import {
  ChargeRequestSchema,
  GetBalanceRequestSchema,
  GrantRequestSchema,
  ListTransactionsRequestSchema,
  QuoteRequestSchema,
  RedeemRequestSchema,
  RefundRequestSchema,
  ReleaseRequestSchema,
  ReserveRequestSchema,
} from '../../gen/billing/v1/billing_service_pb.js';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { file_billing_v1_options, limit, LimitSchema, oneof_limit, OneofLimitSchema, StringKind } from '../../gen/billing/v1/options_pb.js';
import { OperationUsageSchema, Plan, TokenUsageSchema, type TransactionType } from '../../gen/billing/v1/types_pb.js';
import { ListDepositsRequestSchema } from '../../gen/billing/v1/wallet_service_pb.js';
import { BillingError } from '../../src/domain/errors.js';

// The checks as they were written by hand before this change: the oracle.
import {
  AMOUNT_MILLICREDITS_MAX,
  AMOUNT_MILLICREDITS_MIN,
  checkAmount,
  checkId,
  checkIdempotencyKey,
  checkMetadata,
  checkName,
  checkPageSize,
  checkPromoCode,
  checkQuantity,
  checkText,
  checkTokens,
  checkTopUpDateFormat,
  checkUsage,
  checkUserId,
  HOLD_TTL_SECONDS_MAX,
  IDEMPOTENCY_KEY_LENGTH_MAX,
  METADATA_ENTRIES_MAX,
  METADATA_KEY_LENGTH_MAX,
  METADATA_VALUE_LENGTH_MAX,
  PAGE_SIZE_MAX,
  planFromProto,
  PROMO_MAX_REDEMPTIONS_MAX,
  QUANTITY_MAX,
  REASON_LENGTH_MAX,
  REFERENCE_LENGTH_MAX,
  timestampMsFromProto,
  TOKENS_MAX,
  typesFromProto,
  USER_ID_LENGTH_MAX,
} from '../rules/limits-oracle.js';
import { checkRequest, integerBounds, lengthMax, limitedPaths, limitTable, type LimitTable } from '../../src/rpc/limits.js';
import { SCOPED_SERVICES } from '../../src/rpc/routes.js';
import { failure, key, startTestApp, type TestApp } from '../support/app.js';

const table: LimitTable = limitTable(SCOPED_SERVICES);

// ---- (a) the table ----

/** Every field the hand-written checks cover, per request, in the order the edge checks them (declaration order). */
const HAND_WRITTEN: Readonly<Record<string, readonly string[]>> = {
  'billing.v1.GetBalanceRequest': ['user_id'],
  'billing.v1.ListTransactionsRequest': ['user_id', 'page_size', 'types'],
  'billing.v1.ListHoldsRequest': ['user_id', 'page_size'],
  'billing.v1.QuoteRequest': ['user_id', 'product', 'usage', ...usagePaths(false)],
  'billing.v1.ReserveRequest': ['user_id', 'idempotency_key', 'usage', ...usagePaths(true), 'ttl_seconds', 'product'],
  'billing.v1.ReleaseRequest': ['user_id', 'idempotency_key', 'reservation_id'],
  'billing.v1.ChargeRequest': ['user_id', 'idempotency_key', 'product', 'usage', ...usagePaths(true), 'reservation_id', 'reference', 'metadata'],
  'billing.v1.RefundRequest': ['user_id', 'idempotency_key', 'transaction_id', 'amount_millicredits', 'reason'],
  'billing.v1.GrantRequest': ['user_id', 'idempotency_key', 'grant', 'sku', 'amount_millicredits', 'reason', 'reference', 'metadata'],
  'billing.v1.RedeemRequest': ['user_id', 'idempotency_key', 'code'],
  'billing.v1.SetPlanRequest': ['user_id', 'plan'],
  'billing.v1.SetEntitlementRequest': ['user_id', 'entitlement'],
  'billing.v1.CreatePromoCodeRequest': ['code', 'amount_millicredits', 'max_redemptions', 'expires_at'],
  'billing.v1.GetPromoCodeRequest': ['code'],
  'billing.v1.ListPromoCodesRequest': ['page_size'],
  'billing.v1.DisablePromoCodeRequest': ['code'],
  'billing.v1.RunDailyTopUpRequest': ['date'],
  'billing.v1.VerifyLedgerRequest': [],
  'billing.v1.GetJobProgressRequest': [],
  'billing.v1.GetDepositAddressRequest': ['user_id'],
  'billing.v1.ListDepositsRequest': ['user_id', 'page_size'],
  'billing.v1.GetWatcherStatusRequest': [],
};

function usagePaths(withAmount: boolean): string[] {
  return [
    ...(withAmount ? ['amount_millicredits'] : []),
    'token_usage.model',
    'token_usage.tokens_in',
    'token_usage.tokens_out',
    'operation.name',
    'operation.quantity',
  ];
}

/** A service over one request message, as buf would generate it, with the given field and oneof options. */
function serviceWith(fields: { name: string; type: FieldDescriptorProto_Type; limit?: MessageInitShape<typeof LimitSchema>; oneof?: number }[], oneofRequired?: boolean) {
  const file = create(FileDescriptorProtoSchema, {
    name: 'billing/v1/careless.proto',
    package: 'billing.v1',
    syntax: 'proto3',
    dependency: ['billing/v1/options.proto'],
    messageType: [
      {
        name: 'CarelessRequest',
        field: fields.map((f, i) => {
          const options = create(FieldOptionsSchema);
          if (f.limit) setExtension(options, limit, create(LimitSchema, f.limit));
          return {
            name: f.name,
            number: i + 1,
            type: f.type,
            label: FieldDescriptorProto_Label.OPTIONAL,
            jsonName: f.name,
            options,
            ...(f.oneof === undefined ? {} : { oneofIndex: f.oneof }),
          };
        }),
        oneofDecl: oneofRequired === undefined
          ? []
          : [{ name: 'choice', options: (() => {
              const options = create(OneofOptionsSchema);
              setExtension(options, oneof_limit, create(OneofLimitSchema, { required: oneofRequired }));
              return options;
            })() }],
      },
    ],
    service: [{ name: 'CarelessService', method: [{ name: 'Do', inputType: '.billing.v1.CarelessRequest', outputType: '.billing.v1.CarelessRequest' }] }],
  });
  const registry = createFileRegistry(file, (name) => (name === 'billing/v1/options.proto' ? file_billing_v1_options : undefined));
  return registry.getService('billing.v1.CarelessService')!;
}

describe('limits from the contract', () => {
  it('cover every request field the hand-written checks cover, in declaration order', () => {
    const read = Object.fromEntries([...table.requests].map(([name, limits]) => [name, limitedPaths(limits)]));
    expect(read).toEqual(HAND_WRITTEN);
    const methods = SCOPED_SERVICES.flatMap((s) => s.methods);
    expect(table.requests.size).toBe(methods.length);
  });

  it('state the same bounds the hand-written checks held', () => {
    const max = (field: Parameters<typeof integerBounds>[0]) => integerBounds(field).max;
    expect(lengthMax(GetBalanceRequestSchema.field.userId)).toBe(USER_ID_LENGTH_MAX);
    expect(lengthMax(ChargeRequestSchema.field.idempotencyKey)).toBe(IDEMPOTENCY_KEY_LENGTH_MAX);
    expect(lengthMax(ChargeRequestSchema.field.reference)).toBe(REFERENCE_LENGTH_MAX);
    expect(lengthMax(RefundRequestSchema.field.reason)).toBe(REASON_LENGTH_MAX);
    expect(max(ListTransactionsRequestSchema.field.pageSize)).toBe(BigInt(PAGE_SIZE_MAX));
    expect(max(TokenUsageSchema.field.tokensIn)).toBe(TOKENS_MAX);
    expect(max(OperationUsageSchema.field.quantity)).toBe(QUANTITY_MAX);
    expect(integerBounds(ChargeRequestSchema.field.amountMillicredits)).toEqual({ min: AMOUNT_MILLICREDITS_MIN, max: AMOUNT_MILLICREDITS_MAX });
    expect(max(ReserveRequestSchema.field.ttlSeconds)).toBe(BigInt(HOLD_TTL_SECONDS_MAX));
    expect(max(CreatePromoCodeRequestSchema.field.maxRedemptions)).toBe(PROMO_MAX_REDEMPTIONS_MAX);
    const metadata = getOption(ChargeRequestSchema.field.metadata, limit).kind;
    expect(metadata.case === 'map' ? [metadata.value.entriesMax, metadata.value.key?.lengthMax, metadata.value.value?.lengthMax] : []).toEqual([
      METADATA_ENTRIES_MAX,
      METADATA_KEY_LENGTH_MAX,
      METADATA_VALUE_LENGTH_MAX,
    ]);
  });

  it('refuse to start on a malformed option, naming each field', () => {
    const careless = serviceWith([
      { name: 'size', type: FieldDescriptorProto_Type.INT32, limit: { kind: { case: 'integer', value: { min: 10n, max: 1n } } } },
      { name: 'title', type: FieldDescriptorProto_Type.STRING, limit: { kind: { case: 'string', value: { lengthMax: 10 } } } },
      { name: 'count', type: FieldDescriptorProto_Type.INT64, limit: { kind: { case: 'string', value: { kind: StringKind.TEXT, lengthMax: 10 } } } },
      { name: 'note', type: FieldDescriptorProto_Type.STRING, limit: {} },
      { name: 'big', type: FieldDescriptorProto_Type.INT32, limit: { kind: { case: 'integer', value: { min: 0n, max: 2n ** 40n } } } },
      { name: 'id', type: FieldDescriptorProto_Type.STRING, limit: { kind: { case: 'string', value: { kind: StringKind.ID, required: true } } } },
    ]);
    expect(() => limitTable([...SCOPED_SERVICES, careless])).toThrow(
      'refusing to start: malformed limits in proto/: ' +
        '(billing.v1.limit) on billing.v1.CarelessRequest.size: min 10 is above max 1; ' +
        '(billing.v1.limit) on billing.v1.CarelessRequest.title: string limit has no kind (0); ' +
        '(billing.v1.limit) on billing.v1.CarelessRequest.count: a string limit on a field that is not a singular string; ' +
        '(billing.v1.limit) on billing.v1.CarelessRequest.note: has no kind (string, integer, map, known_enum or timestamp); ' +
        "(billing.v1.limit) on billing.v1.CarelessRequest.big: min and max must lie within the field's type (-2147483648 to 2147483647); " +
        '(billing.v1.limit) on billing.v1.CarelessRequest.id: an id needs id_of (what it is the id of)',
    );
    const pointless = serviceWith(
      [
        { name: 'a', type: FieldDescriptorProto_Type.STRING, oneof: 0 },
        { name: 'b', type: FieldDescriptorProto_Type.STRING, oneof: 0 },
      ],
      false,
    );
    expect(() => limitTable([pointless])).toThrow('(billing.v1.oneof_limit) on billing.v1.CarelessRequest.choice: says nothing (required is false)');
    // A well-formed one is read, and checked like the contract's own.
    const careful = serviceWith(
      [
        { name: 'a', type: FieldDescriptorProto_Type.STRING, oneof: 0, limit: { kind: { case: 'string', value: { kind: StringKind.NAME, required: true, lengthMax: 3 } } } },
        { name: 'b', type: FieldDescriptorProto_Type.INT32, oneof: 0 },
      ],
      true,
    );
    const read = limitTable([careful]);
    expect(limitedPaths(read.requests.get('billing.v1.CarelessRequest')!)).toEqual(['choice', 'a']);
  });
});

// ---- (b) the edge accepts exactly what the hand-written checks accept ----

const SEED = process.env.LIMITS_SEED ? Number(process.env.LIMITS_SEED) : Math.floor(Math.random() * 2 ** 31);
const RUNS = 300;
console.log(`limits property: LIMITS_SEED=${SEED} (replay: LIMITS_SEED=${SEED} npm test -- test/limits.test.ts)`);

/** How a check ended: "ok", or the reason, field and message of its BillingError. */
function outcomeOf(check: () => unknown): string {
  try {
    check();
    return 'ok';
  } catch (error) {
    if (error instanceof BillingError) return `${error.reason} ${error.facts.field ?? ''} ${error.message}`;
    throw error;
  }
}

function edge<Desc extends DescMessage>(schema: Desc, init: MessageInitShape<Desc>): string {
  return outcomeOf(() => checkRequest(table, schema, create(schema, init)));
}

function property<T>(arbitrary: fc.Arbitrary<T>, predicate: (value: T) => void): void {
  fc.assert(fc.property(arbitrary, predicate), { seed: SEED, numRuns: RUNS });
}

/** Characters a check cares about: controls, surrogate halves, non-ASCII, separators of every charset. */
const SPECIAL = ['\u0000', '\n', '\u001f', '\u007f', '\u0080', '\ud800', '\udc00', '\uffff', '😀', 'ü', ' ', '/', '.', '_', ':', '@', '-', '+', 'e', 'x'];

/**
 * Strings of `alphabet` with lengths around `lengthMax`: half of them as they are, half
 * with one or two special or random characters put in (replacing one, so the length holds).
 */
function strings(alphabet: string, lengthMax: number): fc.Arbitrary<string> {
  const length = fc.oneof(fc.nat({ max: lengthMax + 3 }), fc.constantFrom(0, 1, Math.max(0, lengthMax - 1), lengthMax, lengthMax + 1));
  const clean = length.chain((n) => fc.array(fc.constantFrom(...alphabet), { minLength: n, maxLength: n }).map((chars) => chars.join('')));
  const odd = fc.oneof(fc.constantFrom(...SPECIAL), fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)));
  const spoiled = fc.tuple(clean, fc.array(fc.tuple(fc.nat(), odd), { minLength: 1, maxLength: 2 })).map(([text, changes]) =>
    changes.reduce((s, [at, char]) => {
      const i = s.length === 0 ? 0 : at % s.length;
      return `${s.slice(0, i)}${char}${s.slice(i + 1)}`;
    }, text),
  );
  return fc.oneof(clean, spoiled);
}

const LOWER = 'abcdefghijklmnopqrstuvwxyz0123456789._-';
const USER = `ABCDEFGHIJKLMNOPQRSTUVWXYZ${LOWER}:@`;
const CODE = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
const TEXT = 'abc XYZ 019 .,;!?-_=+/é€';

/** int64 values: anywhere, and around a limit's bounds. */
function int64s(...bounds: bigint[]): fc.Arbitrary<bigint> {
  const near = bounds.flatMap((b) => [b - 1n, b, b + 1n]).filter((b) => b >= -(2n ** 63n) && b < 2n ** 63n);
  return fc.oneof(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), fc.constantFrom(...near), fc.bigInt({ min: -3n, max: bounds.reduce((a, b) => (a > b ? a : b)) + 3n }));
}

function int32s(...bounds: number[]): fc.Arbitrary<number> {
  return fc.oneof(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.constantFrom(...bounds.flatMap((b) => [b - 1, b, b + 1])), fc.integer({ min: -3, max: Math.max(...bounds) + 3 }));
}

const amount = (value: bigint) => ({ case: 'amountMillicredits' as const, value });
const CHARGE = { userId: 'u', idempotencyKey: 'k', product: 'muse', usage: amount(1n) };
const GRANT = { userId: 'u', idempotencyKey: 'k', grant: { case: 'sku' as const, value: 'boost_50' } };
const REFUND = { userId: 'u', idempotencyKey: 'k', transactionId: '1', reason: 'r' };

describe('the edge refuses exactly what the hand-written checks refuse, with the same field and message', () => {
  it('user ids', () => {
    property(strings(USER, 128), (s) => {
      expect(edge(GetBalanceRequestSchema, { userId: s })).toBe(outcomeOf(() => checkUserId(s)));
      expect(edge(ListDepositsRequestSchema, { userId: s })).toBe(outcomeOf(() => checkUserId(s)));
    });
  });

  it('idempotency keys, references and reasons (text)', () => {
    property(strings(TEXT, 255), (s) => {
      expect(edge(ChargeRequestSchema, { ...CHARGE, idempotencyKey: s })).toBe(outcomeOf(() => checkIdempotencyKey(s)));
      expect(edge(ChargeRequestSchema, { ...CHARGE, reference: s })).toBe(outcomeOf(() => checkText(s, 'reference', REFERENCE_LENGTH_MAX, false)));
      expect(edge(RefundRequestSchema, { ...REFUND, reason: s })).toBe(outcomeOf(() => checkText(s, 'reason', REASON_LENGTH_MAX, true)));
      // With a SKU a grant's reason is optional; with an amount the operation requires it (not a limit).
      expect(edge(GrantRequestSchema, { ...GRANT, reason: s })).toBe(outcomeOf(() => checkText(s, 'reason', REASON_LENGTH_MAX, false)));
    });
  });

  it('names: product, entitlement, sku, operation', () => {
    property(strings(LOWER, 64), (s) => {
      expect(edge(ChargeRequestSchema, { ...CHARGE, product: s })).toBe(outcomeOf(() => checkName(s, 'product')));
      expect(edge(QuoteRequestSchema, { userId: 'u', product: s, usage: { case: 'operation', value: { name: 'op' } } })).toBe(outcomeOf(() => checkName(s, 'product')));
      expect(edge(SetEntitlementRequestSchema, { userId: 'u', entitlement: s })).toBe(outcomeOf(() => checkName(s, 'entitlement')));
      expect(edge(GrantRequestSchema, { ...GRANT, grant: { case: 'sku', value: s } })).toBe(outcomeOf(() => checkName(s, 'sku')));
      const operation = { kind: 'operation' as const, name: s, quantity: 1n };
      expect(edge(ChargeRequestSchema, { ...CHARGE, usage: { case: 'operation', value: { name: s, quantity: 1n } } })).toBe(outcomeOf(() => checkUsage(operation)));
    });
  });

  it('models', () => {
    property(strings(LOWER, 64), (s) => {
      const tokens = { kind: 'tokens' as const, model: s, tokensIn: 1n, tokensOut: 1n, finishReason: 'stop' };
      const value = { model: s, tokensIn: 1n, tokensOut: 1n, finishReason: 'stop' };
      expect(edge(ChargeRequestSchema, { ...CHARGE, usage: { case: 'tokenUsage', value } })).toBe(outcomeOf(() => checkUsage(tokens)));
      expect(edge(ReserveRequestSchema, { ...CHARGE, amount: { case: 'tokenUsage', value } })).toBe(outcomeOf(() => checkUsage(tokens)));
    });
  });

  it('promo codes', () => {
    property(strings(CODE, 64), (s) => {
      expect(edge(RedeemRequestSchema, { userId: 'u', idempotencyKey: 'k', code: s })).toBe(outcomeOf(() => checkPromoCode(s)));
      expect(edge(CreatePromoCodeRequestSchema, { code: s, amountMillicredits: 1n })).toBe(outcomeOf(() => checkPromoCode(s)));
    });
  });

  it('row ids', () => {
    const ids = fc.oneof(
      strings('0123456789', 20),
      fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n }).map(String),
      fc.constantFrom('9223372036854775807', '9223372036854775808', '0', '01', '-1', '+1', '1e3', ' 1', '1 ', '0x10'),
    );
    property(ids, (s) => {
      expect(edge(RefundRequestSchema, { ...REFUND, transactionId: s })).toBe(outcomeOf(() => checkId(s, 'transaction_id', 'transaction')));
      expect(edge(ReleaseRequestSchema, { userId: 'u', idempotencyKey: 'k', reservationId: s })).toBe(outcomeOf(() => checkId(s, 'reservation_id', 'reservation')));
      // A charge captures no hold when reservation_id is empty.
      const charge = s === '' ? 'ok' : outcomeOf(() => checkId(s, 'reservation_id', 'reservation'));
      expect(edge(ChargeRequestSchema, { ...CHARGE, reservationId: s })).toBe(charge);
    });
  });

  it('dates', () => {
    const dates = fc.oneof(
      fc.date({ min: new Date('0000-01-01T00:00:00Z'), max: new Date('9999-12-31T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString().slice(0, 10)),
      fc.tuple(fc.integer({ min: 0, max: 9999 }), fc.integer({ min: 0, max: 13 }), fc.integer({ min: 0, max: 32 })).map(
        ([y, m, d]) => `${String(y).padStart(4, '0')}-${String(m).padStart(2, '0')}-${String(d).padStart(2, '0')}`,
      ),
      strings('0123456789-T:Z', 12),
    );
    property(dates, (s) => {
      // The operation also refuses dates in the future or too far back: those need the clock, and stay with it.
      const shape = outcomeOf(() => checkTopUpDateFormat(s));
      expect(edge(RunDailyTopUpRequestSchema, { date: s })).toBe(shape);
    });
  });

  it('amounts, tokens and quantities (int64)', () => {
    property(int64s(0n, 1n, 10_000n, 1_000_000_000n, 1_000_000_000_000n), (n) => {
      expect(edge(ChargeRequestSchema, { ...CHARGE, usage: amount(n) })).toBe(outcomeOf(() => checkAmount(n)));
      expect(edge(GrantRequestSchema, { ...GRANT, grant: amount(n) })).toBe(outcomeOf(() => checkAmount(n)));
      expect(edge(CreatePromoCodeRequestSchema, { code: 'C', amountMillicredits: n })).toBe(outcomeOf(() => checkAmount(n)));
      // A refund of 0 returns all that remains: the operation skips the amount check for it.
      expect(edge(RefundRequestSchema, { ...REFUND, amountMillicredits: n })).toBe(n === 0n ? 'ok' : outcomeOf(() => checkAmount(n)));
      const tokens = (tokensIn: bigint, tokensOut: bigint) => ({ kind: 'tokens' as const, model: 'm', tokensIn, tokensOut, finishReason: 'stop' });
      expect(edge(QuoteRequestSchema, { userId: 'u', product: 'p', usage: { case: 'tokenUsage', value: { model: 'm', tokensIn: n } } })).toBe(
        outcomeOf(() => checkUsage(tokens(n, 0n))),
      );
      expect(edge(QuoteRequestSchema, { userId: 'u', product: 'p', usage: { case: 'tokenUsage', value: { model: 'm', tokensOut: n } } })).toBe(
        outcomeOf(() => checkTokens(n, 'token_usage.tokens_out')),
      );
      expect(edge(ChargeRequestSchema, { ...CHARGE, usage: { case: 'operation', value: { name: 'op', quantity: n } } })).toBe(
        outcomeOf(() => checkQuantity(n, 'operation.quantity')),
      );
    });
  });

  it('page sizes (int32)', () => {
    property(int32s(0, 1, 50, 100), (n) => {
      expect(edge(ListTransactionsRequestSchema, { userId: 'u', pageSize: n })).toBe(outcomeOf(() => checkPageSize(n)));
      expect(edge(ListDepositsRequestSchema, { userId: 'u', pageSize: n })).toBe(outcomeOf(() => checkPageSize(n)));
    });
  });

  it('metadata', () => {
    const metadata = fc.oneof(
      fc.dictionary(strings(TEXT, 64), strings(TEXT, 512), { maxKeys: 4 }),
      // Around the entry limit, with short keys and values so the entries differ.
      fc.dictionary(strings(TEXT, 3), strings(TEXT, 3), { minKeys: 15, maxKeys: 18 }),
    );
    property(metadata, (m) => {
      expect(edge(ChargeRequestSchema, { ...CHARGE, metadata: m })).toBe(outcomeOf(() => checkMetadata(m)));
      expect(edge(GrantRequestSchema, { ...GRANT, metadata: m })).toBe(outcomeOf(() => checkMetadata(m)));
    });
  });

  it('plans and transaction types (enums)', () => {
    const number = fc.oneof(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.integer({ min: -1, max: 8 }));
    property(fc.tuple(number, fc.array(number, { maxLength: 4 })), ([plan, types]) => {
      expect(edge(SetPlanRequestSchema, { userId: 'u', plan })).toBe(outcomeOf(() => planFromProto(plan)));
      expect(edge(ListTransactionsRequestSchema, { userId: 'u', types })).toBe(outcomeOf(() => typesFromProto(types)));
    });
  });

  it('timestamps', () => {
    const timestamp = fc.record({
      seconds: fc.oneof(
        fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
        fc.bigInt({ min: -62_135_596_801n, max: 253_402_300_800n }),
        fc.constantFrom(-62_135_596_801n, -62_135_596_800n, 0n, 253_402_300_799n, 253_402_300_800n),
      ),
      nanos: fc.oneof(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.integer({ min: -1, max: 1_000_000_000 }), fc.constantFrom(-1, 0, 999_999_999, 1_000_000_000)),
    });
    property(timestamp, (ts) => {
      const expiresAt = create(TimestampSchema, ts);
      expect(edge(CreatePromoCodeRequestSchema, { code: 'C', amountMillicredits: 1n, expiresAt })).toBe(outcomeOf(() => timestampMsFromProto(expiresAt, 'expires_at')));
    });
  });

  it('a usage or grant left unset', () => {
    const none = outcomeOf(() => checkUsage(undefined));
    expect(none).toBe('INVALID_FIELD usage usage: one of amount_millicredits, token_usage or operation is required');
    expect(edge(ChargeRequestSchema, { ...CHARGE, usage: { case: undefined } })).toBe(none);
    expect(edge(QuoteRequestSchema, { userId: 'u', product: 'p' })).toBe('INVALID_FIELD usage usage: one of token_usage or operation is required');
    // ReserveRequest's oneof is named amount; the operation has always refused it as usage.
    expect(edge(ReserveRequestSchema, { userId: 'u', idempotencyKey: 'k', product: 'p' })).toBe(none);
    expect(edge(GrantRequestSchema, { userId: 'u', idempotencyKey: 'k' })).toBe('INVALID_FIELD grant grant: one of sku or amount_millicredits is required');
  });
});

// ---- (c) over the real server ----

describe('the server checks limits after authentication, before the operation', () => {
  const TOKEN = 'limits-all-scopes-token-01';
  const SPEND_ONLY = 'limits-spend-token-0002';
  let t: TestApp;
  const auth = { headers: { authorization: `Bearer ${TOKEN}` } };

  beforeAll(async () => {
    t = await startTestApp({ env: { BILLING_TOKENS: `${TOKEN}=spend+grant+admin+wallet,${SPEND_ONLY}=spend`, HOST: '127.0.0.1' } });
  });
  afterAll(async () => t?.close());

  async function rowCounts(): Promise<string> {
    const rows = await t.app.db.query(`select
      (select count(*) from user_accounts) as a, (select count(*) from transactions) as t, (select count(*) from reservations) as r,
      (select count(*) from idempotency_keys) as k, (select count(*) from promo_codes) as p, (select count(*) from deposit_addresses) as d`);
    return JSON.stringify(rows[0]);
  }

  it('refuses bad requests with INVALID_ARGUMENT naming the field and the limit, writing nothing', async () => {
    const user = 'limits-user';
    const before = await rowCounts();
    const cases: [() => Promise<unknown>, string, string][] = [
      [() => t.billing.reserve({ userId: user, idempotencyKey: key(), product: 'muse', amount: amount(1n), ttlSeconds: 86_401 }, auth), 'ttl_seconds', 'must be between 1 and 86400'],
      [() => t.billing.reserve({ userId: user, idempotencyKey: key(), product: 'muse' }, auth), 'usage', 'one of amount_millicredits, token_usage or operation is required'],
      [() => t.admin.createPromoCode({ code: 'LIMITS', amountMillicredits: 1n, maxRedemptions: -1n }, auth), 'max_redemptions', 'must be between 0 (unlimited) and 1000000000'],
      [
        () => t.billing.charge({ userId: user, idempotencyKey: key(), product: 'muse', usage: { case: 'tokenUsage', value: { model: '', finishReason: 'stop' } } }, auth),
        'token_usage.model',
        'is required',
      ],
      [() => t.billing.charge({ ...CHARGE, userId: user, idempotencyKey: key(), metadata: { '': 'v' } }, auth), 'metadata.key', 'is required'],
      [() => t.admin.setPlan({ userId: user, plan: Plan.UNSPECIFIED }, auth), 'plan', 'must be PLAN_FREE, PLAN_PRO or PLAN_ADMIN'],
      [() => t.billing.listTransactions({ userId: user, types: [99 as TransactionType] }, auth), 'types', 'unknown transaction type 99'],
      [() => t.admin.runDailyTopUp({ date: '2024-02-30' }, auth), 'date', 'must be a calendar date "YYYY-MM-DD" (UTC), or empty for today'],
      [() => t.billing.grant({ ...GRANT, userId: user, idempotencyKey: key(), reason: 'r'.repeat(256) }, auth), 'reason', 'must be at most 255 characters'],
      [() => t.billing.redeem({ userId: user, idempotencyKey: key(), code: 'no code' }, auth), 'code', 'must be 1-64 characters of A-Z a-z 0-9 _ -'],
      // The wallet has no chains here, so the operation would answer WALLET_DISABLED: the edge answers first.
      [() => t.wallet.getDepositAddress({ userId: 'a/b' }, auth), 'user_id', 'may contain only A-Z a-z 0-9 . _ : @ -'],
    ];
    for (const [call, field, message] of cases) {
      const { error, detail } = await failure(call());
      expect(error.code, field).toBe(Code.InvalidArgument);
      expect(detail?.reason, field).toBe(ErrorReason.INVALID_FIELD);
      expect(detail?.field, field).toBe(field);
      expect(error.rawMessage, field).toBe(`${field}: ${message}`);
    }
    expect(await rowCounts()).toBe(before);
    // With a well-formed user id the wallet's own answer shows: the edge answered above.
    expect((await failure(t.wallet.getDepositAddress({ userId: 'ok' }, auth))).detail?.reason).toBe(ErrorReason.WALLET_DISABLED);
  });

  it('tells a caller without the right token nothing about its request', async () => {
    const bad = { userId: 'a/b', idempotencyKey: '', grant: { case: undefined } } as const;
    const anonymous = await failure(t.billing.grant(bad));
    expect(anonymous.error.code).toBe(Code.Unauthenticated);
    expect(anonymous.detail).toBeUndefined();
    const spend = await failure(t.billing.grant(bad, { headers: { authorization: `Bearer ${SPEND_ONLY}` } }));
    expect(spend.error.code).toBe(Code.PermissionDenied);
    expect(spend.error.rawMessage).not.toContain('user_id');
    const allowed = await failure(t.billing.grant(bad, auth));
    expect([allowed.error.code, allowed.detail?.field]).toEqual([Code.InvalidArgument, 'user_id']);
  });

  it('still serves a request within every limit', async () => {
    const granted = await t.billing.grant({ userId: 'limits-ok', idempotencyKey: key(), grant: amount(1_000n), reason: 'r', metadata: { a: 'b' } }, auth);
    expect(granted.balance?.balanceMillicredits).toBe(1_000n);
  });
});
