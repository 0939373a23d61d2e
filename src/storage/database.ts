// The database behind the ledger: PostgreSQL (DATABASE_URL) or an embedded PGlite under
// the data directory. MikroORM owns the connection and the migrations, which are the only
// statement of the schema (there are no entities: nothing loads rows through the ORM); the
// money path runs short SQL statements through `Database.transaction`, on a pooled
// connection (PostgreSQL) or PGlite's exclusive transaction (its one connection).
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import type { MikroORM } from '@mikro-orm/core';
import { Migrator } from '@mikro-orm/migrations';
import { MikroORM as PgliteORM } from '@mikro-orm/pglite';
import { MikroORM as PostgresORM } from '@mikro-orm/postgresql';
import type { Pool, PoolClient } from 'pg';
import { Migration20261122000000_ledger } from './migrations/Migration20261122000000_ledger.js';
import { Migration20261201000000_charge_reservation } from './migrations/Migration20261201000000_charge_reservation.js';
import { Migration20261202000000_deposits } from './migrations/Migration20261202000000_deposits.js';

export type Row = Record<string, unknown>;

/** One connection inside one database transaction. */
export interface SqlSession {
  query<R extends Row = Row>(sql: string, params?: readonly unknown[]): Promise<R[]>;
}

export interface Database {
  readonly kind: 'postgresql' | 'pglite';
  readonly orm: MikroORM;
  /** Runs fn in one database transaction (READ COMMITTED); commits if it resolves. */
  transaction<T>(fn: (session: SqlSession) => Promise<T>): Promise<T>;
  /** One statement in its own transaction. */
  query<R extends Row = Row>(sql: string, params?: readonly unknown[]): Promise<R[]>;
  /** True when the database answers a trivial query within timeoutMs. */
  ping(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** postgres:// URL; without it, PGlite under dataDir (or in memory for "memory://"). */
  readonly databaseUrl?: string;
  readonly dataDir: string;
  /** Largest number of pooled PostgreSQL connections. */
  readonly poolSizeMax?: number;
  /** Apply pending migrations on open (default true). */
  readonly migrate?: boolean;
}

/** The longest a single statement may run on PostgreSQL. */
export const STATEMENT_TIMEOUT_MS = 10_000;

export const migrationsList = [
  { name: 'Migration20261122000000_ledger', class: Migration20261122000000_ledger },
  { name: 'Migration20261201000000_charge_reservation', class: Migration20261201000000_charge_reservation },
  { name: 'Migration20261202000000_deposits', class: Migration20261202000000_deposits },
];

const ormOptions = {
  // The migrations are the schema; no entity mirrors it (README, "One schema").
  entities: [],
  extensions: [Migrator],
  migrations: { silent: true, migrationsList, transactional: true, snapshot: false, allOrNothing: true },
  allowGlobalContext: false,
  debug: false,
  ensureDatabase: false,
  discovery: { warnWhenNoEntities: false },
};

/** A PostgreSQL error (from pg or PGlite) with its SQLSTATE and constraint. */
export function sqlState(error: unknown): { code?: string; constraint?: string } {
  if (typeof error !== 'object' || error === null) return {};
  const e = error as { code?: unknown; constraint?: unknown };
  return {
    ...(typeof e.code === 'string' ? { code: e.code } : {}),
    ...(typeof e.constraint === 'string' ? { constraint: e.constraint } : {}),
  };
}

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const db = options.databaseUrl
    ? await openPostgres(options.databaseUrl, options.poolSizeMax ?? 16)
    : await openPglite(options.dataDir);
  if (options.migrate ?? true) await migrate(db);
  return db;
}

async function openPostgres(url: string, poolSizeMax: number): Promise<Database> {
  const orm = await PostgresORM.init({
    ...ormOptions,
    clientUrl: url,
    pool: { min: 1, max: poolSizeMax },
    // Bounds on every session: no statement runs past 10 s, no transaction idles past 30 s
    // holding an account lock (e.g. a process paused mid-transaction).
    driverOptions: { options: `-c statement_timeout=${STATEMENT_TIMEOUT_MS} -c idle_in_transaction_session_timeout=30000` },
  });
  const pool = (await orm.em.getDriver().getConnection().getNativeClient()) as Pool;
  await refuseUnsafeDurability(pool);
  const withClient = async <T>(fn: (client: PoolClient) => Promise<T>): Promise<T> => {
    const client = await pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  };
  const names = new PreparedNames();
  const query = async <R extends Row>(client: PoolClient | Pool, sql: string, params?: readonly unknown[]) => {
    const name = names.of(sql);
    const values = params as unknown[] | undefined;
    return (await client.query(name ? { name, text: sql, values } : { text: sql, values })).rows as R[];
  };
  return {
    kind: 'postgresql',
    orm,
    transaction: (fn) =>
      withClient(async (client) => {
        await client.query('begin');
        try {
          const result = await fn({ query: (sql, params) => query(client, sql, params) });
          await client.query('commit');
          return result;
        } catch (error) {
          await client.query('rollback').catch(() => undefined);
          throw error;
        }
      }),
    query: (sql, params) => query(pool, sql, params),
    ping: (timeoutMs = 2000) => withTimeout(pool.query('select 1').then(() => true), timeoutMs),
    close: () => orm.close(true),
  };
}

/**
 * Names for server-side prepared statements: each connection parses and plans a named
 * statement once instead of on every call. The service's SQL is a fixed set of texts;
 * past PREPARED_NAMES_MAX distinct texts (ad-hoc queries) statements run unnamed.
 */
class PreparedNames {
  static readonly PREPARED_NAMES_MAX = 256;
  private readonly names = new Map<string, string>();

  of(sql: string): string | undefined {
    let name = this.names.get(sql);
    if (name === undefined && this.names.size < PreparedNames.PREPARED_NAMES_MAX && !/^\s*(begin|commit|rollback)\b/i.test(sql)) {
      name = `billing_${createHash('sha1').update(sql).digest('hex').slice(0, 20)}`;
      this.names.set(sql, name);
    }
    return name;
  }
}

/** On a PostgreSQL server a commit must be durable: refuse fsync or synchronous_commit off. */
async function refuseUnsafeDurability(pool: Pool): Promise<void> {
  const { rows } = await pool.query<{ fsync: string; sync: string }>(
    "select current_setting('fsync') as fsync, current_setting('synchronous_commit') as sync",
  );
  const row = rows[0];
  if (row?.fsync !== 'on' || row.sync === 'off') {
    throw new Error(
      `refusing to start: PostgreSQL has fsync=${row?.fsync} synchronous_commit=${row?.sync}; ` +
        'a committed charge could be lost on a crash',
    );
  }
}

async function openPglite(dataDir: string): Promise<Database> {
  const inMemory = dataDir.startsWith('memory://');
  let location = dataDir;
  if (!inMemory) {
    location = join(dataDir, 'pglite');
    mkdirSync(location, { recursive: true, mode: 0o700 });
  }
  // int8 comes back as text on both drivers, so bigint parsing is uniform above this file.
  const pglite = await PGlite.create(location, { parsers: { 20: (value: string) => value } });
  const orm = await PgliteORM.init({ ...ormOptions, dbName: 'billing', driverOptions: { pglite } });
  type Tx = { query: PGlite['query'] };
  const query = async <R extends Row>(target: Tx, sql: string, params?: readonly unknown[]) =>
    (await target.query<R>(sql, params as unknown[] | undefined)).rows;
  return {
    kind: 'pglite',
    orm,
    // PGlite has one connection; its transaction() holds an exclusive lock, so concurrent
    // units of work queue here instead of interleaving their statements.
    transaction: (fn) => pglite.transaction((tx) => fn({ query: (sql, params) => query(tx, sql, params) })),
    query: (sql, params) => query(pglite, sql, params),
    ping: (timeoutMs = 2000) => withTimeout(pglite.query('select 1').then(() => true), timeoutMs),
    close: async () => {
      await orm.close(true);
      if (!pglite.closed) await pglite.close();
    },
  };
}

async function withTimeout(probe: Promise<boolean>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs);
  });
  try {
    return await Promise.race([probe.catch(() => false), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Applies pending migrations. On PostgreSQL an advisory lock makes replicas that start
 * together take turns; the second finds nothing pending.
 */
export async function migrate(db: Database): Promise<string[]> {
  const run = async () => (await db.orm.migrator.up()).map((m) => m.name);
  if (db.kind !== 'postgresql') return run();
  const pool = (await db.orm.em.getDriver().getConnection().getNativeClient()) as Pool;
  const client = await pool.connect();
  try {
    await client.query("select pg_advisory_lock(hashtext('billing.migrations'))");
    return await run();
  } finally {
    await client.query("select pg_advisory_unlock(hashtext('billing.migrations'))").catch(() => undefined);
    client.release();
  }
}
