// An edge for overload: at most `workMax` units of work (transactions and single
// statements) are admitted to the database at once, running or waiting for a pooled
// connection or a row lock. One more is refused at once as OVERLOADED, before it touches
// the database, instead of joining a queue that only grows: the calls admitted keep their
// latency (at most `workMax` units of work ahead of any of them) and the refused ones
// learn in a millisecond that they should retry, elsewhere or later.
import type { Pool } from 'pg';
import { BillingError } from '../domain/errors.js';
import type { Database } from './database.js';

/** The retry hint of an OVERLOADED refusal: about the time the admitted work takes to drain. */
export const OVERLOADED_RETRY_AFTER_MS = 200;

/** The bound when none is configured: twice the pool's connections (as many waiting as running), at least this. */
export const WORK_MAX_FLOOR = 32;

/** A counting semaphore that never waits: a permit now, or none. */
export class Admission {
  private inFlight = 0;

  constructor(readonly workMax: number) {
    if (!Number.isInteger(workMax) || workMax < 1) throw new Error(`admission bound must be a positive integer, got ${workMax}`);
  }

  /** Units of work admitted and not yet finished. */
  get admitted(): number {
    return this.inFlight;
  }

  /** Runs fn under a permit, or throws OVERLOADED without running it. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.inFlight >= this.workMax) {
      throw new BillingError('OVERLOADED', 'the server has as much database work in flight as it admits; retry shortly with the same idempotency key', {
        retryAfterMs: OVERLOADED_RETRY_AFTER_MS,
      });
    }
    this.inFlight += 1;
    try {
      return await fn();
    } finally {
      this.inFlight -= 1;
    }
  }
}

/** The default bound for this database: 2 × its pool's connections, at least WORK_MAX_FLOOR. */
export async function defaultWorkMax(db: Database): Promise<number> {
  if (db.kind !== 'postgresql') return WORK_MAX_FLOOR;
  const pool = (await db.orm.em.getDriver().getConnection().getNativeClient()) as Pool;
  const connections = Number((pool as { options?: { max?: unknown } }).options?.max ?? 0);
  return Math.max(WORK_MAX_FLOOR, 2 * (Number.isFinite(connections) ? connections : 0));
}

/**
 * The same database with its transactions and statements admitted through `admission`.
 * `ping` is not: health must answer whatever the load.
 */
export function admitted(db: Database, admission: Admission): Database {
  // Spread, and forward every argument: whatever else Database grows passes through.
  const transaction = (...args: Parameters<Database['transaction']>) => admission.run(() => db.transaction(...args));
  const query = (...args: Parameters<Database['query']>) => admission.run(() => db.query(...args));
  const admit = <T>(fn: () => Promise<T>) => admission.run(fn);
  return { ...db, transaction: transaction as Database['transaction'], query: query as Database['query'], admit, unadmitted: db };
}
