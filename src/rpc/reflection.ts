// gRPC server reflection (grpc.reflection.v1 and v1alpha) for the Connect router, so that
// grpcurl, Postman, evans and friends can discover and call the API without local .proto files.
//
// Both versions are served because clients still differ in which one they try first (grpcurl
// asks v1 and falls back to v1alpha; older tools only know v1alpha). The two protos are
// wire-identical, so the answers are computed once, in v1 terms, and v1alpha traffic is
// re-encoded through the binary format on the way in and out rather than duplicated.

import {
  create,
  createFileRegistry,
  type DescEnum,
  type DescExtension,
  type DescFile,
  type DescMessage,
  type DescService,
  type FileRegistry,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

type Request = v1.ServerReflectionRequest;
type Response = v1.ServerReflectionResponse;
type Answer = MessageInitShape<typeof v1.ServerReflectionResponseSchema>["messageResponse"];

/** What the reflection answers are computed from; built once, at registration. */
interface Catalog {
  readonly registry: FileRegistry;
  /** Every name file_containing_symbol accepts, mapped to the file that declares it. */
  readonly symbols: ReadonlyMap<string, DescFile>;
  readonly services: readonly string[];
}

/**
 * Registers grpc.reflection.v1.ServerReflection and grpc.reflection.v1alpha.ServerReflection.
 * `files` are the generated descriptors to expose (their imports are added automatically);
 * include the health and reflection files themselves so that those services are listed too.
 */
export function registerReflection(router: ConnectRouter, files: readonly DescFile[]): void {
  const catalog = buildCatalog(files);
  const answerV1 = (req: Request): Response => answer(catalog, req);
  const answerV1alpha = (req: v1alpha.ServerReflectionRequest): v1alpha.ServerReflectionResponse =>
    recode(v1.ServerReflectionResponseSchema, v1alpha.ServerReflectionResponseSchema,
      answerV1(recode(v1alpha.ServerReflectionRequestSchema, v1.ServerReflectionRequestSchema, req)));
  router.service(v1.ServerReflection, { serverReflectionInfo: (reqs) => mapStream(reqs, answerV1) });
  router.service(v1alpha.ServerReflection, { serverReflectionInfo: (reqs) => mapStream(reqs, answerV1alpha) });
}

/** Converts between wire-identical message types (v1 <-> v1alpha) without field-by-field copying. */
function recode<I extends DescMessage, O extends DescMessage>(from: I, to: O, msg: MessageShape<I>): MessageShape<O> {
  return fromBinary(to, toBinary(from, msg));
}

/** Requests on the stream are independent, so each one gets exactly one answer, in order. */
async function* mapStream<I, O>(requests: AsyncIterable<I>, fn: (req: I) => O): AsyncGenerator<O> {
  for await (const req of requests) yield fn(req);
}

function buildCatalog(files: readonly DescFile[]): Catalog {
  // A FileDescriptorSet must list imports before importers, which withImports guarantees;
  // parsing it once gives a single registry whose files all refer to each other consistently.
  const set = create(FileDescriptorSetSchema, { file: withImports(files).map((f) => f.proto) });
  const registry = createFileRegistry(set);
  const symbols = new Map<string, DescFile>();
  const services: string[] = [];
  for (const desc of registry) {
    for (const name of symbolNames(desc)) symbols.set(name, desc.file);
    if (desc.kind === "service") services.push(desc.typeName);
  }
  return { registry, symbols, services };
}

/** The given files plus everything they import, transitively, each once, imports first. */
function withImports(files: Iterable<DescFile>): DescFile[] {
  const ordered = new Map<string, DescFile>();
  const visit = (file: DescFile): void => {
    if (ordered.has(file.proto.name)) return;
    file.dependencies.forEach(visit);
    ordered.set(file.proto.name, file);
  };
  for (const file of files) visit(file);
  return [...ordered.values()];
}

/**
 * The registry only indexes types, but clients also ask for methods (grpcurl describes
 * "pkg.Service.Method"), fields, oneofs and enum values. Enum values are named as siblings
 * of their enum (protobuf's C++ scoping), e.g. "billing.v1.PLAN_FREE", not "billing.v1.Plan.PLAN_FREE".
 */
function* symbolNames(desc: DescMessage | DescEnum | DescExtension | DescService): Generator<string> {
  yield desc.typeName;
  switch (desc.kind) {
    case "message":
      for (const member of [...desc.fields, ...desc.oneofs]) yield `${desc.typeName}.${member.name}`;
      break;
    case "service":
      for (const method of desc.methods) yield `${desc.typeName}.${method.name}`;
      break;
    case "enum": {
      const scope = desc.typeName.slice(0, desc.typeName.length - desc.name.length);
      for (const value of desc.values) yield scope + value.name;
      break;
    }
  }
}

/** The response always echoes host and request: clients pipeline requests and match by them. */
function answer(catalog: Catalog, req: Request): Response {
  return create(v1.ServerReflectionResponseSchema, {
    validHost: req.host,
    originalRequest: req,
    messageResponse: dispatch(catalog, req.messageRequest),
  });
}

function dispatch(catalog: Catalog, request: Request["messageRequest"]): Answer {
  const { registry, symbols } = catalog;
  switch (request.case) {
    case "listServices":
      return { case: "listServicesResponse", value: { service: catalog.services.map((name) => ({ name })) } };
    case "fileByFilename":
      return fileAnswer(registry.getFile(request.value), `file ${request.value}`);
    case "fileContainingSymbol":
      return fileAnswer(symbols.get(request.value), `symbol ${request.value}`);
    case "fileContainingExtension":
      return fileAnswer(extensionFile(registry, request.value), `extension ${request.value.extensionNumber} of ${request.value.containingType}`);
    case "allExtensionNumbersOfType":
      return extensionNumbers(registry, request.value);
    default:
      return errorAnswer(Code.InvalidArgument, "no message_request set");
  }
}

/**
 * A client has to build the file before it can use it, and building needs every import, so
 * the requested file comes first and its whole import closure follows. We resend imports
 * on every request rather than tracking what this stream already got: the spec allows both,
 * and the files are small.
 */
function fileAnswer(file: DescFile | undefined, what: string): Answer {
  if (!file) return errorAnswer(Code.NotFound, `${what} not found`);
  const closure = withImports([file]).reverse();
  return {
    case: "fileDescriptorResponse",
    value: { fileDescriptorProto: closure.map((f) => toBinary(FileDescriptorProtoSchema, f.proto)) },
  };
}

function extensionFile(registry: FileRegistry, req: v1.ExtensionRequest): DescFile | undefined {
  const extendee = registry.getMessage(req.containingType);
  return extendee && registry.getExtensionFor(extendee, req.extensionNumber)?.file;
}

/** A known message with no extensions gets an empty list (as grpc-go does); only unknown types are NOT_FOUND. */
function extensionNumbers(registry: FileRegistry, typeName: string): Answer {
  if (!registry.getMessage(typeName)) return errorAnswer(Code.NotFound, `type ${typeName} not found`);
  const extensionNumber = [...registry].flatMap((d) =>
    d.kind === "extension" && d.extendee.typeName === typeName ? [d.number] : [],
  );
  return { case: "allExtensionNumbersResponse", value: { baseTypeName: typeName, extensionNumber } };
}

function errorAnswer(code: Code, message: string): Answer {
  return { case: "errorResponse", value: { errorCode: code, errorMessage: message } };
}
