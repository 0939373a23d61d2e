// Bearer-token authentication with scopes. The scope of every method comes from the
// contract: the `(billing.v1.scope)` option on each rpc in proto/, read from the
// descriptors when the server starts. A billing.v1 method without one stops the start-up
// (fail closed); health and reflection are open by name. With no tokens configured every
// call is allowed (local development; the server then binds loopback).
import { type DescService, getOption, hasOption } from '@bufbuild/protobuf';
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import { timingSafeEqual } from 'node:crypto';
import { scope as scopeOption, Scope as ProtoScope } from '../../gen/billing/v1/options_pb.js';
import type { Scope } from '../config.js';
import { CALLER } from './caller.js';

const SCOPE_FROM_PROTO: Readonly<Partial<Record<ProtoScope, Scope>>> = {
  [ProtoScope.SPEND]: 'spend',
  [ProtoScope.GRANT]: 'grant',
  [ProtoScope.ADMIN]: 'admin',
  [ProtoScope.WALLET]: 'wallet',
};

/** Services that need no token: the standard health and reflection protocols. */
const OPEN_SERVICES = new Set(['grpc.health.v1.Health', 'grpc.reflection.v1.ServerReflection', 'grpc.reflection.v1alpha.ServerReflection']);

/** "service/method" → the scope it needs; a method missing from it is refused. */
export type ScopeTable = ReadonlyMap<string, Scope>;

/**
 * Reads the scope of every method of `services` from its options. Throws, naming each
 * method, when one has no scope: a method the contract forgot must not be open.
 */
export function scopeTable(services: readonly DescService[]): ScopeTable {
  const table = new Map<string, Scope>();
  const missing: string[] = [];
  for (const service of services) {
    for (const method of service.methods) {
      const scope = hasOption(method, scopeOption) ? SCOPE_FROM_PROTO[getOption(method, scopeOption)] : undefined;
      if (scope === undefined) missing.push(`${service.typeName}/${method.name}`);
      else table.set(`${service.typeName}/${method.name}`, scope);
    }
  }
  if (missing.length > 0) {
    throw new Error(`refusing to start: no (billing.v1.scope) option on ${missing.join(', ')}; every method must declare its scope in proto/`);
  }
  return table;
}

function findToken(tokens: ReadonlyMap<string, ReadonlySet<Scope>>, presented: string): ReadonlySet<Scope> | undefined {
  const candidate = Buffer.from(presented);
  for (const [token, scopes] of tokens) {
    const known = Buffer.from(token);
    if (known.length === candidate.length && timingSafeEqual(known, candidate)) return scopes;
  }
  return undefined;
}

export function authInterceptor(tokens: ReadonlyMap<string, ReadonlySet<Scope>>, scopes: ScopeTable): Interceptor {
  return (next) => async (req) => {
    if (OPEN_SERVICES.has(req.service.typeName)) return next(req);
    const scope = scopes.get(`${req.service.typeName}/${req.method.name}`);
    // Fail closed: a method outside the table (registered without being read) is refused.
    if (scope === undefined) throw new ConnectError(`${req.service.typeName}/${req.method.name} has no scope`, Code.PermissionDenied);
    if (tokens.size === 0) {
      req.contextValues.set(CALLER, { actor: 'open', via: 'open' });
      return next(req);
    }
    const header = req.header.get('authorization') ?? '';
    const match = /^Bearer (\S{1,512})$/i.exec(header);
    const found = match?.[1] ? findToken(tokens, match[1]) : undefined;
    if (!found) throw new ConnectError('missing or unknown bearer token', Code.Unauthenticated);
    if (!found.has(scope)) throw new ConnectError(`this token lacks the "${scope}" scope`, Code.PermissionDenied);
    // Tokens have no names yet (issue 13): the actor is a placeholder until they do.
    req.contextValues.set(CALLER, { actor: 'token', via: 'token' });
    return next(req);
  };
}
