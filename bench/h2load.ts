// h2load (nghttp2's HTTP/2 load generator, C) as the bench's cheapest load generator, for the
// calls where one pre-encoded body can be sent every time: GetBalance of one user. A Charge
// needs a new idempotency key per call, and h2load sends one body file for every request, so
// charges stay with the lean client (bench/grpc-lean.ts).
//
// h2load counts HTTP statuses, not grpc-status (a gRPC error is HTTP 200 with grpc-status in
// the trailers), so the caller counts errors from the server's own metrics. It reports mean
// and max latency, not percentiles.
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

export const H2LOAD_MISSING =
  'h2load is not installed; GetBalance is measured with the lean client only. Install it with ' +
  '`apt-get install -y nghttp2-client` (Debian) to also measure it with h2load.';

/** The path of h2load, or undefined when it is not on PATH. */
export function h2loadPath(): string | undefined {
  const found = spawnSync('sh', ['-c', 'command -v h2load'], { encoding: 'utf8' });
  const path = found.stdout.trim();
  return found.status === 0 && path !== '' ? path : undefined;
}

export interface H2loadOptions {
  /** e.g. http://127.0.0.1:1234/billing.v1.BillingService/GetBalance */
  url: string;
  /** The protobuf request; it is framed (5-byte prefix) here. */
  message: Uint8Array;
  /** Where the framed body file is written. */
  bodyFile: string;
  connections: number;
  /** Streams in flight per connection. */
  streams: number;
  seconds: number;
  /** Called when the measured run starts (after a warm-up run of warmupSeconds). */
  onMeasureStart: () => void;
  warmupSeconds: number;
  /** Started children are handed here, so the caller can kill them on its way out. */
  track: (child: ReturnType<typeof spawn>) => void;
}

export interface H2loadResult {
  seconds: number;
  requests: number;
  /** Requests h2load saw answered with a 2xx (gRPC errors included: see above). */
  succeeded: number;
  failed: number;
  callsPerSecond: number;
  meanMs: number;
  maxMs: number;
  /** h2load's own CPU (user + system) during the measured run, % of one core. */
  loadCpuPercent: number;
  command: string;
}

const CLK_TCK = 100;

/** Milliseconds of an h2load duration ("812us", "1.23ms", "2.5s"). */
function durationMs(text: string | undefined): number {
  const match = /^([\d.]+)(us|ms|s)$/.exec(text ?? '');
  if (!match) return Number.NaN;
  const value = Number(match[1]);
  return match[2] === 'us' ? value / 1000 : match[2] === 's' ? value * 1000 : value;
}

/**
 * One h2load run of `seconds` under `sh`, which prints its own /proc stat after h2load ends:
 * the shell's cutime + cstime are exactly what the waited-for h2load used.
 */
function runOnce(options: H2loadOptions, seconds: number): Promise<{ stdout: string; cpuSeconds: number; command: string }> {
  const args = [
    '-c', String(options.connections),
    '-m', String(options.streams),
    '-t', '1',
    '-D', String(seconds),
    '-d', options.bodyFile,
    '-H', 'content-type: application/grpc',
    '-H', 'te: trailers',
    options.url,
  ];
  const command = `h2load ${args.map((a) => (a.includes(' ') ? `'${a}'` : a)).join(' ')}`;
  const child = spawn('sh', ['-c', 'h2load "$@"; code=$?; echo; echo "sh-stat: $(cat /proc/$$/stat)"; exit $code', 'sh', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  options.track(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      const stat = /^sh-stat: (.*)$/m.exec(stdout)?.[1] ?? '';
      // Fields after the ")" closing comm: cutime is field 16, cstime 17.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const cpuSeconds = (Number(fields[13]) + Number(fields[14])) / CLK_TCK;
      if (code !== 0) reject(new Error(`h2load failed (exit ${code}): ${stdout}\n${stderr}`));
      else resolve({ stdout, cpuSeconds, command });
    });
  });
}

export async function runH2load(options: H2loadOptions): Promise<H2loadResult> {
  const frame = Buffer.alloc(5 + options.message.length);
  frame.writeUInt32BE(options.message.length, 1);
  frame.set(options.message, 5);
  writeFileSync(options.bodyFile, frame);
  if (options.warmupSeconds > 0) await runOnce(options, options.warmupSeconds);
  options.onMeasureStart();
  const { stdout, cpuSeconds, command } = await runOnce(options, options.seconds);
  const finished = /finished in ([\d.]+)s, ([\d.]+) req\/s/.exec(stdout);
  const requests = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed/.exec(stdout);
  const timing = /time for request:\s+(\S+)\s+(\S+)\s+(\S+)/.exec(stdout);
  if (!finished || !requests) throw new Error(`could not read h2load's output:\n${stdout}`);
  const seconds = Number(finished[1]);
  return {
    seconds,
    requests: Number(requests[2]),
    succeeded: Number(requests[3]),
    failed: Number(requests[4]),
    callsPerSecond: Math.round(Number(finished[2]) * 10) / 10,
    meanMs: Math.round(durationMs(timing?.[3]) * 100) / 100,
    maxMs: Math.round(durationMs(timing?.[2]) * 100) / 100,
    loadCpuPercent: Math.round((cpuSeconds / seconds) * 1000) / 10,
    command,
  };
}
