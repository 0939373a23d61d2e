// The Node request handler in front of the Connect router. It does what connect-node's
// own adapter does (route by path, hand the request to the protocol handler), plus what
// the framework does not offer:
//
// - Deadlines are capped, not refused. The framework answers a `grpc-timeout` or
//   `connect-timeout-ms` above its maximum with INVALID_ARGUMENT; admin clients send long
//   deadlines for RunDailyTopUp and VerifyLedger, so the header is lowered to the cap.
// - Unary request bodies are read here, within the size limit, and decoded strictly before
//   the framework sees them. Connect JSON goes through json-request.ts (unknown fields and
//   malformed integers are named); binary messages (gRPC, gRPC-Web, Connect) must decode,
//   with strings that are valid UTF-8. The framework would call an undecodable binary
//   message INTERNAL and has no typed detail for either.
// - A refused request is not answered here: it reaches the framework with an empty message
//   and the refusal in its context values, and the innermost interceptor throws it. So it
//   is answered in the caller's protocol, after authentication, and counted in the metrics
//   like any other error.
//
// A request over the size limit is read to its end and discarded, so that a refused body
// never stays buffered in the HTTP/2 session (where a few of them would exhaust the
// session's memory and break the connection for every call on it).
//
// Compressed bodies and gRPC-Web JSON are left to the framework, which is also told to
// refuse unknown JSON fields, without the typed detail.
import type http from 'node:http';
import type http2 from 'node:http2';
import { fromBinary, type JsonValue } from '@bufbuild/protobuf';
import { configureTextEncoding } from '@bufbuild/protobuf/wire';
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createConnectRouter,
  createContextKey,
  createContextValues,
  type Interceptor,
} from '@connectrpc/connect';
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from '@connectrpc/connect-node';
import { createAsyncIterable, type UniversalHandler } from '@connectrpc/connect/protocol';
import { BillingError } from '../domain/errors.js';
import { parseJsonRequest } from './json-request.js';

export interface HandlerOptions {
  readonly routes: (router: ConnectRouter) => void;
  readonly interceptors: Interceptor[];
  /** Largest request message accepted, in bytes. */
  readonly requestBytesMax: number;
  /** Longest deadline honoured, in milliseconds; longer ones are lowered to it. */
  readonly timeoutMsMax: number;
  readonly shutdownSignal: AbortSignal;
}

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/** How a unary request body is framed, by content type. */
type Framing = 'connect-json' | 'connect-binary' | 'envelope';

const FRAMINGS: readonly [RegExp, Framing][] = [
  [/^application\/json(?:;\s*charset=utf-?8)?$/i, 'connect-json'],
  [/^application\/proto$/i, 'connect-binary'],
  [/^application\/grpc(?:-web)?(?:\+proto)?$/i, 'envelope'],
];
/** An envelope (flags byte, 4-byte length) holding an empty message. */
const EMPTY_ENVELOPE = new Uint8Array(5);
const ENVELOPE_HEADER_BYTES = 5;
const ENVELOPE_FLAG_COMPRESSED = 0x01;

const GRPC_TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const GRPC_TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 1e-3, n: 1e-6 };
const CONNECT_TIMEOUT = /^\d{1,10}$/;

/** The refusal of a request that did not decode, carried to refusalInterceptor. */
const REFUSAL = createContextKey<BillingError | undefined>(undefined, { description: 'billing request refusal' });

/** Throws the refusal the handler found, if any; the innermost interceptor. */
const refusalInterceptor: Interceptor = (next) => async (req) => {
  const refusal = req.contextValues.get(REFUSAL);
  if (refusal) throw refusal;
  return next(req);
};

export function createHandler(options: HandlerOptions): (req: NodeRequest, res: NodeResponse) => void {
  strictUtf8();
  const router = createConnectRouter({
    interceptors: [...options.interceptors, refusalInterceptor],
    readMaxBytes: options.requestBytesMax,
    shutdownSignal: options.shutdownSignal,
    acceptCompression: [compressionGzip, compressionBrotli],
    jsonOptions: { ignoreUnknownFields: false },
  });
  options.routes(router);
  const paths = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));
  return (req, res) => {
    const handler = paths.get(req.url?.split('?', 2)[0] ?? '');
    if (!handler) {
      (res as http.ServerResponse).writeHead(404).end();
      return;
    }
    serve(options, handler, req, res).catch((error: unknown) => {
      if (ConnectError.from(error).code !== Code.Aborted) res.destroy();
    });
  };
}

async function serve(options: HandlerOptions, handler: UniversalHandler, req: NodeRequest, res: NodeResponse): Promise<void> {
  const framing = unaryFraming(handler, req);
  const contextValues = createContextValues();
  let uReq;
  if (framing === undefined) {
    uReq = universalRequestFromNodeRequest(req, res, undefined, contextValues);
  } else {
    const decoded = await decodeBody(handler, req, framing, options.requestBytesMax);
    if (decoded.refusal) contextValues.set(REFUSAL, decoded.refusal);
    const json = 'json' in decoded ? decoded.json : undefined;
    uReq = universalRequestFromNodeRequest(req, res, json, contextValues);
    if ('bytes' in decoded) uReq = { ...uReq, body: createAsyncIterable([decoded.bytes]) };
  }
  capDeadline(uReq.header, options.timeoutMsMax);
  const uRes = await handler(uReq);
  await universalResponseToNodeResponse(uRes, res);
}

/** The framing of a unary POST whose body this handler decodes, or undefined to leave it. */
function unaryFraming(handler: UniversalHandler, req: NodeRequest): Framing | undefined {
  if (handler.method.methodKind !== 'unary' || req.method !== 'POST') return undefined;
  const encoding = req.headers['content-encoding'];
  if (encoding !== undefined && encoding !== 'identity') return undefined;
  const contentType = String(req.headers['content-type'] ?? '');
  return FRAMINGS.find(([pattern]) => pattern.test(contentType))?.[1];
}

type Decoded = { refusal?: BillingError } & ({ json: JsonValue } | { bytes: Uint8Array });

/** Reads and checks a unary body; a refused one is replaced by an empty message. */
async function decodeBody(handler: UniversalHandler, req: NodeRequest, framing: Framing, bytesMax: number): Promise<Decoded> {
  const empty: Decoded = framing === 'connect-json' ? { json: {} } : { bytes: framing === 'envelope' ? EMPTY_ENVELOPE : new Uint8Array() };
  const body = await readBody(req, framing === 'envelope' ? bytesMax + ENVELOPE_HEADER_BYTES : bytesMax);
  if (body === undefined) return { ...empty, refusal: new BillingError('REQUEST_TOO_LARGE', `the request is larger than ${bytesMax} bytes`) };
  try {
    if (framing === 'connect-json') return { json: parseJsonRequest(handler.method.input, body) };
    const message = framing === 'envelope' ? envelopeMessage(body) : body;
    if (message) checkBinary(handler, message);
    return { bytes: body };
  } catch (error) {
    if (error instanceof BillingError) return { ...empty, refusal: error };
    throw error;
  }
}

/** The message of a single-message envelope, or undefined when it is compressed. */
function envelopeMessage(body: Uint8Array): Uint8Array | undefined {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  if (body.byteLength < ENVELOPE_HEADER_BYTES || view.getUint32(1) !== body.byteLength - ENVELOPE_HEADER_BYTES) {
    throw new BillingError('MALFORMED_REQUEST', 'the request must be exactly one enveloped message');
  }
  if ((view.getUint8(0) & ENVELOPE_FLAG_COMPRESSED) !== 0) return undefined;
  return body.subarray(ENVELOPE_HEADER_BYTES);
}

function checkBinary(handler: UniversalHandler, message: Uint8Array): void {
  try {
    fromBinary(handler.method.input, message);
  } catch (error) {
    const why = error instanceof Error ? error.message : 'undecodable';
    throw new BillingError('MALFORMED_REQUEST', `the request does not decode as ${handler.method.input.typeName}: ${why}`);
  }
}

/**
 * The whole body, or undefined when it is over bytesMax; the rest of an oversized body is
 * read and dropped, so the stream ends cleanly and nothing of it stays buffered.
 */
async function readBody(req: NodeRequest, bytesMax: number): Promise<Uint8Array | undefined> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length <= bytesMax) chunks.push(chunk);
  }
  return length <= bytesMax ? Buffer.concat(chunks) : undefined;
}

/**
 * proto3 strings are UTF-8: a string field with invalid UTF-8 must fail to decode rather
 * than turn into U+FFFD (another string, which would then be stored and compared).
 */
function strictUtf8(): void {
  const encoder = new TextEncoder();
  const decoder = new TextDecoder('utf-8', { fatal: true });
  configureTextEncoding({
    encodeUtf8: (text) => encoder.encode(text),
    decodeUtf8: (bytes) => {
      try {
        return decoder.decode(bytes);
      } catch {
        throw new Error('a string field is not valid UTF-8');
      }
    },
    checkUtf8: (text) => text.isWellFormed(),
  });
}

/** Lowers a deadline header above the cap to the cap; a malformed one is left for the protocol to refuse. */
export function capDeadline(header: Headers, timeoutMsMax: number): void {
  const grpc = header.get('grpc-timeout');
  const match = grpc === null ? null : GRPC_TIMEOUT.exec(grpc);
  if (match && Number(match[1]) * (GRPC_TIMEOUT_UNIT_MS[match[2] ?? ''] ?? 0) > timeoutMsMax) {
    header.set('grpc-timeout', `${timeoutMsMax}m`);
  }
  const connect = header.get('connect-timeout-ms');
  if (connect !== null && CONNECT_TIMEOUT.test(connect) && Number(connect) > timeoutMsMax) {
    header.set('connect-timeout-ms', String(timeoutMsMax));
  }
}
