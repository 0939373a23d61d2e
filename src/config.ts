// The only reader of process.env. Parses the environment and the catalogue file once,
// reports every error together, and returns a frozen Config.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import cron from 'node-cron';
import { z } from 'zod';
import { HOLD_TTL_SECONDS_MAX, type Catalogue, type ModelPrice, type OperationPrice } from './domain/catalogue.js';
import { AMOUNT_MILLICREDITS_MAX, parseDecimal } from './domain/money.js';

export type Scope = 'spend' | 'grant' | 'admin' | 'wallet';
export const SCOPES: readonly Scope[] = ['spend', 'grant', 'admin', 'wallet'];

export interface Config {
  readonly port: number;
  readonly metricsPort: number;
  /** Interface to bind; loopback unless tokens are configured. */
  readonly host: string;
  readonly databaseUrl?: string;
  readonly dataDir: string;
  readonly configPath: string;
  readonly production: boolean;
  /** Bearer token → scopes. Empty means open (local development only). */
  readonly tokens: ReadonlyMap<string, ReadonlySet<Scope>>;
  readonly catalogue: Catalogue;
  readonly dailyTopUpSchedule: string;
  readonly holdSweepSchedule: string;
  readonly logLevel: string;
  /** Largest request body accepted, in bytes. */
  readonly requestBytesMax: number;
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
}).loose();

const envSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  METRICS_PORT: z.coerce.number().int().min(0).max(65535).default(9464),
  HOST: z.string().optional(),
  DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL').optional(),
  BILLING_DATA_DIR: z.string().min(1).default('./data'),
  BILLING_CONFIG: z.string().min(1).default('config/muse.json'),
  BILLING_TOKENS: z.string().optional(),
  NODE_ENV: z.string().default('development'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  REQUEST_BYTES_MAX: z.coerce.number().int().min(1024).max(16 * 1024 * 1024).default(256 * 1024),
});

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

function issues(prefix: string, error: z.ZodError): string[] {
  return error.issues.map((issue) => `${prefix}${issue.path.join('.') || '(root)'}: ${issue.message}`);
}

/** Parses "token=spend+grant,other=admin". */
function parseTokens(text: string | undefined, problems: string[]): Map<string, Set<Scope>> {
  const tokens = new Map<string, Set<Scope>>();
  for (const entry of (text ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const [token, scopeText] = entry.split('=');
    if (!token || token.length < 16 || !scopeText) {
      problems.push('BILLING_TOKENS: each entry is token=scope+scope with a token of at least 16 characters');
      continue;
    }
    const scopes = scopeText.split('+');
    const unknown = scopes.filter((s) => !SCOPES.includes(s as Scope));
    if (unknown.length > 0) problems.push(`BILLING_TOKENS: unknown scope(s) ${unknown.join(', ')}`);
    tokens.set(token, new Set(scopes.filter((s): s is Scope => SCOPES.includes(s as Scope))));
  }
  return tokens;
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
export function parseCatalogue(text: string, source: string): { catalogue: Catalogue; topUpSchedule: string; sweepSchedule: string } {
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
  if (problems.length > 0) throw new ConfigError(problems);
  return { catalogue, topUpSchedule: parsed.data.dailyTopUp.schedule, sweepSchedule: parsed.data.holds.sweepSchedule };
}

/** Reads the whole configuration; throws ConfigError listing every problem at once. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const parsedEnv = envSchema.safeParse(env);
  if (!parsedEnv.success) problems.push(...issues('env ', parsedEnv.error));
  const e = parsedEnv.success ? parsedEnv.data : envSchema.parse({});
  // Read from the raw environment so that one bad variable does not hide these checks.
  const tokens = parseTokens(env.BILLING_TOKENS, problems);
  const production = env.NODE_ENV === 'production';
  if (production && tokens.size === 0) problems.push('BILLING_TOKENS: required when NODE_ENV=production');
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
  if (problems.length > 0 || !catalogueResult) throw new ConfigError(problems);
  return Object.freeze({
    port: e.PORT,
    metricsPort: e.METRICS_PORT,
    host,
    ...(e.DATABASE_URL ? { databaseUrl: e.DATABASE_URL } : {}),
    // "memory://" selects an in-memory embedded database; anything else is a directory.
    dataDir: e.BILLING_DATA_DIR.startsWith('memory://') ? e.BILLING_DATA_DIR : resolve(e.BILLING_DATA_DIR),
    configPath,
    production,
    tokens,
    catalogue: catalogueResult.catalogue,
    dailyTopUpSchedule: catalogueResult.topUpSchedule,
    holdSweepSchedule: catalogueResult.sweepSchedule,
    logLevel: e.LOG_LEVEL,
    requestBytesMax: e.REQUEST_BYTES_MAX,
  });
}
