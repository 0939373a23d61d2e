// Who is calling: the actor of every call, set by the auth interceptor (rpc/auth.ts) and
// read by whatever records who did what (access log, audit events). Interceptors outside
// auth see the caller only after next() has run auth; handlers see it on their context.
import { createContextKey, type ContextValues } from '@connectrpc/connect';

export interface Caller {
  /** The configured name of the token, or of the client certificate; "open" with no tokens configured. */
  readonly actor: string;
  /** How the caller was identified. */
  readonly via: 'token' | 'certificate' | 'open';
}

/** Before auth has run, or for an open service (health, reflection): undefined. */
export const CALLER = createContextKey<Caller | undefined>(undefined, { description: 'billing caller' });

export function callerOf(values: ContextValues): Caller | undefined {
  return values.get(CALLER);
}
