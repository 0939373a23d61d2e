// One port for gRPC (h2c), gRPC-Web and Connect over HTTP/2 and HTTP/1.1: a TCP listener
// looks at the first bytes of each connection and hands it to the HTTP/2 server (the
// client sent the h2 preface, "PRI * HTTP/2.0") or to the HTTP/1.1 server. Node has no way
// to peek at a socket, so the bytes read to decide are put back with unshift() and both
// servers take the socket itself: HTTP/1.1 reads them as any buffered data, and HTTP/2
// (Node's http2 core, on the tick after the session starts) feeds the bytes already in the
// socket's buffer to the session before its native handle reads the rest. No JS stream
// sits between the socket and HTTP/2, so its frames are read and written natively.
//
// Every connection is bounded in time and number (ServerLimits): the first bytes must come
// within firstBytesTimeoutMs; an HTTP/1.1 request's headers within headersTimeoutMs and the
// whole request within requestTimeoutMs of its first byte; an HTTP/2 stream's request within
// requestTimeoutMs of the stream opening; a connection with no call in flight closes after
// idleTimeoutMs. At most connectionsMax connections are open (more are closed as they are
// accepted) and at most callsInFlightMax calls are in flight (more are refused unprocessed,
// UNAVAILABLE with a retry hint: safe to retry).
//
// With TLS (optional), each TCP connection is handed to a tls.Server first, which does the
// handshake (within firstBytesTimeoutMs) and offers ALPN h2 and http/1.1; the secure socket
// then goes to the HTTP/2 server when the client chose h2, to HTTP/1.1 when it chose
// http/1.1, and through the same first-bytes sniff when it chose nothing. The certificate
// files are watched and a changed pair is loaded for new connections; a pair that does not
// load is logged and the one in use kept. With a client CA (mutual TLS) a client must
// present a certificate signed by it; its name reaches auth (rpc/auth.ts) on each call.
import { readFileSync, unwatchFile, watchFile, type Stats } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { type ConnectRouter, createContextValues, type Interceptor } from '@connectrpc/connect';
import type { Logger } from 'pino';
import type { TlsFiles } from './config.js';
import { certificateName, PEER_CERTIFICATE_NAME } from './rpc/auth.js';
import { createHandler, type RefusedBeforeHandler } from './rpc/handler.js';

/** Bounds on connections and calls; src/config.ts reads them from the environment. */
export interface ServerLimits {
  /** A new connection must send its first 3 bytes (HTTP/2 or HTTP/1.1?) within this. */
  readonly firstBytesTimeoutMs: number;
  /** A connection with no call in flight (HTTP/1.1 keep-alive, an HTTP/2 session with no stream) is closed after this. */
  readonly idleTimeoutMs: number;
  /** HTTP/1.1: a request's headers must have arrived this long after its first byte. */
  readonly headersTimeoutMs: number;
  /** The whole request (headers and body) must have arrived this long after its first byte (HTTP/1.1) or its stream opened (HTTP/2). */
  readonly requestTimeoutMs: number;
  /** Open TCP connections; more are closed as soon as they are accepted. */
  readonly connectionsMax: number;
  /** Calls in flight over all connections; more are refused before they are read. */
  readonly callsInFlightMax: number;
  /** On close, in-flight calls have this long to finish before their connections are destroyed. */
  readonly shutdownGraceMs: number;
}

export interface ServerOptions {
  readonly port: number;
  readonly host: string;
  /** Largest request message accepted, in bytes. */
  readonly requestBytesMax: number;
  /** Longest deadline a client may ask for, in milliseconds. */
  readonly timeoutMsMax: number;
  readonly limits: ServerLimits;
  readonly interceptors: Interceptor[];
  readonly routes: (router: ConnectRouter) => void;
  /** TLS on the port; undefined: plaintext. */
  readonly tls?: TlsOptions;
  /** Told of each request or connection refused before any handler saw it (app.ts counts them). */
  readonly onRefused?: (reason: RefusedBeforeHandler) => void;
}

export interface TlsOptions extends TlsFiles {
  /** Where certificate reloads (and reloads that failed) are reported. */
  readonly log: Logger;
  /** How often the files are looked at for a change (default 1 s). */
  readonly reloadIntervalMs?: number;
}

export interface RunningServer {
  readonly port: number;
  /** Stops accepting, lets in-flight calls finish for up to graceMs (default: limits.shutdownGraceMs), then closes. */
  close(graceMs?: number): Promise<void>;
}

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

const H2_PREFACE_START = Buffer.from('PRI');
const STREAMS_PER_CONNECTION_MAX = 256;
/** How often Node's HTTP/1.1 server looks for requests past their header or request timeout, at most. */
const H1_TIMEOUT_CHECK_MS_MAX = 1_000;
/** The largest HTTP/2 stream id: a GOAWAY naming it refuses nothing already sent. */
const STREAM_ID_MAX = 2 ** 31 - 1;
/** How long a draining HTTP/2 session waits for the client's PING answer before closing anyway. */
const DRAIN_PING_MS_MAX = 2_000;
const DRAIN_SETTLE_MS = 100;
/** On close, how long idle HTTP/1.1 connections may still bring one last call. */
const H1_DRAIN_MS = 500;
/** The retry hint of a call refused past callsInFlightMax. */
const RETRY_AFTER_SECONDS = 1;
const TLS_RELOAD_INTERVAL_MS = 1_000;

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const { limits } = options;
  const shutdown = new AbortController();
  const handler = createHandler({
    routes: options.routes,
    interceptors: options.interceptors,
    requestBytesMax: options.requestBytesMax,
    timeoutMsMax: options.timeoutMsMax,
    shutdownSignal: shutdown.signal,
    // The certificate's name is read per call: HTTP/1.1 and HTTP/2 requests both reach the TLS socket's peer certificate through req.socket.
    ...(options.tls?.clientCaFile
      ? {
          contextValues: (req: NodeRequest) => {
            const values = createContextValues();
            const name = certificateName(req.socket as tls.TLSSocket);
            if (name !== undefined) values.set(PEER_CERTIFICATE_NAME, name);
            return values;
          },
        }
      : {}),
    ...(options.onRefused ? { onRefused: options.onRefused } : {}),
  });
  const refused = options.onRefused ?? (() => {});
  const calls = callGate(limits.callsInFlightMax, shutdown.signal, handler, refused);
  // Bounds per connection: 32 MB of session memory, 256 calls in flight.
  const h2 = http2.createServer({ maxSessionMemory: 32, settings: { maxConcurrentStreams: STREAMS_PER_CONNECTION_MAX } }, calls.serve);
  const h1 = http.createServer(
    {
      maxHeaderSize: 16 * 1024,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.idleTimeoutMs,
      connectionsCheckingInterval: Math.min(H1_TIMEOUT_CHECK_MS_MAX, Math.ceil(limits.headersTimeoutMs / 4)),
    },
    calls.serve,
  );
  // Node tracks HTTP/1.1 connections (for headersTimeout, requestTimeout and
  // closeIdleConnections) only from the server's 'listening' event, and this server never
  // listens: the TCP listener hands it connections. Without this, a slow header or body
  // would never time out and close() could not tell idle connections from busy ones.
  h1.emit('listening');
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
    closeWhenIdle(session, limits.idleTimeoutMs);
    // A connection accepted before close() but told apart only after it.
    if (shutdown.signal.aborted) drain(session);
  });
  h2.on('stream', (stream) => boundRequestTime(stream, limits.requestTimeoutMs, refused));
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const secure = options.tls ? secureServer(options.tls, limits.firstBytesTimeoutMs) : undefined;
  secure?.server.on('secureConnection', (socket: tls.TLSSocket) => {
    track(socket);
    if (socket.alpnProtocol === 'h2') h2.emit('connection', socket);
    else if (socket.alpnProtocol === 'http/1.1') h1.emit('connection', socket);
    else routeConnection(socket, h1, h2, limits.firstBytesTimeoutMs, refused);
  });
  // noDelay: small gRPC frames must not wait for Nagle + delayed ACK (~40 ms a call).
  const tcp = net.createServer({ noDelay: true, keepAlive: true }, (socket) => {
    track(socket);
    if (secure) secure.server.emit('connection', socket);
    else routeConnection(socket, h1, h2, limits.firstBytesTimeoutMs, refused);
  });
  // Past the cap Node closes each new connection as it is accepted.
  tcp.maxConnections = limits.connectionsMax;
  tcp.on('drop', () => refused('connections_max'));
  try {
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(options.port, options.host, () => resolve());
    });
  } catch (error) {
    secure?.stopWatching();
    throw error;
  }
  const address = tcp.address() as net.AddressInfo;
  return {
    port: address.port,
    close: async (graceMs = limits.shutdownGraceMs) => {
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      shutdown.abort();
      secure?.stopWatching();
      // HTTP/2: GOAWAY; open streams finish, new ones are refused, the session then closes.
      for (const session of sessions) drain(session);
      // HTTP/1.1 has no GOAWAY: every response from now on says "Connection: close", so
      // busy connections close after their answer; idle ones close after H1_DRAIN_MS (a
      // client about to reuse one gets its call answered rather than a reset connection).
      calls.closeAfterResponses();
      const drained = setTimeout(() => h1.close(), Math.min(H1_DRAIN_MS, graceMs));
      const deadline = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, graceMs);
      await closed;
      clearTimeout(drained);
      clearTimeout(deadline);
      h1.close();
    },
  };
}

/**
 * Counts calls in flight and refuses those past the cap before reading them; during
 * shutdown every HTTP/1.1 response closes its connection.
 */
function callGate(
  callsMax: number,
  shutdown: AbortSignal,
  handler: (req: NodeRequest, res: NodeResponse) => void,
  refused: (reason: RefusedBeforeHandler) => void,
) {
  let inFlight = 0;
  const h1Responses = new Set<http.ServerResponse>();
  return {
    serve(req: NodeRequest, res: NodeResponse): void {
      if (inFlight >= callsMax) {
        refused('calls_in_flight_max');
        return refuse(req, res);
      }
      inFlight += 1;
      let done = false;
      res.once('close', () => {
        if (!done) inFlight -= 1;
        done = true;
      });
      if (!('stream' in req)) {
        const h1res = res as http.ServerResponse;
        if (shutdown.aborted) h1res.setHeader('connection', 'close');
        h1Responses.add(h1res);
        h1res.once('close', () => h1Responses.delete(h1res));
      }
      handler(req, res);
    },
    closeAfterResponses(): void {
      for (const res of h1Responses) {
        if (!res.headersSent) res.setHeader('connection', 'close');
        else {
          const socket = res.socket;
          res.once('finish', () => socket?.end());
        }
      }
    },
  };
}

/**
 * Refuses a call unprocessed, as UNAVAILABLE in the caller's protocol (retry later): gRPC
 * and gRPC-Web get a trailers-only answer, Connect a 503 with its JSON error. The body is
 * not read; an HTTP/1.1 connection closes after the answer. (An HTTP/2 REFUSED_STREAM
 * would say the same to grpc-js, but connect-node reads it as INTERNAL.)
 */
function refuse(req: NodeRequest, res: NodeResponse): void {
  const message = 'the server is at its limit of calls in flight; retry shortly';
  const contentType = String(req.headers['content-type'] ?? '');
  const close = 'stream' in req ? {} : { connection: 'close' };
  // The two response types write heads alike; the cast only picks one signature.
  const answer = res as http.ServerResponse;
  if (/^application\/grpc/i.test(contentType)) {
    answer.writeHead(200, { 'content-type': contentType, 'grpc-status': '14', 'grpc-message': encodeURIComponent(message), 'grpc-retry-pushback-ms': String(RETRY_AFTER_SECONDS * 1000), ...close });
    answer.end();
  } else {
    answer.writeHead(503, { 'content-type': 'application/json', 'retry-after': String(RETRY_AFTER_SECONDS), ...close });
    answer.end(JSON.stringify({ code: 'unavailable', message }));
  }
}

/** Closes an HTTP/2 session (GOAWAY) once it has had no open stream for idleMs. */
function closeWhenIdle(session: http2.ServerHttp2Session, idleMs: number): void {
  let open = 0;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(() => drain(session), idleMs);
  };
  session.on('stream', (stream: http2.ServerHttp2Stream) => {
    open += 1;
    clearTimeout(timer);
    stream.once('close', () => {
      open -= 1;
      if (open === 0 && !session.closed && !session.destroyed) arm();
    });
  });
  session.once('close', () => clearTimeout(timer));
  arm();
}

/**
 * Closes an HTTP/2 session without refusing a call the client sent before it learnt of the
 * close (as gRPC servers do): a first GOAWAY says "no new streams" but names no last stream,
 * a PING's answer shows the client has read it (and that every stream it sent before is
 * here), then the real GOAWAY closes the session once its streams are done. A single
 * GOAWAY makes the client close the streams it had already sent with REFUSED_STREAM:
 * unprocessed and safe to retry, but connect-node reports that as INTERNAL.
 */
function drain(session: http2.ServerHttp2Session): void {
  if (session.closed || session.destroyed) return;
  session.goaway(http2.constants.NGHTTP2_NO_ERROR, STREAM_ID_MAX);
  let done = false;
  const close = () => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    if (!session.closed && !session.destroyed) session.close();
  };
  const timer = setTimeout(close, DRAIN_PING_MS_MAX);
  // A client's PING answer may overtake a request it queued just before, so wait a moment more.
  if (!session.ping(() => setTimeout(close, DRAIN_SETTLE_MS))) close();
}

/**
 * Resets an HTTP/2 stream whose request (headers, then body to its end) has not all arrived
 * requestMs after the stream opened. The stream's 'end' comes once the handler has read the
 * whole body, which it does before any work, so a call being worked on is never cut off.
 */
function boundRequestTime(stream: http2.ServerHttp2Stream, requestMs: number, refused: (reason: RefusedBeforeHandler) => void): void {
  if (stream.endAfterHeaders) return;
  const timer = setTimeout(() => {
    if (!stream.destroyed && !stream.readableEnded) {
      refused('request_timeout');
      stream.close(http2.constants.NGHTTP2_CANCEL);
    }
  }, requestMs);
  stream.once('end', () => clearTimeout(timer));
  stream.once('close', () => clearTimeout(timer));
}

/**
 * Reads just enough of the first bytes to tell HTTP/2 prior knowledge from HTTP/1.1, puts
 * them back and hands the socket itself on. The socket stays paused from then on until its
 * server reads it: bytes that come meanwhile wait in its buffer behind the ones put back.
 */
function routeConnection(
  socket: net.Socket | tls.TLSSocket,
  h1: http.Server,
  h2: http2.Http2Server,
  firstBytesMs: number,
  refused: (reason: RefusedBeforeHandler) => void,
): void {
  let head: Buffer = Buffer.alloc(0);
  const timer = setTimeout(() => {
    refused('first_bytes_timeout');
    socket.destroy();
  }, firstBytesMs);
  socket.once('close', () => clearTimeout(timer));
  const onData = (chunk: Buffer) => {
    head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
    if (head.length < H2_PREFACE_START.length) return;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.pause();
    socket.unshift(head);
    if (head.subarray(0, H2_PREFACE_START.length).equals(H2_PREFACE_START)) {
      // Not resumed: Node's http2 drains the buffer with read() on the next tick, and a
      // flowing socket would hand those bytes to no one.
      h2.emit('connection', socket);
    } else {
      h1.emit('connection', socket);
      socket.resume();
    }
  };
  socket.on('data', onData);
}

/** The certificate, key and client CA as tls.createSecureContext takes them, read now. */
function secureContextOptions(files: TlsFiles): tls.SecureContextOptions {
  return {
    cert: readFileSync(files.certFile),
    key: readFileSync(files.keyFile),
    ...(files.clientCaFile ? { ca: readFileSync(files.clientCaFile) } : {}),
  };
}

/**
 * A tls.Server that never listens: the TCP listener hands it each connection. Its handshake
 * must finish within handshakeMs (the first-bytes bound of plaintext). The files are polled
 * (watchFile follows a path across the rename of an atomic replace, which fs.watch does not).
 */
function secureServer(options: TlsOptions, handshakeMs: number): { server: tls.Server; stopWatching(): void } {
  const mutual = options.clientCaFile !== undefined;
  const server = tls.createServer({
    ...secureContextOptions(options),
    ALPNProtocols: ['h2', 'http/1.1'],
    minVersion: 'TLSv1.2',
    handshakeTimeout: handshakeMs,
    // Mutual TLS: OpenSSL refuses the handshake of a client without a certificate signed by the CA.
    requestCert: mutual,
    rejectUnauthorized: mutual,
  });
  // A failed handshake (no or a foreign client certificate, a plaintext client) closes that connection only.
  server.on('tlsClientError', (error, socket) => {
    options.log.debug({ reason: error.message }, 'TLS handshake failed');
    socket.destroy();
  });
  const files = [options.certFile, options.keyFile, ...(options.clientCaFile ? [options.clientCaFile] : [])];
  const reload = (current: Stats, previous: Stats) => {
    if (current.mtimeMs === previous.mtimeMs && current.size === previous.size && current.ino === previous.ino) return;
    try {
      server.setSecureContext(secureContextOptions(options));
      options.log.info({ cert: options.certFile }, 'TLS certificate reloaded');
    } catch (error) {
      // A half-written rotation (new certificate, old key) lands here; the next change retries.
      options.log.warn({ cert: options.certFile, reason: (error as Error).message }, 'TLS files changed but do not load; keeping the certificate in use');
    }
  };
  const interval = options.reloadIntervalMs ?? TLS_RELOAD_INTERVAL_MS;
  for (const file of files) watchFile(file, { interval, persistent: false }, reload);
  return {
    server,
    stopWatching: () => {
      for (const file of files) unwatchFile(file, reload);
    },
  };
}
