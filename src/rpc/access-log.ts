// The access log: one structured line per RPC, written when the call ends (a server stream:
// when it ends), in every protocol and for every outcome, including requests refused while
// decoding (rpc/handler.ts hands those to the interceptors) and by auth. Fields:
//
//   event "access", requestId, traceId, procedure, actor, userId, code, reason, durationMs, replay
//
// requestId is the caller's `x-request-id` when it is sane (1–128 visible ASCII characters),
// else a new UUID; it is echoed as the `x-request-id` response header, on success and on
// error alike, and handed to the handler (call-facts.ts) for the audit trail. traceId is the
// active OpenTelemetry span's when a tracing SDK runs (the API is a no-op without one), else
// the trace id of a valid W3C `traceparent`. code is the outcome's one spelling (codes.ts),
// reason the billing.v1 ErrorReason of the error's detail. Nothing of a message is logged but
// its `userId` field, and no header but those two: never a token, never a body.
//
// Level by outcome: ok and the caller's own errors at info, the ones worth a retry
// (unavailable, aborted, deadline_exceeded) at warn, the service's faults at error.
import { randomUUID } from 'node:crypto';
import { isSpanContextValid, trace } from '@opentelemetry/api';
import { Code, ConnectError, type ContextValues, type Interceptor } from '@connectrpc/connect';
import type { Level, Logger } from 'pino';
import { ErrorDetailSchema, ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { REPLAYED, REQUEST_ID } from './call-facts.js';
import { callerOf } from './caller.js';
import { codeName } from './codes.js';

export const REQUEST_ID_HEADER = 'x-request-id';
/** A caller's request id is kept if it is 1–128 visible ASCII characters (no spaces, no controls). */
const SANE_REQUEST_ID = /^[\x21-\x7e]{1,128}$/;
/** W3C Trace Context `traceparent`: version-traceid-parentid-flags; version ff is invalid, 00 has nothing after. */
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_PARENT_ID = '0'.repeat(16);
/** Longest user id logged as is: the contract allows 128; a refused request may carry more. */
const USER_ID_LOGGED_MAX = 128;

const WARN_CODES = new Set([Code.Unavailable, Code.Aborted, Code.DeadlineExceeded]);
const ERROR_CODES = new Set([Code.Internal, Code.Unknown, Code.DataLoss]);

/** The caller's request id when it is sane, else undefined (a new one is made). */
export function saneRequestId(header: string | null): string | undefined {
  return header !== null && SANE_REQUEST_ID.test(header) ? header : undefined;
}

/** The trace id of a valid `traceparent` header, else undefined. */
export function traceIdOfTraceparent(header: string | null): string | undefined {
  const match = header === null ? null : TRACEPARENT.exec(header.trim());
  if (!match) return undefined;
  const [, version, traceId, parentId, , rest] = match;
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (traceId === ZERO_TRACE_ID || parentId === ZERO_PARENT_ID) return undefined;
  return traceId;
}

/** The active span's trace id (a tracing SDK is running), else the traceparent's. */
function traceIdOf(header: string | null): string | undefined {
  const active = trace.getActiveSpan()?.spanContext();
  if (active && isSpanContextValid(active)) return active.traceId;
  return traceIdOfTraceparent(header);
}

/** The level of a call's line by its outcome. */
export function levelOf(error: unknown): Level {
  if (error === undefined) return 'info';
  const code = error instanceof ConnectError ? error.code : Code.Internal;
  if (ERROR_CODES.has(code)) return 'error';
  return WARN_CODES.has(code) ? 'warn' : 'info';
}

/** The billing.v1 ErrorReason name of the error's detail ("INSUFFICIENT_BALANCE"), else null. */
function reasonOf(error: unknown): string | null {
  if (!(error instanceof ConnectError)) return null;
  const detail = error.findDetails(ErrorDetailSchema)[0];
  return detail ? (ErrorReason[detail.reason] ?? String(detail.reason)) : null;
}

/** The `userId` field of a unary request message, when it has a non-empty one. */
function userIdOf(message: unknown): string | null {
  const userId = typeof message === 'object' && message !== null ? (message as { userId?: unknown }).userId : undefined;
  if (typeof userId !== 'string' || userId === '') return null;
  return userId.length <= USER_ID_LOGGED_MAX ? userId : `${userId.slice(0, USER_ID_LOGGED_MAX).toWellFormed()}…`;
}

export function accessLogInterceptor(log: Logger): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    const requestId = saneRequestId(req.header.get(REQUEST_ID_HEADER)) ?? randomUUID();
    req.contextValues.set(REQUEST_ID, requestId);
    const traceId = traceIdOf(req.header.get('traceparent'));
    const procedure = `${req.service.typeName}/${req.method.name}`;
    const userId = req.stream ? null : userIdOf(req.message);
    const write = (values: ContextValues, error?: unknown) => {
      const level = levelOf(error);
      // Below the configured level (the bench runs at warn) the line is not even built.
      if (!log.isLevelEnabled(level)) return;
      log[level](
        {
          event: 'access',
          requestId,
          traceId: traceId ?? null,
          procedure,
          actor: callerOf(values)?.actor ?? null,
          userId,
          code: codeName(error),
          reason: reasonOf(error),
          durationMs: Math.round((performance.now() - started) * 1000) / 1000,
          replay: values.get(REPLAYED),
        },
        'rpc',
      );
    };
    const failed = (error: unknown): unknown => {
      if (error instanceof ConnectError) error.metadata.set(REQUEST_ID_HEADER, requestId);
      write(req.contextValues, error);
      return error;
    };
    let res;
    try {
      res = await next(req);
    } catch (error) {
      throw failed(error);
    }
    res.header.set(REQUEST_ID_HEADER, requestId);
    if (!res.stream) {
      write(req.contextValues);
      return res;
    }
    // A stream's line is written when it ends: normally, with an error, or cancelled by the caller.
    const messages = res.message;
    async function* logged() {
      let ended = false;
      try {
        yield* messages;
        ended = true;
        write(req.contextValues);
      } catch (error) {
        ended = true;
        throw failed(error);
      } finally {
        if (!ended) write(req.contextValues, new ConnectError('the caller stopped reading', Code.Canceled));
      }
    }
    return { ...res, message: logged() };
  };
}
