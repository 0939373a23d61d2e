// What one call's interceptors and handler tell each other beyond the messages: its request
// id (set by the access log, rpc/access-log.ts, before anything else runs) and whether its
// result was an idempotent replay (set by the handler, read by the access log once the call
// is done). Context values are per call, so nothing here is shared between calls.
import { createContextKey, type ContextValues } from '@connectrpc/connect';
import type { Audit } from '../ledger/audit/audit.js';
import { wasReplayed } from '../ledger/kernel/replay.js';
import { callerOf } from './caller.js';

/** The call's request id; undefined outside the access log (e.g. a test without it). */
export const REQUEST_ID = createContextKey<string | undefined>(undefined, { description: 'billing request id' });

/** True once the handler has answered with a replay of an earlier call. */
export const REPLAYED = createContextKey<boolean>(false, { description: 'billing idempotent replay' });

export function requestIdOf(values: ContextValues): string | undefined {
  return values.get(REQUEST_ID);
}

/** Notes on the call whether `result` (a ledger result) was replayed; returns it. */
export function noteReplay<R>(values: ContextValues, result: R): R {
  if (wasReplayed(result)) values.set(REPLAYED, true);
  return result;
}

/**
 * Who the audit trail names for this call, from what auth set (rpc/caller.ts). A handler of
 * a scoped method always runs after auth; "unknown" would mean a method reached without it.
 */
export function auditOf(values: ContextValues): Audit {
  return { actor: callerOf(values)?.actor ?? 'unknown', requestId: requestIdOf(values) };
}
