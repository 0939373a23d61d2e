// grpc.health.v1.Health for the Connect router, so that load balancers, Kubernetes
// (grpc probes) and grpc_health_probe can ask whether this process can serve.
//
// Every name in `services` shares one probe: the service's RPCs all depend on the same
// backing resources (the database), so a per-service probe would only say the same thing
// several times.

import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import {
  Health,
  type HealthCheckRequest,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
  type HealthListResponse,
} from "../../gen/health/v1/health_pb.js";

/** How often Watch re-probes; watchers only hear about changes, so this bounds their lag. */
const WATCH_INTERVAL_MS = 5_000;

/**
 * Registers grpc.health.v1.Health. "" (the whole server) and every name in `services` are
 * known; any other name is NOT_FOUND for Check, as the health-checking spec requires.
 */
export function registerHealth(
  router: ConnectRouter,
  probe: () => Promise<boolean>,
  services: readonly string[],
): void {
  const known = new Set(["", ...services]);
  router.service(Health, {
    check: (req) => checkOne(known, probe, req.service),
    watch: (req, ctx) => watch(known, probe, req, ctx),
    list: () => listAll(known, probe),
  });
}

/** A probe that throws (e.g. the database is unreachable) means "not serving", never an RPC error. */
async function currentStatus(probe: () => Promise<boolean>): Promise<ServingStatus> {
  try {
    return (await probe()) ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
  } catch {
    return ServingStatus.NOT_SERVING;
  }
}

function response(status: ServingStatus): HealthCheckResponse {
  return create(HealthCheckResponseSchema, { status });
}

async function checkOne(
  known: ReadonlySet<string>,
  probe: () => Promise<boolean>,
  service: string,
): Promise<HealthCheckResponse> {
  if (!known.has(service)) {
    throw new ConnectError(`unknown service ${JSON.stringify(service)}`, Code.NotFound);
  }
  return response(await currentStatus(probe));
}

/**
 * For an unknown service we follow the spec literally: send SERVICE_UNKNOWN and keep the
 * stream open (a client treats the stream ending as a reason to reconnect and retry, which
 * would only spin). Our set of services is fixed, so nothing more is ever sent; the stream
 * ends when the client goes away or the server shuts down.
 */
async function* watch(
  known: ReadonlySet<string>,
  probe: () => Promise<boolean>,
  req: HealthCheckRequest,
  ctx: HandlerContext,
): AsyncGenerator<HealthCheckResponse> {
  if (!known.has(req.service)) {
    yield response(ServingStatus.SERVICE_UNKNOWN);
    await untilAborted(ctx.signal);
    return;
  }
  let last: ServingStatus | undefined;
  do {
    const status = await currentStatus(probe);
    if (status !== last) {
      last = status;
      yield response(status);
    }
  } while (await pause(WATCH_INTERVAL_MS, ctx.signal));
}

/** Waits `ms`; resolves false instead of rejecting when the call ends first, so the loop just stops. */
async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}

function untilAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}

/** One probe for the whole list: every name shares it, and List is a snapshot anyway. */
async function listAll(
  known: ReadonlySet<string>,
  probe: () => Promise<boolean>,
): Promise<Pick<HealthListResponse, "statuses">> {
  const status = await currentStatus(probe);
  return { statuses: Object.fromEntries([...known].map((name) => [name, response(status)])) };
}
