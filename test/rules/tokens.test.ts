// Named callers (src/config.ts, src/rpc/auth.ts): every token has a name, the configuration
// may hold a token's SHA-256 instead of the token, and the name is the actor of the call.
// Bad entries are named by position (and name, once valid) and never quote the token.
import { createHash } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, createRouterTransport } from '@connectrpc/connect';
import { describe, expect, it } from 'vitest';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { readContract } from '../../src/app.js';
import { ConfigError, loadConfig } from '../../src/config.js';
import { authInterceptor } from '../../src/rpc/auth.js';
import { type Caller, callerOf } from '../../src/rpc/caller.js';

const AGENT = 'agent-secret-0123456789abcdef';
const OPS = 'ops-secret-0123456789abcdef';
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

function tokensFile(text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), 'billing-tokens-')), 'tokens');
  writeFileSync(path, text);
  return path;
}

/** Calls AdminService.VerifyLedger through the real auth interceptor; returns the caller the handler saw. */
async function callAs(env: Record<string, string>, token: string | undefined): Promise<Caller | undefined> {
  const config = loadConfig(env);
  let seen: Caller | undefined;
  const transport = createRouterTransport(
    (router) => router.service(AdminService, { verifyLedger: (_req, ctx) => ((seen = callerOf(ctx.values)), {}) }),
    { router: { interceptors: [authInterceptor(config.tokens, readContract().scopes)] } },
  );
  await createClient(AdminService, transport).verifyLedger({}, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  return seen;
}

describe('named tokens', () => {
  it('reads name:token, name:sha256:<hex> and the old unnamed form, keeping only hashes', () => {
    const config = loadConfig({ BILLING_TOKENS: `agent:${AGENT}=spend+grant, ops:sha256:${sha256(OPS)}=admin, old-style-token-0123=spend` });
    expect([...config.tokens.keys()]).toEqual(['agent', 'ops', 'token-3']);
    expect([...config.tokens.get('agent')!.scopes]).toEqual(['spend', 'grant']);
    expect(config.tokens.get('ops')!.tokenSha256!.toString('hex')).toBe(sha256(OPS));
    expect(config.tokens.get('token-3')!.tokenSha256!.toString('hex')).toBe(sha256('old-style-token-0123'));
    // The tokens themselves are nowhere in the configuration.
    const text = JSON.stringify(config, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v instanceof Set ? [...v] : v instanceof Map ? [...v] : v));
    for (const secret of [AGENT, OPS, 'old-style-token-0123']) expect(text).not.toContain(secret);
  });

  it('reads a tokens file of "name sha256:<hex> scopes" lines with comments, together with BILLING_TOKENS', () => {
    const file = tokensFile(`# callers\n\nops sha256:${sha256(OPS).toUpperCase()} admin+grant   # the on-call\nagent ${AGENT} spend\n`);
    const config = loadConfig({ BILLING_TOKENS_FILE: file, BILLING_TOKENS: 'cli:a-third-token-0123456789=spend' });
    expect([...config.tokens.keys()].sort()).toEqual(['agent', 'cli', 'ops']);
    expect([...config.tokens.get('ops')!.scopes]).toEqual(['admin', 'grant']);
  });

  it('names the entry of every bad token, never quoting the token', () => {
    const secret = 'leaky-secret-0123456789';
    const problems = problemsOf(() =>
      loadConfig({
        BILLING_TOKENS: [
          `Bad Name:${secret}=spend`, // 1: name
          'agent:short=spend', // 2: too short
          `sha256:${sha256(secret)}=spend`, // 3: a hash without a name
          `dup:${secret}=spend`, // 4: fine
          `dup:${secret}x=spend`, // 5: the name again
          `other:${secret}=grant`, // 6: the token again
          `scoped:${secret}y=root`, // 7: unknown scope
          `wrong=${secret}`, // 8: the token where the scopes go
          `nohash:sha256:abc=spend`, // 9: a malformed hash
        ].join(','),
      }),
    );
    const at = (n: number) => problems.filter((p) => p.startsWith(`BILLING_TOKENS entry ${n}`));
    expect(at(1)).toEqual(['BILLING_TOKENS entry 1: the name must be 1-64 characters of a-z 0-9 . _ -']);
    expect(at(2)[0]).toContain('("agent"): the token must be 16-512 characters');
    expect(at(3)).toEqual(['BILLING_TOKENS entry 3: a token\'s SHA-256 needs a name: name:sha256:<hex>=scope+scope']);
    expect(at(4)).toEqual([]);
    expect(at(5)).toEqual(['BILLING_TOKENS entry 5 ("dup"): the name "dup" is configured more than once']);
    expect(at(6)).toEqual(['BILLING_TOKENS entry 6 ("other"): the same token as "dup"']);
    expect(at(7)[0]).toContain('unknown or missing scope(s) root');
    expect(at(8).some((p) => p.includes('unknown or missing scope(s) (not shown)'))).toBe(true);
    expect(at(9)[0]).toContain('("nohash"): the token must be');
    expect(problems).toHaveLength(9);
    for (const p of problems) {
      expect(p).not.toContain(secret);
      expect(p).not.toContain(sha256(secret));
    }
  });

  it('names the line of a bad tokens file entry, and an unreadable file', () => {
    const problems = problemsOf(() => loadConfig({ BILLING_TOKENS_FILE: tokensFile(`ok ${AGENT} spend\n\nbroken ${OPS}\nAGENT ${OPS} spend\n`) }));
    expect(problems).toEqual([
      'BILLING_TOKENS_FILE line 3: must be "name sha256:<hex> scope+scope" (three fields)',
      'BILLING_TOKENS_FILE line 4: the name must be 1-64 characters of a-z 0-9 . _ -',
    ]);
    const missing = problemsOf(() => loadConfig({ BILLING_TOKENS_FILE: '/nonexistent/tokens' }));
    expect(missing).toEqual(['BILLING_TOKENS_FILE: cannot read /nonexistent/tokens: ENOENT']);
  });

  it('checks certificate callers and the TLS files', () => {
    expect(problemsOf(() => loadConfig({ BILLING_CERT_SCOPES: 'ops=admin' }))).toEqual([
      'BILLING_CERT_SCOPES: certificate callers need mutual TLS (BILLING_TLS_CLIENT_CA_FILE)',
    ]);
    expect(problemsOf(() => loadConfig({ BILLING_TLS_CERT_FILE: '/x.crt' }))).toEqual(['BILLING_TLS_CERT_FILE, BILLING_TLS_KEY_FILE: set both or neither']);
    const bad = problemsOf(() => loadConfig({ BILLING_TLS_CERT_FILE: tokensFile('not a certificate'), BILLING_TLS_KEY_FILE: tokensFile('nor a key') }));
    expect(bad[0]).toMatch(/^BILLING_TLS_CERT_FILE, BILLING_TLS_KEY_FILE: not a usable certificate and key/);
    const certs = problemsOf(() => loadConfig({ BILLING_TOKENS: `ops:${OPS}=admin`, BILLING_CERT_SCOPES: 'ops=spend,Nope=spend' }));
    expect(certs).toContain('BILLING_CERT_SCOPES entry 1 ("ops"): the name "ops" is configured more than once');
    expect(certs).toContain('BILLING_CERT_SCOPES entry 2: must be name=scope+scope; the name must be 1-64 characters of a-z 0-9 . _ -');
  });
});

describe('the name is the actor', () => {
  it('of a named token, a hashed token and an old unnamed one', async () => {
    const env = { BILLING_TOKENS: `agent:${AGENT}=admin,ops:sha256:${sha256(OPS)}=admin,old-style-token-0123=admin` };
    expect(await callAs(env, AGENT)).toEqual({ actor: 'agent', via: 'token' });
    expect(await callAs(env, OPS)).toEqual({ actor: 'ops', via: 'token' });
    expect(await callAs(env, 'old-style-token-0123')).toEqual({ actor: 'token-3', via: 'token' });
    // The hash itself is no credential.
    await expect(callAs(env, sha256(OPS))).rejects.toThrow('missing or unknown bearer token');
    await expect(callAs(env, undefined)).rejects.toThrow('missing or unknown bearer token');
    expect(await callAs({}, undefined)).toEqual({ actor: 'open', via: 'open' });
  });

  it('names the caller refused for lack of a scope', async () => {
    await expect(callAs({ BILLING_TOKENS: `agent:${AGENT}=spend` }, AGENT)).rejects.toThrow('the caller "agent" lacks the "admin" scope');
  });
});
