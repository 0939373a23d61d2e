// The service as a real process, the way operators run it: `tsx src/main.ts` spawned on
// this Node, with everything it prints kept for the test to read. Shared by the process,
// deposits-process and kill tests.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';

const ROOT = new URL('../..', import.meta.url).pathname;
const execFileAsync = promisify(execFile);
/** Node's arguments for the TypeScript entry point; the compiled one is ['dist/src/main.js'] (after a build). */
const TSX_MAIN: readonly string[] = ['--import', 'tsx', 'src/main.ts'];

export interface ServiceProcess {
  readonly label: string;
  readonly child: ChildProcess;
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface RunningService extends ServiceProcess {
  readonly port: number;
  /** Spawn to its "listening" log line. */
  readonly startupMs: number;
}

/** Every process one test file started, so that it can kill what is left however it ends. */
export class ServiceProcesses {
  readonly all: ServiceProcess[] = [];

  /**
   * Spawns the service with only PATH from this environment, PORT and METRICS_PORT 0
   * unless `env` says otherwise.
   */
  spawn(label: string, env: Record<string, string>, args: readonly string[] = TSX_MAIN): ServiceProcess {
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', PORT: '0', METRICS_PORT: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('exit', (code, signal) => resolve({ code, signal })),
    );
    const proc: ServiceProcess = { label, child, output: () => output, exit };
    this.all.push(proc);
    return proc;
  }

  /** Spawns the service and waits for its "listening" log line (info level); throws with its output if it exits first. */
  async start(label: string, env: Record<string, string>, timeoutMs = 60_000, args: readonly string[] = TSX_MAIN): Promise<RunningService> {
    const proc = this.spawn(label, env, args);
    const started = Date.now();
    for (;;) {
      const match = /"port":(\d+).*"billing service listening"/.exec(proc.output());
      if (match) return { ...proc, port: Number(match[1]), startupMs: Date.now() - started };
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
        throw new Error(`${label} exited before listening:\n${proc.output()}`);
      }
      if (Date.now() - started > timeoutMs) throw new Error(`${label} did not start:\n${proc.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** SIGKILLs every process still running and waits for each to end. */
  async killAll(): Promise<void> {
    for (const p of this.all) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await Promise.all(this.all.map((p) => p.exit));
  }
}

/** SIGTERM, then the exit code once the process has ended. */
export async function stopService(s: ServiceProcess): Promise<number | null> {
  s.child.kill('SIGTERM');
  return (await s.exit).code;
}

/** kill -9, then the signal the process ended by once it has. */
export async function killService(s: ServiceProcess): Promise<NodeJS.Signals | null> {
  s.child.kill('SIGKILL');
  return (await s.exit).signal;
}

/** How a command run to its end went: its exit code and what it printed. */
export interface Ran {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its end; a non-zero exit is a result, not an error (a spawn failure still throws). */
export async function runCommand(file: string, args: readonly string[], options: { cwd: string; env: Record<string, string>; timeout: number }): Promise<Ran> {
  try {
    const { stdout, stderr } = await execFileAsync(file, args, options);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw error;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}
