// How the hostile table talks to the server: Connect JSON as exact bytes over a plain
// HTTP/1.1 socket (so a test can send unknown keys, unsafe numbers and broken JSON that no
// generated client would produce), and gRPC with generated messages over HTTP/2. Both
// reduce an answer to the same Outcome: a code and the billing.v1.ErrorDetail, if any.
import http from 'node:http';
import { fromBinary, type DescMessage, type DescMethodUnary, type MessageShape } from '@bufbuild/protobuf';
import { Code, ConnectError, type Transport } from '@connectrpc/connect';
import { codeFromString } from '@connectrpc/connect/protocol-connect';
import { createGrpcTransport, Http2SessionManager } from '@connectrpc/connect-node';
import { ErrorDetailSchema, type ErrorDetail } from '../../gen/billing/v1/errors_pb.js';

/** What one call came back with. `code` is undefined for a success. */
export interface Outcome {
  readonly code: Code | undefined;
  readonly detail: ErrorDetail | undefined;
  readonly message: string;
  /** The response body of a Connect JSON call (the answer or the error JSON). */
  readonly body?: string;
}

/** A connection-per-request agent would cost a TCP handshake per row; keep one warm. */
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

/**
 * POSTs `body` verbatim to a Connect unary JSON endpoint. A server that refuses an
 * oversized body may answer before it has read it and close the socket; the answer
 * still counts, and the write error that follows is ignored.
 */
export function postConnectJson(baseUrl: string, procedure: string, body: string | Buffer, authorization?: string): Promise<Outcome> {
  const url = new URL(`/${procedure}`, baseUrl);
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return new Promise<Outcome>((resolve, reject) => {
    let answered = false;
    const req = http.request(
      {
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': String(bytes.byteLength),
          'connect-protocol-version': '1',
          ...(authorization === undefined ? {} : { authorization }),
        },
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => resolve(connectOutcome(res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'))));
      },
    );
    req.on('error', (error) => {
      if (!answered) reject(error);
    });
    req.end(bytes);
  });
}

interface ConnectErrorJson {
  code?: string;
  message?: string;
  details?: { type?: string; value?: string }[];
}

function connectOutcome(status: number, text: string): Outcome {
  if (status === 200) return { code: undefined, detail: undefined, message: '', body: text };
  let json: ConnectErrorJson;
  try {
    json = JSON.parse(text) as ConnectErrorJson;
  } catch {
    throw new Error(`HTTP ${status} with a body that is not a Connect error: ${text.slice(0, 200)}`);
  }
  const code = json.code === undefined ? undefined : codeFromString(json.code);
  if (code === undefined) throw new Error(`HTTP ${status} with an unknown Connect code: ${text.slice(0, 200)}`);
  const raw = json.details?.find((d) => d.type === ErrorDetailSchema.typeName)?.value;
  const detail = raw === undefined ? undefined : fromBinary(ErrorDetailSchema, Buffer.from(raw, 'base64'));
  return { code, detail, message: json.message ?? '', body: text };
}

/** Every HTTP/2 connection a transport here opened, so a test can close them all. */
const sessions = new Set<Http2SessionManager>();

/** A gRPC (HTTP/2, binary) transport on a connection of its own; sends this authorization header when given. */
export function grpcTransport(baseUrl: string, authorization?: string): Transport {
  const sessionManager = new Http2SessionManager(baseUrl);
  sessions.add(sessionManager);
  return createGrpcTransport({
    baseUrl,
    sessionManager,
    interceptors: authorization === undefined ? [] : [(next) => (req) => {
      req.header.set('authorization', authorization);
      return next(req);
    }],
  });
}

/** Closes the client side of every connection opened here, so the server can stop at once. */
export function closeConnections(): void {
  for (const session of sessions) session.abort();
  sessions.clear();
  agent.destroy();
}

/** Calls a unary method with an already-built message; `$unknown` fields go on the wire as they are. */
export async function callGrpc<I extends DescMessage, O extends DescMessage>(
  transport: Transport,
  method: DescMethodUnary<I, O>,
  message: MessageShape<I>,
): Promise<Outcome> {
  try {
    await transport.unary(method, undefined, undefined, undefined, message);
    return { code: undefined, detail: undefined, message: '' };
  } catch (error) {
    const e = ConnectError.from(error);
    return { code: e.code, detail: e.findDetails(ErrorDetailSchema)[0], message: e.rawMessage };
  }
}

/** A readable outcome for assertion messages. */
export function describeOutcome(o: Outcome): string {
  if (o.code === undefined) return 'OK';
  const detail = o.detail ? ` detail{reason=${o.detail.reason} field=${JSON.stringify(o.detail.field)}}` : ' (no ErrorDetail)';
  return `${Code[o.code]}${detail}: ${o.message.slice(0, 160)}`;
}
