// Limits from the contract: the `(billing.v1.limit)` option on each request field and
// `(billing.v1.oneof_limit)` on each request oneof in proto/ (see billing.v1.Limit in
// options.proto for what each kind accepts and how its refusal reads). At start-up
// limitTable() reads them from the descriptors of every request message, nested messages
// included, and refuses to start if one is malformed; limitsInterceptor() then checks
// each request against the table before its handler runs. A field that breaks its limit
// is INVALID_ARGUMENT (INVALID_FIELD) naming the field's snake_case path, worded as the
// operations word it, so a caller cannot tell where the check ran. Checks that need the
// catalogue, the clock or the database stay with the operations.
import {
  type DescEnum,
  type DescField,
  type DescMessage,
  type DescOneof,
  type DescService,
  getOption,
  hasOption,
  ScalarType,
} from '@bufbuild/protobuf';
import { reflect, type ReflectList, type ReflectMap, type ReflectMessage } from '@bufbuild/protobuf/reflect';
import { type Timestamp, TimestampSchema } from '@bufbuild/protobuf/wkt';
import type { Interceptor } from '@connectrpc/connect';
import {
  type IntegerLimit,
  limit as limitOption,
  oneof_limit as oneofLimitOption,
  StringKind,
  type StringLimit,
} from '../../gen/billing/v1/options_pb.js';
import { invalidField } from '../domain/errors.js';
// The shape of a row id is a storage fact the page tokens share: one definition of it.
import { ID_MAX, isId } from '../domain/request.js';
import { refusedWhileDecoding } from './handler.js';

/** A string rule, read from a StringLimit. */
export interface StringRule {
  readonly kind: 'text' | 'user_id' | 'name' | 'promo_code' | 'id' | 'date';
  readonly required: boolean;
  /** 0 for the kinds of a fixed shape (id, date). */
  readonly lengthMax: number;
  readonly idOf: string;
  readonly emptyMeans: string;
}

/** What one field must be. */
export type FieldRule =
  | ({ readonly type: 'string' } & StringRule)
  | {
      readonly type: 'integer';
      readonly min: bigint;
      readonly max: bigint;
      /** Set: 0 is accepted too, meaning this. */
      readonly zeroMeans: string;
      readonly boundsApart: boolean;
    }
  | { readonly type: 'map'; readonly entriesMax: number; readonly key: StringRule; readonly value: StringRule }
  | { readonly type: 'known_enum'; readonly known: ReadonlySet<number>; readonly refusal: string; readonly repeated: boolean; readonly words: string }
  | { readonly type: 'timestamp' };

/** One step of a message's checks, in declaration order. */
export type LimitEntry =
  | { readonly type: 'oneof'; readonly oneof: DescOneof; readonly reportedAs: string; readonly refusal: string }
  | {
      readonly type: 'field';
      readonly field: DescField;
      readonly rule: FieldRule | undefined;
      /** The limits of the nested message this field holds, when it has any. */
      readonly nested: MessageLimits | undefined;
    };

export interface MessageLimits {
  readonly message: DescMessage;
  readonly entries: readonly LimitEntry[];
}

/** Request message type name → its limits. */
export interface LimitTable {
  readonly requests: ReadonlyMap<string, MessageLimits>;
}

const DATE_PATTERN = /^\d{4}-\d{2}-\d{2}$/;
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;
const USER_ID_CHARS = /^[A-Za-z0-9._:@-]*$/;
const NAME_CHARS = /^[a-z0-9._-]*$/;
const PROMO_CODE_CHARS = /^[A-Za-z0-9_-]*$/;
/** Valid google.protobuf.Timestamp seconds: 0001-01-01 to 9999-12-31 (UTC). */
const TIMESTAMP_SECONDS_MIN = -62_135_596_800n;
const TIMESTAMP_SECONDS_MAX = 253_402_300_799n;

const STRING_KINDS: Readonly<Partial<Record<StringKind, StringRule['kind']>>> = {
  [StringKind.TEXT]: 'text',
  [StringKind.USER_ID]: 'user_id',
  [StringKind.NAME]: 'name',
  [StringKind.PROMO_CODE]: 'promo_code',
  [StringKind.ID]: 'id',
  [StringKind.DATE]: 'date',
};

const INTEGER_RANGES: Readonly<Partial<Record<ScalarType, readonly [bigint, bigint]>>> = {
  [ScalarType.INT32]: [-(2n ** 31n), 2n ** 31n - 1n],
  [ScalarType.SINT32]: [-(2n ** 31n), 2n ** 31n - 1n],
  [ScalarType.SFIXED32]: [-(2n ** 31n), 2n ** 31n - 1n],
  [ScalarType.INT64]: [-(2n ** 63n), 2n ** 63n - 1n],
  [ScalarType.SINT64]: [-(2n ** 63n), 2n ** 63n - 1n],
  [ScalarType.SFIXED64]: [-(2n ** 63n), 2n ** 63n - 1n],
};

/** "a, b or c" */
function either(words: readonly string[]): string {
  return words.length <= 1 ? (words[0] ?? '') : `${words.slice(0, -1).join(', ')} or ${words[words.length - 1]}`;
}

// ---- reading the table ----

class Problems {
  readonly list: string[] = [];
  add(where: string, what: string): void {
    this.list.push(`${where}: ${what}`);
  }
}

function fieldName(field: DescField): string {
  return `${field.parent.typeName}.${field.name}`;
}

function stringRule(limit: StringLimit | undefined, where: string, problems: Problems): StringRule | undefined {
  if (!limit) {
    problems.add(where, 'has no string limit');
    return undefined;
  }
  const kind = STRING_KINDS[limit.kind];
  if (!kind) {
    problems.add(where, `string limit has no kind (${limit.kind})`);
    return undefined;
  }
  const before = problems.list.length;
  const fixedShape = kind === 'id' || kind === 'date';
  if (fixedShape && limit.lengthMax !== 0) problems.add(where, `a ${kind} has a fixed shape and takes no length_max`);
  if (!fixedShape && limit.lengthMax === 0) problems.add(where, `a ${kind} string needs length_max`);
  if (kind === 'id' && limit.idOf === '') problems.add(where, 'an id needs id_of (what it is the id of)');
  if (kind !== 'id' && limit.idOf !== '') problems.add(where, 'id_of is for ids only');
  if (limit.emptyMeans !== '' && (kind !== 'date' || limit.required)) problems.add(where, 'empty_means is for a date that is not required');
  if (problems.list.length > before) return undefined;
  return { kind, required: limit.required, lengthMax: limit.lengthMax, idOf: limit.idOf, emptyMeans: limit.emptyMeans };
}

function integerRule(limit: IntegerLimit, field: DescField, where: string, problems: Problems): FieldRule | undefined {
  const range = field.fieldKind === 'scalar' ? INTEGER_RANGES[field.scalar] : undefined;
  if (!range) {
    problems.add(where, 'an integer limit on a field that is not a signed integer');
    return undefined;
  }
  const before = problems.list.length;
  if (limit.min > limit.max) problems.add(where, `min ${limit.min} is above max ${limit.max}`);
  if (limit.min < range[0] || limit.max > range[1]) problems.add(where, `min and max must lie within the field's type (${range[0]} to ${range[1]})`);
  if (limit.zeroMeans !== '' && limit.min < 0n) problems.add(where, 'zero_means needs min of 0 or more');
  if (problems.list.length > before) return undefined;
  return { type: 'integer', min: limit.min, max: limit.max, zeroMeans: limit.zeroMeans, boundsApart: limit.boundsApart };
}

function enumRule(desc: DescEnum, repeated: boolean): FieldRule {
  const known = desc.values.filter((v) => v.number !== 0);
  return {
    type: 'known_enum',
    known: new Set(known.map((v) => v.number)),
    refusal: `must be ${either(known.map((v) => v.name))}`,
    repeated,
    words: desc.name.replace(/([a-z0-9])([A-Z])/g, '$1 $2').toLowerCase(),
  };
}

function fieldRule(field: DescField, problems: Problems): FieldRule | undefined {
  if (!hasOption(field, limitOption)) return undefined;
  const where = `(billing.v1.limit) on ${fieldName(field)}`;
  const limit = getOption(field, limitOption);
  switch (limit.kind.case) {
    case undefined:
      problems.add(where, 'has no kind (string, integer, map, known_enum or timestamp)');
      return undefined;
    case 'string': {
      if (field.fieldKind !== 'scalar' || field.scalar !== ScalarType.STRING) {
        problems.add(where, 'a string limit on a field that is not a singular string');
        return undefined;
      }
      const rule = stringRule(limit.kind.value, where, problems);
      return rule ? { type: 'string', ...rule } : undefined;
    }
    case 'integer':
      return integerRule(limit.kind.value, field, where, problems);
    case 'map': {
      const map = limit.kind.value;
      if (field.fieldKind !== 'map' || field.mapKey !== ScalarType.STRING || field.mapKind !== 'scalar' || field.scalar !== ScalarType.STRING) {
        problems.add(where, 'a map limit on a field that is not a map<string, string>');
        return undefined;
      }
      const key = stringRule(map.key, `${where} key`, problems);
      const value = stringRule(map.value, `${where} value`, problems);
      if (map.entriesMax === 0) problems.add(where, 'a map limit needs entries_max');
      return key && value && map.entriesMax > 0 ? { type: 'map', entriesMax: map.entriesMax, key, value } : undefined;
    }
    case 'knownEnum':
      if (field.fieldKind === 'enum') return enumRule(field.enum, false);
      if (field.fieldKind === 'list' && field.listKind === 'enum') return enumRule(field.enum, true);
      problems.add(where, 'a known_enum limit on a field that is not an enum');
      return undefined;
    case 'timestamp':
      if (field.fieldKind !== 'message' || field.message.typeName !== TimestampSchema.typeName) {
        problems.add(where, 'a timestamp limit on a field that is not a google.protobuf.Timestamp');
        return undefined;
      }
      return { type: 'timestamp' };
  }
}

function oneofEntry(oneof: DescOneof, problems: Problems): LimitEntry | undefined {
  if (!hasOption(oneof, oneofLimitOption)) return undefined;
  const limit = getOption(oneof, oneofLimitOption);
  if (!limit.required) {
    problems.add(`(billing.v1.oneof_limit) on ${oneof.parent.typeName}.${oneof.name}`, 'says nothing (required is false)');
    return undefined;
  }
  return {
    type: 'oneof',
    oneof,
    reportedAs: limit.reportedAs || oneof.name,
    refusal: `one of ${either(oneof.fields.map((f) => f.name))} is required`,
  };
}

/** Whether a message, or one it holds, has any limit. */
function hasLimits(message: DescMessage, seen = new Set<string>()): boolean {
  if (seen.has(message.typeName)) return false;
  seen.add(message.typeName);
  return (
    message.oneofs.some((o) => hasOption(o, oneofLimitOption)) ||
    message.fields.some((f) => hasOption(f, limitOption) || (f.message !== undefined && hasLimits(f.message, seen)))
  );
}

function messageLimits(message: DescMessage, read: Map<string, MessageLimits>, problems: Problems): MessageLimits {
  const done = read.get(message.typeName);
  if (done) return done;
  const entries: LimitEntry[] = [];
  const limits: MessageLimits = { message, entries };
  // Registered before its fields are read, so a message that holds itself ends the walk.
  read.set(message.typeName, limits);
  for (const member of message.members) {
    if (member.kind === 'oneof') {
      const entry = oneofEntry(member, problems);
      if (entry) entries.push(entry);
      for (const field of member.fields) pushField(field, entries, read, problems);
    } else if (!member.oneof) {
      pushField(member, entries, read, problems);
    }
  }
  return limits;
}

function pushField(field: DescField, entries: LimitEntry[], read: Map<string, MessageLimits>, problems: Problems): void {
  const rule = fieldRule(field, problems);
  let nested: MessageLimits | undefined;
  if (field.message && !field.message.typeName.startsWith('google.protobuf.') && hasLimits(field.message)) {
    if (field.fieldKind === 'message') nested = messageLimits(field.message, read, problems);
    // Fail closed: a limit that would never be checked is a mistake in the contract.
    else problems.add(fieldName(field), `holds ${field.message.typeName} in a ${field.fieldKind}, whose limits are not checked`);
  }
  if (rule || nested) entries.push({ type: 'field', field, rule, nested });
}

/**
 * Reads the limits of the request of every method of `services`. Throws, naming each
 * option that is malformed, so a mistake in the contract stops the start-up.
 */
export function limitTable(services: readonly DescService[]): LimitTable {
  const problems = new Problems();
  const read = new Map<string, MessageLimits>();
  const requests = new Map<string, MessageLimits>();
  for (const service of services) {
    for (const method of service.methods) requests.set(method.input.typeName, messageLimits(method.input, read, problems));
  }
  if (problems.list.length > 0) {
    throw new Error(`refusing to start: malformed limits in proto/: ${problems.list.join('; ')}`);
  }
  return { requests };
}

/**
 * The range of an integer field as the contract states it, for code that needs the same
 * bound elsewhere (e.g. the configured default ttl must be a ttl a caller may send):
 * `integerBounds(ReserveRequestSchema.field.ttlSeconds).max`. Throws if it has none.
 */
export function integerBounds(field: DescField): { readonly min: bigint; readonly max: bigint } {
  const limit = hasOption(field, limitOption) ? getOption(field, limitOption) : undefined;
  if (limit?.kind.case !== 'integer') throw new Error(`${fieldName(field)} has no integer (billing.v1.limit)`);
  return { min: limit.kind.value.min, max: limit.kind.value.max };
}

/** The longest value of a string field as the contract states it; throws if it has none. */
export function lengthMax(field: DescField): number {
  const limit = hasOption(field, limitOption) ? getOption(field, limitOption) : undefined;
  if (limit?.kind.case !== 'string' || limit.kind.value.lengthMax === 0) throw new Error(`${fieldName(field)} has no string length_max (billing.v1.limit)`);
  return limit.kind.value.lengthMax;
}

/** Every checked path of a request, in the order it is checked: "user_id", "usage", "token_usage.model". */
export function limitedPaths(limits: MessageLimits, prefix = ''): string[] {
  return limits.entries.flatMap((entry) => {
    if (entry.type === 'oneof') return [`${prefix}${entry.reportedAs}`];
    const path = `${prefix}${entry.field.name}`;
    return [...(entry.rule ? [path] : []), ...(entry.nested ? limitedPaths(entry.nested, `${path}.`) : [])];
  });
}

// ---- checking a request ----

/** Checks one string against its rule; throws invalidField naming `path`. */
export function checkString(rule: StringRule, value: string, path: string): void {
  if (value === '' && !rule.required) return;
  switch (rule.kind) {
    case 'text':
      if (value === '') throw invalidField(path, 'is required');
      if (value.length > rule.lengthMax) throw invalidField(path, `must be at most ${rule.lengthMax} characters`);
      if (CONTROL_CHARS.test(value)) throw invalidField(path, 'must not contain control characters');
      // A lone surrogate cannot be stored as UTF-8: it would come back as U+FFFD, another string.
      if (!value.isWellFormed()) throw invalidField(path, 'must be valid Unicode (no lone surrogates)');
      return;
    case 'user_id':
      if (value === '') throw invalidField(path, 'is required');
      if (value.length > rule.lengthMax) throw invalidField(path, `must be at most ${rule.lengthMax} characters`);
      if (!USER_ID_CHARS.test(value)) throw invalidField(path, 'may contain only A-Z a-z 0-9 . _ : @ -');
      return;
    case 'name':
      if (value === '') throw invalidField(path, 'is required');
      if (value.length > rule.lengthMax || !NAME_CHARS.test(value)) {
        throw invalidField(path, `must be 1-${rule.lengthMax} characters of a-z 0-9 . _ -`);
      }
      return;
    case 'promo_code':
      if (value === '') throw invalidField(path, 'is required');
      if (value.length > rule.lengthMax || !PROMO_CODE_CHARS.test(value)) {
        throw invalidField(path, `must be 1-${rule.lengthMax} characters of A-Z a-z 0-9 _ -`);
      }
      return;
    case 'id':
      if (!isId(value)) {
        throw invalidField(path, `must be the id of a ${rule.idOf} (a decimal from 1 to ${ID_MAX})`);
      }
      return;
    case 'date': {
      const parsed = DATE_PATTERN.test(value) ? new Date(`${value}T00:00:00Z`) : undefined;
      if (!parsed || Number.isNaN(parsed.getTime()) || parsed.toISOString().slice(0, 10) !== value) {
        const empty = rule.emptyMeans ? `, or empty for ${rule.emptyMeans}` : '';
        throw invalidField(path, `must be a calendar date "YYYY-MM-DD" (UTC)${empty}`);
      }
      return;
    }
  }
}

function checkInteger(rule: Extract<FieldRule, { type: 'integer' }>, value: bigint, path: string): void {
  if (value === 0n && rule.zeroMeans !== '') return;
  if (value >= rule.min && value <= rule.max) return;
  if (rule.boundsApart) throw invalidField(path, value < rule.min ? `must be at least ${rule.min}` : `must be at most ${rule.max}`);
  const zero = rule.min === 0n && rule.zeroMeans !== '' ? ` (${rule.zeroMeans})` : '';
  throw invalidField(path, `must be between ${rule.min}${zero} and ${rule.max}`);
}

function checkMap(rule: Extract<FieldRule, { type: 'map' }>, map: ReflectMap, path: string): void {
  if (map.size > rule.entriesMax) throw invalidField(path, `must have at most ${rule.entriesMax} entries`);
  const entries = [...map].map(([key, value]) => [String(key), String(value)] as const);
  for (const [key, value] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    checkString(rule.key, key, `${path}.key`);
    checkString(rule.value, value, `${path}[${key}]`);
  }
}

function checkTimestamp(value: ReflectMessage, path: string): void {
  const ts = value.message as Timestamp;
  if (ts.seconds < TIMESTAMP_SECONDS_MIN || ts.seconds > TIMESTAMP_SECONDS_MAX || ts.nanos < 0 || ts.nanos > 999_999_999) {
    throw invalidField(path, 'is not a valid timestamp');
  }
}

function checkRule(rule: FieldRule, message: ReflectMessage, field: DescField, path: string): void {
  switch (rule.type) {
    case 'string':
      return checkString(rule, message.get(field) as string, path);
    case 'integer':
      return checkInteger(rule, BigInt(message.get(field) as bigint | number | string), path);
    case 'map':
      return checkMap(rule, message.get(field) as ReflectMap, path);
    case 'known_enum':
      if (!rule.repeated) {
        if (!rule.known.has(message.get(field) as number)) throw invalidField(path, rule.refusal);
        return;
      }
      for (const item of message.get(field) as ReflectList<number>) {
        if (!rule.known.has(item)) throw invalidField(path, `unknown ${rule.words} ${item}`);
      }
      return;
    case 'timestamp':
      if (message.isSet(field)) checkTimestamp(message.get(field) as ReflectMessage, path);
      return;
  }
}

function checkMessage(limits: MessageLimits, message: ReflectMessage, prefix: string): void {
  for (const entry of limits.entries) {
    if (entry.type === 'oneof') {
      if (message.oneofCase(entry.oneof) === undefined) throw invalidField(`${prefix}${entry.reportedAs}`, entry.refusal);
      continue;
    }
    const { field } = entry;
    if (field.oneof && message.oneofCase(field.oneof) !== field) continue;
    const path = `${prefix}${field.name}`;
    if (entry.rule) checkRule(entry.rule, message, field, path);
    if (entry.nested && message.isSet(field)) checkMessage(entry.nested, message.get(field) as ReflectMessage, `${path}.`);
  }
}

/**
 * Checks a request against the limits of its type, in the order its fields are declared;
 * throws the BillingError of the first field that breaks one. A type outside the table
 * (health, reflection) has no limits.
 */
export function checkRequest(table: LimitTable, schema: DescMessage, message: unknown): void {
  const limits = table.requests.get(schema.typeName);
  if (limits) checkMessage(limits, reflect(schema, message as never), '');
}

/**
 * Refuses a request that breaks a limit before its handler runs. Unary calls only: the
 * services have no streams. A request the handler already refused while decoding it
 * (src/rpc/handler.ts) is left to that refusal: its message is empty, not the caller's.
 */
export function limitsInterceptor(table: LimitTable): Interceptor {
  return (next) => async (req) => {
    if (!req.stream && !refusedWhileDecoding(req)) checkRequest(table, req.method.input, req.message);
    return next(req);
  };
}
