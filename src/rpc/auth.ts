// Authentication of named callers, with scopes. A caller proves its name with a bearer
// token (compared by SHA-256: the configuration may hold only the hash) or, under mutual
// TLS, with its client certificate; the name is the actor of the call (rpc/caller.ts). The scope of every method comes from the
// contract: the `(billing.v1.scope)` option on each rpc in proto/, read from the
// descriptors when the server starts. A billing.v1 method without one stops the start-up
// (fail closed); health and reflection are open by name. With no tokens configured every
// call is allowed (local development; the server then binds loopback).
import { type DescService, getOption, hasOption } from '@bufbuild/protobuf';
import { Code, ConnectError, createContextKey, type Interceptor } from '@connectrpc/connect';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { scope as scopeOption, Scope as ProtoScope } from '../../gen/billing/v1/options_pb.js';
import type { NamedCaller, Scope } from '../config.js';
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

/**
 * The name in the verified client certificate of the call's connection (mutual TLS), set by
 * the server (src/server.ts) before the call reaches the interceptors; undefined without one.
 */
export const PEER_CERTIFICATE_NAME = createContextKey<string | undefined>(undefined, { description: 'billing client certificate name' });

const CERTIFICATE_NAME = /^[a-z0-9._-]{1,64}$/;

/**
 * The caller name a verified client certificate carries: its subject CN, or else its
 * first DNS subject alternative name, when that is a valid caller name. Undefined for a
 * connection without a verified certificate (plaintext, TLS without mutual TLS).
 */
export function certificateName(socket: Pick<TLSSocket, 'authorized' | 'getPeerCertificate'> | undefined): string | undefined {
  if (!socket || socket.authorized !== true || typeof socket.getPeerCertificate !== 'function') return undefined;
  const cert = socket.getPeerCertificate();
  const cn: unknown = cert.subject?.CN;
  const fromCn = typeof cn === 'string' ? cn : undefined;
  const fromSan = /(?:^|,\s*)DNS:([^,\s]+)/.exec(cert.subjectaltname ?? '')?.[1];
  const name = fromCn ?? fromSan;
  return name !== undefined && CERTIFICATE_NAME.test(name) ? name : undefined;
}

/** The caller whose token has this SHA-256 (hashes are compared in constant time). */
function findToken(tokens: readonly (readonly [string, Buffer, ReadonlySet<Scope>])[], presented: string) {
  const candidate = createHash('sha256').update(presented, 'utf8').digest();
  for (const [name, sha256, scopes] of tokens) {
    if (timingSafeEqual(sha256, candidate)) return { name, scopes };
  }
  return undefined;
}

/**
 * Who is calling. A bearer token, when the call carries one, must be a configured one
 * (a wrong token is not excused by a certificate); without one, the connection's verified
 * client certificate must name a certificate caller.
 */
function identify(
  callers: ReadonlyMap<string, NamedCaller>,
  tokens: readonly (readonly [string, Buffer, ReadonlySet<Scope>])[],
  header: string | null,
  certificate: string | undefined,
): { actor: string; via: 'token' | 'certificate'; scopes: ReadonlySet<Scope> } {
  if (header !== null) {
    const match = /^Bearer (\S{1,512})$/i.exec(header);
    const found = match?.[1] ? findToken(tokens, match[1]) : undefined;
    if (!found) throw new ConnectError('missing or unknown bearer token', Code.Unauthenticated);
    return { actor: found.name, via: 'token', scopes: found.scopes };
  }
  if (certificate !== undefined) {
    const caller = callers.get(certificate);
    if (!caller?.certificate) throw new ConnectError(`the client certificate "${certificate}" is not a configured caller (BILLING_CERT_SCOPES)`, Code.Unauthenticated);
    return { actor: certificate, via: 'certificate', scopes: caller.scopes };
  }
  throw new ConnectError('missing or unknown bearer token', Code.Unauthenticated);
}

/** `callers`: name → scopes and credentials (Config.tokens); empty means open. */
export function authInterceptor(callers: ReadonlyMap<string, NamedCaller>, scopes: ScopeTable): Interceptor {
  const tokens = [...callers].flatMap(([name, c]) => (c.tokenSha256 ? [[name, c.tokenSha256, c.scopes] as const] : []));
  return (next) => async (req) => {
    if (OPEN_SERVICES.has(req.service.typeName)) return next(req);
    const scope = scopes.get(`${req.service.typeName}/${req.method.name}`);
    // Fail closed: a method outside the table (registered without being read) is refused.
    if (scope === undefined) throw new ConnectError(`${req.service.typeName}/${req.method.name} has no scope`, Code.PermissionDenied);
    if (callers.size === 0) {
      req.contextValues.set(CALLER, { actor: 'open', via: 'open' });
      return next(req);
    }
    const caller = identify(callers, tokens, req.header.get('authorization'), req.contextValues.get(PEER_CERTIFICATE_NAME));
    // Set before the scope check: a refused call's log line still names who was refused.
    req.contextValues.set(CALLER, { actor: caller.actor, via: caller.via });
    if (!caller.scopes.has(scope)) throw new ConnectError(`the caller "${caller.actor}" lacks the "${scope}" scope`, Code.PermissionDenied);
    return next(req);
  };
}
