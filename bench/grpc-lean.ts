// A lean gRPC client for the bench's load generator: unary calls over node:http2 directly,
// framed by hand (RFC-less but simple: gRPC over HTTP/2, "Length-Prefixed-Message" = one
// compressed-flag byte + a 4-byte big-endian length + the protobuf bytes). The caller gives
// the protobuf bytes, encoded once with toBinary of the generated schema; the answer's body
// is read and dropped (not decoded), and the call's outcome is its grpc-status, from the
// trailers or from a trailers-only response. It exists because connect-node's client spent
// more CPU per call than the server's work for a GetBalance, on the same 2 cores.
import http2, { type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { Code } from '@connectrpc/connect';

/** The bytes of protobuf field `number` (wire type 2, length-delimited) holding UTF-8 `value`. */
export function protoStringField(number: number, value: string): Uint8Array {
  const bytes = Buffer.from(value, 'utf8');
  const head: number[] = [];
  for (let v = (number << 3) | 2; ; v >>>= 7) {
    if (v < 0x80) {
      head.push(v);
      break;
    }
    head.push((v & 0x7f) | 0x80);
  }
  for (let v = bytes.length; ; v >>>= 7) {
    if (v < 0x80) {
      head.push(v);
      break;
    }
    head.push((v & 0x7f) | 0x80);
  }
  return Buffer.concat([Buffer.from(head), bytes]);
}

/**
 * An HTTP status without grpc-status, as the gRPC spec maps it (doc/http-grpc-status-mapping.md):
 * a router that knows no such method answers 404, a proxy 502–504.
 */
function httpCodeName(status: number | undefined): string {
  switch (status) {
    case 400:
      return Code[Code.Internal];
    case 401:
      return Code[Code.Unauthenticated];
    case 403:
      return Code[Code.PermissionDenied];
    case 404:
      return Code[Code.Unimplemented];
    case 429:
    case 502:
    case 503:
    case 504:
      return Code[Code.Unavailable];
    default:
      return Code[Code.Unknown];
  }
}

/** A gRPC status number as connect's Code name ("ResourceExhausted"); undefined for OK. */
function codeName(status: string | undefined): string | undefined {
  if (status === '0') return undefined;
  if (status === undefined) return 'Unknown';
  return Code[Number(status)] ?? `grpc-status ${status}`;
}

/**
 * Round-robins unary calls over `connections` HTTP/2 sessions to `url`. A session that ends
 * or fails is replaced on the next call; a call on it fails Unavailable.
 */
export class LeanGrpcClient {
  readonly #url: string;
  readonly #timeoutHeader: string;
  readonly #sessions: (ClientHttp2Session | undefined)[];
  #next = 0;

  constructor(url: string, connections: number, timeoutMs: number) {
    this.#url = url;
    this.#timeoutHeader = `${Math.max(1, Math.round(timeoutMs))}m`;
    this.#sessions = Array.from({ length: Math.max(1, connections) }, () => undefined);
  }

  #session(): ClientHttp2Session {
    const index = this.#next;
    this.#next = (this.#next + 1) % this.#sessions.length;
    const existing = this.#sessions[index];
    if (existing && !existing.closed && !existing.destroyed) return existing;
    const session = http2.connect(this.#url);
    session.on('error', () => undefined); // each stream reports its own failure
    session.once('close', () => {
      if (this.#sessions[index] === session) this.#sessions[index] = undefined;
    });
    this.#sessions[index] = session;
    return session;
  }

  /** One unary call of `path` with a message made of `parts`: undefined when OK, else its code name. */
  call(path: string, parts: readonly Uint8Array[]): Promise<string | undefined> {
    let length = 0;
    for (const part of parts) length += part.length;
    const frame = Buffer.allocUnsafe(5 + length);
    frame[0] = 0;
    frame.writeUInt32BE(length, 1);
    let offset = 5;
    for (const part of parts) {
      frame.set(part, offset);
      offset += part.length;
    }
    return new Promise((resolve) => {
      let status: string | undefined;
      let failed: string | undefined;
      const stream = this.#session().request({
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-timeout': this.#timeoutHeader,
      });
      const take = (headers: IncomingHttpHeaders) => {
        const value = headers['grpc-status'];
        if (value !== undefined) status = String(value);
      };
      let httpStatus: number | undefined;
      stream.on('response', (headers) => {
        httpStatus = headers[':status'];
        take(headers); // a trailers-only answer carries grpc-status in its headers
      });
      stream.on('trailers', take);
      stream.on('data', () => undefined);
      stream.on('error', () => (failed ??= Code[Code.Unavailable]));
      stream.on('close', () => {
        if (failed !== undefined) resolve(failed);
        else if (status === undefined && httpStatus !== 200) resolve(httpCodeName(httpStatus));
        else resolve(codeName(status));
      });
      stream.end(frame);
    });
  }

  close(): void {
    for (const session of this.#sessions) session?.close();
  }
}
