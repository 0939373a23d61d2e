// The progress bar of `billing top-up run` and `billing verify`. Their RPCs are unary, so
// while the call runs the CLI polls AdminService.GetJobProgress and draws the run it started:
// it notes the job's latest run number before the call and follows the first higher one.
// The bar goes to stderr, so stdout stays the result alone (--json pipes cleanly). On a
// terminal it redraws in place; elsewhere (a pipe, a CI log) cli-progress prints it as a line
// every few seconds instead, and a last line when the run ends.
import type { Client } from '@connectrpc/connect';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import cliProgress from 'cli-progress';
import type { AdminService, JobProgress } from '../../../gen/billing/v1/admin_service_pb.js';

export type WatchedJob = 'dailyTopUp' | 'verifyLedger';

const TITLES: Readonly<Record<WatchedJob, string>> = { dailyTopUp: 'daily top-up', verifyLedger: 'verify ledger' };

export interface WatchOptions {
  /** Draw nothing (--no-progress): the call runs alone. */
  readonly enabled: boolean;
  /** How often to poll, in ms (BILLING_PROGRESS_POLL_MS, default 500). */
  readonly pollMs: number;
  /** Lines in a non-terminal, every this many ms (default 2,000). */
  readonly lineMs: number;
  readonly stream: NodeJS.WriteStream;
}

/**
 * Runs `call` while drawing the progress of the job run it starts. Progress is best effort:
 * a poll that fails (an older server without GetJobProgress, a replica that is not running
 * the job) draws nothing, and only the call's own outcome counts.
 */
export async function withProgress<T>(admin: Client<typeof AdminService>, job: WatchedJob, options: WatchOptions, call: () => Promise<T>): Promise<T> {
  if (!options.enabled) return call();
  const latest = async (): Promise<JobProgress | undefined> => {
    try {
      return (await admin.getJobProgress({}))[job];
    } catch {
      return undefined;
    }
  };
  const before = (await latest())?.run ?? 0n;
  const bar = new cliProgress.SingleBar(
    {
      format: `${TITLES[job]} |{bar}| {value}/{total} {unit} | {rate}/s | ETA {left}`,
      stream: options.stream,
      noTTYOutput: true,
      notTTYSchedule: options.lineMs,
      hideCursor: false,
      gracefulExit: true,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  const draw = (p: JobProgress | undefined): void => {
    if (!p || p.run <= before) return;
    const total = Number(p.total);
    const done = Math.min(Number(p.done), total);
    // The rate from the server's own times once the run ended; while it runs, from its start
    // to this machine's clock (a skewed clock skews only the running estimate).
    const startedMs = p.startedAt ? timestampMs(p.startedAt) : Date.now();
    const endMs = p.finishedAt ? timestampMs(p.finishedAt) : Date.now();
    const seconds = Math.max(endMs - startedMs, 1) / 1000;
    const rate = done / seconds;
    const eta = p.finishedAt || done >= total ? '0s' : rate > 0 ? `${Math.ceil((total - done) / rate)}s` : '?';
    const payload = { unit: p.unit, rate: rate.toFixed(1), left: eta };
    if (!started) {
      started = true;
      bar.start(total, done, payload);
    }
    bar.setTotal(total);
    bar.update(done, payload);
  };
  let polling = true;
  const poller = (async () => {
    while (polling) {
      await new Promise((resolve) => setTimeout(resolve, options.pollMs));
      if (polling) draw(await latest());
    }
  })();
  try {
    return await call();
  } finally {
    polling = false;
    await poller;
    // The last state, so even a run shorter than one poll shows its count.
    draw(await latest());
    if (started) bar.stop();
  }
}
