// Bearer-token authentication with scopes. Health and reflection are open. With no tokens
// configured every call is allowed (local development; the server then binds loopback).
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import { timingSafeEqual } from 'node:crypto';
import type { Scope } from '../config.js';

const SCOPE_OF_SERVICE: Readonly<Record<string, Scope | ((method: string) => Scope)>> = {
  'billing.v1.BillingService': (method) => (method === 'Grant' || method === 'Refund' ? 'grant' : 'spend'),
  'billing.v1.AdminService': 'admin',
  'billing.v1.WalletService': 'wallet',
};

/** The scope a method needs, or undefined for open services (health, reflection). */
export function requiredScope(serviceTypeName: string, methodName: string): Scope | undefined {
  const rule = SCOPE_OF_SERVICE[serviceTypeName];
  return typeof rule === 'function' ? rule(methodName) : rule;
}

function findToken(tokens: ReadonlyMap<string, ReadonlySet<Scope>>, presented: string): ReadonlySet<Scope> | undefined {
  const candidate = Buffer.from(presented);
  for (const [token, scopes] of tokens) {
    const known = Buffer.from(token);
    if (known.length === candidate.length && timingSafeEqual(known, candidate)) return scopes;
  }
  return undefined;
}

export function authInterceptor(tokens: ReadonlyMap<string, ReadonlySet<Scope>>): Interceptor {
  return (next) => async (req) => {
    const scope = requiredScope(req.service.typeName, req.method.name);
    if (scope === undefined || tokens.size === 0) return next(req);
    const header = req.header.get('authorization') ?? '';
    const match = /^Bearer (\S{1,512})$/i.exec(header);
    const scopes = match?.[1] ? findToken(tokens, match[1]) : undefined;
    if (!scopes) throw new ConnectError('missing or unknown bearer token', Code.Unauthenticated);
    if (!scopes.has(scope)) throw new ConnectError(`this token lacks the "${scope}" scope`, Code.PermissionDenied);
    return next(req);
  };
}
