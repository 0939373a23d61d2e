// What one call came back with: the reply, or the error's code and typed reason.
import { Code, ConnectError } from '@connectrpc/connect';
import { type ErrorDetail, ErrorDetailSchema, ErrorReason } from '../../gen/billing/v1/errors_pb.js';

export type Outcome<R> =
  | { readonly ok: true; readonly reply: R }
  | { readonly ok: false; readonly code: Code; readonly reason: ErrorReason; readonly message: string; readonly detail?: ErrorDetail };

export async function settle<R>(call: Promise<R>): Promise<Outcome<R>> {
  try {
    return { ok: true, reply: await call };
  } catch (error) {
    const e = ConnectError.from(error);
    const detail = e.findDetails(ErrorDetailSchema)[0];
    return {
      ok: false,
      code: e.code,
      reason: detail?.reason ?? ErrorReason.UNSPECIFIED,
      message: e.rawMessage,
      ...(detail ? { detail } : {}),
    };
  }
}

/** The code every reason must travel with (the server's error table, restated). */
export const CODE_OF: Partial<Record<ErrorReason, Code>> = {
  [ErrorReason.INSUFFICIENT_BALANCE]: Code.FailedPrecondition,
  [ErrorReason.IDEMPOTENCY_KEY_REUSED]: Code.AlreadyExists,
  [ErrorReason.PROMO_CODE_ALREADY_REDEEMED]: Code.AlreadyExists,
  [ErrorReason.PROMO_CODE_EXHAUSTED]: Code.ResourceExhausted,
  [ErrorReason.RESERVATION_EXPIRED]: Code.FailedPrecondition,
  [ErrorReason.RESERVATION_CAPTURED]: Code.FailedPrecondition,
  [ErrorReason.RESERVATION_RELEASED]: Code.FailedPrecondition,
  [ErrorReason.REFUND_EXCEEDS_CHARGE]: Code.FailedPrecondition,
};

export function describeOutcome(outcome: Outcome<unknown>): string {
  if (outcome.ok) return 'ok';
  return `${Code[outcome.code]}/${ErrorReason[outcome.reason]} "${outcome.message}"`;
}
