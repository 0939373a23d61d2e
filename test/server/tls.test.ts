// TLS on the one port (src/server.ts), with certificates made at test time by openssl
// (test/support/certificates.ts): gRPC from grpc-js, Connect over HTTP/1.1 and HTTP/2 and
// gRPC-Web from connect-node all over TLS on the same port (a silent connection closed by
// the first-bytes timeout, as on plaintext); the certificate reloaded when
// its files change (a pair that does not load is kept out); mutual TLS, where a client
// without a certificate of the configured CA is refused and a good certificate's CN is the
// actor (seen in the scope refusals, which name the caller).
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Code, createClient } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { CertificateAuthority, type Pair } from '../support/certificates.js';
import { failure, key, outcome, startTestApp, type TestApp } from '../support/app.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const AGENT = 'agent-token-0123456789abcdef';
const auth = { headers: { authorization: `Bearer ${AGENT}` } };
/** Generous: the machine is shared; nothing here is a timing assertion. */
const RELOAD_WAIT_MS = 20_000;
const CLOSE_WAIT_MS = 15_000;

const ca = new CertificateAuthority('billing test CA');
const otherCa = new CertificateAuthority('another CA');

/** Writes a pair to files in a fresh folder; returns their paths. */
function files(pair: Pair, dir = mkdtempSync(join(tmpdir(), 'billing-tls-'))) {
  writeFileSync(join(dir, 'server.crt'), pair.cert);
  writeFileSync(join(dir, 'server.key'), pair.key);
  writeFileSync(join(dir, 'ca.crt'), ca.cert);
  return { dir, cert: join(dir, 'server.crt'), key: join(dir, 'server.key'), ca: join(dir, 'ca.crt') };
}

type Secure = { ca: Buffer; cert?: Buffer; key?: Buffer };
const baseUrl = (t: TestApp) => `https://localhost:${t.app.server.port}`;

function clients(t: TestApp, secure: Secure) {
  const nodeOptions = { ca: secure.ca, ...(secure.cert ? { cert: secure.cert, key: secure.key } : {}) };
  // Node's https passes this on to tls.connect, though its RequestOptions type does not name it.
  const alpnHttp1 = { ...nodeOptions, ALPNProtocols: ['http/1.1'] };
  return {
    grpc: createClient(BillingService, createGrpcTransport({ baseUrl: baseUrl(t), nodeOptions })),
    connectH1: createClient(BillingService, createConnectTransport({ baseUrl: baseUrl(t), httpVersion: '1.1', nodeOptions })),
    // An HTTP/1.1 client that names http/1.1 in ALPN (Node's https sends no ALPN by default).
    connectH1Alpn: createClient(BillingService, createConnectTransport({ baseUrl: baseUrl(t), httpVersion: '1.1', nodeOptions: alpnHttp1 })),
    connectH2: createClient(BillingService, createConnectTransport({ baseUrl: baseUrl(t), httpVersion: '2', nodeOptions })),
    grpcWeb: createClient(BillingService, createGrpcWebTransport({ baseUrl: baseUrl(t), httpVersion: '1.1', nodeOptions })),
    adminGrpc: createClient(AdminService, createGrpcTransport({ baseUrl: baseUrl(t), nodeOptions })),
    adminH1: createClient(AdminService, createConnectTransport({ baseUrl: baseUrl(t), httpVersion: '1.1', nodeOptions })),
  };
}

/** The SHA-256 fingerprint of the certificate a new TLS connection is shown. */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, ALPNProtocols: ['h2'] }, () => {
      const fingerprint = socket.getPeerCertificate().fingerprint256;
      socket.destroy();
      resolve(fingerprint);
    });
    socket.once('error', reject);
  });
}

const fingerprintOf = (pair: Pair) => new X509Certificate(pair.cert).fingerprint256;

describe('TLS on the one port', () => {
  let t: TestApp;
  const grpcClients: grpc.Client[] = [];
  beforeAll(async () => {
    const f = files(ca.server());
    t = await startTestApp({
      env: { HOST: '127.0.0.1', BILLING_TOKENS: `agent:${AGENT}=spend+grant`, BILLING_TLS_CERT_FILE: f.cert, BILLING_TLS_KEY_FILE: f.key, CONNECTION_FIRST_BYTES_TIMEOUT_MS: '500' },
    });
  });
  afterAll(async () => {
    for (const c of grpcClients) c.close();
    await t?.close();
  });

  it('serves gRPC (grpc-js and connect-node), Connect over HTTP/1.1 and HTTP/2 and gRPC-Web', async () => {
    const c = clients(t, { ca: ca.cert });
    const userId = `tls-${key()}`;
    await c.grpc.grant({ userId, idempotencyKey: key(), grant: { case: 'amountMillicredits', value: 1000n }, reason: 'tls' }, auth);
    for (const [kind, client] of Object.entries({ grpc: c.grpc, connectH1: c.connectH1, connectH1Alpn: c.connectH1Alpn, connectH2: c.connectH2, grpcWeb: c.grpcWeb })) {
      expect((await client.getBalance({ userId }, auth)).balance?.balanceMillicredits, kind).toBe(1000n);
    }
    // grpc-js, from proto/ with its own TLS credentials.
    const definition = protoLoader.loadSync(['billing/v1/billing_service.proto'], { longs: String, defaults: true, oneofs: true, includeDirs: [`${root}proto`] });
    const loaded = grpc.loadPackageDefinition(definition) as unknown as { billing: { v1: { BillingService: grpc.ServiceClientConstructor } } };
    const g = new loaded.billing.v1.BillingService(`localhost:${t.app.server.port}`, grpc.credentials.createSsl(ca.cert));
    grpcClients.push(g);
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${AGENT}`);
    const balance = await new Promise<{ balance: { balanceMillicredits: string } }>((resolve, reject) => {
      (g as unknown as Record<string, (r: object, m: grpc.Metadata, cb: (e: unknown, v: unknown) => void) => void>).getBalance!({ userId }, metadata, (e, v) =>
        e ? reject(e) : resolve(v as { balance: { balanceMillicredits: string } }),
      );
    });
    expect(balance.balance.balanceMillicredits).toBe('1000');
  });

  it('names the token caller as the actor', async () => {
    const c = clients(t, { ca: ca.cert });
    const { error } = await failure(c.adminGrpc.verifyLedger({}, auth));
    expect(error.code).toBe(Code.PermissionDenied);
    expect(error.rawMessage).toBe('the caller "agent" lacks the "admin" scope');
  });

  it('closes a connection that does not finish its handshake within the first-bytes timeout', async () => {
    const socket = net.connect(t.app.server.port, '127.0.0.1');
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    const closed = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), CLOSE_WAIT_MS);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    socket.destroy();
    expect(closed).toBe(true);
    expect(Buffer.concat(received).length).toBe(0);
  });

  it('gives a plaintext client nothing', async () => {
    const plain = createClient(BillingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${t.app.server.port}` }));
    const o = await outcome(plain.getBalance({ userId: 'u' }, auth));
    expect(o.ok).toBe(false);
  });
});

describe('certificate reload', () => {
  let t: TestApp;
  let f: ReturnType<typeof files>;
  beforeAll(async () => {
    f = files(ca.server('first'));
    t = await startTestApp({ env: { HOST: '127.0.0.1', BILLING_TOKENS: `agent:${AGENT}=spend`, BILLING_TLS_CERT_FILE: f.cert, BILLING_TLS_KEY_FILE: f.key } });
  });
  afterAll(async () => t?.close());

  async function waitForFingerprint(expected: string): Promise<void> {
    const until = Date.now() + RELOAD_WAIT_MS;
    let served = await servedFingerprint(t.app.server.port);
    while (served !== expected && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      served = await servedFingerprint(t.app.server.port);
    }
    expect(served).toBe(expected);
  }

  it('shows new connections the new certificate once the files change, and keeps it when a bad pair comes', async () => {
    const first = await servedFingerprint(t.app.server.port);
    const second = ca.server('second');
    // A rotation as tools do it: a new file renamed over the old one, key first.
    const staging = files(second);
    renameSync(staging.key, f.key);
    renameSync(staging.cert, f.cert);
    await waitForFingerprint(fingerprintOf(second));
    expect(first).not.toBe(fingerprintOf(second));
    const c = clients(t, { ca: ca.cert });
    expect((await c.connectH2.getBalance({ userId: 'reloaded' }, auth)).balance?.userId).toBe('reloaded');

    // A certificate whose key is not the one in the key file: logged, and the second pair kept.
    writeFileSync(f.cert, ca.server('third').cert);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    expect(await servedFingerprint(t.app.server.port)).toBe(fingerprintOf(second));
    expect((await c.connectH1.getBalance({ userId: 'kept' }, auth)).balance?.userId).toBe('kept');
  });
});

describe('mutual TLS', () => {
  let t: TestApp;
  const ops = ca.client('ops');
  const reader = ca.client('reader');
  const stranger = ca.client('stranger');
  const impostor = otherCa.client('ops');
  beforeAll(async () => {
    const f = files(ca.server());
    t = await startTestApp({
      env: {
        HOST: '127.0.0.1',
        BILLING_TOKENS: `agent:${AGENT}=spend`,
        BILLING_CERT_SCOPES: 'ops=admin+spend,reader=spend',
        BILLING_TLS_CERT_FILE: f.cert,
        BILLING_TLS_KEY_FILE: f.key,
        BILLING_TLS_CLIENT_CA_FILE: f.ca,
      },
    });
  });
  afterAll(async () => t?.close());

  it('refuses a client without a certificate, or with one from another CA', async () => {
    for (const secure of [{ ca: ca.cert }, { ca: ca.cert, ...impostor }]) {
      const c = clients(t, secure);
      for (const call of [() => c.grpc.getBalance({ userId: 'u' }, auth), () => c.connectH1.getBalance({ userId: 'u' }, auth)]) {
        const o = await outcome(call());
        // Refused in the handshake: no answer of the service (which would be a Connect code with its message).
        expect(o.ok).toBe(false);
        if (!o.ok) expect([Code.Unavailable, Code.Internal, Code.Unknown, Code.Canceled, Code.Aborted], o.error.message).toContain(o.error.code);
      }
    }
  });

  it("makes a good certificate's CN the actor, over HTTP/2 and HTTP/1.1", async () => {
    const asOps = clients(t, { ca: ca.cert, ...ops });
    expect((await asOps.adminGrpc.verifyLedger({})).ok).toBe(true);
    expect((await asOps.adminH1.verifyLedger({})).ok).toBe(true);
    const asReader = clients(t, { ca: ca.cert, ...reader });
    expect((await asReader.grpc.getBalance({ userId: 'r' })).balance?.userId).toBe('r');
    for (const call of [() => asReader.adminGrpc.verifyLedger({}), () => asReader.adminH1.verifyLedger({})]) {
      const { error } = await failure(call());
      expect(error.code).toBe(Code.PermissionDenied);
      expect(error.rawMessage).toBe('the caller "reader" lacks the "admin" scope');
    }
  });

  it('refuses a certificate that names no certificate caller, and lets a bearer token name the actor', async () => {
    const asStranger = clients(t, { ca: ca.cert, ...stranger });
    const { error } = await failure(asStranger.grpc.getBalance({ userId: 's' }));
    expect(error.code).toBe(Code.Unauthenticated);
    expect(error.rawMessage).toBe('the client certificate "stranger" is not a configured caller (BILLING_CERT_SCOPES)');
    // A token on a certificate's connection is the caller: ops's certificate, agent's token.
    const asOps = clients(t, { ca: ca.cert, ...ops });
    const refused = await failure(asOps.adminGrpc.verifyLedger({}, auth));
    expect(refused.error.rawMessage).toBe('the caller "agent" lacks the "admin" scope');
  });
});
