// The Node request handler in front of the Connect router. It does what connect-node's
// own adapter does (route by path, hand the request to the protocol handler), plus what
// the framework does not offer:
//
// - Deadlines are capped, not refused. The framework answers a `grpc-timeout` or
//   `connect-timeout-ms` above its maximum with INVALID_ARGUMENT; admin clients send long
//   deadlines for RunDailyTopUp and VerifyLedger, so the header is lowered to the cap.
// - Unary requests are read here, within the size limit, and decoded strictly before the
//   framework sees them, in every framing: Connect JSON and gRPC(-Web)+json through
//   json-request.ts (unknown fields and malformed integers are named), binary (gRPC,
//   gRPC-Web, Connect) must decode with strings that are valid UTF-8, and a Connect GET's
//   message gets the same checks. The framework would call an undecodable binary message
//   INTERNAL and has no typed detail for either. Compressed requests are refused: nothing
//   is decoded that was not checked.
// - A refused request is not answered here: it reaches the framework with an empty message
//   and the refusal in its context values, and the innermost interceptor throws it. So it
//   is answered in the caller's protocol, after authentication, and counted in the metrics
//   like any other error.
//
// An oversized body is read and dropped up to 16 MiB past the limit, so that the caller
// gets its answer and nothing of the body stays buffered in the HTTP/2 session (where a few
// of them would exhaust the session's memory and break the connection for every call on
// it); a longer one is left unread and the stream or connection is closed after the answer.
import type http from 'node:http';
import type http2 from 'node:http2';
import { constants as http2Constants } from 'node:http2';
import { fromBinary, type JsonValue } from '@bufbuild/protobuf';
import { configureTextEncoding } from '@bufbuild/protobuf/wire';
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createConnectRouter,
  createContextKey,
  createContextValues,
  type ContextValues,
  type Interceptor,
} from '@connectrpc/connect';
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from '@connectrpc/connect-node';
import { createAsyncIterable, type UniversalHandler } from '@connectrpc/connect/protocol';
import { BillingError } from '../domain/errors.js';
import { isConsolePath, serveConsole } from './console-static.js';
import { parseJsonRequest } from './json-request.js';

export interface HandlerOptions {
  readonly routes: (router: ConnectRouter) => void;
  readonly interceptors: Interceptor[];
  /** Largest request message accepted, in bytes. */
  readonly requestBytesMax: number;
  /** Longest deadline honoured, in milliseconds; longer ones are lowered to it. */
  readonly timeoutMsMax: number;
  readonly shutdownSignal: AbortSignal;
  /** The context values a call starts with (src/server.ts: the client certificate's name). */
  readonly contextValues?: (req: NodeRequest) => ContextValues;
  /** Told of each request refused before any handler saw it (no such procedure). */
  readonly onRefused?: (reason: RefusedBeforeHandler) => void;
}

/**
 * Why a request or connection was refused before it reached a handler and the
 * interceptors (a request that does not decode or is too large does reach them, as its
 * error): no such path, past the calls or connections in flight, or too slow to arrive.
 */
export type RefusedBeforeHandler = 'unknown_path' | 'calls_in_flight_max' | 'connections_max' | 'first_bytes_timeout' | 'request_timeout';

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

/** How a unary request body is framed, by content type. */
type Framing = 'connect-json' | 'connect-proto' | 'envelope-proto' | 'envelope-json';

const FRAMINGS: readonly [RegExp, Framing][] = [
  [/^application\/json(?:;\s*charset=utf-?8)?$/i, 'connect-json'],
  [/^application\/proto$/i, 'connect-proto'],
  [/^application\/grpc(?:-web)?(?:\+proto)?$/i, 'envelope-proto'],
  [/^application\/grpc(?:-web)?\+json(?:;\s*charset=utf-?8)?$/i, 'envelope-json'],
];
const ENVELOPE_HEADER_BYTES = 5;
const ENVELOPE_FLAG_COMPRESSED = 0x01;
/**
 * How much of an oversized body is read and dropped so that the caller still gets its
 * answer on a usable connection; past this the stream (HTTP/2) or connection (HTTP/1.1) is
 * closed after the answer.
 */
const DISCARD_BYTES_MAX = 16 * 1024 * 1024;

const GRPC_TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const GRPC_TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 1e-3, n: 1e-6 };
const CONNECT_TIMEOUT = /^\d{1,10}$/;

/** The refusal of a request that did not decode, carried to refusalInterceptor. */
const REFUSAL = createContextKey<BillingError | undefined>(undefined, { description: 'billing request refusal' });

/**
 * True when the handler refused the request while decoding it: its message is empty and
 * the innermost interceptor will throw the refusal, so an interceptor before that one
 * must not judge the message (src/rpc/limits.ts).
 */
export function refusedWhileDecoding(req: { readonly contextValues: ContextValues }): boolean {
  return req.contextValues.get(REFUSAL) !== undefined;
}

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
    // Requests are checked byte for byte before decoding, so none may be compressed (a
    // compressed one is refused); unary replies are small, so none are compressed either.
    acceptCompression: [],
    jsonOptions: { ignoreUnknownFields: false },
  });
  options.routes(router);
  const paths = new Map<string, UniversalHandler>(router.handlers.map((h) => [h.requestPath, h]));
  return (req, res) => {
    const handler = paths.get(req.url?.split('?', 2)[0] ?? '');
    if (!handler) {
      // The ops console's static files (src/rpc/console-static.ts); anything else is 404.
      if (isConsolePath(req.url)) serveConsole(req, res).catch(() => res.destroy());
      else {
        options.onRefused?.('unknown_path');
        (res as http.ServerResponse).writeHead(404).end();
      }
      return;
    }
    serve(options, handler, req, res).catch((error: unknown) => {
      if (ConnectError.from(error).code !== Code.Aborted) res.destroy();
    });
  };
}

async function serve(options: HandlerOptions, handler: UniversalHandler, req: NodeRequest, res: NodeResponse): Promise<void> {
  const contextValues = options.contextValues?.(req) ?? createContextValues();
  const framing = unaryFraming(handler, req);
  let uReq;
  if (framing !== undefined) {
    const decoded = await decodeBody(handler, req, framing, options.requestBytesMax);
    if (decoded.refusal) contextValues.set(REFUSAL, decoded.refusal);
    if (decoded.closeAfter) closeAfterResponse(req, res);
    uReq = universalRequestFromNodeRequest(req, res, 'json' in decoded ? decoded.json : undefined, contextValues);
    if ('bytes' in decoded) uReq = { ...uReq, body: createAsyncIterable([decoded.bytes]) };
    // The body was measured here and may have been replaced: the framework must not hold it
    // to the caller's Content-Length.
    uReq.header.delete('content-length');
  } else {
    uReq = universalRequestFromNodeRequest(req, res, undefined, contextValues);
    if (req.method === 'GET' && handler.method.methodKind === 'unary') uReq = { ...uReq, url: checkGetMessage(handler, uReq.url, contextValues) };
  }
  capDeadline(uReq.header, options.timeoutMsMax);
  const uRes = await handler(uReq);
  await universalResponseToNodeResponse(uRes, res);
}

/** The framing of a unary POST whose body this handler decodes, or undefined to leave it. */
function unaryFraming(handler: UniversalHandler, req: NodeRequest): Framing | undefined {
  if (handler.method.methodKind !== 'unary' || req.method !== 'POST') return undefined;
  const contentType = String(req.headers['content-type'] ?? '');
  return FRAMINGS.find(([pattern]) => pattern.test(contentType))?.[1];
}

type Decoded = { refusal?: BillingError; closeAfter?: boolean } & ({ json: JsonValue } | { bytes: Uint8Array });

/** An empty message in each framing: what a refused request is replaced with. */
function emptyMessage(framing: Framing): Decoded {
  switch (framing) {
    case 'connect-json':
      return { json: {} };
    case 'connect-proto':
      return { bytes: new Uint8Array() };
    case 'envelope-proto':
      return { bytes: new Uint8Array(ENVELOPE_HEADER_BYTES) };
    case 'envelope-json':
      return { bytes: Uint8Array.of(0, 0, 0, 0, 2, 0x7b, 0x7d) };
  }
}

/** Reads and checks a unary body; a refused one is replaced by an empty message. */
async function decodeBody(handler: UniversalHandler, req: NodeRequest, framing: Framing, bytesMax: number): Promise<Decoded> {
  const envelope = framing === 'envelope-proto' || framing === 'envelope-json';
  const body = await readBody(req, envelope ? bytesMax + ENVELOPE_HEADER_BYTES : bytesMax);
  const refuse = (refusal: BillingError): Decoded => ({ ...emptyMessage(framing), refusal, closeAfter: body.truncated });
  if (body.bytes === undefined) return refuse(new BillingError('REQUEST_TOO_LARGE', `the request is larger than ${bytesMax} bytes`));
  try {
    // Compressed requests are not accepted: every byte that is decoded is checked here first.
    const encoding = req.headers['content-encoding'];
    if (!envelope && encoding !== undefined && encoding !== 'identity') throw compressed();
    if (framing === 'connect-json') return { json: parseJsonRequest(handler.method.input, body.bytes) };
    if (framing === 'connect-proto') {
      await checkComplete(req, body.bytes.byteLength);
      checkBinary(handler, body.bytes);
    } else {
      const message = envelopeMessage(body.bytes);
      if (framing === 'envelope-json') parseJsonRequest(handler.method.input, message);
      else checkBinary(handler, message);
    }
    return { bytes: body.bytes };
  } catch (error) {
    if (error instanceof BillingError) return refuse(error);
    throw error;
  }
}

function compressed(): BillingError {
  return new BillingError('MALFORMED_REQUEST', 'compressed requests are not accepted; send the message uncompressed');
}

/** The message of a single-message, uncompressed envelope. */
function envelopeMessage(body: Uint8Array): Uint8Array {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  if (body.byteLength < ENVELOPE_HEADER_BYTES || view.getUint32(1) !== body.byteLength - ENVELOPE_HEADER_BYTES) {
    throw new BillingError('MALFORMED_REQUEST', 'the request must be exactly one enveloped message');
  }
  if ((view.getUint8(0) & ENVELOPE_FLAG_COMPRESSED) !== 0) throw compressed();
  return body.subarray(ENVELOPE_HEADER_BYTES);
}

/**
 * A Connect binary body has no framing of its own: a prefix of a message decodes as a
 * message with fields missing. So it must be as long as its Content-Length, and an HTTP/2
 * stream the client reset (which Node ends like a finished one) is not a complete body.
 */
async function checkComplete(req: NodeRequest, length: number): Promise<void> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) !== length) {
    throw new BillingError('MALFORMED_REQUEST', `the body is ${length} bytes, its Content-Length says ${declared}`);
  }
  if ('stream' in req) {
    await new Promise((resolve) => setImmediate(resolve));
    const stream = req.stream;
    if (req.aborted || (stream.rstCode !== undefined && stream.rstCode !== http2Constants.NGHTTP2_NO_ERROR)) {
      throw new BillingError('MALFORMED_REQUEST', 'the request stream was reset before its body was complete');
    }
  }
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
 * Connect GET (methods without side effects) carries the message in the query. It gets the
 * same checks as a POST body; a refused one is replaced by an empty message.
 */
function checkGetMessage(handler: UniversalHandler, url: string, contextValues: ContextValues): string {
  const parsed = new URL(url);
  const query = parsed.searchParams;
  const message = query.get('message') ?? '';
  const bytes = query.get('base64') === '1' ? Buffer.from(message, 'base64') : Buffer.from(message);
  const json = query.get('encoding') === 'json';
  try {
    if (query.has('compression') && query.get('compression') !== 'identity') throw compressed();
    if (json) parseJsonRequest(handler.method.input, bytes);
    else checkBinary(handler, bytes);
    return url;
  } catch (error) {
    if (!(error instanceof BillingError)) throw error;
    contextValues.set(REFUSAL, error);
    query.set('message', json ? '{}' : '');
    query.delete('base64');
    query.delete('compression');
    return parsed.toString();
  }
}

interface Body {
  /** The whole body, or undefined when it is over the limit. */
  bytes: Uint8Array | undefined;
  /** True when an oversized body was not read to its end (the caller must close). */
  truncated: boolean;
}

/**
 * Reads a body up to bytesMax. The rest of an oversized body is read and dropped up to
 * DISCARD_BYTES_MAX, so that the stream ends cleanly and nothing of it stays buffered in
 * the session; a body declared or found to be longer than that is left unread.
 */
function readBody(req: NodeRequest, bytesMax: number): Promise<Body> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > bytesMax + DISCARD_BYTES_MAX) return Promise.resolve({ bytes: undefined, truncated: true });
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const finish = (body: Body) => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      resolve(body);
    };
    const onData = (chunk: Buffer) => {
      length += chunk.length;
      if (length <= bytesMax) chunks.push(chunk);
      else if (length > bytesMax + DISCARD_BYTES_MAX) {
        req.pause();
        finish({ bytes: undefined, truncated: true });
      }
    };
    const onEnd = () => finish({ bytes: length <= bytesMax ? Buffer.concat(chunks) : undefined, truncated: false });
    const onError = (error: Error) => {
      req.off('data', onData);
      req.off('end', onEnd);
      reject(error);
    };
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('error', onError);
  });
}

/** Ends the stream (HTTP/2) or the connection (HTTP/1.1) once the answer is sent. */
function closeAfterResponse(req: NodeRequest, res: NodeResponse): void {
  if ('stream' in req) {
    res.once('finish', () => req.stream.close(http2Constants.NGHTTP2_CANCEL));
  } else {
    (res as http.ServerResponse).setHeader('connection', 'close');
  }
}

/**
 * proto3 strings are UTF-8: a string field with invalid UTF-8 must fail to decode rather
 * than turn into U+FFFD (another string, which would then be stored and compared).
 */
function strictUtf8(): void {
  const encoder = new TextEncoder();
  // ignoreBOM: a leading U+FEFF is part of the string, not a marker to drop.
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
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
