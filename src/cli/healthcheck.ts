// node dist/src/cli/healthcheck.js — the container's HEALTHCHECK: asks this machine's
// service grpc.health.v1.Health/Check (the whole server, "") over gRPC and exits 0 when it
// answers SERVING, 1 otherwise (not serving, no answer within 3 s, refused). The image has
// no grpcurl or curl. It reads only PORT (as the service does, default 8080), not the whole
// configuration: a health probe must not fail on what only the server needs.
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from '../../gen/health/v1/health_pb.js';

const TIMEOUT_MS = 3_000;
const port = Number(process.env.PORT ?? '8080');
const health = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
try {
  const { status } = await health.check({ service: '' }, { timeoutMs: TIMEOUT_MS });
  process.stdout.write(`${ServingStatus[status]}\n`);
  process.exitCode = status === ServingStatus.SERVING ? 0 : 1;
} catch (error) {
  process.stdout.write(`unhealthy: ${(error as Error).message}\n`);
  process.exitCode = 1;
}
