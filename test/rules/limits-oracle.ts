// The hand-written input checks as they stood before the limits moved into the contract
// (issue 10): src/domain/validation.ts, checkUsage, checkPromoCode, the format part of
// checkTopUpDate and the refusals of planFromProto, typesFromProto and
// timestampMsFromProto, copied from commit c829d9f. The service no longer runs them; they
// are the oracle of test/server/limits.test.ts, which shows that the limits read from the
// contract accept exactly what these accepted and refuse it with the same field and words.
import { Plan as ProtoPlan, TransactionType as ProtoTransactionType } from '../../gen/billing/v1/types_pb.js';
import type { Timestamp } from '@bufbuild/protobuf/wkt';
import { invalidField } from '../../src/domain/errors.js';
import type { Usage } from '../../src/ledger/charge/pricing.js';

export const AMOUNT_MILLICREDITS_MIN = 1n;
export const AMOUNT_MILLICREDITS_MAX = 1_000_000_000_000n;
export const HOLD_TTL_SECONDS_MAX = 86_400;
export const PROMO_MAX_REDEMPTIONS_MAX = 1_000_000_000n;

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

// ---- src/ledger/usage.ts ----
/** Validates a usage oneof; `undefined` means the caller set none. */
export function checkUsage(usage: Usage | undefined, prefix = ''): Usage {
  if (!usage) throw invalidField(`${prefix}usage`, 'one of amount_millicredits, token_usage or operation is required');
  switch (usage.kind) {
    case 'amount':
      return { ...usage, amountMillicredits: checkAmount(usage.amountMillicredits, `${prefix}amount_millicredits`) };
    case 'tokens':
      if (usage.model.length === 0) throw invalidField(`${prefix}token_usage.model`, 'is required');
      checkText(usage.model, `${prefix}token_usage.model`, 64, true);
      return {
        ...usage,
        tokensIn: checkTokens(usage.tokensIn, `${prefix}token_usage.tokens_in`),
        tokensOut: checkTokens(usage.tokensOut, `${prefix}token_usage.tokens_out`),
      };
    case 'operation':
      checkName(usage.name, `${prefix}operation.name`);
      return { ...usage, quantity: checkQuantity(usage.quantity, `${prefix}operation.quantity`) };
  }
}

// ---- src/ledger/promo.ts ----
const CODE_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** A code as callers may write it: 1–64 chars of [A-Za-z0-9_-], normalised upper-case. */
export function checkPromoCode(value: string, field = 'code'): string {
  if (value.length === 0) throw invalidField(field, 'is required');
  if (!CODE_PATTERN.test(value)) throw invalidField(field, 'must be 1-64 characters of A-Z a-z 0-9 _ -');
  return value.toUpperCase();
}

// ---- src/ledger/top-up.ts (the format part: a calendar date, or empty for today) ----
const DATE_PATTERN = /^\d{4}-\d{2}-\d{2}$/;
export function checkTopUpDateFormat(date: string, field = 'date'): void {
  if (date === '') return;
  const parsed = DATE_PATTERN.test(date) ? new Date(`${date}T00:00:00Z`) : undefined;
  if (!parsed || Number.isNaN(parsed.getTime()) || parsed.toISOString().slice(0, 10) !== date) {
    throw invalidField(field, 'must be a calendar date "YYYY-MM-DD" (UTC), or empty for today');
  }
}

// ---- src/rpc/convert.ts (the refusals) ----
const PLANS = [ProtoPlan.FREE, ProtoPlan.PRO, ProtoPlan.ADMIN];
const TYPES = [
  ProtoTransactionType.CHARGE,
  ProtoTransactionType.REFUND,
  ProtoTransactionType.GRANT,
  ProtoTransactionType.PROMO,
  ProtoTransactionType.DAILY_TOP_UP,
  ProtoTransactionType.DEPOSIT,
];

export function planFromProto(plan: ProtoPlan, field = 'plan'): ProtoPlan {
  if (!PLANS.includes(plan)) throw invalidField(field, 'must be PLAN_FREE, PLAN_PRO or PLAN_ADMIN');
  return plan;
}

export function typesFromProto(types: readonly ProtoTransactionType[], field = 'types'): ProtoTransactionType[] {
  return types.map((t) => {
    if (!TYPES.includes(t)) throw invalidField(field, `unknown transaction type ${t}`);
    return t;
  });
}
/** Valid google.protobuf.Timestamp seconds: 0001-01-01 to 9999-12-31 (UTC). */
const TIMESTAMP_SECONDS_MIN = -62_135_596_800n;
const TIMESTAMP_SECONDS_MAX = 253_402_300_799n;

/** An optional Timestamp as epoch milliseconds (sub-millisecond part dropped). */
export function timestampMsFromProto(ts: Timestamp | undefined, field: string): number | undefined {
  if (!ts) return undefined;
  if (ts.seconds < TIMESTAMP_SECONDS_MIN || ts.seconds > TIMESTAMP_SECONDS_MAX || ts.nanos < 0 || ts.nanos > 999_999_999) {
    throw invalidField(field, 'is not a valid timestamp');
  }
  return Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1_000_000);
}
