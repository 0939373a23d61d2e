// The only reader of process.env. Parses the environment and the catalogue file once,
// reports every error together, and returns a frozen Config.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createSecureContext } from 'node:tls';
import cron from 'node-cron';
import { getAddress } from 'ethers';
import { z } from 'zod';
import { GrantRequestSchema, ReserveRequestSchema } from '../gen/billing/v1/billing_service_pb.js';
import type { Catalogue, ModelPrice, OperationPrice } from './domain/catalogue.js';
import { parseDecimal } from './domain/money.js';
import { type ChainName, type ChainSpec, CHAINS, chainByName, defaultTokens, type TokenSpec } from './wallet/chains.js';
import { loadWalletKeys, WalletKeyError, type WalletKeys } from './wallet/keys.js';
import { type ExactDecimal, parseExact } from './wallet/pricing.js';
import { integerBounds } from './rpc/limits.js';
import type { ServerLimits } from './server.js';

// Bounds the catalogue shares with requests, read from the contract where they are stated.
/** The longest hold a caller may ask for (ReserveRequest.ttl_seconds): the default must be one. */
const HOLD_TTL_SECONDS_MAX = Number(integerBounds(ReserveRequestSchema.field.ttlSeconds).max);
/** The largest amount one request may move (GrantRequest.amount_millicredits): a SKU or price must be one. */
const AMOUNT_MILLICREDITS_MAX = integerBounds(GrantRequestSchema.field.amountMillicredits).max;

export type Scope = 'spend' | 'grant' | 'admin' | 'wallet';
export const SCOPES: readonly Scope[] = ['spend', 'grant', 'admin', 'wallet'];

/**
 * A named caller: its scopes and how it proves who it is. The name is the actor of its
 * calls (src/rpc/caller.ts). A token caller is known by the SHA-256 of its token only (the
 * token itself is not kept); a certificate caller by the name in its client certificate.
 */
export interface NamedCaller {
  readonly scopes: ReadonlySet<Scope>;
  /** SHA-256 of the bearer token; undefined for a certificate caller. */
  readonly tokenSha256?: Buffer;
  /** True when the caller proves its name with a client certificate (mutual TLS). */
  readonly certificate: boolean;
}

/** TLS on the one port, from certificate files reloaded when they change (src/server.ts). */
export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
  /** Mutual TLS: every client must present a certificate signed by this CA. */
  readonly clientCaFile?: string;
}

export interface Config {
  readonly port: number;
  readonly metricsPort: number;
  /** Interface to bind; loopback unless tokens are configured. */
  readonly host: string;
  readonly databaseUrl?: string;
  /** Named prepared statements on PostgreSQL: off behind a transaction pooler (README, "Poolers"). */
  readonly databasePreparedStatements: 'auto' | 'on' | 'off';
  /** The longest one statement may run on PostgreSQL; a call's deadline lowers it. */
  readonly databaseStatementTimeoutMs: number;
  readonly dataDir: string;
  readonly configPath: string;
  readonly production: boolean;
  /**
   * Name → named caller (BILLING_TOKENS, BILLING_TOKENS_FILE, BILLING_CERT_SCOPES). Empty
   * means open (local development only).
   */
  readonly tokens: ReadonlyMap<string, NamedCaller>;
  /** TLS on the one port; undefined: plaintext. */
  readonly tls?: TlsFiles;
  readonly catalogue: Catalogue;
  readonly dailyTopUpSchedule: string;
  readonly holdSweepSchedule: string;
  readonly logLevel: string;
  /** Milliseconds between the progress lines of the daily top-up and VerifyLedger (jobs/progress.ts). */
  readonly progressIntervalMs: number;
  /** Largest request body accepted, in bytes. */
  readonly requestBytesMax: number;
  /** Units of database work admitted at once (storage/admission.ts); default: from the pool's size. */
  readonly databaseWorkMax?: number;
  /** Charges and other units of work batched per database transaction (ledger/kernel/batch.ts). */
  readonly batching: { readonly lanes: number; readonly unitsMax: number };
  /** Timeouts and caps on connections and calls (README, Configuration). */
  readonly server: ServerLimits;
  readonly wallet: WalletConfig;
  /** OpenTelemetry tracing, when an OTLP endpoint is configured (src/telemetry.ts). */
  readonly tracing?: TracingConfig;
}

/** A chain to watch: its RPC URL is set. */
export interface WatchedChain {
  readonly spec: ChainSpec;
  /** May carry a provider's API key: never logged. */
  readonly url: string;
  /** Credit at this many confirmations instead of at the chain's finalized block. */
  readonly confirmations?: number;
}

export type PriceSource =
  | { readonly kind: 'static'; readonly usdCents: ExactDecimal }
  | { readonly kind: 'chainlink'; readonly feeds: ReadonlyMap<ChainName, string>; readonly maxAgeSeconds: number };

/** What the catalogue says about deposits: the credit's price, the minimum, tokens, prices. */
export interface DepositTerms {
  readonly creditPriceUsdCents: ExactDecimal;
  readonly minimumUsdCents: bigint;
  /** Accepted tokens per chain, the native coin first. */
  readonly tokens: ReadonlyMap<ChainName, readonly TokenSpec[]>;
  /** Price source per token symbol; a symbol without one is never priced. */
  readonly prices: ReadonlyMap<string, PriceSource>;
}

export interface WalletConfig {
  /** The public account node; undefined when the wallet is off. */
  readonly keys?: WalletKeys;
  /** The seed file this start created: the operator must back it up. */
  readonly createdSeedFile?: string;
  /** Why the wallet is off, for FAILED_PRECONDITION; undefined when it is on. */
  readonly disabledReason?: string;
  readonly chains: readonly WatchedChain[];
  readonly terms?: DepositTerms;
  readonly pollSeconds: number;
  readonly blocksPerPoll: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  - ${problems.join('\n  - ')}`);
    this.name = 'ConfigError';
  }
}

const millicredits = z.union([z.number().int(), z.string().regex(/^\d+$/)])
  .transform((v) => BigInt(v))
  .refine((v) => v >= 0n && v <= AMOUNT_MILLICREDITS_MAX, 'must be between 0 and 10^12 milli-credits');

const exactPositive = z.string()
  .refine((v) => parseExact(v) !== undefined, 'must be an exact decimal string like "1.27"')
  .refine((v) => (parseExact(v)?.units ?? 0n) > 0n, 'must be positive');

const nameSchema = z.string().regex(/^[a-z0-9._-]{1,64}$/, 'must be 1-64 characters of a-z 0-9 . _ -');

const catalogueFileSchema = z.object({
  name: z.string().min(1).max(64),
  pricing: z.object({
    tokensPerUnit: z.number().int().min(10_000).max(50_000).default(20_000),
    outputWeight: z.number().int().min(4).max(8).default(4),
  }),
  models: z.array(z.object({
    name: z.string().min(1).max(64),
    tier: z.enum(['FAST', 'STANDARD', 'PREMIUM']),
    multiplier: z.union([z.string(), z.number().transform(String)])
      .refine((v) => parseDecimal(v) !== undefined, 'must be a decimal like "2.2" (at most 6 fractional digits)')
      .refine((v) => (parseDecimal(v)?.units ?? 0n) > 0n, 'must be positive'),
    proOnly: z.boolean(),
  })).min(1),
  operations: z.array(z.object({
    name: nameSchema,
    priceMillicredits: millicredits,
    freeWithEntitlement: nameSchema.optional(),
  })),
  dailyFreeOperations: z.object({
    perDay: z.number().int().min(0).max(10_000),
    operations: z.array(nameSchema),
  }).default({ perDay: 0, operations: [] }),
  skus: z.array(z.object({ name: nameSchema, amountMillicredits: millicredits })),
  balance: z.object({
    lowBalanceMillicredits: millicredits.default(1000n),
    minimumStartMillicredits: millicredits.default(100n),
  }),
  dailyTopUp: z.object({
    targetMillicredits: millicredits.default(5000n),
    schedule: z.string().default('0 0 * * *'),
  }),
  holds: z.object({
    defaultTtlSeconds: z.number().int().min(1).max(HOLD_TTL_SECONDS_MAX).default(600),
    sweepSchedule: z.string().default('*/30 * * * * *'),
  }),
  deposits: z.object({
    creditPriceUsdCents: exactPositive,
    minimumUsdCents: z.number().int().min(0).max(100_000_000).default(100),
    tokens: z.array(z.object({
      chain: z.enum(CHAINS.map((c) => c.name) as [ChainName, ...ChainName[]]),
      symbol: z.string().regex(/^[A-Za-z0-9.]{1,16}$/, 'must be 1-16 characters of A-Z a-z 0-9 .'),
      contract: z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'must be a 0x-prefixed 20-byte address'),
      decimals: z.number().int().min(0).max(36),
    })).default([]),
    prices: z.record(z.string(), z.union([
      z.object({ staticUsdCents: exactPositive }).strict(),
      z.object({
        chainlink: z.record(z.string(), z.string().regex(/^0x[0-9a-fA-F]{40}$/, 'must be a 0x-prefixed 20-byte address')),
        maxAgeSeconds: z.number().int().min(1).max(7 * 86_400).default(3600),
      }).strict(),
    ])).default({}),
  }).optional(),
}).loose();

const milliseconds = z.coerce.number().int().min(1).max(3_600_000);

const envSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
  HOST: z.string().optional(),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL').optional(),
  DATABASE_PREPARED_STATEMENTS: z.enum(['auto', 'on', 'off']).default('auto'),
  DATABASE_STATEMENT_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(10_000),
  BILLING_DATA_DIR: z.string().min(1).default('./data'),
  BILLING_CONFIG: z.string().min(1).default('config/muse.json'),
  BILLING_TOKENS: z.string().optional(),
  BILLING_TOKENS_FILE: z.string().min(1).optional(),
  BILLING_CERT_SCOPES: z.string().optional(),
  BILLING_TLS_CERT_FILE: z.string().min(1).optional(),
  BILLING_TLS_KEY_FILE: z.string().min(1).optional(),
  BILLING_TLS_CLIENT_CA_FILE: z.string().min(1).optional(),
  NODE_ENV: z.string().default('development'),
  BILLING_ALLOW_EMBEDDED: z.enum(['0', '1'], 'must be 1 (allow) or 0').default('0'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  JOB_PROGRESS_INTERVAL_MS: z.coerce.number().int().min(0).max(3_600_000).default(5_000),
  REQUEST_BYTES_MAX: z.coerce.number().int().min(1024).max(16 * 1024 * 1024).default(256 * 1024),
  DATABASE_WORK_MAX: z.coerce.number().int().min(1).max(100_000).optional(),
  LEDGER_BATCH_LANES: z.coerce.number().int().min(1).max(256).default(4),
  LEDGER_BATCH_UNITS_MAX: z.coerce.number().int().min(1).max(4096).default(128),
  DEPOSIT_POLL_SECONDS: z.coerce.number().min(0.1).max(3600).default(15),
  DEPOSIT_BLOCKS_PER_POLL: z.coerce.number().int().min(1).max(10_000).default(100),
  CONNECTION_FIRST_BYTES_TIMEOUT_MS: milliseconds.default(10_000),
  CONNECTION_IDLE_TIMEOUT_MS: milliseconds.default(65_000),
  REQUEST_HEADERS_TIMEOUT_MS: milliseconds.default(10_000),
  REQUEST_TIMEOUT_MS: milliseconds.default(30_000),
  CONNECTIONS_MAX: z.coerce.number().int().min(1).max(1_000_000).default(4_096),
  CALLS_IN_FLIGHT_MAX: z.coerce.number().int().min(1).max(1_000_000).default(1_024),
  SHUTDOWN_GRACE_MS: milliseconds.default(10_000),
  // OpenTelemetry's own variables (the SDK reads the rest of OTEL_* itself): tracing is on
  // only when an OTLP endpoint is set, and OTEL_SDK_DISABLED=true turns it off regardless.
  OTEL_EXPORTER_OTLP_ENDPOINT: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).optional(),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }).optional(),
  OTEL_SERVICE_NAME: z.string().min(1).max(200).default('billing'),
  OTEL_SDK_DISABLED: z.enum(['true', 'false', 'TRUE', 'FALSE', '']).optional(),
}).refine((e) => e.REQUEST_HEADERS_TIMEOUT_MS <= e.REQUEST_TIMEOUT_MS, {
  path: ['REQUEST_HEADERS_TIMEOUT_MS'],
  message: 'must not be above REQUEST_TIMEOUT_MS',
});

const rpcUrlSchema = z.string().regex(/^https?:\/\/\S+$/, 'must be an http:// or https:// URL').optional();
const confirmationsSchema = z.coerce.number().int().min(1).max(100_000).optional();

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

function issues(prefix: string, error: z.ZodError): string[] {
  return error.issues.map((issue) => `${prefix}${issue.path.join('.') || '(root)'}: ${issue.message}`);
}

// Named callers. A token's text is never quoted back in a problem (nor anything of an entry
// that could be one: an invalid name may be a mistyped token); entries are named by their
// position and, once valid, their name.
const CALLER_NAME = /^[a-z0-9._-]{1,64}$/;
const CALLER_NAME_RULE = 'the name must be 1-64 characters of a-z 0-9 . _ -';
const TOKEN_SHA256 = /^sha256:([0-9a-fA-F]{64})$/;
/** A bearer token's length: at least 16 characters, at most what rpc/auth.ts reads from the header. */
const TOKEN_CHARS_MIN = 16;
const TOKEN_CHARS_MAX = 512;
const TOKEN_RULE = `the token must be ${TOKEN_CHARS_MIN}-${TOKEN_CHARS_MAX} characters without spaces or commas, or sha256:<64 hex digits>`;
/** Scope text shorter than a token may be quoted; longer text may be a token put in the wrong place. */
const QUOTABLE_SCOPE = /^[a-z+]{1,15}$/;

/** One caller as written, before names are checked for uniqueness. */
interface CallerEntry {
  /** "BILLING_TOKENS entry 2", "BILLING_TOKENS_FILE line 4", …: where it was written. */
  readonly where: string;
  readonly name: string;
  readonly caller: NamedCaller;
}

/** "spend+grant" → scopes; pushes a problem (quoting unknown scopes only when short) and returns undefined if bad. */
function parseScopes(text: string, where: string, problems: string[]): Set<Scope> | undefined {
  const scopes = text.split('+');
  const unknown = scopes.filter((s) => !SCOPES.includes(s as Scope));
  if (text === '' || unknown.length > 0) {
    const shown = unknown.every((s) => QUOTABLE_SCOPE.test(s)) && text !== '' ? ` ${unknown.join(', ')}` : ' (not shown)';
    problems.push(`${where}: unknown or missing scope(s)${shown}; scopes are ${SCOPES.join(', ')} joined by +`);
    return undefined;
  }
  return new Set(scopes as Scope[]);
}

/** A token as configured ("sha256:<hex>" or the token itself) → its SHA-256; undefined if malformed. */
function tokenSha256(text: string): Buffer | undefined {
  const hashed = TOKEN_SHA256.exec(text);
  if (hashed) return Buffer.from(hashed[1]!, 'hex');
  if (text.length < TOKEN_CHARS_MIN || text.length > TOKEN_CHARS_MAX || /[\s,]/.test(text)) return undefined;
  return createHash('sha256').update(text, 'utf8').digest();
}

/** One named token caller, or a problem naming `where` (and the name once it is valid). */
function tokenEntry(where: string, name: string, token: string, scopeText: string, problems: string[]): CallerEntry | undefined {
  if (!CALLER_NAME.test(name)) {
    problems.push(`${where}: ${CALLER_NAME_RULE}`);
    return undefined;
  }
  const named = `${where} ("${name}")`;
  const sha256 = tokenSha256(token);
  if (!sha256) problems.push(`${named}: ${TOKEN_RULE}`);
  const scopes = parseScopes(scopeText, named, problems);
  return sha256 && scopes ? { where: named, name, caller: { scopes, tokenSha256: sha256, certificate: false } } : undefined;
}

/**
 * BILLING_TOKENS: comma-separated `name:token=scopes` or `name:sha256:<hex>=scopes`. The
 * older unnamed `token=scopes` still works (a token with no ':'); its caller is named
 * `token-<position>` so that the actor never carries the secret.
 */
function parseTokenList(text: string, problems: string[]): CallerEntry[] {
  const entries: CallerEntry[] = [];
  text.split(',').map((s) => s.trim()).forEach((entry, index) => {
    if (entry === '') return;
    const where = `BILLING_TOKENS entry ${index + 1}`;
    const equals = entry.lastIndexOf('=');
    if (equals <= 0) {
      problems.push(`${where}: must be name:token=scope+scope (or name:sha256:<hex>=scope+scope)`);
      return;
    }
    const credential = entry.slice(0, equals);
    const colon = credential.indexOf(':');
    if (colon < 0) {
      const found = tokenEntry(where, `token-${index + 1}`, credential, entry.slice(equals + 1), problems);
      if (found) entries.push(found);
      return;
    }
    const name = credential.slice(0, colon);
    if (name === 'sha256' && TOKEN_SHA256.test(credential)) {
      // Else the hash would be read as the token of a caller named "sha256".
      problems.push(`${where}: a token's SHA-256 needs a name: name:sha256:<hex>=scope+scope`);
      return;
    }
    const found = tokenEntry(where, name, credential.slice(colon + 1), entry.slice(equals + 1), problems);
    if (found) entries.push(found);
  });
  return entries;
}

/** BILLING_TOKENS_FILE: one caller a line, `name sha256:<hex> scope+scope` (or the token itself); # comments. */
function parseTokenFile(path: string, problems: string[]): CallerEntry[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    problems.push(`BILLING_TOKENS_FILE: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    return [];
  }
  const entries: CallerEntry[] = [];
  text.split(/\r?\n/).forEach((line, index) => {
    const fields = line.replace(/#.*$/, '').trim().split(/\s+/).filter(Boolean);
    if (fields.length === 0) return;
    const where = `BILLING_TOKENS_FILE line ${index + 1}`;
    if (fields.length !== 3) {
      problems.push(`${where}: must be "name sha256:<hex> scope+scope" (three fields)`);
      return;
    }
    const found = tokenEntry(where, fields[0]!, fields[1]!, fields[2]!, problems);
    if (found) entries.push(found);
  });
  return entries;
}

/** BILLING_CERT_SCOPES: `name=scopes,…`, the callers a client certificate may name (mutual TLS). */
function parseCertificateScopes(text: string, problems: string[]): CallerEntry[] {
  const entries: CallerEntry[] = [];
  text.split(',').map((s) => s.trim()).forEach((entry, index) => {
    if (entry === '') return;
    const where = `BILLING_CERT_SCOPES entry ${index + 1}`;
    const [name = '', scopeText = '', ...rest] = entry.split('=');
    if (rest.length > 0 || !CALLER_NAME.test(name)) {
      problems.push(`${where}: must be name=scope+scope; ${CALLER_NAME_RULE}`);
      return;
    }
    const scopes = parseScopes(scopeText, `${where} ("${name}")`, problems);
    if (scopes) entries.push({ where: `${where} ("${name}")`, name, caller: { scopes, certificate: true } });
  });
  return entries;
}

/** Every named caller; names are unique, and so are tokens (else which name would be the actor?). */
function parseCallers(env: NodeJS.ProcessEnv, problems: string[]): Map<string, NamedCaller> {
  const entries = [
    ...parseTokenList(env.BILLING_TOKENS ?? '', problems),
    ...(env.BILLING_TOKENS_FILE ? parseTokenFile(resolve(env.BILLING_TOKENS_FILE), problems) : []),
    ...parseCertificateScopes(env.BILLING_CERT_SCOPES ?? '', problems),
  ];
  const callers = new Map<string, NamedCaller>();
  const tokenOwners = new Map<string, string>();
  for (const { where, name, caller } of entries) {
    if (callers.has(name)) {
      problems.push(`${where}: the name "${name}" is configured more than once`);
      continue;
    }
    const hex = caller.tokenSha256?.toString('hex');
    if (hex !== undefined && tokenOwners.has(hex)) {
      problems.push(`${where}: the same token as "${tokenOwners.get(hex)}"`);
      continue;
    }
    if (hex !== undefined) tokenOwners.set(hex, name);
    callers.set(name, Object.freeze(caller));
  }
  return callers;
}

/** The TLS files, checked now (readable, the key matches the certificate) so a bad pair stops the start. */
function loadTls(
  e: { BILLING_TLS_CERT_FILE?: string | undefined; BILLING_TLS_KEY_FILE?: string | undefined; BILLING_TLS_CLIENT_CA_FILE?: string | undefined },
  certificateCallers: boolean,
  problems: string[],
): TlsFiles | undefined {
  if (!e.BILLING_TLS_CERT_FILE !== !e.BILLING_TLS_KEY_FILE) {
    problems.push('BILLING_TLS_CERT_FILE, BILLING_TLS_KEY_FILE: set both or neither');
    return undefined;
  }
  if (!e.BILLING_TLS_CERT_FILE || !e.BILLING_TLS_KEY_FILE) {
    if (e.BILLING_TLS_CLIENT_CA_FILE) problems.push('BILLING_TLS_CLIENT_CA_FILE: mutual TLS needs BILLING_TLS_CERT_FILE and BILLING_TLS_KEY_FILE');
    if (certificateCallers) problems.push('BILLING_CERT_SCOPES: certificate callers need mutual TLS (BILLING_TLS_CLIENT_CA_FILE)');
    return undefined;
  }
  if (certificateCallers && !e.BILLING_TLS_CLIENT_CA_FILE) {
    problems.push('BILLING_CERT_SCOPES: certificate callers need mutual TLS (BILLING_TLS_CLIENT_CA_FILE)');
  }
  const files: TlsFiles = {
    certFile: resolve(e.BILLING_TLS_CERT_FILE),
    keyFile: resolve(e.BILLING_TLS_KEY_FILE),
    ...(e.BILLING_TLS_CLIENT_CA_FILE ? { clientCaFile: resolve(e.BILLING_TLS_CLIENT_CA_FILE) } : {}),
  };
  const read: Record<string, Buffer> = {};
  for (const [variable, path] of [
    ['BILLING_TLS_CERT_FILE', files.certFile],
    ['BILLING_TLS_KEY_FILE', files.keyFile],
    ['BILLING_TLS_CLIENT_CA_FILE', files.clientCaFile],
  ] as const) {
    if (path === undefined) continue;
    try {
      read[variable] = readFileSync(path);
    } catch (error) {
      problems.push(`${variable}: cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  if (Object.keys(read).length < (files.clientCaFile ? 3 : 2)) return undefined;
  try {
    // OpenSSL's reasons ("key values mismatch", "no start line") quote no key material.
    createSecureContext({ cert: read.BILLING_TLS_CERT_FILE!, key: read.BILLING_TLS_KEY_FILE!, ...(files.clientCaFile ? { ca: read.BILLING_TLS_CLIENT_CA_FILE! } : {}) });
  } catch (error) {
    problems.push(`BILLING_TLS_CERT_FILE, BILLING_TLS_KEY_FILE: not a usable certificate and key (${(error as Error).message})`);
    return undefined;
  }
  return Object.freeze(files);
}

function buildCatalogue(file: z.infer<typeof catalogueFileSchema>, problems: string[]): Catalogue {
  const models = new Map<string, ModelPrice>();
  for (const m of file.models) {
    if (models.has(m.name)) problems.push(`catalogue models: duplicate model "${m.name}"`);
    models.set(m.name, { name: m.name, tier: m.tier, proOnly: m.proOnly, multiplier: parseDecimal(m.multiplier)! });
  }
  const operations = new Map<string, OperationPrice>();
  for (const o of file.operations) {
    if (operations.has(o.name)) problems.push(`catalogue operations: duplicate operation "${o.name}"`);
    operations.set(o.name, o.freeWithEntitlement
      ? { name: o.name, priceMillicredits: o.priceMillicredits, freeWithEntitlement: o.freeWithEntitlement }
      : { name: o.name, priceMillicredits: o.priceMillicredits });
  }
  for (const name of file.dailyFreeOperations.operations) {
    if (!operations.has(name)) problems.push(`catalogue dailyFreeOperations: "${name}" is not an operation`);
  }
  const skus = new Map<string, bigint>();
  for (const s of file.skus) {
    if (s.amountMillicredits < 1n) problems.push(`catalogue skus: "${s.name}" must grant at least 1 milli-credit`);
    skus.set(s.name, s.amountMillicredits);
  }
  return Object.freeze({
    name: file.name,
    tokensPerUnit: BigInt(file.pricing.tokensPerUnit),
    outputWeight: BigInt(file.pricing.outputWeight),
    models,
    operations,
    dailyFreePerDay: BigInt(file.dailyFreeOperations.perDay),
    dailyFreeOperations: new Set(file.dailyFreeOperations.operations),
    skus,
    lowBalanceMillicredits: file.balance.lowBalanceMillicredits,
    minimumStartMillicredits: file.balance.minimumStartMillicredits,
    dailyTopUpTargetMillicredits: file.dailyTopUp.targetMillicredits,
    holdTtlSecondsDefault: file.holds.defaultTtlSeconds,
  });
}

/** Parses a catalogue file's JSON text; throws ConfigError listing every problem. */
export function parseCatalogue(
  text: string,
  source: string,
): { catalogue: Catalogue; topUpSchedule: string; sweepSchedule: string; deposits?: DepositTerms } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new ConfigError([`${source}: not valid JSON (${(error as Error).message})`]);
  }
  const parsed = catalogueFileSchema.safeParse(json);
  if (!parsed.success) throw new ConfigError(issues(`${source}: `, parsed.error));
  const problems: string[] = [];
  const catalogue = buildCatalogue(parsed.data, problems);
  for (const [field, schedule] of [
    ['dailyTopUp.schedule', parsed.data.dailyTopUp.schedule],
    ['holds.sweepSchedule', parsed.data.holds.sweepSchedule],
  ] as const) {
    if (!cron.validate(schedule)) problems.push(`${source}: ${field}: "${schedule}" is not a cron expression`);
  }
  const deposits = parsed.data.deposits ? buildDepositTerms(parsed.data.deposits, source, problems) : undefined;
  if (problems.length > 0) throw new ConfigError(problems);
  return {
    catalogue,
    topUpSchedule: parsed.data.dailyTopUp.schedule,
    sweepSchedule: parsed.data.holds.sweepSchedule,
    ...(deposits ? { deposits } : {}),
  };
}

type DepositsFile = NonNullable<z.infer<typeof catalogueFileSchema>['deposits']>;

function buildDepositTerms(file: DepositsFile, source: string, problems: string[]): DepositTerms {
  const tokens = new Map<ChainName, TokenSpec[]>(CHAINS.map((c) => [c.name, defaultTokens(c.name)]));
  for (const t of file.tokens) {
    const list = tokens.get(t.chain)!;
    const contract = getAddress(t.contract.toLowerCase());
    if (list.some((known) => known.symbol === t.symbol || known.contract === contract)) {
      problems.push(`${source}: deposits.tokens: ${t.chain} already accepts ${t.symbol} or ${contract}`);
      continue;
    }
    list.push({ chain: t.chain, symbol: t.symbol, contract, decimals: t.decimals });
  }
  // USDC is priced at $1 unless the catalogue says otherwise. ETH has no default: until the
  // catalogue prices it (statically or by a feed), ETH deposits stay unpriced, not credited.
  const prices = new Map<string, PriceSource>([['USDC', { kind: 'static', usdCents: parseExact('100')! }]]);
  const symbols = new Set([...tokens.values()].flatMap((list) => list.map((t) => t.symbol)));
  for (const [symbol, spec] of Object.entries(file.prices)) {
    if (!symbols.has(symbol)) problems.push(`${source}: deposits.prices: "${symbol}" is not an accepted token`);
    if ('staticUsdCents' in spec) {
      prices.set(symbol, { kind: 'static', usdCents: parseExact(spec.staticUsdCents)! });
      continue;
    }
    const feeds = new Map<ChainName, string>();
    for (const [chain, address] of Object.entries(spec.chainlink)) {
      if (!chainByName(chain)) problems.push(`${source}: deposits.prices.${symbol}.chainlink: unknown chain "${chain}"`);
      else feeds.set(chain as ChainName, getAddress(address.toLowerCase()));
    }
    prices.set(symbol, { kind: 'chainlink', feeds, maxAgeSeconds: spec.maxAgeSeconds });
  }
  return {
    creditPriceUsdCents: parseExact(file.creditPriceUsdCents)!,
    minimumUsdCents: BigInt(file.minimumUsdCents),
    tokens,
    prices,
  };
}

/** Watched chains, the key material and why the wallet is off, if it is. */
function loadWallet(
  env: NodeJS.ProcessEnv,
  parsed: { DEPOSIT_POLL_SECONDS: number; DEPOSIT_BLOCKS_PER_POLL: number },
  dataDir: string,
  terms: DepositTerms | undefined,
  problems: string[],
): WalletConfig {
  const chains: WatchedChain[] = [];
  for (const spec of CHAINS) {
    // The URL's text is never quoted back: it may hold a provider's API key.
    const url = rpcUrlSchema.safeParse(env[spec.urlVariable] || undefined);
    const confirmations = confirmationsSchema.safeParse(env[spec.confirmationsVariable] || undefined);
    if (!url.success) problems.push(`env ${spec.urlVariable}: must be an http:// or https:// URL`);
    if (!confirmations.success) problems.push(...issues(`env ${spec.confirmationsVariable}: `, confirmations.error));
    if (!url.success || !url.data) continue;
    chains.push({ spec, url: url.data, ...(confirmations.success && confirmations.data ? { confirmations: confirmations.data } : {}) });
  }
  const base = {
    chains,
    ...(terms ? { terms } : {}),
    pollSeconds: parsed.DEPOSIT_POLL_SECONDS,
    blocksPerPoll: parsed.DEPOSIT_BLOCKS_PER_POLL,
  };
  let keys: WalletKeys | undefined;
  let createdSeedFile: string | undefined;
  try {
    keys = loadWalletKeys({
      ...(env.WALLET_SEED ? { seed: env.WALLET_SEED } : {}),
      ...(env.WALLET_XPUB ? { xpub: env.WALLET_XPUB } : {}),
      dataDir,
      // A seed is generated only for a service that will watch a chain with it.
      generate: chains.length > 0 && terms !== undefined,
      onSeedFileCreated: (path) => {
        createdSeedFile = path;
      },
    });
  } catch (error) {
    if (error instanceof WalletKeyError) problems.push(error.message);
    else problems.push(`wallet: cannot load the key material: ${(error as Error).message}`);
  }
  const disabledReason = !terms
    ? 'crypto deposits are off: the catalogue has no "deposits" section (credit price and minimum)'
    : chains.length === 0
      ? 'crypto deposits are off: no chain RPC URL is set (ETHEREUM_RPC_URL, BASE_RPC_URL, ARBITRUM_RPC_URL, OPTIMISM_RPC_URL)'
      : !keys
        ? 'crypto deposits are off: no key material (WALLET_SEED, WALLET_XPUB or a seed file under BILLING_DATA_DIR)'
        : undefined;
  return Object.freeze({
    ...base,
    ...(keys && !disabledReason ? { keys } : {}),
    ...(createdSeedFile ? { createdSeedFile } : {}),
    ...(disabledReason ? { disabledReason } : {}),
  });
}

/** Reads the whole configuration; throws ConfigError listing every problem at once. */
export interface TracingConfig {
  /** The resource's service.name (OTEL_SERVICE_NAME). */
  readonly serviceName: string;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const parsedEnv = envSchema.safeParse(env);
  if (!parsedEnv.success) problems.push(...issues('env ', parsedEnv.error));
  const e = parsedEnv.success ? parsedEnv.data : envSchema.parse({});
  // Read from the raw environment so that one bad variable does not hide these checks.
  const tokens = parseCallers(env, problems);
  const tls = loadTls(env, [...tokens.values()].some((c) => c.certificate), problems);
  const production = env.NODE_ENV === 'production';
  if (production && tokens.size === 0) problems.push('BILLING_TOKENS: required when NODE_ENV=production (or BILLING_TOKENS_FILE, BILLING_CERT_SCOPES)');
  // The embedded database is one process's files on one disk: no replicas, no managed
  // backups. Production runs it only when told so explicitly (README, "Container").
  if (production && !env.DATABASE_URL && env.BILLING_ALLOW_EMBEDDED !== '1') {
    problems.push(
      'DATABASE_URL: required when NODE_ENV=production; the embedded database (PGlite under BILLING_DATA_DIR) ' +
        'is for local use: set BILLING_ALLOW_EMBEDDED=1 to run production on it anyway',
    );
  }
  const host = env.HOST ?? (tokens.size === 0 ? '127.0.0.1' : '0.0.0.0');
  if (tokens.size === 0 && !LOOPBACK_HOSTS.has(host)) {
    problems.push(`HOST: ${host} is not loopback; an open service (no BILLING_TOKENS) binds loopback only`);
  }
  const configPath = resolve(e.BILLING_CONFIG);
  let catalogueResult: ReturnType<typeof parseCatalogue> | undefined;
  try {
    catalogueResult = parseCatalogue(readFileSync(configPath, 'utf8'), configPath);
  } catch (error) {
    if (error instanceof ConfigError) problems.push(...error.problems);
    else problems.push(`BILLING_CONFIG: cannot read ${configPath}: ${(error as Error).message}`);
  }
  const dataDir = e.BILLING_DATA_DIR.startsWith('memory://') ? e.BILLING_DATA_DIR : resolve(e.BILLING_DATA_DIR);
  const wallet = loadWallet(env, e, dataDir, catalogueResult?.deposits, problems);
  if (problems.length > 0 || !catalogueResult) throw new ConfigError(problems);
  return Object.freeze({
    port: e.PORT,
    metricsPort: e.METRICS_PORT,
    host,
    ...(e.DATABASE_URL ? { databaseUrl: e.DATABASE_URL } : {}),
    databasePreparedStatements: e.DATABASE_PREPARED_STATEMENTS,
    databaseStatementTimeoutMs: e.DATABASE_STATEMENT_TIMEOUT_MS,
    // "memory://" selects an in-memory embedded database; anything else is a directory.
    dataDir,
    configPath,
    production,
    tokens,
    ...(tls ? { tls } : {}),
    catalogue: catalogueResult.catalogue,
    dailyTopUpSchedule: catalogueResult.topUpSchedule,
    holdSweepSchedule: catalogueResult.sweepSchedule,
    logLevel: e.LOG_LEVEL,
    progressIntervalMs: e.JOB_PROGRESS_INTERVAL_MS,
    requestBytesMax: e.REQUEST_BYTES_MAX,
    ...(e.DATABASE_WORK_MAX ? { databaseWorkMax: e.DATABASE_WORK_MAX } : {}),
    batching: Object.freeze({ lanes: e.LEDGER_BATCH_LANES, unitsMax: e.LEDGER_BATCH_UNITS_MAX }),
    server: Object.freeze({
      firstBytesTimeoutMs: e.CONNECTION_FIRST_BYTES_TIMEOUT_MS,
      idleTimeoutMs: e.CONNECTION_IDLE_TIMEOUT_MS,
      headersTimeoutMs: e.REQUEST_HEADERS_TIMEOUT_MS,
      requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
      connectionsMax: e.CONNECTIONS_MAX,
      callsInFlightMax: e.CALLS_IN_FLIGHT_MAX,
      shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    }),
    wallet,
    ...(tracingOn(e) ? { tracing: Object.freeze({ serviceName: e.OTEL_SERVICE_NAME }) } : {}),
  });
}

/** Tracing is on when an OTLP endpoint is set (general or for traces) and the SDK is not disabled. */
function tracingOn(e: z.infer<typeof envSchema>): boolean {
  const endpoint = e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? e.OTEL_EXPORTER_OTLP_ENDPOINT;
  return endpoint !== undefined && e.OTEL_SDK_DISABLED?.toLowerCase() !== 'true';
}
