// The one spelling of a call's outcome in logs and metrics: Connect's code names in
// snake_case ("ok", "invalid_argument", "deadline_exceeded"), as the Connect protocol
// writes them on the wire. Written here rather than imported: connect-es's codeToString is
// marked internal.
import { Code, ConnectError } from '@connectrpc/connect';

/** "ok" without an error; the snake_case name of its code otherwise (anything not a ConnectError is answered as internal). */
export function codeName(error?: unknown): string {
  if (error === undefined) return 'ok';
  const code = error instanceof ConnectError ? error.code : Code.Internal;
  const name = Code[code];
  if (typeof name !== 'string') return 'unknown';
  return name.replace(/[A-Z]/g, (c, at: number) => (at === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`));
}
