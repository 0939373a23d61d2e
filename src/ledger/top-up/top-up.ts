// The daily free top-up: every FREE account below the target (5 credits by default) is
// raised to it, at most once per user per UTC day. Set-based, a batch of accounts per
// statement, two batches at a time on PostgreSQL; re-runs, overlapping runs and replicas
// are harmless (see sql.ts). A run through the API is audited: each batch that tops
// accounts up writes its audit row in its own transaction, and the run's event is logged.
import type { Catalogue } from '../../domain/catalogue.js';
import { invalidField } from '../../domain/errors.js';
import { unchecked } from '../../domain/request.js';
import type { Database } from '../../storage/database.js';
import { JobProgress } from '../../jobs/progress.js';
import { type Audit, auditEvent, AuditTrail } from '../audit/audit.js';
import { SYSTEM_DAILY_TOP_UP } from '../kernel/names.js';
import { type LedgerObserver, tell } from '../kernel/observer.js';
import {
  lastTopUpDay,
  recordTopUpRun,
  topUpBatch,
  type TopUpBatchInput,
  type TopUpBatchResult,
  topUpCandidates,
  type TopUpDayRow,
  topUpWindow,
} from './sql.js';

export const TOP_UP_BATCH_SIZE_DEFAULT = 10_000;
/** Batches written at once on PostgreSQL, each on a connection of its own (PGlite has one). */
export const TOP_UP_CONNECTIONS_DEFAULT = 2;
/** How far back an operator may run a missed day; older dates are refused as typos. */
export const TOP_UP_DAYS_BACK_MAX = 7;

const DAY_MS = 86_400_000;

export interface TopUpResult {
  accountsToppedUp: bigint;
  totalMillicredits: bigint;
}

export interface TopUpOptions {
  /** Accounts per statement (default 10,000). */
  readonly batchSize?: number;
  /** Batches written at once, each on its own pooled connection (default 2; 1 on PGlite). */
  readonly connections?: number;
  /** Where audited runs are recorded (default: rows only, no log). */
  readonly trail?: AuditTrail;
  /** Where runs report their progress (default: tracked, not logged). */
  readonly progress?: JobProgress;
  /** Hears of each batch's top-ups once it has committed. */
  readonly observer?: LedgerObserver;
}

/** The UTC calendar day of an instant, "YYYY-MM-DD". */
export function utcDay(at: Date): string {
  return at.toISOString().slice(0, 10);
}

/**
 * The day to top up: "" means today (UTC). A date in the future is refused (it would use
 * up that day's top-up early), and so is one more than a week back: a missed run is
 * caught up soon after, while an old date is far more likely a typo that would pay
 * every FREE user again.
 */
export function checkTopUpDate(date: string, now: Date = new Date(), field = 'date'): string {
  if (date === '') return utcDay(now);
  // The contract's DATE limit has refused anything but a calendar date.
  const parsed = new Date(`${date}T00:00:00Z`);
  if (Number.isNaN(parsed.getTime()) || utcDay(parsed) !== date) throw unchecked(`the date "${date}"`);
  const today = Date.parse(`${utcDay(now)}T00:00:00Z`);
  if (parsed.getTime() > today) throw invalidField(field, 'must not be in the future (UTC)');
  if (parsed.getTime() < today - TOP_UP_DAYS_BACK_MAX * DAY_MS) {
    throw invalidField(field, `must be at most ${TOP_UP_DAYS_BACK_MAX} days ago`);
  }
  return date;
}

export class DailyTopUps {
  private readonly batchSize: number;
  private readonly connections: number;
  private readonly trail: AuditTrail;
  private readonly progress: JobProgress;
  private readonly observer: LedgerObserver;

  constructor(
    private readonly db: Database,
    private readonly catalogue: Catalogue,
    options: TopUpOptions = {},
  ) {
    this.observer = options.observer ?? {};
    this.batchSize = options.batchSize ?? TOP_UP_BATCH_SIZE_DEFAULT;
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) throw new RangeError('batchSize must be a positive integer');
    this.trail = options.trail ?? new AuditTrail();
    this.progress = options.progress ?? new JobProgress();
    this.connections = options.connections ?? (db.kind === 'pglite' ? 1 : TOP_UP_CONNECTIONS_DEFAULT);
    if (!Number.isInteger(this.connections) || this.connections < 1 || this.connections > 16) {
      throw new RangeError('connections must be an integer in [1, 16]');
    }
  }

  /**
   * Tops up every eligible account for `date` ("" = today, UTC); reports what this run did.
   * The accounts are swept in user_id order, one window of candidates at a time; each
   * window is written as one batch, and `connections` batches are written at once (their
   * windows are disjoint, so they never wait for each other's locks). A failed batch stops
   * the run once the batches already under way have ended, and the error is thrown:
   * committed batches stay, and a re-run tops up the rest. With an `audit`, each batch that
   * tops accounts up records it in audit_events in its own transaction, and the run's
   * event (complete or not) is published at the end.
   */
  async run(date: string, audit?: Audit, now: Date = new Date()): Promise<TopUpResult> {
    const day = checkTopUpDate(date, now);
    const targetMillicredits = this.catalogue.dailyTopUpTargetMillicredits;
    const startedAtMs = Date.now();
    const total: TopUpResult = { accountsToppedUp: 0n, totalMillicredits: 0n };
    // Progress counts the candidates of each written window against a count taken now.
    const progress = this.progress.start('daily_top_up', await topUpCandidates(this.db, day, targetMillicredits), 'accounts', { day });
    // The cursor is shared: windows are read one after another, each after the last, so
    // the batches' windows are disjoint and cover the accounts in user_id order.
    let after: string | undefined = '';
    let failed = false;
    let reading: Promise<unknown> = Promise.resolve();
    const nextWindow = (): Promise<{ afterUserId: string; upToUserId: string; candidates: number } | undefined> => {
      const read = reading.then(async () => {
        if (after === undefined || failed) return undefined;
        const afterUserId = after;
        const window = await topUpWindow(this.db, { day, targetMillicredits, afterUserId, batchSize: this.batchSize });
        after = window?.upToUserId;
        return window === undefined ? undefined : { afterUserId, ...window };
      });
      reading = read.catch(() => undefined);
      return read;
    };
    const writer = async (): Promise<void> => {
      try {
        for (let window = await nextWindow(); window !== undefined; window = await nextWindow()) {
          const batch = await this.batch(
            {
              day,
              targetMillicredits,
              afterUserId: window.afterUserId,
              upToUserId: window.upToUserId,
              source: SYSTEM_DAILY_TOP_UP,
              idempotencyKey: `daily-top-up:${day}`,
              reason: 'daily free top-up',
            },
            audit,
          );
          total.accountsToppedUp += batch.accountsToppedUp;
          total.totalMillicredits += batch.totalMillicredits;
          progress.advance(window.candidates);
          // Each batch has committed (its own statement, or its own transaction with the audit row: sql.ts).
          const moved = { type: 'DAILY_TOP_UP', product: '', transactions: Number(batch.accountsToppedUp), millicredits: batch.totalMillicredits } as const;
          if (moved.transactions > 0) tell(() => this.observer.committed?.([moved]));
        }
      } catch (error) {
        failed = true;
        throw error;
      }
    };
    const outcomes = await Promise.allSettled(Array.from({ length: this.connections }, writer));
    const failure = outcomes.find((outcome) => outcome.status === 'rejected');
    if (audit) {
      const after = { day, accountsToppedUp: total.accountsToppedUp.toString(), totalMillicredits: total.totalMillicredits.toString(), complete: !failure };
      this.trail.published(auditEvent(audit, 'RunDailyTopUp', { kind: 'day', day }, null, after));
    }
    // The day's row (daily_top_up_days) adds what this run committed, failed or not. A failed
    // run's own error wins over one from recording it; a successful run whose record cannot be
    // written fails (its top-ups stay; a re-run changes nothing and records again).
    const record = (failed: boolean) =>
      recordTopUpRun(this.db, { day, ...total, failed, startedAtMs, finishedAtMs: Date.now() });
    if (failure) {
      progress.fail();
      await record(true).catch(() => undefined);
      throw failure.reason;
    }
    progress.finish({ accountsToppedUp: total.accountsToppedUp.toString(), millicredits: total.totalMillicredits.toString() });
    await record(false);
    return total;
  }

  /** The day whose latest run ended last (any replica, any restart), or undefined before any has. */
  async lastDay(): Promise<TopUpDayRow | undefined> {
    return lastTopUpDay(this.db);
  }

  /** One batch: a single statement, or with an audit a transaction that also records what it did. */
  private async batch(input: TopUpBatchInput, audit: Audit | undefined): Promise<TopUpBatchResult> {
    if (!audit) return topUpBatch(this.db, input);
    return this.db.transaction(async (s) => {
      const batch = await topUpBatch(s, input);
      if (batch.accountsToppedUp > 0n) {
        const after = {
          day: input.day,
          accountsToppedUp: batch.accountsToppedUp.toString(),
          totalMillicredits: batch.totalMillicredits.toString(),
          afterUserId: input.afterUserId,
          upToUserId: input.upToUserId,
        };
        await this.trail.record(s, auditEvent(audit, 'RunDailyTopUp', { kind: 'day', day: input.day }, null, after));
      }
      return batch;
    });
  }
}
