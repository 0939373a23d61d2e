// How a job's runs are recorded (the service's metrics, src/service-metrics.ts): each run
// of a job, by what started it, passes through `run`. The jobs import no metrics library.

/** The jobs, by the name their metrics carry. */
export type RecordedJob = 'daily_top_up' | 'hold_sweeper';
/** What started a run: its schedule, or an operator over the API (RunDailyTopUp). */
export type JobTrigger = 'schedule' | 'rpc';

export interface JobRecorder {
  /** Runs `work` as one run of `job`; returns or throws what it does. */
  run<T>(job: RecordedJob, trigger: JobTrigger, work: () => Promise<T>): Promise<T>;
}

/** Records nothing. */
export const UNRECORDED: JobRecorder = { run: (_job, _trigger, work) => work() };
