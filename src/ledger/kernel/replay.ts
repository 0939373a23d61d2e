// What an idempotency key replays. A retried request gets the result of its first run,
// read back from idempotency_keys.result. That record is an explicit, versioned type: each
// kind of result has a schema here or in its rule's folder, checked when the record is
// read back, so a view field renamed in code cannot silently change what an old key
// replays — the schema's output must equal the view's type (a compile-time check beside
// each schema), and a record that does not match its schema is an internal error, never a
// half-filled reply.
//
// Versions:
// - v1 (2026-12-02): `{"v":1,"kind":<kind>, ...fields}`, bigints as {"$bigint":"<decimal>"}.
// - unversioned: records written before v1 have no "v" and no "kind" and the same fields
//   and bigint form; they decode with the v1 schema of the kind the operation expects.
import { z } from 'zod';
import { PLANS } from '../../domain/catalogue.js';
import { TRANSACTION_TYPES } from './names.js';
import type { BalanceView, PriceBreakdown, TransactionView } from './views.js';

const REPLAY_VERSION = 1;

/** JSON.stringify replacer that keeps bigints exact: {"$bigint":"123"}. */
export function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? { $bigint: value.toString() } : value;
}

const INTEGER = /^-?\d{1,20}$/;

/** A bigint as stored: {"$bigint":"<decimal>"}. */
export const storedBigint = z.object({ $bigint: z.string().regex(INTEGER) }).transform((v) => BigInt(v.$bigint));

const storedMs = z.number().int().nonnegative();

export const balanceRecord = z.object({
  userId: z.string(),
  balanceMillicredits: storedBigint,
  reservedMillicredits: storedBigint,
  availableMillicredits: storedBigint,
  lowBalance: z.boolean(),
  canStart: z.boolean(),
  plan: z.enum(PLANS),
  entitlements: z.array(z.string()),
  freeOperationsRemaining: storedBigint,
});

/** A PriceBreakdown as stored, in a replay record and in transactions.price. */
export const priceRecord = z.object({
  costMillicredits: storedBigint,
  effectiveTokens: storedBigint,
  modelMultiplier: z.string(),
  tokensPerUnit: storedBigint,
  outputWeight: storedBigint,
  unroundedCostMillicredits: z.string(),
  minimumApplied: z.boolean(),
  unitPriceMillicredits: storedBigint,
  quantity: storedBigint,
});
const priceMatchesView: Same<z.output<typeof priceRecord>, PriceBreakdown> = true;
void priceMatchesView;

export const transactionRecord = z.object({
  id: z.string(),
  userId: z.string(),
  type: z.enum(TRANSACTION_TYPES),
  amountMillicredits: storedBigint,
  balanceAfterMillicredits: storedBigint,
  product: z.string(),
  operation: z.string(),
  reference: z.string(),
  reason: z.string(),
  idempotencyKey: z.string(),
  metadata: z.record(z.string(), z.string()),
  waivedReason: z.string().optional(),
  refundedTransactionId: z.string().optional(),
  reservationId: z.string().optional(),
  // Absent in records written before charges stored their price.
  price: priceRecord.optional(),
  createdAtMs: storedMs,
});

/**
 * True only when A and B are the same type, optional fields included (mutual
 * assignability would let an optional field be renamed); used as `const _: Same<…> = true`.
 */
export type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const balanceMatchesView: Same<z.output<typeof balanceRecord>, BalanceView> = true;
const transactionMatchesView: Same<z.output<typeof transactionRecord>, TransactionView> = true;
void balanceMatchesView;
void transactionMatchesView;

/** One kind of replayable result: its name in the record and the schema of its fields. */
export interface ReplayKind<R> {
  readonly kind: string;
  readonly schema: z.ZodType<R>;
}

export function replayKind<R>(kind: string, schema: z.ZodType<R>): ReplayKind<R> {
  return { kind, schema };
}

/** The JSON stored under a key for a result. */
export function encodeReplay<R>(kind: ReplayKind<R>, result: R): string {
  return JSON.stringify({ v: REPLAY_VERSION, kind: kind.kind, ...(result as object) }, bigintReplacer);
}

/** The result a stored record replays; throws (an internal error) if the record is not one of `kind`. */
export function decodeReplay<R>(kind: ReplayKind<R>, stored: unknown): R {
  const record = (stored ?? {}) as { v?: unknown; kind?: unknown };
  const versioned = record.v !== undefined;
  if (versioned && (record.v !== REPLAY_VERSION || record.kind !== kind.kind)) {
    throw new Error(`idempotency record of version ${String(record.v)}, kind ${String(record.kind)} where a ${kind.kind} was expected`);
  }
  const parsed = kind.schema.safeParse(stored);
  if (!parsed.success) throw new Error(`idempotency record is not a valid ${kind.kind}: ${parsed.error.message}`);
  return markReplayed(parsed.data);
}

/**
 * Results that are replays of an earlier call, not new work: every decoded record, and
 * whatever a rule marks (an identical CreatePromoCode). Weak, so it holds nothing alive; the
 * handler asks (wasReplayed) and tells the access log, and a rule does not audit a replay.
 */
const REPLAYED = new WeakSet<object>();

/** Marks a result as the replay of an earlier call; returns it. */
export function markReplayed<R>(result: R): R {
  if (typeof result === 'object' && result !== null) REPLAYED.add(result);
  return result;
}

/** True when the result was replayed (decodeReplay or markReplayed), not newly made. */
export function wasReplayed(result: unknown): boolean {
  return typeof result === 'object' && result !== null && REPLAYED.has(result);
}
