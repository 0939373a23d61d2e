// The daily free top-up on a schedule (node-cron, UTC). Every replica runs it: the
// daily_top_ups primary key makes the second and later runs of a day no-ops, so no
// leader election is needed and a replica that is down does not stop the top-up.
import cron from 'node-cron';
import type { Logger } from 'pino';
import { type TopUpResult, utcDay } from '../ledger/top-up/top-up.js';
import { type JobRecorder, UNRECORDED } from './recorder.js';

export interface TopUpRunner {
  run(date: string): Promise<TopUpResult>;
}

/** Same shape as the hold sweeper's Job, so app.ts stops both alike. */
export interface ScheduledJob {
  stop(): void;
}

/** Refuses a schedule node-cron cannot parse, so a bad configuration fails at start. */
export function checkSchedule(schedule: string): string {
  if (!cron.validate(schedule)) throw new Error(`invalid cron schedule for the daily top-up: "${schedule}"`);
  return schedule;
}

/**
 * Runs the top-up for the UTC day of each scheduled tick. A run still going when the next
 * tick comes (a slow database) is not stacked: the tick is skipped. Failures are logged;
 * the next tick, a re-run or RunDailyTopUp picks up where it stopped.
 */
export function scheduleDailyTopUp(topUps: TopUpRunner, schedule: string, log: Logger, recorder: JobRecorder = UNRECORDED): ScheduledJob {
  const task = cron.schedule(
    checkSchedule(schedule),
    async (context) => {
      const day = utcDay(context.date);
      const started = Date.now();
      try {
        const result = await recorder.run('daily_top_up', 'schedule', () => topUps.run(day));
        log.info(
          { day, accounts: result.accountsToppedUp.toString(), millicredits: result.totalMillicredits.toString(), ms: Date.now() - started },
          'daily top-up done',
        );
      } catch (error) {
        log.error({ err: error, day }, 'daily top-up failed');
      }
    },
    { name: 'daily-top-up', timezone: 'Etc/UTC', noOverlap: true },
  );
  // destroy (not just stop): the task also leaves node-cron's registry.
  return { stop: () => void task.destroy() };
}
