// Progress of the long jobs (the daily top-up, VerifyLedger): a start line, a line at a steady
// interval (done of total, rate per second, ETA) and a finish line in the log, and the
// latest run of each job kept for GetJobProgress, which the ops CLI polls to draw its bar.
//
// A progress line is written when work advances and an interval has passed since the last
// one, and by a heartbeat timer when a step runs longer than the interval (one VerifyLedger
// check over a large ledger can take minutes): so lines come at a steady pace whether the
// steps are short or long. An interval of 0 logs on every advance and starts no timer,
// which makes the lines of a test deterministic.
import type { Logger } from 'pino';

export type JobName = 'daily_top_up' | 'verify_ledger';

/** How the log names each job. */
const JOB_TITLES: Readonly<Record<JobName, string>> = { daily_top_up: 'daily top-up', verify_ledger: 'verify ledger' };

/** The default interval between progress lines. */
export const PROGRESS_INTERVAL_MS_DEFAULT = 5_000;

/** One run as GetJobProgress reports it. */
export interface ProgressSnapshot {
  readonly job: JobName;
  /** 1, 2, … per job in this process. */
  readonly run: number;
  readonly unit: string;
  readonly done: number;
  readonly total: number;
  readonly startedAtMs: number;
  /** Unset while the run goes on. */
  readonly finishedAtMs?: number;
  readonly failed: boolean;
}

export interface JobProgressOptions {
  /** Where the lines go; without one nothing is logged, but runs are still tracked. */
  readonly log?: Logger;
  /** Milliseconds between progress lines (default 5 s); 0 logs every advance. */
  readonly intervalMs?: number;
  readonly now?: () => number;
}

/** Rate per second and seconds left, from what is done so far; undefined before anything is. */
export function rateAndEta(done: number, total: number, elapsedMs: number): { ratePerSecond: number; etaSeconds: number | undefined } {
  const ratePerSecond = elapsedMs > 0 ? (done * 1000) / elapsedMs : 0;
  const left = Math.max(0, total - done);
  const etaSeconds = ratePerSecond > 0 ? left / ratePerSecond : left === 0 ? 0 : undefined;
  return { ratePerSecond: Math.round(ratePerSecond * 10) / 10, etaSeconds: etaSeconds === undefined ? undefined : Math.ceil(etaSeconds) };
}

/** The latest run of each job, and the factory of new runs. One per server process. */
export class JobProgress {
  private readonly latestRuns = new Map<JobName, ProgressRun>();
  private readonly counters = new Map<JobName, number>();
  readonly intervalMs: number;
  private readonly now: () => number;

  constructor(private readonly options: JobProgressOptions = {}) {
    this.intervalMs = options.intervalMs ?? PROGRESS_INTERVAL_MS_DEFAULT;
    if (!Number.isInteger(this.intervalMs) || this.intervalMs < 0) throw new RangeError('intervalMs must be a non-negative integer');
    this.now = options.now ?? Date.now;
  }

  /** Starts a run of `total` units; logs the start line. The latest started run is the one reported. */
  start(job: JobName, total: number, unit: string, fields: Record<string, unknown> = {}): ProgressRun {
    const run = (this.counters.get(job) ?? 0) + 1;
    this.counters.set(job, run);
    const progress = new ProgressRun(job, run, unit, total, this.now, this.intervalMs, this.options.log, fields);
    this.latestRuns.set(job, progress);
    return progress;
  }

  /** The latest run of a job in this process, or undefined if it never ran. */
  latest(job: JobName): ProgressSnapshot | undefined {
    return this.latestRuns.get(job)?.snapshot();
  }
}

/** One run of a job: advance it as work is done, then finish or fail it. */
export class ProgressRun {
  private done = 0;
  private finishedAtMs: number | undefined;
  private failed = false;
  private readonly startedAtMs: number;
  private lastLoggedMs: number;
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly title: string;

  constructor(
    readonly job: JobName,
    readonly run: number,
    readonly unit: string,
    private readonly total: number,
    private readonly now: () => number,
    private readonly intervalMs: number,
    private readonly log: Logger | undefined,
    private readonly fields: Record<string, unknown>,
  ) {
    this.startedAtMs = now();
    this.lastLoggedMs = this.startedAtMs;
    this.title = JOB_TITLES[job];
    this.log?.info({ job, run, ...fields, total, unit }, `${this.title} started`);
    if (this.log && intervalMs > 0) {
      // The heartbeat: a line even while one step takes longer than the interval. Unref'd,
      // so a run never keeps the process alive.
      this.timer = setInterval(() => {
        if (this.now() - this.lastLoggedMs >= this.intervalMs) this.line();
      }, intervalMs);
      this.timer.unref();
    }
  }

  /** Counts `n` more units done; logs a line when the interval has passed. */
  advance(n: number): void {
    if (this.finishedAtMs !== undefined) return;
    this.done += n;
    if (this.log && this.now() - this.lastLoggedMs >= this.intervalMs) this.line();
  }

  /** Ends the run; logs the finish line with `fields` (the run's result). */
  finish(fields: Record<string, unknown> = {}): void {
    if (!this.end(false)) return;
    const elapsedMs = this.finishedAtMs! - this.startedAtMs;
    const { ratePerSecond } = rateAndEta(this.done, this.total, elapsedMs);
    this.log?.info(
      { job: this.job, run: this.run, ...this.fields, done: this.done, total: this.total, unit: this.unit, ratePerSecond, ms: elapsedMs, ...fields },
      `${this.title} finished`,
    );
  }

  /** Ends the run as failed; logs the line at warn (the caller logs or returns the error itself). */
  fail(): void {
    if (!this.end(true)) return;
    this.log?.warn(
      { job: this.job, run: this.run, ...this.fields, done: this.done, total: this.total, unit: this.unit, ms: this.finishedAtMs! - this.startedAtMs },
      `${this.title} failed`,
    );
  }

  snapshot(): ProgressSnapshot {
    return {
      job: this.job,
      run: this.run,
      unit: this.unit,
      done: this.done,
      total: this.total,
      startedAtMs: this.startedAtMs,
      ...(this.finishedAtMs === undefined ? {} : { finishedAtMs: this.finishedAtMs }),
      failed: this.failed,
    };
  }

  private end(failed: boolean): boolean {
    if (this.finishedAtMs !== undefined) return false;
    this.finishedAtMs = this.now();
    this.failed = failed;
    if (this.timer) clearInterval(this.timer);
    return true;
  }

  private line(): void {
    const nowMs = this.now();
    this.lastLoggedMs = nowMs;
    const { ratePerSecond, etaSeconds } = rateAndEta(this.done, this.total, nowMs - this.startedAtMs);
    const percent = this.total > 0 ? Math.floor((Math.min(this.done, this.total) * 100) / this.total) : 100;
    this.log?.info(
      { job: this.job, run: this.run, ...this.fields, done: this.done, total: this.total, unit: this.unit, percent, ratePerSecond, ...(etaSeconds === undefined ? {} : { etaSeconds }) },
      `${this.title} progress: ${this.done}/${this.total} ${this.unit}, ${ratePerSecond}/s, ETA ${etaSeconds === undefined ? '?' : `${etaSeconds}s`}`,
    );
  }
}
