// The ops CLI's words and numbers: credits parsed and printed as exact decimals (no floating
// point anywhere near money), tables for people, proto JSON for scripts, and a failed call
// as its Connect code, message and ErrorDetail.
import { type DescMessage, type MessageShape, toJson } from '@bufbuild/protobuf';
import { type Timestamp, timestampDate } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError } from '@connectrpc/connect';
import Table from 'cli-table3';
import { ErrorDetailSchema, ErrorReason } from '../../../gen/billing/v1/errors_pb.js';
import { formatRatio, MILLICREDITS_PER_CREDIT, parseDecimal } from '../../domain/money.js';

/** Exit codes, documented in README ("The ops CLI"). */
export const EXIT = {
  ok: 0,
  /** The command ran and found something wrong (VerifyLedger violations). */
  findings: 1,
  /** The command line is wrong (unknown command, missing or bad argument, bad BILLING_URL); nothing was sent. */
  usage: 2,
  /** The service refused or failed the call, or could not be reached. */
  call: 3,
} as const;

/** A command line the CLI refuses before sending anything. */
export class UsageError extends Error {}

/** Credits needing more than 3 decimals or above 10^9 are refused: one milli-credit is the unit. */
const CREDIT_DIGITS_MAX = 10;

/**
 * "1.5" credits → 1500n milli-credits, exactly. Refuses negatives, exponents, more than three
 * decimals (finer than a milli-credit) and anything that is not a plain decimal.
 */
export function parseCredits(text: string, what: string): bigint {
  const decimal = parseDecimal(text.trim(), CREDIT_DIGITS_MAX);
  if (!decimal) throw new UsageError(`${what}: "${text}" is not an amount of credits (a decimal such as 5 or 1.5)`);
  if (decimal.scale > 3) throw new UsageError(`${what}: "${text}" is finer than a milli-credit (at most 3 decimals)`);
  const millicredits = decimal.units * 10n ** BigInt(3 - decimal.scale);
  if (millicredits === 0n) throw new UsageError(`${what}: must be more than 0`);
  return millicredits;
}

/** 1500n → "1.5", -250n → "-0.25": milli-credits as credits, exact. */
export function formatCredits(millicredits: bigint): string {
  const sign = millicredits < 0n ? '-' : '';
  return sign + formatRatio(millicredits < 0n ? -millicredits : millicredits, MILLICREDITS_PER_CREDIT, 3);
}

/** A positive integer option (page sizes, counts). */
export function parseCount(text: string, what: string, max: number): number {
  if (!/^\d{1,10}$/.test(text) || Number(text) < 1 || Number(text) > max) {
    throw new UsageError(`${what}: "${text}" must be a whole number from 1 to ${max}`);
  }
  return Number(text);
}

export function formatTime(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toISOString() : '';
}

/** A table with a header row, for people. */
export function table(head: readonly string[], rows: readonly (readonly string[])[]): string {
  const t = new Table({ head: [...head], style: { head: [], border: [] } });
  for (const row of rows) t.push([...row]);
  return t.toString();
}

/** Key/value rows for one record. */
export function record(rows: readonly (readonly [string, string])[]): string {
  const t = new Table({ style: { head: [], border: [] } });
  for (const [k, v] of rows) t.push({ [k]: v });
  return t.toString();
}

/**
 * A message in the proto JSON mapping (int64 as strings, enums by name, lowerCamelCase keys),
 * with default values included so a script sees every field.
 */
export function messageJson<D extends DescMessage>(schema: D, message: MessageShape<D>): Record<string, unknown> {
  return toJson(schema, message, { alwaysEmitImplicit: true }) as Record<string, unknown>;
}

/** What a failed call is reported as: the code, the message and the typed detail, if any. */
export interface CallFailure {
  readonly code: string;
  readonly message: string;
  readonly reason?: string;
  readonly field?: string;
  readonly subject?: string;
  readonly requiredMillicredits?: string;
  readonly availableMillicredits?: string;
  readonly retryAfterMs?: number;
}

export function callFailure(error: unknown): CallFailure {
  const e = ConnectError.from(error);
  const detail = e.findDetails(ErrorDetailSchema)[0];
  // The Connect code in its wire spelling ("permission_denied"), as curl users see it.
  const code = (Code[e.code] ?? 'unknown').replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase();
  return {
    code,
    message: e.rawMessage,
    ...(detail && detail.reason !== ErrorReason.UNSPECIFIED ? { reason: ErrorReason[detail.reason] } : {}),
    ...(detail?.field ? { field: detail.field } : {}),
    ...(detail?.subject ? { subject: detail.subject } : {}),
    ...(detail?.requiredMillicredits ? { requiredMillicredits: detail.requiredMillicredits.toString() } : {}),
    ...(detail?.availableMillicredits ? { availableMillicredits: detail.availableMillicredits.toString() } : {}),
    ...(detail?.retryAfterMs ? { retryAfterMs: detail.retryAfterMs } : {}),
  };
}

/** The failure for people: "billing: permission_denied: …" and one line per detail. */
export function failureText(f: CallFailure): string {
  const lines = [`billing: ${f.code}: ${f.message}`];
  if (f.reason) lines.push(`  reason: ${f.reason}`);
  if (f.field) lines.push(`  field: ${f.field}`);
  if (f.subject) lines.push(`  subject: ${f.subject}`);
  if (f.requiredMillicredits) lines.push(`  required: ${formatCredits(BigInt(f.requiredMillicredits))} credits`);
  if (f.availableMillicredits) lines.push(`  available: ${formatCredits(BigInt(f.availableMillicredits))} credits`);
  if (f.retryAfterMs) lines.push(`  retry after: ${f.retryAfterMs} ms`);
  return `${lines.join('\n')}\n`;
}
