// One port, every protocol (src/server.ts): the listener reads the first bytes of each
// connection, puts them back and hands the socket itself to Node's HTTP/2 or HTTP/1.1
// server. Each client kind below grants credits to a user of its own and reads them back
// over that port: grpc-js (h2c), Connect JSON and binary over HTTP/1.1 and HTTP/2, gRPC-Web
// over HTTP/1.1 and HTTP/2. Raw clients then split their first bytes over many TCP writes,
// one byte each (the sniff sees 1, then 2, then 3 bytes; the HTTP/2 preface and the frames
// after it arrive while the socket is handed over), and a connection that sends nothing, or
// too little to tell, is closed by the first-bytes timeout.
import { fileURLToPath } from 'node:url';
import http2 from 'node:http2';
import net from 'node:net';
import { Duplex } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { type Client, createClient, type Transport } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { startTestApp, type TestApp } from '../support/app.js';

const FIRST_BYTES_MS = 500;
const GET_BALANCE = '/billing.v1.BillingService/GetBalance';
/** Generous: the machine is shared; nothing here is a timing assertion. */
const CLOSE_WAIT_MS = 15_000;
/** Pause between the one-byte writes, so that each goes out as a TCP segment of its own. */
const BYTE_GAP_MS = 3;

const root = fileURLToPath(new URL('../..', import.meta.url));

let t: TestApp;
const grpcClients: grpc.Client[] = [];

beforeAll(async () => {
  t = await startTestApp({ env: { CONNECTION_FIRST_BYTES_TIMEOUT_MS: String(FIRST_BYTES_MS) } });
});
afterAll(async () => {
  for (const c of grpcClients) c.close();
  await t?.close();
});

/** A grpc-js client for BillingService, from proto/ (no code of ours). */
function grpcJsBilling(): grpc.Client {
  const definition = protoLoader.loadSync(['billing/v1/billing_service.proto'], { longs: String, defaults: true, oneofs: true, includeDirs: [`${root}proto`] });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as { billing: { v1: { BillingService: grpc.ServiceClientConstructor } } };
  const c = new loaded.billing.v1.BillingService(`127.0.0.1:${t.app.server.port}`, grpc.credentials.createInsecure());
  grpcClients.push(c);
  return c;
}

function grpcJsCall<Res>(c: grpc.Client, method: string, req: object): Promise<Res> {
  const fn = (c as unknown as Record<string, (r: object, m: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: unknown) => void) => void>)[method]!;
  return new Promise((resolve, reject) =>
    fn.call(c, req, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, res) => (err ? reject(err) : resolve(res as Res))),
  );
}

describe('every protocol on the one port', () => {
  const connectClients: [string, Transport][] = [];
  beforeAll(() => {
    const baseUrl = t.url;
    connectClients.push(
      ['Connect JSON over HTTP/1.1', createConnectTransport({ baseUrl, httpVersion: '1.1', useBinaryFormat: false })],
      ['Connect binary over HTTP/1.1', createConnectTransport({ baseUrl, httpVersion: '1.1', useBinaryFormat: true })],
      ['Connect JSON over HTTP/2', createConnectTransport({ baseUrl, httpVersion: '2', useBinaryFormat: false })],
      ['Connect binary over HTTP/2', createConnectTransport({ baseUrl, httpVersion: '2', useBinaryFormat: true })],
      ['gRPC-Web over HTTP/1.1', createGrpcWebTransport({ baseUrl, httpVersion: '1.1' })],
      ['gRPC-Web over HTTP/2', createGrpcWebTransport({ baseUrl, httpVersion: '2' })],
      ['gRPC (connect-node)', createGrpcTransport({ baseUrl })],
    );
  });

  it('grpc-js grants and reads back over h2c', async () => {
    const c = grpcJsBilling();
    const userId = `one-port-grpcjs-${process.pid}`;
    await grpcJsCall(c, 'Grant', { userId, idempotencyKey: `g-${userId}`, amountMillicredits: '7000', reason: 'one port' });
    const res = await grpcJsCall<{ balance: { balanceMillicredits: string } }>(c, 'GetBalance', { userId });
    expect(res.balance.balanceMillicredits).toBe('7000');
  });

  it('Connect (JSON, binary; HTTP/1.1, HTTP/2), gRPC-Web (HTTP/1.1, HTTP/2) and gRPC each grant and read back', async () => {
    const seen: [string, bigint | undefined][] = [];
    for (const [name, transport] of connectClients) {
      const billing: Client<typeof BillingService> = createClient(BillingService, transport);
      const userId = `one-port-${name.replace(/\W+/g, '-')}-${process.pid}`;
      await billing.grant({ userId, idempotencyKey: `g-${userId}`, grant: { case: 'amountMillicredits', value: 3000n }, reason: 'one port' });
      // A second call on the same connection (HTTP/1.1 keep-alive, the same HTTP/2 session).
      const res = await billing.getBalance({ userId });
      seen.push([name, res.balance?.balanceMillicredits]);
    }
    expect(seen).toEqual(connectClients.map(([name]) => [name, 3000n]));
  });
});

/**
 * A duplex over a TCP connection that sends its first `slowBytes` bytes one per write,
 * BYTE_GAP_MS apart, then the rest as written: the server sees the HTTP/2 preface (and
 * whatever follows it) arrive in pieces.
 */
function tricklingConnection(port: number, slowBytes: number): Duplex {
  const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
  let sent = 0;
  let chain = Promise.resolve();
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      chain = chain.then(async () => {
        for (const byte of chunk) {
          if (sent < slowBytes) {
            await new Promise((resolve) => setTimeout(resolve, BYTE_GAP_MS));
            socket.write(Buffer.of(byte));
          } else {
            socket.write(Buffer.of(byte));
          }
          sent += 1;
        }
      });
      chain.then(() => callback(), callback);
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(error, callback) {
      socket.destroy(error ?? undefined);
      callback(error);
    },
  });
  socket.on('data', (data: Buffer) => {
    if (!duplex.push(data)) socket.pause();
  });
  socket.once('end', () => duplex.push(null));
  socket.once('error', (error) => duplex.destroy(error));
  return duplex;
}

/** One Connect JSON unary call on a raw HTTP/2 session; resolves with status and body. */
function h2JsonCall(session: http2.ClientHttp2Session, path: string, body: object): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/json' });
    let status = 0;
    let text = '';
    stream.on('response', (headers) => (status = Number(headers[':status'])));
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => (text += d));
    stream.on('end', () => resolve({ status, body: text }));
    stream.on('error', reject);
    stream.end(JSON.stringify(body));
  });
}

/** Opens a raw TCP connection; resolves with everything the server sent once it closes. */
function rawExchange(port: number, send: (socket: net.Socket) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', noDelay: true });
    let text = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (text += d));
    socket.once('error', reject);
    socket.once('close', () => resolve(text));
    socket.once('connect', () => send(socket));
  });
}

async function writeByteByByte(socket: net.Socket, text: string): Promise<void> {
  for (const byte of Buffer.from(text)) {
    socket.write(Buffer.of(byte));
    await new Promise((resolve) => setTimeout(resolve, BYTE_GAP_MS));
  }
}

describe('first bytes split over many TCP writes', () => {
  it('HTTP/2: the preface, SETTINGS and the first request one byte at a time, then two calls on the session', async () => {
    const userId = `one-port-trickled-h2-${process.pid}`;
    await t.billing.grant({ userId, idempotencyKey: `g-${userId}`, grant: { case: 'amountMillicredits', value: 4000n }, reason: 'one port' });
    // 24 bytes of preface, the client's SETTINGS and WINDOW_UPDATE, then the first request's
    // HEADERS and DATA: all of it one byte per TCP write.
    const session = http2.connect(t.url, { createConnection: () => tricklingConnection(t.app.server.port, 400) });
    session.on('error', () => {});
    try {
      const first = await h2JsonCall(session, GET_BALANCE, { userId });
      const second = await h2JsonCall(session, GET_BALANCE, { userId });
      expect([first.status, JSON.parse(first.body).balance?.balanceMillicredits]).toEqual([200, '4000']);
      expect([second.status, JSON.parse(second.body).balance?.balanceMillicredits]).toEqual([200, '4000']);
    } finally {
      session.destroy();
    }
  });

  it('HTTP/1.1: the request one byte at a time is answered', async () => {
    const userId = `one-port-trickled-h1-${process.pid}`;
    await t.billing.grant({ userId, idempotencyKey: `g-${userId}`, grant: { case: 'amountMillicredits', value: 2000n }, reason: 'one port' });
    const body = JSON.stringify({ userId });
    const answer = await rawExchange(t.app.server.port, (s) => {
      void writeByteByByte(s, `POST ${GET_BALANCE} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
    });
    expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)).balance?.balanceMillicredits).toBe('2000');
  });
});

describe('the first-bytes timeout', () => {
  const closedBy = (send: (socket: net.Socket) => void) =>
    Promise.race([
      rawExchange(t.app.server.port, send).then((text) => ({ closed: true, text })),
      new Promise<{ closed: false }>((resolve) => setTimeout(() => resolve({ closed: false }), CLOSE_WAIT_MS)),
    ]);

  it('closes a connection that sends nothing, unanswered', async () => {
    expect(await closedBy(() => {})).toEqual({ closed: true, text: '' });
  });

  it('closes a connection that sends two bytes of a preface and stops, unanswered', async () => {
    expect(await closedBy((s) => s.write('PR'))).toEqual({ closed: true, text: '' });
  });

  it('still serves the port after those', async () => {
    expect((await t.billing.getBalance({ userId: 'one-port-after' })).balance?.balanceMillicredits).toBe(0n);
  });
});
