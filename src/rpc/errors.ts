// One table from domain reasons to Connect codes and billing.v1.ErrorReason, and the
// interceptor that applies it. A database fault (the database unreachable, restarting,
// read-only, out of connections, or a deadlock) becomes UNAVAILABLE or ABORTED with a typed
// reason, so clients retry it; any other unknown error is logged and reaches the caller as
// a bare "internal error": its text may hold SQL or secrets.
import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import type { Logger } from 'pino';
import { ErrorDetailSchema, ErrorReason as ProtoReason } from '../../gen/billing/v1/errors_pb.js';
import { BillingError, type ErrorReason } from '../domain/errors.js';
import { requestIdOf } from './call-facts.js';

export const ERROR_TABLE: Readonly<Record<ErrorReason, readonly [Code, ProtoReason]>> = {
  INVALID_FIELD: [Code.InvalidArgument, ProtoReason.INVALID_FIELD],
  INSUFFICIENT_BALANCE: [Code.FailedPrecondition, ProtoReason.INSUFFICIENT_BALANCE],
  PLAN_REQUIRED: [Code.PermissionDenied, ProtoReason.PLAN_REQUIRED],
  IDEMPOTENCY_KEY_REUSED: [Code.AlreadyExists, ProtoReason.IDEMPOTENCY_KEY_REUSED],
  PROMO_CODE_NOT_FOUND: [Code.NotFound, ProtoReason.PROMO_CODE_NOT_FOUND],
  PROMO_CODE_ALREADY_REDEEMED: [Code.AlreadyExists, ProtoReason.PROMO_CODE_ALREADY_REDEEMED],
  PROMO_CODE_EXPIRED: [Code.FailedPrecondition, ProtoReason.PROMO_CODE_EXPIRED],
  PROMO_CODE_EXHAUSTED: [Code.ResourceExhausted, ProtoReason.PROMO_CODE_EXHAUSTED],
  PROMO_CODE_DISABLED: [Code.FailedPrecondition, ProtoReason.PROMO_CODE_DISABLED],
  PROMO_CODE_EXISTS: [Code.AlreadyExists, ProtoReason.PROMO_CODE_EXISTS],
  RESERVATION_NOT_FOUND: [Code.NotFound, ProtoReason.RESERVATION_NOT_FOUND],
  RESERVATION_EXPIRED: [Code.FailedPrecondition, ProtoReason.RESERVATION_EXPIRED],
  RESERVATION_CAPTURED: [Code.FailedPrecondition, ProtoReason.RESERVATION_CAPTURED],
  RESERVATION_RELEASED: [Code.FailedPrecondition, ProtoReason.RESERVATION_RELEASED],
  UNKNOWN_MODEL: [Code.InvalidArgument, ProtoReason.UNKNOWN_MODEL],
  UNKNOWN_OPERATION: [Code.InvalidArgument, ProtoReason.UNKNOWN_OPERATION],
  UNKNOWN_SKU: [Code.InvalidArgument, ProtoReason.UNKNOWN_SKU],
  REFUND_EXCEEDS_CHARGE: [Code.FailedPrecondition, ProtoReason.REFUND_EXCEEDS_CHARGE],
  TRANSACTION_NOT_FOUND: [Code.NotFound, ProtoReason.TRANSACTION_NOT_FOUND],
  NOT_A_CHARGE: [Code.FailedPrecondition, ProtoReason.NOT_A_CHARGE],
  BALANCE_LIMIT_EXCEEDED: [Code.FailedPrecondition, ProtoReason.BALANCE_LIMIT_EXCEEDED],
  MALFORMED_REQUEST: [Code.InvalidArgument, ProtoReason.MALFORMED_REQUEST],
  REQUEST_TOO_LARGE: [Code.ResourceExhausted, ProtoReason.REQUEST_TOO_LARGE],
  WALLET_DISABLED: [Code.FailedPrecondition, ProtoReason.WALLET_DISABLED],
  WALLET_NOT_READY: [Code.Unavailable, ProtoReason.WALLET_NOT_READY],
  DATABASE_UNAVAILABLE: [Code.Unavailable, ProtoReason.DATABASE_UNAVAILABLE],
  DATABASE_CONFLICT: [Code.Aborted, ProtoReason.DATABASE_CONFLICT],
  OVERLOADED: [Code.Unavailable, ProtoReason.OVERLOADED],
  NOT_IMPLEMENTED: [Code.Unimplemented, ProtoReason.UNSPECIFIED],
};

export function toConnectError(error: BillingError): ConnectError {
  const [code, reason] = ERROR_TABLE[error.reason];
  const detail = create(ErrorDetailSchema, {
    reason,
    field: error.facts.field ?? '',
    requiredMillicredits: error.facts.requiredMillicredits ?? 0n,
    availableMillicredits: error.facts.availableMillicredits ?? 0n,
    subject: error.facts.subject ?? '',
    retryAfterMs: error.facts.retryAfterMs ?? 0,
  });
  // gRPC retry policies wait exactly this long before the next attempt (gRFC A6).
  const metadata = error.facts.retryAfterMs ? { 'grpc-retry-pushback-ms': String(error.facts.retryAfterMs) } : undefined;
  return new ConnectError(bounded(error.message), code, metadata, [{ desc: ErrorDetailSchema, value: detail }]);
}

/** The retry hint sent with DATABASE_UNAVAILABLE: a restart or failover takes seconds. */
export const DATABASE_RETRY_AFTER_MS = 1000;

/**
 * SQLSTATEs that mean the database cannot do the work now, though the request is fine:
 * class 08 (connection exception) is matched by its prefix, class 53 (insufficient
 * resources: too many connections, out of memory or disk) likewise.
 */
const UNAVAILABLE_STATES = new Set([
  '57P01', // admin_shutdown: the server is shutting down (pg_ctl stop -m fast)
  '57P02', // crash_shutdown: another backend crashed, the server is restarting
  '57P03', // cannot_connect_now: the server is starting up or shutting down
  '25006', // read_only_sql_transaction: a primary demoted to standby, or a standby
  '25P03', // idle_in_transaction_session_timeout: the session was ended under us
  // query_canceled by the statement timeout cap, and lock_not_available: the database is too
  // busy to finish in time; nothing was written and a later retry may succeed. (A timeout
  // that comes from the call's own deadline is answered DEADLINE_EXCEEDED before this.)
  '57014',
  '55P03',
]);
/** Rolled back to resolve a conflict: nothing was written, and the same call may succeed at once. */
const CONFLICT_STATES = new Set(['40001', '40P01']); // serialization_failure, deadlock_detected
/** Socket errors (Node's errno codes) on the way to the database. */
const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
/**
 * What node-postgres and its pool say, without a code, when a connection drops, a pooled
 * connection does not come in time, or the pool is closed (the server is shutting down).
 * The one place that reads message text: these errors carry nothing else.
 */
const DRIVER_MESSAGES = [
  /^Connection terminated\b/,
  /^timeout exceeded when trying to connect$/,
  /^Client has encountered a connection error and is not queryable$/,
  /^Client was closed and is not queryable$/,
  /^Cannot use a pool after calling end on the pool$/,
  /^Query read timeout$/,
];

/**
 * The reason for a database fault, or undefined for anything else. Follows `cause` and an
 * AggregateError's `errors` (a connection tried on several addresses).
 */
export function databaseFault(error: unknown, depth = 0): 'DATABASE_UNAVAILABLE' | 'DATABASE_CONFLICT' | undefined {
  if (typeof error !== 'object' || error === null || depth > 4) return undefined;
  const { code, message, cause, errors } = error as { code?: unknown; message?: unknown; cause?: unknown; errors?: unknown };
  if (typeof code === 'string') {
    if (CONFLICT_STATES.has(code)) return 'DATABASE_CONFLICT';
    if (UNAVAILABLE_STATES.has(code) || /^(08|53)[0-9A-Z]{3}$/.test(code) || SOCKET_CODES.has(code)) return 'DATABASE_UNAVAILABLE';
  }
  if (typeof message === 'string' && DRIVER_MESSAGES.some((m) => m.test(message))) return 'DATABASE_UNAVAILABLE';
  for (const inner of [cause, ...(Array.isArray(errors) ? errors : [])]) {
    const reason = databaseFault(inner, depth + 1);
    if (reason) return reason;
  }
  return undefined;
}

/** The BillingError a database fault is answered with; its message names no SQL, host or URL. */
function databaseError(reason: 'DATABASE_UNAVAILABLE' | 'DATABASE_CONFLICT'): BillingError {
  return reason === 'DATABASE_CONFLICT'
    ? new BillingError(reason, 'the database rolled the call back to resolve a conflict; retry it now with the same idempotency key')
    : new BillingError(reason, 'the database is unavailable; retry with backoff and the same idempotency key', {
        retryAfterMs: DATABASE_RETRY_AFTER_MS,
      });
}

/** Longest error message sent, in characters: a message travels in a header (grpc-message). */
const MESSAGE_LENGTH_MAX = 1024;

/** A message that quotes a caller's value is cut short rather than sent whole. */
function bounded(message: string): string {
  return message.length <= MESSAGE_LENGTH_MAX ? message : `${message.slice(0, MESSAGE_LENGTH_MAX - 1).toWellFormed()}…`;
}

/** Translates BillingErrors and database faults; hides and logs anything unexpected. */
export function errorInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (error) {
      if (error instanceof BillingError) throw toConnectError(error);
      if (error instanceof ConnectError) throw error;
      const fault = databaseFault(error);
      if (fault) {
        log.warn({ err: error, procedure: req.url, requestId: requestIdOf(req.contextValues), reason: fault }, 'database fault');
        throw toConnectError(databaseError(fault));
      }
      log.error({ err: error, procedure: req.url, requestId: requestIdOf(req.contextValues) }, 'unexpected error');
      throw new ConnectError('internal error', Code.Internal);
    }
  };
}
