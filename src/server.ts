// One port for gRPC (h2c), gRPC-Web and Connect over HTTP/2 and HTTP/1.1: a TCP listener
// looks at the first bytes of each connection and hands it to the HTTP/2 server (the
// client sent the h2 preface, "PRI * HTTP/2.0") or to the HTTP/1.1 server. Node has no way
// to peek at a socket, and HTTP/2 reads the native handle directly (bytes put back with
// unshift() would be lost), so HTTP/2 connections get a thin stream that replays the bytes
// already read; HTTP/1.1 takes the socket itself with the bytes unshifted.
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { Duplex } from 'node:stream';
import type { ConnectRouter, Interceptor } from '@connectrpc/connect';
import { createHandler } from './rpc/handler.js';

export interface ServerOptions {
  readonly port: number;
  readonly host: string;
  /** Largest request message accepted, in bytes. */
  readonly requestBytesMax: number;
  /** Longest deadline a client may ask for, in milliseconds. */
  readonly timeoutMsMax: number;
  readonly interceptors: Interceptor[];
  readonly routes: (router: ConnectRouter) => void;
}

export interface RunningServer {
  readonly port: number;
  /** Stops accepting, lets in-flight calls finish for up to graceMs, then closes. */
  close(graceMs?: number): Promise<void>;
}

const H2_PREFACE_START = Buffer.from('PRI');
const STREAMS_PER_CONNECTION_MAX = 256;

export async function startServer(options: ServerOptions): Promise<RunningServer> {
  const shutdown = new AbortController();
  const handler = createHandler({
    routes: options.routes,
    interceptors: options.interceptors,
    requestBytesMax: options.requestBytesMax,
    timeoutMsMax: options.timeoutMsMax,
    shutdownSignal: shutdown.signal,
  });
  // Bounds per connection: 32 MB of session memory, 256 calls in flight.
  const h2 = http2.createServer({ maxSessionMemory: 32, settings: { maxConcurrentStreams: STREAMS_PER_CONNECTION_MAX } }, handler);
  const h1 = http.createServer({ maxHeaderSize: 16 * 1024, requestTimeout: 60_000 }, handler);
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
  });
  // noDelay: small gRPC frames must not wait for Nagle + delayed ACK (~40 ms a call).
  const tcp = net.createServer({ noDelay: true, keepAlive: true }, (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    routeConnection(socket, h1, h2);
  });
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(options.port, options.host, () => resolve());
  });
  const address = tcp.address() as net.AddressInfo;
  return {
    port: address.port,
    close: async (graceMs = 10_000) => {
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      shutdown.abort();
      for (const session of sessions) session.close();
      h1.closeIdleConnections();
      const deadline = setTimeout(() => {
        for (const socket of sockets) socket.destroy();
      }, graceMs);
      await closed;
      clearTimeout(deadline);
    },
  };
}

/** Reads just enough of the first bytes to tell HTTP/2 prior knowledge from HTTP/1.1. */
function routeConnection(socket: net.Socket, h1: http.Server, h2: http2.Http2Server): void {
  let head = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    head = Buffer.concat([head, chunk]);
    if (head.length < H2_PREFACE_START.length) return;
    socket.off('data', onData);
    socket.pause();
    if (head.subarray(0, H2_PREFACE_START.length).equals(H2_PREFACE_START)) {
      h2.emit('connection', new ReplayingSocket(socket, head));
    } else {
      socket.unshift(head);
      h1.emit('connection', socket);
      socket.resume();
    }
  };
  socket.on('data', onData);
}

/** A duplex over a socket whose first bytes were already read: it replays them first. */
class ReplayingSocket extends Duplex {
  constructor(
    private readonly socket: net.Socket,
    head: Buffer,
  ) {
    super();
    this.push(head);
    socket.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.once('end', () => this.push(null));
    socket.once('error', (error) => this.destroy(error));
    socket.once('close', () => this.destroy());
  }

  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }

  get remotePort(): number | undefined {
    return this.socket.remotePort;
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.socket.write(chunk, encoding, callback);
  }

  override _writev(chunks: { chunk: Buffer }[], callback: (error?: Error | null) => void): void {
    this.socket.write(Buffer.concat(chunks.map((c) => c.chunk)), callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.socket.end(callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.socket.destroy(error ?? undefined);
    callback(error);
  }
}
