// Starts the service's tracing (src/telemetry.ts) in this test process with an in-memory
// exporter. Import it FIRST in a test file: the pg instrumentation patches pg as it is
// loaded, and the other imports (the app, the database helpers) load it.
import { InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace';
import { startTracing } from '../../src/telemetry.js';

export const spans = new InMemorySpanExporter();
export const tracing = await startTracing({ serviceName: 'billing-test' }, { spanProcessors: [new SimpleSpanProcessor({ exporter: spans })] });
