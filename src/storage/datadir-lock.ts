// The lock on an embedded database's data directory: one process at a time may open the
// PGlite files under it (two corrupt them, or the second dies with `RuntimeError: Aborted()`).
//
// A lock file created exclusively (`<dataDir>/billing.lock`, by link(2), which fails as
// O_EXCL does when the name exists) holds the holder's pid, host name, boot id, process
// start time and command. It is removed on close and at process exit. A file left by a
// process that died (kill -9, a crash, a power cut) is stale and taken over: on the same host
// and boot when its pid is gone or now names another process (another start time), after a
// reboot (another boot id) always. A lock from another host name (another machine on a
// shared volume, or another container: another pid namespace, where its pid means nothing)
// cannot be checked and is left alone; the message says which file to remove once that
// holder is known to be gone. (A restarted container keeps its host name and is checked.)
// Chosen over proper-lockfile, whose locks go stale when the holder stops refreshing them:
// PGlite runs its statements on the event loop, so a long one (a migration, VerifyLedger
// over a large ledger) would cost the server its lock; and its lock names no pid.
import { closeSync, constants, fsyncSync, linkSync, openSync, readFileSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';

export const LOCK_FILE = 'billing.lock';

/** What a lock file says about its holder. */
export interface LockHolder {
  readonly pid: number;
  readonly hostname: string;
  /** /proc/sys/kernel/random/boot_id; empty where there is none. */
  readonly bootId: string;
  /** The process's start time in clock ticks since boot (/proc/<pid>/stat); undefined where unknown. */
  readonly startTicks?: number;
  /** When it took the lock (ISO 8601). */
  readonly lockedAt: string;
  readonly command: string;
}

export class DataDirLockedError extends Error {
  constructor(
    readonly dataDir: string,
    readonly holder: LockHolder,
    readonly lockFile: string,
  ) {
    const where = holder.hostname === hostname() ? '' : ` on host ${holder.hostname}`;
    super(
      `the data directory ${dataDir} is in use by another process: pid ${holder.pid}${where} (${holder.command}), ` +
        `since ${holder.lockedAt}. Stop it first, or point BILLING_DATA_DIR elsewhere` +
        (where ? `; if that process is gone, remove ${lockFile}` : ''),
    );
    this.name = 'DataDirLockedError';
  }
}

export interface DataDirLock {
  readonly file: string;
  release(): void;
}

/** Directories this process holds: a second open in the same process is refused as well. */
const held = new Map<string, string>();
let exitHookInstalled = false;

/** Takes the lock on dataDir (which must exist); throws DataDirLockedError while another process holds it. */
export function lockDataDir(dataDir: string): DataDirLock {
  const file = join(dataDir, LOCK_FILE);
  const me = self();
  if (held.has(file)) throw new DataDirLockedError(dataDir, me, file);
  // Bounded: each round either takes the lock, finds it held, or moves a stale file aside.
  for (let attempt = 0; attempt < 5; attempt += 1) {
    if (create(file, me)) {
      held.set(file, JSON.stringify(me));
      installExitHook();
      return { file, release: () => release(file) };
    }
    const holder = read(file);
    if (holder === undefined) continue; // removed meanwhile, or being written: try again
    if (!isStale(holder.parsed, me)) throw new DataDirLockedError(dataDir, holder.parsed, file);
    // Take over: move the stale file aside (only one contender's rename finds it), check that
    // what was moved is the stale file read above and not a lock just taken by another
    // contender, then create ours.
    const aside = `${file}.stale-${process.pid}`;
    try {
      renameSync(file, aside);
    } catch {
      continue;
    }
    const moved = readFileSync(aside, 'utf8');
    if (moved !== holder.text) {
      // A lock another contender took just before our rename: put it back (link, so that
      // nothing created meanwhile is overwritten) and look again.
      try {
        linkSync(aside, file);
      } catch {
        /* best effort: a narrow race among three contenders */
      }
    }
    unlinkSync(aside);
  }
  const holder = read(file);
  throw new DataDirLockedError(dataDir, holder?.parsed ?? me, file);
}

/**
 * Creates the lock file whole: written under a temporary name, then linked to its own name
 * (link fails if the name exists, as O_EXCL does), so a reader never sees it half written.
 */
function create(file: string, me: LockHolder): boolean {
  const temporary = `${file}.${process.pid}.tmp`;
  const fd = openSync(temporary, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    writeSync(fd, `${JSON.stringify(me)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(temporary, file);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  } finally {
    unlinkSync(temporary);
  }
}

function read(file: string): { text: string; parsed: LockHolder } | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const parsed = JSON.parse(text) as LockHolder;
    if (typeof parsed.pid === 'number' && typeof parsed.hostname === 'string') return { text, parsed };
  } catch {
    /* below */
  }
  // Not a lock file this code wrote (files are written whole): never taken over silently.
  return { text, parsed: { pid: 0, hostname: '?', bootId: '', lockedAt: '?', command: `unreadable lock file ${file}` } };
}

function isStale(holder: LockHolder, me: LockHolder): boolean {
  if (holder.pid <= 0) return false;
  if (holder.hostname !== me.hostname) return false;
  if (holder.bootId && me.bootId && holder.bootId !== me.bootId) return true;
  // The same pid as this process (a restarted container is pid 1 again): not this process,
  // which holds nothing yet, so a leftover of an earlier one.
  if (holder.pid === me.pid) return holder.startTicks !== me.startTicks || holder.startTicks === undefined;
  if (!alive(holder.pid)) return true;
  const ticks = startTicks(holder.pid);
  return holder.startTicks !== undefined && ticks !== undefined && ticks !== holder.startTicks;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: it exists, owned by another user.
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Field 22 of /proc/<pid>/stat (after the command in parentheses, which may hold spaces). */
function startTicks(pid: number | 'self'): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[19]);
    return Number.isSafeInteger(ticks) ? ticks : undefined;
  } catch {
    return undefined;
  }
}

function self(): LockHolder {
  let bootId = '';
  try {
    bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    /* not Linux */
  }
  const ticks = startTicks('self');
  return {
    pid: process.pid,
    hostname: hostname(),
    bootId,
    ...(ticks !== undefined ? { startTicks: ticks } : {}),
    lockedAt: new Date().toISOString(),
    command: process.argv.slice(1).join(' ').slice(0, 200) || process.argv0,
  };
}

function release(file: string): void {
  const mine = held.get(file);
  if (mine === undefined) return;
  held.delete(file);
  try {
    // Only our own file: never one another process took over meanwhile.
    if (readFileSync(file, 'utf8').trim() === mine) unlinkSync(file);
  } catch {
    /* already gone */
  }
}

/** A process that exits without closing the database (process.exit on a fatal error) leaves no lock behind. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const file of [...held.keys()]) release(file);
  });
}
