// Releases expired holds on a schedule (default every 30 s). Expired holds already stop
// counting at once; the sweeper frees them in the table so reserved amounts stay tidy.
// Safe on every replica: accounts are locked with SKIP LOCKED, one batch at a time.
import cron from 'node-cron';
import type { Logger } from 'pino';
import type { Holds } from '../ledger/holds/holds.js';
import { type JobRecorder, UNRECORDED } from './recorder.js';

export interface Job {
  stop(): void;
}

export function scheduleHoldSweeper(holds: Holds, schedule: string, log: Logger, recorder: JobRecorder = UNRECORDED): Job {
  const task = cron.schedule(
    schedule,
    async () => {
      try {
        const swept = await recorder.run('hold_sweeper', 'schedule', () => holds.sweep());
        if (swept > 0) log.info({ accounts: swept }, 'expired holds released');
      } catch (error) {
        log.error({ err: error }, 'hold sweep failed');
      }
    },
    { name: 'hold-sweeper', timezone: 'Etc/UTC', noOverlap: true },
  );
  return { stop: () => void task.stop() };
}
