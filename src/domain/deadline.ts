// The deadline of the call being served, carried to the database without threading it
// through every rule: src/rpc/deadline.ts sets it for the length of a call, and
// src/storage/database.ts reads it before and during each transaction. Work that runs
// outside a call (the scheduled jobs, the CLI) has no deadline.
import { AsyncLocalStorage } from 'node:async_hooks';
import { performance } from 'node:perf_hooks';

/** The call's deadline passed before its unit of work committed: nothing was written. */
export class DeadlineExceededError extends Error {
  constructor(message = 'the deadline passed before the work was done; nothing was written', options?: ErrorOptions) {
    super(message, options);
    this.name = 'DeadlineExceededError';
  }
}

interface CallDeadline {
  /** performance.now() at which the deadline passes. */
  readonly at: number;
}

const current = new AsyncLocalStorage<CallDeadline>();

/** Runs fn with a deadline timeoutMs from now; without one, fn runs with no deadline. */
export function withDeadline<T>(timeoutMs: number | undefined, fn: () => T): T {
  return timeoutMs === undefined ? current.exit(fn) : current.run({ at: performance.now() + timeoutMs }, fn);
}

/** Milliseconds left before the current call's deadline (≤ 0 once passed); undefined without one. */
export function remainingMs(): number | undefined {
  const deadline = current.getStore();
  return deadline === undefined ? undefined : deadline.at - performance.now();
}

/** Throws DeadlineExceededError when the current call's deadline has passed. */
export function checkDeadline(): void {
  const left = remainingMs();
  if (left !== undefined && left <= 0) throw new DeadlineExceededError();
}

/** The current call's deadline as a performance.now() instant; undefined without one. */
export function deadlineAt(): number | undefined {
  return current.getStore()?.at;
}

/**
 * Runs fn under the deadline instant `at` (from deadlineAt()), or under none. The ledger's
 * batches run under the earliest deadline of the calls they carry, not the caller's.
 */
export function withDeadlineAt<T>(at: number | undefined, fn: () => T): T {
  return at === undefined ? current.exit(fn) : current.run({ at }, fn);
}

/** The earliest of some deadline instants (from deadlineAt()); undefined when none has one. */
export function earliestDeadline(ats: readonly (number | undefined)[]): number | undefined {
  let earliest: number | undefined;
  for (const at of ats) if (at !== undefined && (earliest === undefined || at < earliest)) earliest = at;
  return earliest;
}

/** True when the deadline instant `at` has passed (never without one). */
export function deadlinePassed(at: number | undefined, now = performance.now()): boolean {
  return at !== undefined && at <= now;
}
