// A closed set of domain reasons. The rpc layer maps each to a Connect code and the
// billing.v1.ErrorReason of the same name in one table; nothing branches on message text.

export type ErrorReason =
  | 'INVALID_FIELD'
  | 'INSUFFICIENT_BALANCE'
  | 'PLAN_REQUIRED'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'PROMO_CODE_NOT_FOUND'
  | 'PROMO_CODE_ALREADY_REDEEMED'
  | 'PROMO_CODE_EXPIRED'
  | 'PROMO_CODE_EXHAUSTED'
  | 'PROMO_CODE_DISABLED'
  | 'PROMO_CODE_EXISTS'
  | 'RESERVATION_NOT_FOUND'
  | 'RESERVATION_EXPIRED'
  | 'RESERVATION_CAPTURED'
  | 'RESERVATION_RELEASED'
  | 'UNKNOWN_MODEL'
  | 'UNKNOWN_OPERATION'
  | 'UNKNOWN_SKU'
  | 'REFUND_EXCEEDS_CHARGE'
  | 'TRANSACTION_NOT_FOUND'
  | 'NOT_A_CHARGE'
  | 'BALANCE_LIMIT_EXCEEDED'
  | 'MALFORMED_REQUEST'
  | 'REQUEST_TOO_LARGE'
  | 'WALLET_DISABLED'
  | 'WALLET_NOT_READY'
  | 'DATABASE_UNAVAILABLE'
  | 'DATABASE_CONFLICT'
  | 'OVERLOADED'
  | 'NOT_IMPLEMENTED';

/** Figures and pointers a caller needs to act on an error. */
export interface ErrorFacts {
  /** The request field at fault, snake_case path (e.g. "token_usage.model"). */
  field?: string;
  requiredMillicredits?: bigint;
  availableMillicredits?: bigint;
  /** The id of the object the error is about. */
  subject?: string;
  /** How long the caller should wait before retrying, for a retryable fault. */
  retryAfterMs?: number;
}

/** An error raised on purpose: its message is safe to show to the caller. */
export class BillingError extends Error {
  constructor(
    readonly reason: ErrorReason,
    message: string,
    readonly facts: ErrorFacts = {},
  ) {
    super(message);
    this.name = 'BillingError';
  }
}

/** Bad input: names the field. */
export function invalidField(field: string, message: string, reason: ErrorReason = 'INVALID_FIELD'): BillingError {
  return new BillingError(reason, `${field}: ${message}`, { field });
}
