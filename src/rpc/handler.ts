// The Node request handler in front of the Connect router. It does what connect-node's
// own adapter does (route by path, hand the request to the protocol handler), plus two
// things the framework does not offer:
//
// - Deadlines are capped, not refused. The framework answers a `grpc-timeout` or
//   `connect-timeout-ms` above its maximum with INVALID_ARGUMENT; admin clients send long
//   deadlines for RunDailyTopUp and VerifyLedger, so the header is lowered to the cap.
// - Connect JSON requests are decoded strictly (json-request.ts) before the framework
//   sees them, so an unknown field or a malformed integer is INVALID_ARGUMENT with an
//   ErrorDetail naming the field. Those refusals happen before any interceptor runs, so
//   they are reported to `onRefused` for the metrics.
//
// Binary protobuf (gRPC, gRPC-Web, Connect binary) keeps the usual unknown-field rules.
// JSON that is compressed or arrives as gRPC-Web JSON is decoded by the framework, which
// is also told to refuse unknown fields, without the detail.
import type http from 'node:http';
import type http2 from 'node:http2';
import { Code, ConnectError, type ConnectRouter, createConnectRouter, type Interceptor } from '@connectrpc/connect';
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from '@connectrpc/connect-node';
import type { JsonValue } from '@bufbuild/protobuf';
import type { UniversalHandler } from '@connectrpc/connect/protocol';
import { codeToHttpStatus, errorToJsonBytes } from '@connectrpc/connect/protocol-connect';
import { BillingError } from '../domain/errors.js';
import { toConnectError } from './errors.js';
import { parseJsonRequest } from './json-request.js';

export interface HandlerOptions {
  readonly routes: (router: ConnectRouter) => void;
  readonly interceptors: Interceptor[];
  /** Largest request message accepted, in bytes. */
  readonly requestBytesMax: number;
  /** Longest deadline honoured, in milliseconds; longer ones are lowered to it. */
  readonly timeoutMsMax: number;
  readonly shutdownSignal: AbortSignal;
  /** Called for a request refused before it reached the interceptors. */
  readonly onRefused?: (procedure: string, code: Code) => void;
}

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

const GRPC_TIMEOUT = /^(\d{1,8})([HMSmun])$/;
const GRPC_TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1_000, m: 1, u: 1e-3, n: 1e-6 };
const CONNECT_TIMEOUT = /^\d{1,10}$/;
const JSON_CONTENT_TYPE = /^application\/json(?:;\s*charset=utf-?8)?$/i;

export function createHandler(options: HandlerOptions): (req: NodeRequest, res: NodeResponse) => void {
  const router = createConnectRouter({
    interceptors: options.interceptors,
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
  let json: JsonValue | undefined;
  if (isConnectUnaryJson(handler, req)) {
    try {
      json = parseJsonRequest(handler.method.input, await readBody(req, options.requestBytesMax));
    } catch (error) {
      const connectError = error instanceof BillingError ? toConnectError(error) : ConnectError.from(error, Code.InvalidArgument);
      options.onRefused?.(`${handler.service.typeName}/${handler.method.name}`, connectError.code);
      return sendJsonError(res, connectError);
    }
  }
  const uReq = universalRequestFromNodeRequest(req, res, json, undefined);
  capDeadline(uReq.header, options.timeoutMsMax);
  const uRes = await handler(uReq);
  await universalResponseToNodeResponse(uRes, res);
}

/** A Connect unary POST with an uncompressed JSON body. */
function isConnectUnaryJson(handler: UniversalHandler, req: NodeRequest): boolean {
  const encoding = req.headers['content-encoding'];
  return (
    handler.method.methodKind === 'unary' &&
    req.method === 'POST' &&
    JSON_CONTENT_TYPE.test(String(req.headers['content-type'] ?? '')) &&
    (encoding === undefined || encoding === 'identity')
  );
}

async function readBody(req: NodeRequest, bytesMax: number): Promise<Uint8Array> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > bytesMax) throw tooLarge(bytesMax);
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (length > bytesMax) throw tooLarge(bytesMax);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function tooLarge(bytesMax: number): BillingError {
  return new BillingError('REQUEST_TOO_LARGE', `the request is larger than ${bytesMax} bytes`);
}

function sendJsonError(res: NodeResponse, error: ConnectError): void {
  const body = errorToJsonBytes(error, {});
  (res as http.ServerResponse).writeHead(codeToHttpStatus(error.code), {
    'content-type': 'application/json',
    'content-length': String(body.byteLength),
  });
  res.end(body);
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
