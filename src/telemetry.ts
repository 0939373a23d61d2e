// OpenTelemetry tracing for the process: the Node SDK with the OTLP (protobuf over HTTP)
// trace exporter and the pg instrumentation; propagation is the SDK's default
// (W3C trace context and baggage, or OTEL_PROPAGATORS). Only main.ts
// (and the tracing test) call it, and only when config.tracing is set: with tracing off
// none of the SDK is loaded. It must start before pg is first loaded, because the pg
// instrumentation patches the module as it is required: main.ts starts it and only then
// imports the app (and through it MikroORM and pg). The exporter reads its endpoint,
// headers and timeout from the standard OTEL_EXPORTER_OTLP_* variables itself.
import type { SpanProcessor } from '@opentelemetry/sdk-trace';
import type { TracingConfig } from './config.js';

export interface Tracing {
  /** Flushes the spans not yet exported and stops the SDK. */
  shutdown(): Promise<void>;
}

export interface TracingOptions {
  /** Span processors to use instead of a batch processor on the OTLP exporter (tests: an in-memory exporter). */
  readonly spanProcessors?: SpanProcessor[];
}

export async function startTracing(config: TracingConfig, options: TracingOptions = {}): Promise<Tracing> {
  const [{ NodeSDK }, { BatchSpanProcessor }, { OTLPTraceExporter }, { PgInstrumentation }] = await Promise.all([
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/sdk-trace'),
    import('@opentelemetry/exporter-trace-otlp-proto'),
    import('@opentelemetry/instrumentation-pg'),
  ]);
  const sdk = new NodeSDK({
    serviceName: config.serviceName,
    spanProcessors: options.spanProcessors ?? [new BatchSpanProcessor({ exporter: new OTLPTraceExporter() })],
    // Traces only: this service's metrics are Prometheus (src/rpc/metrics.ts), its logs pino.
    metricReaders: [],
    logRecordProcessors: [],
    instrumentations: [
      // Statements outside a traced call (jobs, migrations, the pool's housekeeping) make no root spans.
      new PgInstrumentation({ requireParentSpan: true }),
    ],
  });
  sdk.start();
  return { shutdown: () => sdk.shutdown() };
}
