// Health and reflection are for tools we don't write (grpcurl, grpc_health_probe, Kubernetes),
// so they are checked over a real HTTP/2 socket with an independent gRPC stack: @grpc/grpc-js
// with the upstream .proto files, not our generated code.

import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { create, createFileRegistry, fromBinary, getOption } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { registerHealth } from "../../src/rpc/health.js";
import { registerReflection } from "../../src/rpc/reflection.js";
import { file_billing_v1_billing_service } from "../../gen/billing/v1/billing_service_pb.js";
import { file_billing_v1_admin_service } from "../../gen/billing/v1/admin_service_pb.js";
import { file_billing_v1_wallet_service } from "../../gen/billing/v1/wallet_service_pb.js";
import { scope, Scope } from "../../gen/billing/v1/options_pb.js";
import { file_health_v1_health } from "../../gen/health/v1/health_pb.js";
import { file_grpc_reflection_v1_reflection } from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { file_grpc_reflection_v1alpha_reflection } from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

const BILLING_SERVICES = ["billing.v1.BillingService", "billing.v1.AdminService", "billing.v1.WalletService"];
const modules = fileURLToPath(new URL("../../node_modules/", import.meta.url));

// Shapes of what grpc-js hands back (proto-loader with keepCase and oneofs: true).
interface ReflectionResponse {
  valid_host: string;
  original_request: { host: string; file_containing_symbol?: string } | null;
  message_response: string;
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  all_extension_numbers_response?: { base_type_name: string; extension_number: number[] };
  error_response?: { error_code: number; error_message: string };
}
interface HealthResponse {
  status: string;
}

let healthy: boolean | "throws" = true;
let server: http2.Http2Server;
let address: string;
const clients: grpc.Client[] = [];

// Loaded once: the upstream protos of both standard services, as any gRPC user would have them.
let packages: grpc.GrpcObject | undefined;

function loadClient(fqService: string): grpc.Client {
  packages ??= grpc.loadPackageDefinition(
    protoLoader.loadSync(
      ["health/v1/health.proto", "grpc/reflection/v1/reflection.proto", "grpc/reflection/v1alpha/reflection.proto"],
      {
        includeDirs: [`${modules}grpc-health-check/proto`, `${modules}@grpc/reflection/build/proto`],
        keepCase: true,
        enums: String,
        defaults: true,
        oneofs: true,
      },
    ),
  );
  const Ctor = fqService.split(".").reduce<unknown>((o, k) => (o as grpc.GrpcObject)[k], packages);
  const client = new (Ctor as grpc.ServiceClientConstructor)(address, grpc.credentials.createInsecure());
  clients.push(client);
  return client;
}

type Method<Req, Res> = (req: Req, cb: (err: grpc.ServiceError | null, res: Res) => void) => void;

function unary<Req, Res>(client: grpc.Client, method: string, req: Req): Promise<Res> {
  const fn = (client as unknown as Record<string, Method<Req, Res>>)[method]!.bind(client);
  return new Promise((resolve, reject) => fn(req, (err, res) => (err ? reject(err) : resolve(res))));
}

/** One bidi stream: send all requests, half-close, collect every response until the server ends. */
function reflect(client: grpc.Client, requests: object[]): Promise<ReflectionResponse[]> {
  const call = (client as unknown as { ServerReflectionInfo(): grpc.ClientDuplexStream<object, ReflectionResponse> }).ServerReflectionInfo();
  return new Promise((resolve, reject) => {
    const out: ReflectionResponse[] = [];
    call.on("data", (res: ReflectionResponse) => out.push(res));
    call.on("error", reject);
    call.on("end", () => resolve(out));
    for (const req of requests) call.write(req);
    call.end();
  });
}

function decode(res: ReflectionResponse): FileDescriptorProto[] {
  expect(res.message_response).toBe("file_descriptor_response");
  return res.file_descriptor_response!.file_descriptor_proto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
}

beforeAll(async () => {
  const handler = connectNodeAdapter({
    routes: (router) => {
      registerHealth(router, async () => {
        if (healthy === "throws") throw new Error("database unreachable");
        return healthy;
      }, BILLING_SERVICES);
      registerReflection(router, [
        file_billing_v1_billing_service,
        file_billing_v1_admin_service,
        file_billing_v1_wallet_service,
        file_health_v1_health,
        file_grpc_reflection_v1_reflection,
        file_grpc_reflection_v1alpha_reflection,
      ]);
    },
  });
  server = http2.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  for (const c of clients) c.close();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe.each(["v1", "v1alpha"])("server reflection %s", (version) => {
  const client = () => loadClient(`grpc.reflection.${version}.ServerReflection`);

  it("lists every registered service, including health and both reflection versions", async () => {
    const [res] = await reflect(client(), [{ host: "h", list_services: "*" }]);
    expect(res!.message_response).toBe("list_services_response");
    expect(res!.list_services_response!.service.map((s) => s.name).sort()).toEqual(
      [
        ...BILLING_SERVICES,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
      ].sort(),
    );
  });

  it("returns the file declaring a service first, then its transitive imports, decodable and buildable", async () => {
    const [res] = await reflect(client(), [{ host: "h", file_containing_symbol: "billing.v1.BillingService" }]);
    const files = decode(res!);
    expect(files[0]!.name).toBe("billing/v1/billing_service.proto");
    expect(files.map((f) => f.name).sort()).toEqual(
      [
        "billing/v1/billing_service.proto",
        "billing/v1/types.proto",
        "google/protobuf/timestamp.proto",
        "billing/v1/options.proto",
        "google/protobuf/descriptor.proto",
      ].sort(),
    );
    expect(files[0]!.dependency).toContain("billing/v1/types.proto");
    // A client can rebuild the service from nothing but the answer (imports go first in a set).
    const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: [...files].reverse() }));
    const service = registry.getService("billing.v1.BillingService");
    expect(service?.methods.map((m) => m.name)).toContain("GetBalance");
    expect(registry.getMessage("billing.v1.GetBalanceRequest")?.fields[0]?.jsonName).toBe("userId");
    // The scope a method needs travels with it: option (billing.v1.scope), field 51001.
    const grant = service?.methods.find((m) => m.name === "Grant");
    expect(getOption(grant!, scope)).toBe(Scope.GRANT);
  });

  it.each([
    ["billing.v1.BillingService.GetBalance", "billing/v1/billing_service.proto"],
    ["billing.v1.GetBalanceRequest", "billing/v1/billing_service.proto"],
    ["billing.v1.GetBalanceRequest.user_id", "billing/v1/billing_service.proto"],
    ["billing.v1.Plan", "billing/v1/types.proto"],
    ["billing.v1.PLAN_FREE", "billing/v1/types.proto"],
    ["google.protobuf.Timestamp", "google/protobuf/timestamp.proto"],
    ["grpc.health.v1.Health", "health/v1/health.proto"],
  ])("finds the file containing %s", async (symbol, file) => {
    const [res] = await reflect(client(), [{ file_containing_symbol: symbol }]);
    expect(decode(res!)[0]!.name).toBe(file);
  });

  it("serves files by name", async () => {
    const [res] = await reflect(client(), [{ file_by_filename: "billing/v1/admin_service.proto" }]);
    expect(decode(res!).map((f) => f.name)).toEqual(
      expect.arrayContaining(["billing/v1/admin_service.proto", "billing/v1/types.proto", "google/protobuf/timestamp.proto"]),
    );
  });

  it("answers unknown names with NOT_FOUND (5), echoing host and request, and keeps the stream usable", async () => {
    const responses = await reflect(client(), [
      { host: "example:443", file_containing_symbol: "billing.v1.NoSuchThing" },
      { file_by_filename: "nope.proto" },
      { file_containing_extension: { containing_type: "billing.v1.GetBalanceRequest", extension_number: 100 } },
      { all_extension_numbers_of_type: "billing.v1.NoSuchThing" },
      { list_services: "" },
    ]);
    expect(responses).toHaveLength(5);
    for (const res of responses.slice(0, 4)) {
      expect(res.message_response).toBe("error_response");
      expect(res.error_response!.error_code).toBe(5);
    }
    expect(responses[0]!.valid_host).toBe("example:443");
    expect(responses[0]!.original_request).toMatchObject({ host: "example:443", file_containing_symbol: "billing.v1.NoSuchThing" });
    expect(responses[4]!.message_response).toBe("list_services_response");
  });

  it("reports an empty extension list for a known message", async () => {
    const [res] = await reflect(client(), [{ all_extension_numbers_of_type: "billing.v1.GetBalanceRequest" }]);
    expect(res!.all_extension_numbers_response).toEqual({ base_type_name: "billing.v1.GetBalanceRequest", extension_number: [] });
  });
});

describe("health", () => {
  const client = () => loadClient("grpc.health.v1.Health");
  const check = (service: string) => unary<object, HealthResponse>(client(), "Check", { service });

  it("is SERVING while the probe passes, NOT_SERVING when it fails or throws", async () => {
    healthy = true;
    expect((await check("")).status).toBe("SERVING");
    expect((await check("billing.v1.BillingService")).status).toBe("SERVING");
    healthy = false;
    expect((await check("")).status).toBe("NOT_SERVING");
    expect((await check("billing.v1.WalletService")).status).toBe("NOT_SERVING");
    healthy = "throws";
    expect((await check("")).status).toBe("NOT_SERVING");
    healthy = true;
  });

  it("answers an unknown service with NOT_FOUND", async () => {
    await expect(check("billing.v1.Nope")).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });

  it("lists the overall status and every service", async () => {
    healthy = true;
    const res = await unary<object, { statuses: Record<string, HealthResponse> }>(client(), "List", {});
    expect(Object.keys(res.statuses).sort()).toEqual(["", ...BILLING_SERVICES].sort());
    expect(Object.values(res.statuses).every((s) => s.status === "SERVING")).toBe(true);
  });

  /** Collects Watch messages until `count` arrived, checks the stream is still open a moment later, then cancels. */
  function watch(service: string, count: number, onFirst?: () => void): Promise<string[]> {
    const call = (client() as unknown as { Watch(req: object): grpc.ClientReadableStream<HealthResponse> }).Watch({ service });
    return new Promise((resolve, reject) => {
      const seen: string[] = [];
      call.on("data", (res: HealthResponse) => {
        seen.push(res.status);
        if (seen.length === 1) onFirst?.();
        if (seen.length === count) {
          setTimeout(() => {
            call.cancel();
            resolve(seen);
          }, 200);
        }
      });
      call.on("error", (err: grpc.ServiceError) => {
        if (err.code !== grpc.status.CANCELLED) reject(err);
      });
      call.on("end", () => reject(new Error(`stream ended after ${seen.join(",")}`)));
    });
  }

  it("Watch sends SERVICE_UNKNOWN for an unknown service and stays open", async () => {
    expect(await watch("billing.v1.Nope", 1)).toEqual(["SERVICE_UNKNOWN"]);
  });

  // Watch re-probes every 5 s, so this one waits for one real interval.
  it("Watch sends the current status, then the change", { timeout: 15_000 }, async () => {
    healthy = true;
    const statuses = await watch("", 2, () => {
      healthy = false;
    });
    expect(statuses).toEqual(["SERVING", "NOT_SERVING"]);
    healthy = true;
  });
});
