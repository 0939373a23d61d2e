// The edge decoder (src/rpc/handler.ts) in the framings the hostile table does not send:
// Connect binary, compressed bodies, gRPC+json envelopes, Connect GET, duplicate JSON keys
// and bodies far over the limit. Each refusal must name its reason (and field where there
// is one), never reach the operation, and never be INTERNAL.
import http2 from 'node:http2';
import { gzipSync } from 'node:zlib';
import { create, toBinary } from '@bufbuild/protobuf';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GetBalanceRequestSchema } from '../../gen/billing/v1/billing_service_pb.js';
import { startTestApp, type TestApp } from '../support/app.js';

let t: TestApp;

beforeAll(async () => {
  t = await startTestApp();
});

afterAll(async () => {
  await t?.close();
});

const GET_BALANCE = 'billing.v1.BillingService/GetBalance';
const GRANT = 'billing.v1.BillingService/Grant';

/** A Connect unary POST over HTTP/1.1; returns status and the parsed JSON error, if any. */
async function post(path: string, body: Uint8Array | string, headers: Record<string, string>) {
  const res = await fetch(`${t.url}/${path}`, { method: 'POST', headers, body });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const isJson = (res.headers.get('content-type') ?? '').startsWith('application/json');
  return { status: res.status, error: isJson ? (JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>) : undefined };
}

function detail(error: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  const details = (error?.details ?? []) as { type: string; debug?: Record<string, unknown> }[];
  return details.find((d) => d.type === 'billing.v1.ErrorDetail')?.debug;
}

/** One raw gRPC call over HTTP/2: the grpc-status and grpc-message it ended with. */
function grpcCall(path: string, contentType: string, message: Uint8Array): Promise<{ status: string; message: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(t.url);
    session.on('error', reject);
    const envelope = Buffer.alloc(5 + message.byteLength);
    envelope.writeUInt32BE(message.byteLength, 1);
    envelope.set(message, 5);
    const req = session.request({ ':method': 'POST', ':path': `/${path}`, 'content-type': contentType, te: 'trailers' });
    let status = '';
    let text = '';
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
      if (h['grpc-message'] !== undefined) text = decodeURIComponent(String(h['grpc-message']));
    };
    req.on('response', take);
    req.on('trailers', take);
    req.on('data', () => undefined);
    req.on('end', () => {
      session.close();
      resolve({ status, message: text });
    });
    req.on('error', reject);
    req.end(envelope);
  });
}

async function balanceRows(userId: string): Promise<number> {
  return (await t.app.db.query('select 1 from user_accounts where user_id = $1', [userId])).length;
}

describe('edge decoding beyond Connect JSON and gRPC binary', () => {
  it('Connect binary: a valid body works; an undecodable or oversized one is refused with its reason', async () => {
    const valid = toBinary(GetBalanceRequestSchema, create(GetBalanceRequestSchema, { userId: 'edge-bin' }));
    expect((await post(GET_BALANCE, valid, { 'content-type': 'application/proto' })).status).toBe(200);
    const broken = await post(GET_BALANCE, Uint8Array.of(0x0a, 0x05, 0x61), { 'content-type': 'application/proto' });
    expect(broken.error?.code).toBe('invalid_argument');
    expect(detail(broken.error)).toMatchObject({ reason: 'ERROR_REASON_MALFORMED_REQUEST' });
    const badUtf8 = await post(GET_BALANCE, Uint8Array.of(0x0a, 0x02, 0x61, 0xff), { 'content-type': 'application/proto' });
    expect(badUtf8.error?.code).toBe('invalid_argument');
    const huge = await post(GET_BALANCE, new Uint8Array(300 * 1024), { 'content-type': 'application/proto' });
    expect(huge.error?.code).toBe('resource_exhausted');
    expect(detail(huge.error)).toMatchObject({ reason: 'ERROR_REASON_REQUEST_TOO_LARGE' });
  });

  it('refuses a compressed request instead of decoding it unchecked', async () => {
    const body = gzipSync(JSON.stringify({ userId: 'edge-gz', idempotencyKey: 'k', amountMillicredits: '0x10', reason: 'r' }));
    // The server accepts no request compression, so the protocol's own answer applies.
    const res = await post(GRANT, body, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
    expect(res.error?.code).toBe('unimplemented');
    expect(await balanceRows('edge-gz')).toBe(0);
  });

  it('gRPC+json envelopes get the strict JSON checks; a content-encoding header does not bypass gRPC binary checks', async () => {
    const lax = new TextEncoder().encode(JSON.stringify({ userId: 'edge-env', idempotencyKey: 'k', amountMillicredits: '0x10', reason: 'r' }));
    const refused = await grpcCall(GRANT, 'application/grpc+json', lax);
    expect(refused.status).toBe('3');
    expect(refused.message).toMatch(/amount_millicredits/);
    expect(await balanceRows('edge-env')).toBe(0);
    const badUtf8 = Uint8Array.of(0x0a, 0x02, 0x61, 0xff);
    const binary = await new Promise<{ status: string }>((resolve, reject) => {
      const session = http2.connect(t.url);
      const req = session.request({ ':method': 'POST', ':path': `/${GET_BALANCE}`, 'content-type': 'application/grpc', te: 'trailers', 'content-encoding': 'gzip' });
      let status = '';
      req.on('response', (h) => (status = String(h['grpc-status'] ?? status)));
      req.on('trailers', (h) => (status = String(h['grpc-status'] ?? status)));
      req.on('data', () => undefined);
      req.on('end', () => (session.close(), resolve({ status })));
      req.on('error', reject);
      req.end(Buffer.concat([Buffer.from([0, 0, 0, 0, badUtf8.byteLength]), badUtf8]));
    });
    expect(binary.status).toBe('3');
  });

  it('a Connect GET message gets the same checks as a POST body', async () => {
    const get = async (message: string) => {
      const res = await fetch(`${t.url}/${GET_BALANCE}?connect=v1&encoding=json&message=${encodeURIComponent(message)}`);
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };
    const ok = await get('{"userId":"edge-get"}');
    expect(ok.status).toBe(200);
    const unknown = await get('{"userId":"edge-get","userName":"x"}');
    expect(unknown.json.code).toBe('invalid_argument');
    expect(detail(unknown.json)).toMatchObject({ reason: 'ERROR_REASON_INVALID_FIELD', field: 'userName' });
  });

  it('refuses a JSON key sent twice in one object', async () => {
    const body = '{"userId":"edge-dup","idempotencyKey":"k","amountMillicredits":"1","amountMillicredits":"1000000","reason":"r"}';
    const res = await post(GRANT, body, { 'content-type': 'application/json' });
    expect(res.error?.code).toBe('invalid_argument');
    expect(detail(res.error)).toMatchObject({ reason: 'ERROR_REASON_INVALID_FIELD', field: 'amountMillicredits' });
    expect(await balanceRows('edge-dup')).toBe(0);
  });

  it('answers a body declared far over the limit without reading it, and the server stays up', async () => {
    const answer = await new Promise<number>((resolve, reject) => {
      const session = http2.connect(t.url);
      const req = session.request({ ':method': 'POST', ':path': `/${GET_BALANCE}`, 'content-type': 'application/json', 'content-length': String(64 * 1024 * 1024) });
      req.on('response', (h) => resolve(Number(h[':status'])));
      req.on('error', reject);
      req.write(Buffer.alloc(1024));
      setTimeout(() => session.destroy(), 5_000).unref();
    });
    expect(answer).toBe(429);
    const balance = await t.billing.getBalance({ userId: 'edge-after' });
    expect(balance.balance?.balanceMillicredits).toBe(0n);
  });
});
