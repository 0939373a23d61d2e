// The service's logger: pino with ISO timestamps and level names ("info", not 30), so a
// line reads the same to a person at 3 a.m. and to a log pipeline. Every place that
// creates the service's logger (main.ts, app.ts, the CLIs) uses this one.
import pino, { type DestinationStream, type Logger, type LoggerOptions } from 'pino';

/** The options every logger of the service is created with, besides its level. */
export const LOG_OPTIONS: LoggerOptions = {
  base: { service: 'billing' },
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label) => ({ level: label }) },
};

/** A logger at `level` writing to stdout, or to `destination` (tests capture it). */
export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = { ...LOG_OPTIONS, level };
  return destination ? pino(options, destination) : pino(options);
}
