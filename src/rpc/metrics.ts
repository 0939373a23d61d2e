// Prometheus metrics: per-procedure call counts by code and latency, plus process metrics.
import type { Interceptor } from '@connectrpc/connect';
import { Counter, collectDefaultMetrics, Histogram, Registry } from 'prom-client';
import { codeName } from './codes.js';

export interface Metrics {
  readonly registry: Registry;
  readonly interceptor: Interceptor;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const calls = new Counter({
    name: 'billing_rpc_calls_total',
    help: 'RPCs handled, by procedure and status code.',
    labelNames: ['procedure', 'code'] as const,
    registers: [registry],
  });
  const seconds = new Histogram({
    name: 'billing_rpc_duration_seconds',
    help: 'RPC handling time, by procedure.',
    labelNames: ['procedure'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [registry],
  });
  const interceptor: Interceptor = (next) => async (req) => {
    const procedure = `${req.service.typeName}/${req.method.name}`;
    const end = seconds.startTimer({ procedure });
    let code = 'ok';
    try {
      return await next(req);
    } catch (error) {
      code = codeName(error);
      throw error;
    } finally {
      end();
      calls.inc({ procedure, code });
    }
  };
  return { registry, interceptor };
}
