// Limits on every input, checked before anything is read or written. Each failure names
// the field in the request's snake_case form.
import { AMOUNT_MILLICREDITS_MAX, AMOUNT_MILLICREDITS_MIN } from './money.js';
import { invalidField } from './errors.js';

export const USER_ID_LENGTH_MAX = 128;
export const IDEMPOTENCY_KEY_LENGTH_MAX = 255;
export const REFERENCE_LENGTH_MAX = 255;
export const REASON_LENGTH_MAX = 255;
export const METADATA_ENTRIES_MAX = 16;
export const METADATA_KEY_LENGTH_MAX = 64;
export const METADATA_VALUE_LENGTH_MAX = 512;
export const PAGE_SIZE_DEFAULT = 50;
export const PAGE_SIZE_MAX = 100;
export const TOKENS_MAX = 1_000_000_000n;
export const QUANTITY_MAX = 10_000n;

const USER_ID_PATTERN = /^[A-Za-z0-9._:@-]{1,128}$/;
const NAME_PATTERN = /^[a-z0-9._-]{1,64}$/;
// Printable text without control characters; idempotency keys and references are opaque.
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

export function checkUserId(value: string, field = 'user_id'): string {
  if (value.length === 0) throw invalidField(field, 'is required');
  if (value.length > USER_ID_LENGTH_MAX) throw invalidField(field, `must be at most ${USER_ID_LENGTH_MAX} characters`);
  if (!USER_ID_PATTERN.test(value)) throw invalidField(field, 'may contain only A-Z a-z 0-9 . _ : @ -');
  return value;
}

export function checkIdempotencyKey(value: string, field = 'idempotency_key'): string {
  return checkText(value, field, IDEMPOTENCY_KEY_LENGTH_MAX, true);
}

/** A product, operation, entitlement or SKU name: 1–64 chars of [a-z0-9._-]. */
export function checkName(value: string, field: string): string {
  if (value.length === 0) throw invalidField(field, 'is required');
  if (!NAME_PATTERN.test(value)) throw invalidField(field, 'must be 1-64 characters of a-z 0-9 . _ -');
  return value;
}

/** Free text without control characters; `required` refuses the empty string. */
export function checkText(value: string, field: string, lengthMax: number, required: boolean): string {
  if (required && value.length === 0) throw invalidField(field, 'is required');
  if (value.length > lengthMax) throw invalidField(field, `must be at most ${lengthMax} characters`);
  if (CONTROL_CHARS.test(value)) throw invalidField(field, 'must not contain control characters');
  // A lone surrogate cannot be stored as UTF-8: it would come back as U+FFFD, another string.
  if (!value.isWellFormed()) throw invalidField(field, 'must be valid Unicode (no lone surrogates)');
  return value;
}

/** An amount that moves money: 1 to 10^12 milli-credits. */
export function checkAmount(value: bigint, field = 'amount_millicredits'): bigint {
  if (value < AMOUNT_MILLICREDITS_MIN) throw invalidField(field, 'must be at least 1');
  if (value > AMOUNT_MILLICREDITS_MAX) throw invalidField(field, `must be at most ${AMOUNT_MILLICREDITS_MAX}`);
  return value;
}

export function checkMetadata(value: Readonly<Record<string, string>>, field = 'metadata'): Record<string, string> {
  const entries = Object.entries(value);
  if (entries.length > METADATA_ENTRIES_MAX) throw invalidField(field, `must have at most ${METADATA_ENTRIES_MAX} entries`);
  const out: Record<string, string> = {};
  for (const [key, entry] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    checkText(key, `${field}.key`, METADATA_KEY_LENGTH_MAX, true);
    checkText(entry, `${field}[${key}]`, METADATA_VALUE_LENGTH_MAX, false);
    out[key] = entry;
  }
  return out;
}

/** 0 means the default; otherwise 1..PAGE_SIZE_MAX. */
export function checkPageSize(value: number, field = 'page_size'): number {
  if (value === 0) return PAGE_SIZE_DEFAULT;
  if (!Number.isInteger(value) || value < 1 || value > PAGE_SIZE_MAX) {
    throw invalidField(field, `must be between 1 and ${PAGE_SIZE_MAX}`);
  }
  return value;
}

/** 0 means 1; otherwise 1..QUANTITY_MAX. */
export function checkQuantity(value: bigint, field: string): bigint {
  if (value === 0n) return 1n;
  if (value < 1n || value > QUANTITY_MAX) throw invalidField(field, `must be between 1 and ${QUANTITY_MAX}`);
  return value;
}

/** The largest value of a PostgreSQL bigint (and of protobuf int64): 2^63 - 1. */
export const ID_MAX = 9_223_372_036_854_775_807n;
const ID_PATTERN = /^[1-9]\d{0,18}$/;

/** True for the decimal form of a row id: 1 to 2^63 - 1, no sign, no leading zeros. */
export function isId(value: string): boolean {
  return ID_PATTERN.test(value) && BigInt(value) <= ID_MAX;
}

/** A row id sent by a caller (a transaction or reservation id); `what` names the kind in the message. */
export function checkId(value: string, field: string, what: string): string {
  if (!isId(value)) throw invalidField(field, `must be the id of a ${what} (a decimal from 1 to ${ID_MAX})`);
  return value;
}

export function checkTokens(value: bigint, field: string): bigint {
  if (value < 0n || value > TOKENS_MAX) throw invalidField(field, `must be between 0 and ${TOKENS_MAX}`);
  return value;
}
