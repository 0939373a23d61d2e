// One table from domain reasons to Connect codes and billing.v1.ErrorReason, and the
// interceptor that applies it. Unknown errors are logged and reach the caller as a bare
// "internal error": their text may hold SQL or secrets.
import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import type { Logger } from 'pino';
import { ErrorDetailSchema, ErrorReason as ProtoReason } from '../../gen/billing/v1/errors_pb.js';
import { BillingError, type ErrorReason } from '../domain/errors.js';

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
  });
  return new ConnectError(bounded(error.message), code, undefined, [{ desc: ErrorDetailSchema, value: detail }]);
}

/** Longest error message sent, in characters: a message travels in a header (grpc-message). */
const MESSAGE_LENGTH_MAX = 1024;

/** A message that quotes a caller's value is cut short rather than sent whole. */
function bounded(message: string): string {
  return message.length <= MESSAGE_LENGTH_MAX ? message : `${message.slice(0, MESSAGE_LENGTH_MAX - 1).toWellFormed()}…`;
}

/** Translates BillingErrors; hides and logs anything unexpected. */
export function errorInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    try {
      return await next(req);
    } catch (error) {
      if (error instanceof BillingError) throw toConnectError(error);
      if (error instanceof ConnectError) throw error;
      log.error({ err: error, procedure: req.url }, 'unexpected error');
      throw new ConnectError('internal error', Code.Internal);
    }
  };
}
