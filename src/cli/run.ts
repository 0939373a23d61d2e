// How the command-line tools end: a configuration problem or a data directory held by
// another process is a one-line message and exit 1, not a stack trace.
import { ConfigError } from '../config.js';
import { DataDirLockedError } from '../storage/datadir-lock.js';

export async function runCli(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (error) {
    if (error instanceof ConfigError || error instanceof DataDirLockedError) process.stderr.write(`${error.message}\n`);
    else process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  }
}
