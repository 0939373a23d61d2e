// Strict decoding of Connect JSON requests. The protobuf JSON mapping is lenient where a
// money API must not be: it drops unknown keys (a typo such as "allowPartail" silently
// turns a partial charge into a refusal), and it takes int64 strings through BigInt(),
// which also accepts "", " 1" and "0x10". This walks the parsed JSON against the request
// schema first and names the exact field at fault; only a request that passes is decoded.
//
// Accepted for 64-bit integers: a decimal string without sign padding, leading zeros,
// exponent or fraction ("-12", "0", "1000"), or a JSON number that is a safe integer
// (|n| ≤ 2^53 − 1, where a number still means what the caller wrote). "1e3" as a string
// is refused even though the proto3 JSON mapping allows it: an amount has one spelling.
import { type DescEnum, type DescField, type DescMessage, fromJson, type JsonValue, ScalarType } from '@bufbuild/protobuf';
import { BillingError, invalidField } from '../domain/errors.js';

const INTEGER_TEXT = /^-?(0|[1-9]\d*)$/;

interface IntegerRange {
  readonly name: string;
  readonly min: bigint;
  readonly max: bigint;
}

const INT32: IntegerRange = { name: 'int32', min: -(2n ** 31n), max: 2n ** 31n - 1n };
const UINT32: IntegerRange = { name: 'uint32', min: 0n, max: 2n ** 32n - 1n };
const INT64: IntegerRange = { name: 'int64', min: -(2n ** 63n), max: 2n ** 63n - 1n };
const UINT64: IntegerRange = { name: 'uint64', min: 0n, max: 2n ** 64n - 1n };

const INTEGER_RANGES: Partial<Record<ScalarType, IntegerRange>> = {
  [ScalarType.INT32]: INT32,
  [ScalarType.SINT32]: INT32,
  [ScalarType.SFIXED32]: INT32,
  [ScalarType.UINT32]: UINT32,
  [ScalarType.FIXED32]: UINT32,
  [ScalarType.INT64]: INT64,
  [ScalarType.SINT64]: INT64,
  [ScalarType.SFIXED64]: INT64,
  [ScalarType.UINT64]: UINT64,
  [ScalarType.FIXED64]: UINT64,
};

/**
 * Parses a Connect JSON request body and checks it against the request schema. Returns
 * the parsed JSON for the framework to decode; throws a BillingError naming the field
 * (INVALID_FIELD) or, for a body that is not a JSON object at all, MALFORMED_REQUEST.
 */
export function parseJsonRequest(schema: DescMessage, body: Uint8Array): JsonValue {
  let text: string;
  let json: JsonValue;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
    json = JSON.parse(text) as JsonValue;
  } catch {
    throw new BillingError('MALFORMED_REQUEST', `the request body is not valid UTF-8 JSON for ${schema.typeName}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new BillingError('MALFORMED_REQUEST', `the request body must be a JSON object (${schema.typeName})`);
  }
  const duplicate = duplicateKey(text);
  if (duplicate !== undefined) throw invalidField(keyName(duplicate), 'is set twice in one object');
  checkMessage(schema, json, '');
  try {
    fromJson(schema, json, { ignoreUnknownFields: false });
  } catch (error) {
    // Everything the walk checks is refused above; this is what it does not model.
    throw new BillingError('MALFORMED_REQUEST', `the request does not decode as ${schema.typeName}: ${(error as Error).message}`);
  }
  return json;
}

function checkMessage(schema: DescMessage, json: JsonValue, path: string): void {
  if (json === null) return;
  if (typeof json !== 'object' || Array.isArray(json)) throw invalidField(path, 'must be a JSON object');
  const oneofsSeen = new Map<string, string>();
  const keysSeen = new Map<number, string>();
  for (const [key, value] of Object.entries(json)) {
    const field = schema.fields.find((f) => f.jsonName === key || f.name === key);
    if (!field) throw invalidField(join(path, keyName(key)), `is not a field of ${schema.typeName}`);
    const fieldPath = join(path, field.name);
    // "userId" and "user_id" are one field: sent under both names, which one counts would
    // depend on key order, and a proxy reading the other would disagree with the service.
    const twin = keysSeen.get(field.number);
    if (twin !== undefined) throw invalidField(fieldPath, `is set twice, as "${twin}" and "${key}"`);
    keysSeen.set(field.number, key);
    if (field.oneof && value !== null) {
      const other = oneofsSeen.get(field.oneof.name);
      if (other) throw invalidField(join(path, field.oneof.name), `set twice, by ${other} and ${field.name}`);
      oneofsSeen.set(field.oneof.name, field.name);
    }
    checkField(field, value, fieldPath);
  }
}

function checkField(field: DescField, value: JsonValue, path: string): void {
  if (value === null) return;
  switch (field.fieldKind) {
    case 'scalar':
      return checkScalar(field.scalar, value, path);
    case 'enum':
      return checkEnum(field.enum, value, path);
    case 'message':
      return checkNested(field.message, value, path);
    case 'list': {
      if (!Array.isArray(value)) throw invalidField(path, 'must be a JSON array');
      value.forEach((item, i) => checkItem(field, item, `${path}[${i}]`));
      return;
    }
    case 'map': {
      if (typeof value !== 'object' || Array.isArray(value)) throw invalidField(path, 'must be a JSON object');
      for (const [key, item] of Object.entries(value)) {
        if (!key.isWellFormed()) throw invalidField(`${path}.key`, 'must be valid Unicode (no lone surrogates)');
        checkItem(field, item, `${path}[${key}]`);
      }
      return;
    }
  }
}

/** One element of a list or one value of a map. */
function checkItem(field: DescField & { fieldKind: 'list' | 'map' }, item: JsonValue, path: string): void {
  if (item === null) throw invalidField(path, 'must not be null');
  const kind = field.fieldKind === 'list' ? field.listKind : field.mapKind;
  if (kind === 'scalar' && field.scalar !== undefined) return checkScalar(field.scalar, item, path);
  if (kind === 'enum' && field.enum) return checkEnum(field.enum, item, path);
  if (kind === 'message' && field.message) return checkNested(field.message, item, path);
}

/** Well-known types have JSON forms of their own (a Timestamp is a string): decode them here. */
function checkNested(schema: DescMessage, value: JsonValue, path: string): void {
  if (!schema.typeName.startsWith('google.protobuf.')) return checkMessage(schema, value, path);
  try {
    fromJson(schema, value, { ignoreUnknownFields: false });
  } catch {
    throw invalidField(path, `is not a valid ${schema.typeName} in JSON`);
  }
}

function checkScalar(type: ScalarType, value: JsonValue, path: string): void {
  const range = INTEGER_RANGES[type];
  if (range) return checkInteger(range, value, path);
  switch (type) {
    case ScalarType.STRING:
      if (typeof value !== 'string') throw invalidField(path, 'must be a JSON string');
      if (!value.isWellFormed()) throw invalidField(path, 'must be valid Unicode (no lone surrogates)');
      return;
    case ScalarType.BOOL:
      if (typeof value !== 'boolean') throw invalidField(path, 'must be true or false');
      return;
    case ScalarType.BYTES:
      if (typeof value !== 'string') throw invalidField(path, 'must be a base64 string');
      return;
    default:
      if (typeof value !== 'number' && typeof value !== 'string') throw invalidField(path, 'must be a number');
  }
}

function checkInteger(range: IntegerRange, value: JsonValue, path: string): void {
  let parsed: bigint;
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw invalidField(path, `is not an integer: ${value}`);
    if (!Number.isSafeInteger(value)) {
      throw invalidField(path, 'must be sent as a decimal string: JSON numbers past 2^53 lose precision');
    }
    parsed = BigInt(value);
  } else if (typeof value === 'string') {
    if (!INTEGER_TEXT.test(value)) throw invalidField(path, `is not an integer: ${quote(value)}`);
    parsed = BigInt(value);
  } else {
    throw invalidField(path, `must be an integer (a decimal string or a number), not ${kindOf(value)}`);
  }
  if (parsed < range.min || parsed > range.max) {
    throw invalidField(path, `is out of range for ${range.name} (${range.min} to ${range.max})`);
  }
}

function checkEnum(desc: DescEnum, value: JsonValue, path: string): void {
  if (typeof value === 'string') {
    if (!desc.values.some((v) => v.name === value)) throw invalidField(path, `is not a value of ${desc.typeName}`);
    return;
  }
  // An unknown number is kept (proto3 enums are open) and refused by the operation itself.
  if (typeof value === 'number') return checkInteger(INT32, value, path);
  throw invalidField(path, `must be a name or number of ${desc.typeName}`);
}

/**
 * The first key that appears twice in one object of a valid JSON text, if any. JSON.parse
 * keeps the last one silently, so {"amountMillicredits":"1","amountMillicredits":"9"} would
 * mean whatever a reader of the other copy did not see.
 */
function duplicateKey(text: string): string | undefined {
  const objects: (Set<string> | undefined)[] = []; // undefined for an array
  let expectKey = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (c === '{') {
      objects.push(new Set());
      expectKey = true;
    } else if (c === '[') {
      objects.push(undefined);
    } else if (c === '}' || c === ']') {
      objects.pop();
    } else if (c === ',') {
      expectKey = objects[objects.length - 1] !== undefined;
    } else if (c === '"') {
      const start = i;
      for (i += 1; text[i] !== '"'; i += 1) if (text[i] === '\\') i += 1;
      const keys = objects[objects.length - 1];
      if (expectKey && keys) {
        const key = JSON.parse(text.slice(start, i + 1)) as string;
        if (keys.has(key)) return key;
        keys.add(key);
      }
      expectKey = false;
    }
  }
  return undefined;
}

/** A caller's key as it goes into ErrorDetail.field: cut short if long. */
function keyName(key: string): string {
  return key.length > 64 ? `${key.slice(0, 64).toWellFormed()}…` : key;
}

function join(path: string, name: string): string {
  return path === '' ? name : `${path}.${name}`;
}

/** A caller's string, cut short, for a message. */
function quote(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
}

function kindOf(value: JsonValue): string {
  return Array.isArray(value) ? 'an array' : value === null ? 'null' : `a ${typeof value}`;
}
