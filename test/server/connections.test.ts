// Defect 3 of issue 11: connections that send nothing, or send it too slowly, are closed on
// explicit timeouts, and the number of connections and of calls in flight is bounded
// (src/server.ts, ServerLimits). Thousands of idle and slow connections of every kind —
// silent TCP, an HTTP/1.1 header trickled, an HTTP/2 preface with nothing after, an
// HTTP/1.1 body trickled, an HTTP/2 request body trickled — are closed within the
// configured timeouts while normal calls over HTTP/2 and HTTP/1.1 keep succeeding; past the
// connection cap new connections are closed and service resumes once others go; past the
// cap on calls in flight new calls are refused UNAVAILABLE and served again after.
// Outcomes are counted, not timed: the only time bounds are generous ones (SLACK_MS).
import { execFileSync } from 'node:child_process';
import http2 from 'node:http2';
import net from 'node:net';
import { Code, createClient } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport } from '@connectrpc/connect-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { outcome, startTestApp, type TestApp } from '../support/app.js';

const FIRST_BYTES_MS = 1_000;
const IDLE_MS = 1_500;
const HEADERS_MS = 1_500;
const REQUEST_MS = 2_500;
/** How late past its timeout a connection may be closed on a loaded, shared machine. */
const SLACK_MS = 15_000;
/** How early: timers are not exact, and the client's clock starts a little after the server's. */
const EARLY_MS = 150;
const TRICKLE_MS = 400;
const H2_PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
const GET_BALANCE = '/billing.v1.BillingService/GetBalance';

/** The open-file limit this process's children inherit (Node raises the soft limit at start). */
function fileLimit(): number {
  const text = execFileSync('sh', ['-c', 'ulimit -n']).toString().trim();
  return text === 'unlimited' ? 1_000_000 : Number(text);
}

/**
 * Client and server sockets both live in this process: two descriptors per connection,
 * and a margin for the database pool, the test app and vitest.
 */
const CONNECTIONS = Math.max(200, Math.min(2_000, Math.floor((fileLimit() - 1_000) / 2)));

interface Probe {
  readonly kind: string;
  readonly timeoutMs: number;
  /** Milliseconds from opening to the server closing it; undefined while open. */
  closedAfterMs?: number;
}

/** Opens a TCP connection; resolves once connected, records when the server closes it. */
function rawConnection(port: number, probe: Probe, onConnect: (socket: net.Socket) => void): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const opened = Date.now();
    const socket = net.connect(port, '127.0.0.1');
    socket.on('data', () => {});
    socket.on('error', () => {});
    socket.once('close', () => {
      probe.closedAfterMs = Date.now() - opened;
    });
    socket.once('connect', () => {
      onConnect(socket);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Writes one byte of `text` every TRICKLE_MS until the socket closes. */
function trickle(socket: net.Socket, text: string): void {
  let i = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || socket.writableEnded) return clearInterval(timer);
    socket.write(text[i % text.length]!);
    i += 1;
  }, TRICKLE_MS);
  socket.once('close', () => clearInterval(timer));
}

/** An HTTP/2 session with one GetBalance stream whose body trickles; records when the stream is reset. */
function slowH2Stream(url: string, probe: Probe, sessions: http2.ClientHttp2Session[]): Promise<void> {
  return new Promise((resolve) => {
    const opened = Date.now();
    const session = http2.connect(url);
    sessions.push(session);
    session.on('error', () => {});
    const stream = session.request({ ':method': 'POST', ':path': GET_BALANCE, 'content-type': 'application/json' }, { endStream: false });
    stream.on('error', () => {});
    stream.on('data', () => {});
    stream.once('close', () => {
      probe.closedAfterMs = Date.now() - opened;
    });
    stream.write('{');
    const timer = setInterval(() => {
      if (stream.destroyed || stream.closed) return clearInterval(timer);
      stream.write(' ');
    }, TRICKLE_MS);
    stream.once('close', () => clearInterval(timer));
    session.once('connect', () => resolve());
  });
}

async function until(condition: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Calls GetBalance over HTTP/2 (gRPC) and HTTP/1.1 (Connect) one after another until stopped; counts outcomes. */
function normalCalls(t: TestApp) {
  const counts = { ok: 0, failed: [] as string[] };
  let running = true;
  const loop = async (call: () => Promise<unknown>) => {
    while (running) {
      const o = await outcome(call());
      if (o.ok) counts.ok += 1;
      else counts.failed.push(`${Code[o.error.code]}: ${o.error.message}`);
    }
  };
  const done = Promise.all([
    loop(() => t.billing.getBalance({ userId: 'steady-h2' })),
    loop(() => t.billingHttp1.getBalance({ userId: 'steady-h1' })),
  ]);
  return {
    counts,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

describe('idle and slow connections', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({
      env: {
        CONNECTION_FIRST_BYTES_TIMEOUT_MS: String(FIRST_BYTES_MS),
        CONNECTION_IDLE_TIMEOUT_MS: String(IDLE_MS),
        REQUEST_HEADERS_TIMEOUT_MS: String(HEADERS_MS),
        REQUEST_TIMEOUT_MS: String(REQUEST_MS),
        CONNECTIONS_MAX: String(CONNECTIONS + 100),
      },
    });
  });
  afterAll(async () => {
    await t?.close();
  });

  it(`closes ${CONNECTIONS} idle and slow connections within their timeouts while calls go on`, async () => {
    console.log(`connections: ${CONNECTIONS} (ulimit -n ${fileLimit()})`);
    const port = t.app.server.port;
    const share = Math.floor(CONNECTIONS / 10);
    const plan: [string, number, number][] = [
      // [kind, count, the timeout that must close it], the longest-lived first so that most are open at once
      ['HTTP/2 request body trickled', share / 2, REQUEST_MS],
      ['HTTP/1.1 body trickled', share * 2, REQUEST_MS],
      ['HTTP/1.1 keep-alive after a call', share / 2, IDLE_MS],
      ['HTTP/2 preface, then silence', share * 2, IDLE_MS],
      ['HTTP/1.1 header trickled', share * 2, HEADERS_MS],
      ['two bytes, then silence', share / 2, FIRST_BYTES_MS],
      ['silent TCP', CONNECTIONS - 7.5 * share, FIRST_BYTES_MS],
    ];
    const steady = normalCalls(t);
    const probes: Probe[] = [];
    const sockets: net.Socket[] = [];
    const sessions: http2.ClientHttp2Session[] = [];
    const body = JSON.stringify({ userId: 'slow-body' });
    const openers: Record<string, (probe: Probe) => Promise<unknown>> = {
      'silent TCP': (p) => rawConnection(port, p, () => {}),
      'two bytes, then silence': (p) => rawConnection(port, p, (s) => s.write('PO')),
      'HTTP/1.1 header trickled': (p) =>
        rawConnection(port, p, (s) => {
          s.write(`POST ${GET_BALANCE} HTTP/1.1\r\nhost: x\r\nx-slow: `);
          trickle(s, 'abcdefgh');
        }),
      'HTTP/1.1 body trickled': (p) =>
        rawConnection(port, p, (s) => {
          s.write(`POST ${GET_BALANCE} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n`);
          trickle(s, ' ');
        }),
      'HTTP/2 preface, then silence': (p) => rawConnection(port, p, (s) => s.write(H2_PREFACE)),
      'HTTP/1.1 keep-alive after a call': (p) =>
        rawConnection(port, p, (s) => {
          s.write(`POST ${GET_BALANCE} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
        }),
      'HTTP/2 request body trickled': (p) => slowH2Stream(t.url, p, sessions),
    };
    try {
      for (const [kind, count, timeoutMs] of plan) {
        const batch: Promise<unknown>[] = [];
        for (let i = 0; i < count; i += 1) {
          const probe: Probe = { kind, timeoutMs };
          probes.push(probe);
          batch.push(openers[kind]!(probe).then((s) => s instanceof net.Socket && sockets.push(s)));
          // Not all at once: the listen backlog is finite.
          if (batch.length % 100 === 0) await Promise.all(batch.slice(-100));
        }
        await Promise.all(batch);
      }
      const longest = Math.max(...plan.map(([, , ms]) => ms));
      await until(() => probes.every((p) => p.closedAfterMs !== undefined), longest + SLACK_MS, 'every idle or slow connection to be closed').catch(
        (error: unknown) => {
          const open = new Map<string, number>();
          for (const p of probes) if (p.closedAfterMs === undefined) open.set(p.kind, (open.get(p.kind) ?? 0) + 1);
          throw new Error(`${(error as Error).message}; still open: ${JSON.stringify(Object.fromEntries(open))}`);
        },
      );
    } finally {
      await steady.stop();
      for (const s of sockets) s.destroy();
      for (const s of sessions) s.destroy();
    }
    const summary = new Map<string, { count: number; earliest: number; latest: number; timeoutMs: number }>();
    for (const p of probes) {
      const s = summary.get(p.kind) ?? { count: 0, earliest: Infinity, latest: 0, timeoutMs: p.timeoutMs };
      s.count += 1;
      s.earliest = Math.min(s.earliest, p.closedAfterMs!);
      s.latest = Math.max(s.latest, p.closedAfterMs!);
      summary.set(p.kind, s);
    }
    console.log('closed after (ms):', JSON.stringify(Object.fromEntries(summary)), 'normal calls:', steady.counts.ok, 'failed:', steady.counts.failed.length);
    expect(probes.length).toBeGreaterThanOrEqual(CONNECTIONS);
    // Closed by the timeout meant for it, not by something sooner.
    for (const [kind, s] of summary) expect([kind, s.earliest >= s.timeoutMs - EARLY_MS]).toEqual([kind, true]);
    expect(steady.counts.failed).toEqual([]);
    expect(steady.counts.ok).toBeGreaterThan(0);
  }, 120_000);
});

describe('the connection cap', () => {
  const CAP = 60;
  let t: TestApp;
  beforeAll(async () => {
    // Long timeouts: the connections held open must stay open until the test lets them go.
    t = await startTestApp({ env: { CONNECTIONS_MAX: String(CAP), CONNECTION_FIRST_BYTES_TIMEOUT_MS: '120000' } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('closes connections past the cap as they come, and serves new ones once others go', async () => {
    const port = t.app.server.port;
    // The test app's own gRPC session: one of the CAP.
    expect((await outcome(t.billing.getBalance({ userId: 'cap' }))).ok).toBe(true);
    const held: net.Socket[] = [];
    const heldProbes: Probe[] = [];
    for (let i = 0; i < CAP - 1; i += 1) {
      const probe: Probe = { kind: 'held', timeoutMs: 0 };
      heldProbes.push(probe);
      held.push(await rawConnection(port, probe, () => {}));
    }
    try {
      // Each connection past the cap is accepted and closed at once, before it sees a byte.
      const extra: Probe[] = [];
      for (let i = 0; i < 40; i += 1) {
        const probe: Probe = { kind: 'past the cap', timeoutMs: 0 };
        extra.push(probe);
        await rawConnection(port, probe, (s) => s.write(H2_PREFACE));
      }
      await until(() => extra.every((p) => p.closedAfterMs !== undefined), SLACK_MS, 'connections past the cap to be closed');
      const fresh = createClient(BillingService, createGrpcTransport({ baseUrl: t.url }));
      // The connection is closed before HTTP/2 starts: connect-node reads that as CANCELED, grpc-js as UNAVAILABLE.
      const refused = await outcome(fresh.getBalance({ userId: 'cap' }));
      expect(refused.ok ? 'succeeded' : Code[refused.error.code]).toMatch(/^(Unavailable|Canceled)$/);
      // The connections already open are served as before.
      expect((await outcome(t.billing.getBalance({ userId: 'cap' }))).ok).toBe(true);
      expect(heldProbes.every((p) => p.closedAfterMs === undefined)).toBe(true);
    } finally {
      for (const s of held) s.destroy();
    }
    await until(
      async () => (await outcome(createClient(BillingService, createGrpcTransport({ baseUrl: t.url })).getBalance({ userId: 'cap' }))).ok,
      SLACK_MS,
      'a new connection to be served once the held ones are gone',
    );
  });
});

describe('the cap on calls in flight', () => {
  const CAP = 8;
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ env: { CALLS_IN_FLIGHT_MAX: String(CAP) } });
  });
  afterAll(async () => {
    await t?.close();
  });

  it('refuses calls past the cap UNAVAILABLE, unprocessed, and serves them again once calls finish', async () => {
    const port = t.app.server.port;
    const before = await t.billing.getBalance({ userId: 'busy' });
    // CAP calls in flight: HTTP/1.1 requests whose bodies never come (REQUEST_TIMEOUT_MS is
    // 30 s). EXTRA more are sent: exactly those are answered 503 at once, which shows the
    // server has seen them all and holds CAP.
    const EXTRA = 4;
    const held: net.Socket[] = [];
    let refusedAtOnce = 0;
    for (let i = 0; i < CAP + EXTRA; i += 1) {
      held.push(
        await rawConnection(port, { kind: 'held', timeoutMs: 0 }, (s) => {
          s.once('data', (d: Buffer) => {
            if (d.toString().startsWith('HTTP/1.1 503 ')) refusedAtOnce += 1;
          });
          s.write(`POST ${GET_BALANCE} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n`);
        }),
      );
    }
    const connectH1 = createClient(BillingService, createConnectTransport({ baseUrl: t.url, httpVersion: '1.1' }));
    const connectH2 = createClient(BillingService, createConnectTransport({ baseUrl: t.url, httpVersion: '2' }));
    try {
      await until(() => refusedAtOnce >= EXTRA, SLACK_MS, 'the requests past the cap to be refused');
      expect(refusedAtOnce).toBe(EXTRA);
      const calls: [string, () => Promise<unknown>][] = [
        ['gRPC', () => t.billing.getBalance({ userId: 'busy' })],
        ['Connect over HTTP/2', () => connectH2.getBalance({ userId: 'busy' })],
        ['Connect over HTTP/1.1', () => connectH1.getBalance({ userId: 'busy' })],
        ['a mutation over gRPC', () => t.billing.grant({ userId: 'busy', idempotencyKey: 'refused-grant', grant: { case: 'amountMillicredits', value: 5n }, reason: 'r' })],
      ];
      for (const [protocol, call] of calls) {
        const o = await outcome(call());
        expect([protocol, o.ok ? 'succeeded' : Code[o.error.code]]).toEqual([protocol, 'Unavailable']);
      }
    } finally {
      for (const s of held) s.destroy();
    }
    await until(async () => (await outcome(t.billing.getBalance({ userId: 'busy' }))).ok, SLACK_MS, 'calls to be served again');
    expect((await outcome(connectH1.getBalance({ userId: 'busy' }))).ok).toBe(true);
    // The refused Grant was not processed.
    const after = await t.billing.getBalance({ userId: 'busy' });
    expect(after.balance?.balanceMillicredits).toBe(before.balance?.balanceMillicredits);
  });
});
