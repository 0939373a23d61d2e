// The span of every RPC, when tracing is on (src/telemetry.ts): OpenTelemetry's HTTP
// instrumentation does not see this server's HTTP/2 calls, so this interceptor, outermost,
// starts a server span named by the procedure (billing.v1.BillingService/Charge), continues
// the caller's W3C traceparent, and runs the call inside it: the database spans (pg
// instrumentation) and the access log (trace.getActiveSpan()) find it as the active span.
// Its status is the call's outcome: an error code sets ERROR with the code's name.
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import { context, propagation, SpanKind, SpanStatusCode, trace, type TextMapGetter } from '@opentelemetry/api';

const headerGetter: TextMapGetter<Headers> = {
  keys: (headers) => [...headers.keys()],
  get: (headers, key) => headers.get(key) ?? undefined,
};

/** The rpc.system of every span: the service speaks gRPC, gRPC-Web and Connect, all through connect-es. */
const RPC_SYSTEM = 'connect_rpc';

export function tracingInterceptor(): Interceptor {
  const tracer = trace.getTracer('billing-rpc');
  return (next) => async (req) => {
    const procedure = `${req.service.typeName}/${req.method.name}`;
    const parent = propagation.extract(context.active(), req.header, headerGetter);
    const span = tracer.startSpan(
      procedure,
      {
        kind: SpanKind.SERVER,
        attributes: { 'rpc.system': RPC_SYSTEM, 'rpc.service': req.service.typeName, 'rpc.method': req.method.name },
      },
      parent,
    );
    try {
      const res = await context.with(trace.setSpan(parent, span), () => next(req));
      span.setAttribute('rpc.connect_rpc.error_code', 'ok');
      span.setAttribute('rpc.grpc.status_code', 0);
      return res;
    } catch (error) {
      const code = error instanceof ConnectError ? error.code : Code.Internal;
      const name = Code[code] ?? 'unknown';
      span.setAttribute('rpc.connect_rpc.error_code', snake(name));
      span.setAttribute('rpc.grpc.status_code', code);
      // The message of a non-Connect error is not recorded: its text may hold SQL or secrets.
      span.setStatus({ code: SpanStatusCode.ERROR, message: snake(name) });
      throw error;
    } finally {
      span.end();
    }
  };
}

/** A Connect code name as the protocol spells it on the wire (FailedPrecondition → failed_precondition). */
function snake(name: string): string {
  return name.replace(/(?<=[a-z])(?=[A-Z])/g, '_').toLowerCase();
}
