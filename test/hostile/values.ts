// The hostile values, by field kind. Each value says how it is written in Connect JSON and
// in binary protobuf, and either may be absent: "1e3" has no binary form, and an int64 of
// 2^63 has no wire form (its varint is -2^63, which is listed as such). Unless a value
// says otherwise, the answer must be INVALID_ARGUMENT with ErrorDetail.field naming the
// field the value was put in.
import { Code } from '@connectrpc/connect';
import type { JsonValue } from '@bufbuild/protobuf';

/** A JSON literal written into the body as it is, for numbers JSON.stringify cannot spell (2^53 + 1). */
export class Raw {
  constructor(readonly text: string) {}
}

/**
 * Bytes that go on the wire as the payload of a length-delimited field, for what a
 * generated client will not send: invalid UTF-8 in a string, a map entry holding it.
 */
export class Wire {
  constructor(readonly bytes: Uint8Array) {}
}

export type JsonInput = JsonValue | Raw | JsonInput[] | { [key: string]: JsonInput };

export interface Hostile {
  readonly label: string;
  /** The value in Connect JSON; undefined when JSON cannot express it. */
  readonly json?: JsonInput;
  /** The value set on the generated message, or raw wire bytes; undefined when binary cannot express it. */
  readonly grpc?: unknown;
  /** The expected code; INVALID_ARGUMENT unless set. */
  readonly code?: Code;
  /** The expected ErrorDetail.field, when it is not exactly the path of the field. */
  readonly field?: string | RegExp;
}

/** Bytes of the whole request stay under the server's 256 KiB limit with this much text. */
export const NEAR_LIMIT = 256 * 1024 - 4096;
export const TEN_MB = 10 * 1024 * 1024;

const INT64_MAX = 2n ** 63n - 1n;
const INT64_MIN = -(2n ** 63n);

export function utf8(...bytes: number[]): Wire {
  return new Wire(Uint8Array.from(bytes));
}

/** Text fields: control characters, lone surrogates, invalid UTF-8, wrong JSON type, length. */
export const STRING: readonly Hostile[] = [
  { label: 'NUL inside', json: 'a\u0000b', grpc: 'a\u0000b' },
  { label: 'unit separator U+001F', json: 'a\u001fb', grpc: 'a\u001fb' },
  { label: 'lone high surrogate \\ud800', json: 'a\ud800b' },
  { label: 'lone low surrogate \\udc00', json: '\udc00' },
  // What a lone surrogate becomes in CESU-8/WTF-8 (ED A0 80): invalid UTF-8 on the wire.
  { label: 'lone surrogate as bytes ED A0 80', grpc: utf8(0x61, 0xed, 0xa0, 0x80) },
  { label: 'invalid UTF-8 byte FF', grpc: utf8(0x61, 0xff) },
  { label: `${NEAR_LIMIT} characters (just under the request limit)`, json: 'a'.repeat(NEAR_LIMIT), grpc: 'a'.repeat(NEAR_LIMIT) },
  { label: 'a JSON number', json: 12 },
  { label: 'a JSON object', json: {} },
];

/** Same text in both encodings. */
function both(label: string, value: string, extra: Partial<Hostile> = {}): Hostile {
  return { label, json: value, grpc: value, ...extra };
}

export const USER_ID: readonly Hostile[] = [
  both('empty', ''),
  both('a space', 'has space'),
  both('129 characters', 'u'.repeat(129)),
  both('non-ASCII', 'üser'),
];

export const IDEMPOTENCY_KEY: readonly Hostile[] = [both('empty', ''), both('256 characters', 'k'.repeat(256))];

export const NAME: readonly Hostile[] = [both('empty', ''), both('upper case', 'Muse'), both('65 characters', 'm'.repeat(65))];

export const TEXT_255: readonly Hostile[] = [both('256 characters', 'r'.repeat(256))];

export const PROMO_CODE: readonly Hostile[] = [
  both('empty', ''),
  both('a space', 'bad code'),
  both('65 characters', 'C'.repeat(65)),
  both('non-ASCII', 'ÜNÏ'),
];

/** Row ids (transaction_id, reservation_id): decimal 1 to 2^63 - 1, nothing else. */
export function ids(options: { emptyMeansNone: boolean }): Hostile[] {
  const values: Hostile[] = [
    both('2^63 (just above int64)', '9223372036854775808'),
    both('2^64', '18446744073709551616'),
    both('20 nines', '99999999999999999999'),
    both('zero', '0'),
    both('negative', '-1'),
    both('leading zeros', '007'),
    both('"1e3"', '1e3'),
    both('hex "0x10"', '0x10'),
    both('leading space', ' 1'),
    both('trailing space', '1 '),
    both('"1.5"', '1.5'),
    both('plus sign', '+1'),
    both('letters', 'abc'),
    // In range and well formed: the lookup itself must answer, not the database's overflow.
    both('2^63 - 1 (no such row)', '9223372036854775807', { code: Code.NotFound }),
  ];
  return options.emptyMeansNone ? values : [both('empty', ''), ...values];
}

function token(text: string): string {
  return Buffer.from(text).toString('base64url');
}

/** Page tokens of ListTransactions: base64url of "t1." and a transaction id. */
export const TRANSACTION_PAGE_TOKEN: readonly Hostile[] = [
  both('garbage', '!!!not-base64!!!'),
  both('another list\'s token (c1.ABC)', token('c1.ABC')),
  both('another version\'s prefix (t2.5)', token('t2.5')),
  both('id 2^63 (9223372036854775808)', token('t1.9223372036854775808')),
  both('id 20 nines', token('t1.99999999999999999999')),
  both('id 0', token('t1.0')),
  both('id -1', token('t1.-1')),
  both('id with leading zeros', token('t1.007')),
  both('id "1e3"', token('t1.1e3')),
  both('id " 1"', token('t1. 1')),
  both('empty id', token('t1.')),
  both('valid token with junk appended', `${token('t1.5')}$$`),
  both('300 characters', 'A'.repeat(300)),
];

/** Page tokens of ListHolds: base64url of "h1." and a reservation id. */
export const HOLD_PAGE_TOKEN: readonly Hostile[] = [
  both('garbage', '!!!not-base64!!!'),
  both('a transaction page token (t1.5)', token('t1.5')),
  both('another version\'s prefix (h2.5)', token('h2.5')),
  both('id 2^63 (9223372036854775808)', token('h1.9223372036854775808')),
  both('id 0', token('h1.0')),
  both('id -1', token('h1.-1')),
  both('empty id', token('h1.')),
  both('valid token with junk appended', `${token('h1.5')}$$`),
  both('300 characters', 'A'.repeat(300)),
];

/** Page tokens of ListPromoCodes: base64url of "c1." and an upper-case code. */
export const PROMO_PAGE_TOKEN: readonly Hostile[] = [
  both('garbage', '!!!not-base64!!!'),
  both('another list\'s token (t1.5)', token('t1.5')),
  both('lower-case code', token('c1.abc')),
  both('empty code', token('c1.')),
  both('code with a space', token('c1.A B')),
  both('code with NUL', token('c1.A\u0000')),
  both('65-character code', token(`c1.${'A'.repeat(65)}`)),
  both('300 characters', 'A'.repeat(300)),
];

/** RunDailyTopUp.date: "YYYY-MM-DD" (UTC), not in the future, not too old; empty means today. */
export function dates(now: Date): Hostile[] {
  const tomorrow = new Date(now.getTime() + 86_400_000).toISOString().slice(0, 10);
  return [
    both('February 30', '2024-02-30'),
    both('no zero padding', '2024-1-1'),
    both('tomorrow (UTC)', tomorrow),
    both('9999-12-31', '9999-12-31'),
    both('1999-01-01 (too old)', '1999-01-01'),
    both('a timestamp', '2024-01-01T00:00:00Z'),
    both('leading space', ' 2024-01-01'),
    both('words', 'yesterday'),
  ];
}

/** int64 in JSON: canonical decimal strings in range, or safe-integer numbers; nothing else. */
export const INT64_JSON: readonly Hostile[] = [
  { label: '2^63 - 1 as a number', json: new Raw('9223372036854775807') },
  { label: '"2^63 - 1" (in range, over the field\'s limit)', json: '9223372036854775807' },
  { label: '2^63 as a number', json: new Raw('9223372036854775808') },
  { label: '"2^63"', json: '9223372036854775808' },
  { label: '-2^63 - 1 as a number', json: new Raw('-9223372036854775809') },
  { label: '"-2^63 - 1"', json: '-9223372036854775809' },
  { label: '"-2^63" (in range, negative)', json: '-9223372036854775808' },
  { label: '2^53 + 1 as a number', json: new Raw('9007199254740993') },
  { label: '"2^53 + 1" (in range, over the field\'s limit)', json: '9007199254740993' },
  { label: '"1e3"', json: '1e3' },
  { label: '"1.5"', json: '1.5' },
  { label: '1.5 as a number', json: new Raw('1.5') },
  { label: 'hex "0x10"', json: '0x10' },
  { label: 'empty string', json: '' },
  { label: 'leading space " 1"', json: ' 1' },
  { label: 'trailing space "1 "', json: '1 ' },
  { label: 'plus sign "+1"', json: '+1' },
  { label: 'leading zero "01"', json: '01' },
  { label: '"abc"', json: 'abc' },
  { label: '"NaN"', json: 'NaN' },
  { label: '"Infinity"', json: 'Infinity' },
  { label: 'true', json: true },
  { label: 'an object', json: {} },
];

/** int64 in binary: every value is a valid int64, and none is in range of any field here. */
export const INT64_GRPC: readonly Hostile[] = [
  { label: '2^63 - 1', grpc: INT64_MAX },
  { label: '-2^63 (the wire form of 2^63)', grpc: INT64_MIN },
  { label: '-1', grpc: -1n },
  { label: '2^53 + 1', grpc: 2n ** 53n + 1n },
];

export const INT32_JSON: readonly Hostile[] = [
  { label: '2^31 as a number', json: new Raw('2147483648') },
  { label: '"2^31"', json: '2147483648' },
  { label: '-2^31 - 1 as a number', json: new Raw('-2147483649') },
  { label: '2^31 - 1 (in range, over the field\'s limit)', json: new Raw('2147483647') },
  { label: '"-2^31" (in range, negative)', json: '-2147483648' },
  { label: '1.5 as a number', json: new Raw('1.5') },
  { label: '"1.5"', json: '1.5' },
  { label: '"1e3"', json: '1e3' },
  { label: 'hex "0x10"', json: '0x10' },
  { label: 'empty string', json: '' },
  { label: 'leading space " 1"', json: ' 1' },
  { label: 'leading zero "01"', json: '01' },
  { label: '"abc"', json: 'abc' },
  { label: 'true', json: true },
];

export const INT32_GRPC: readonly Hostile[] = [
  { label: '2^31 - 1', grpc: 2147483647 },
  { label: '-2^31', grpc: -2147483648 },
  { label: '-1', grpc: -1 },
];

export const BOOL_JSON: readonly Hostile[] = [
  { label: '"true"', json: 'true' },
  { label: '1', json: 1 },
  { label: '"yes"', json: 'yes' },
  { label: 'an object', json: {} },
];

export const PLAN: readonly Hostile[] = [
  { label: 'unknown number 99', json: 99, grpc: 99 },
  { label: 'negative number -1', json: -1, grpc: -1 },
  { label: 'PLAN_UNSPECIFIED (0)', json: 0, grpc: 0 },
  { label: '2^31 - 1', json: 2147483647, grpc: 2147483647 },
  { label: '"PLAN_UNSPECIFIED"', json: 'PLAN_UNSPECIFIED' },
  { label: 'unknown name', json: 'PLAN_GOLD' },
  { label: 'lower-case name', json: 'plan_pro' },
  { label: 'number as a string "2"', json: '2' },
  { label: '2^31 as a number', json: new Raw('2147483648') },
  { label: '1.5', json: new Raw('1.5') },
  { label: 'true', json: true },
  { label: 'null (the default, UNSPECIFIED)', json: null },
];

const TYPES_FIELD = /^types(\[\d+\])?$/;

export const TRANSACTION_TYPES: readonly Hostile[] = ([
  { label: 'unknown number [99]', json: [99], grpc: [99] },
  { label: 'negative [-1]', json: [-1], grpc: [-1] },
  { label: 'UNSPECIFIED [0]', json: [0], grpc: [0] },
  { label: 'a known and an unknown [1, 99]', json: [1, 99], grpc: [1, 99] },
  { label: '["TRANSACTION_TYPE_UNSPECIFIED"]', json: ['TRANSACTION_TYPE_UNSPECIFIED'] },
  { label: 'unknown name', json: ['TRANSACTION_TYPE_BRIBE'] },
  { label: 'not an array', json: 'TRANSACTION_TYPE_CHARGE' },
  { label: '[null]', json: [null] },
  { label: '[1.5]', json: [new Raw('1.5')] },
  { label: 'an object', json: {} },
] as Hostile[]).map((h) => ({ ...h, field: TYPES_FIELD }));

const DAY_MS = 86_400_000;

/** google.protobuf.Timestamp in JSON (an RFC 3339 string) and binary (seconds, nanos). */
export function timestamps(now: Date): Hostile[] {
  const future = BigInt(Math.floor((now.getTime() + DAY_MS) / 1000));
  return [
    { label: 'not a date', json: 'not-a-date' },
    { label: 'empty string', json: '' },
    { label: 'in the past', json: '2020-01-01T00:00:00Z', grpc: { seconds: 1_577_836_800n, nanos: 0 } },
    { label: 'year 10000', json: '10000-01-01T00:00:00Z' },
    { label: 'month 13', json: '2030-13-01T00:00:00Z' },
    { label: 'a number', json: 1_900_000_000 },
    { label: 'the binary shape as an object', json: { seconds: '1900000000' } },
    { label: 'seconds 2^63 - 1', grpc: { seconds: INT64_MAX, nanos: 0 } },
    { label: 'seconds -2^63', grpc: { seconds: INT64_MIN, nanos: 0 } },
    { label: 'nanos -1', grpc: { seconds: future, nanos: -1 } },
    { label: 'nanos 10^9', grpc: { seconds: future, nanos: 1_000_000_000 } },
  ];
}

const METADATA_FIELD = /^metadata(\.key|\[.*\])?$/s;

function entries(count: number): Record<string, string> {
  return Object.fromEntries(Array.from({ length: count }, (_, i) => [`k${i}`, 'v']));
}

/** A map<string, string> entry message (key = 1, value = 2) whose value is raw bytes. */
function mapEntry(key: string, value: Uint8Array): Wire {
  const k = Buffer.from(key);
  return new Wire(Uint8Array.from([0x0a, k.length, ...k, 0x12, value.length, ...value]));
}

export const METADATA: readonly Hostile[] = ([
  { label: '10,000 entries', json: entries(10_000), grpc: entries(10_000), field: 'metadata' },
  { label: '17 entries (one over the limit)', json: entries(17), grpc: entries(17), field: 'metadata' },
  { label: 'key with NUL', json: { 'a\u0000': 'v' }, grpc: { 'a\u0000': 'v' } },
  { label: 'empty key', json: { '': 'v' }, grpc: { '': 'v' } },
  { label: '65-character key', json: { ['k'.repeat(65)]: 'v' }, grpc: { ['k'.repeat(65)]: 'v' } },
  { label: '513-character value', json: { k: 'v'.repeat(513) }, grpc: { k: 'v'.repeat(513) } },
  { label: 'value with NUL', json: { k: 'a\u0000' }, grpc: { k: 'a\u0000' } },
  { label: 'value a lone surrogate', json: { k: '\ud800' } },
  { label: 'key a lone surrogate', json: { '\udc00': 'v' } },
  { label: 'value invalid UTF-8 (ED A0 80)', grpc: mapEntry('k', Uint8Array.from([0xed, 0xa0, 0x80])) },
  { label: 'value a number', json: { k: 1 } },
  { label: 'value null', json: { k: null } },
  { label: 'an array', json: [] },
  { label: 'a string', json: 'k=v' },
] as Hostile[]).map((h) => ({ field: METADATA_FIELD, ...h }));

/** A nested message (token_usage, operation) written as something else. */
export const MESSAGE_JSON: readonly Hostile[] = [
  { label: 'a string', json: 'x' },
  { label: 'an array', json: [] },
  { label: 'a number', json: 12 },
];

/** Bodies that are not a JSON object at all: no field can be named. */
export const MALFORMED_BODIES: readonly { label: string; body: string | Buffer }[] = [
  { label: 'truncated object "{"', body: '{' },
  { label: 'not JSON at all', body: 'not json' },
  { label: 'trailing comma', body: '{"a":1,}' },
  { label: 'a JSON array', body: '[]' },
  { label: 'JSON null', body: 'null' },
  { label: 'a JSON string', body: '"text"' },
  { label: 'a JSON number', body: '42' },
  { label: 'invalid UTF-8 bytes', body: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) },
];
