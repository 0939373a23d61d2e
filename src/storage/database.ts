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
import { checkDeadline, DeadlineExceededError, remainingMs } from '../domain/deadline.js';
import { lockDataDir } from './datadir-lock.js';
import { Migration20261122000000_ledger } from './migrations/Migration20261122000000_ledger.js';
import { Migration20261201000000_charge_reservation } from './migrations/Migration20261201000000_charge_reservation.js';
import { Migration20261202000000_deposits } from './migrations/Migration20261202000000_deposits.js';
import { Migration20261203000000_audit_events } from './migrations/Migration20261203000000_audit_events.js';
import { Migration20261204000000_daily_top_up_days } from './migrations/Migration20261204000000_daily_top_up_days.js';
import { Migration20261204120000_transaction_price } from './migrations/Migration20261204120000_transaction_price.js';

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
  /**
   * Runs fn (work that will reach this database) under the admission bound, if any
   * (admission.ts); without one it just runs fn.
   */
  admit<T>(fn: () => Promise<T>): Promise<T>;
  /** The same database without the admission bound (work already admitted runs on it). */
  readonly unadmitted?: Database;
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
  /**
   * Named server-side prepared statements: 'auto' (the default) uses them unless the server
   * sessions turn out to be shared between connections (a transaction pooler such as
   * PgBouncer in transaction mode, see sharesServerSessions); 'off' never uses them.
   */
  readonly preparedStatements?: 'auto' | 'on' | 'off';
  /** The longest a single statement may run (default STATEMENT_TIMEOUT_MS); a call's deadline lowers it. */
  readonly statementTimeoutMs?: number;
}

/** The longest a single statement may run on PostgreSQL, unless configured otherwise. */
export const STATEMENT_TIMEOUT_MS = 10_000;
/** The longest a transaction may sit idle holding its locks (e.g. a process paused mid-transaction). */
export const IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000;
/** The longest a migration statement may run, including the wait for another replica's migrations. */
export const MIGRATION_STATEMENT_TIMEOUT_MS = 300_000;

export const migrationsList = [
  { name: 'Migration20261122000000_ledger', class: Migration20261122000000_ledger },
  { name: 'Migration20261201000000_charge_reservation', class: Migration20261201000000_charge_reservation },
  { name: 'Migration20261202000000_deposits', class: Migration20261202000000_deposits },
  { name: 'Migration20261203000000_audit_events', class: Migration20261203000000_audit_events },
  { name: 'Migration20261204000000_daily_top_up_days', class: Migration20261204000000_daily_top_up_days },
  { name: 'Migration20261204120000_transaction_price', class: Migration20261204120000_transaction_price },
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

/** The DatabaseOptions the configuration sets (src/config.ts), besides where the database is. */
export function databaseSettings(config: {
  readonly databasePreparedStatements: 'auto' | 'on' | 'off';
  readonly databaseStatementTimeoutMs: number;
}): Pick<DatabaseOptions, 'preparedStatements' | 'statementTimeoutMs'> {
  return { preparedStatements: config.databasePreparedStatements, statementTimeoutMs: config.databaseStatementTimeoutMs };
}

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
    ? await openPostgres(options.databaseUrl, options.poolSizeMax ?? 16, options)
    : await openPglite(options.dataDir);
  if (options.migrate ?? true) await migrate(db);
  return db;
}

async function openPostgres(url: string, poolSizeMax: number, options: DatabaseOptions): Promise<Database> {
  // No session settings at connection start-up (a transaction pooler refuses the `options`
  // start-up parameter, and would hand the session to other clients anyway): each
  // transaction sets its own bounds with SET LOCAL, in the round trip of its BEGIN.
  const orm = await PostgresORM.init({ ...ormOptions, clientUrl: url, pool: { min: 1, max: poolSizeMax } });
  const pool = (await orm.em.getDriver().getConnection().getNativeClient()) as Pool;
  await refuseUnsafeDurability(pool);
  const statementTimeoutMs = options.statementTimeoutMs ?? STATEMENT_TIMEOUT_MS;
  const prepared = options.preparedStatements ?? 'auto';
  // Behind a transaction pooler (detected, or said by preparedStatements 'off') a session
  // setting would reach other clients' transactions: everything runs in a bounded transaction.
  const pooled = prepared === 'off' || (await answersOnAnotherPort(pool, url)) || (poolSizeMax >= 2 && (await sharesServerSessions(pool)));
  const named = prepared === 'on' || (prepared === 'auto' && poolSizeMax >= 2 && !pooled);
  const withClient = async <T>(fn: (client: PoolClient) => Promise<T>): Promise<T> => {
    const client = await pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  };
  const names = named ? new PreparedNames() : undefined;
  const query = async <R extends Row>(client: PoolClient, sql: string, params?: readonly unknown[]) => {
    // A call whose deadline passed sends no further statement; its transaction rolls back.
    checkDeadline();
    const name = names?.of(sql);
    const values = params as unknown[] | undefined;
    return (await client.query(name ? { name, text: sql, values } : { text: sql, values })).rows as R[];
  };
  const transaction = <T>(fn: (session: SqlSession) => Promise<T>): Promise<T> => {
    // Expired work is not started: not while waiting for a connection, not after.
    checkDeadline();
    return withClient(async (client) => {
      checkDeadline();
      const left = remainingMs();
      const timeoutMs = Math.max(1, Math.ceil(Math.min(statementTimeoutMs, left ?? statementTimeoutMs)));
      try {
        // One simple-protocol round trip: the bounds hold for this transaction only, so they
        // are in force behind a transaction pooler and leave nothing behind in the session.
        await client.query(
          `begin; set local statement_timeout = ${timeoutMs}; set local idle_in_transaction_session_timeout = ${IDLE_IN_TRANSACTION_TIMEOUT_MS}`,
        );
        const result = await fn({ query: (sql, params) => query(client, sql, params) });
        // Past the deadline the caller has its answer (DEADLINE_EXCEEDED): do not commit.
        checkDeadline();
        await client.query('commit');
        return result;
      } catch (error) {
        await client.query('rollback').catch(() => undefined);
        // A statement cut by the time left of the call's deadline.
        if (sqlState(error).code === '57014' && (remainingMs() ?? 1) <= 0) throw new DeadlineExceededError(undefined, { cause: error });
        throw error;
      }
    });
  };
  // Direct connections only: each physical connection gets the bounds once, as session
  // settings, so a single read (GetBalance, history) stays one round trip.
  const bounded = new WeakSet<PoolClient>();
  const plainQuery = <R extends Row>(sql: string, params?: readonly unknown[]): Promise<R[]> =>
    withClient(async (client) => {
      checkDeadline();
      if (!bounded.has(client)) {
        await client.query(
          `set statement_timeout = ${statementTimeoutMs}; set idle_in_transaction_session_timeout = ${IDLE_IN_TRANSACTION_TIMEOUT_MS}`,
        );
        bounded.add(client);
      }
      return query<R>(client, sql, params);
    });
  return {
    kind: 'postgresql',
    orm,
    transaction,
    // A statement outside a transaction: behind a pooler it runs in a bounded transaction
    // (three round trips); on a direct connection in one, bounded by the session's settings.
    query: pooled ? (sql, params) => transaction((s) => s.query(sql, params)) : plainQuery,
    admit: (fn) => fn(),
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

/**
 * True when the server sessions behind the pool are shared between its connections, as
 * behind a transaction (or statement) pooler: a connection that was idle finds its server
 * session in another connection's transaction, or its own next statement on another
 * session. Named prepared statements live in a server session, so behind such a pooler
 * they go missing or collide ("prepared statement … does not exist / already exists").
 * Without a pooler (or behind a session pooler) each connection keeps its session.
 */
export async function sharesServerSessions(pool: Pool): Promise<boolean> {
  const pid = async (client: PoolClient) => (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]?.pid;
  const a = await pool.connect();
  try {
    const b = await pool.connect();
    try {
      const idle = await pid(a);
      await b.query('begin');
      try {
        // A pooler hands the session a just freed to the next transaction (PgBouncer
        // reuses the most recently used server first); a's next statement then needs another.
        if ((await pid(b)) === idle) return true;
        return (await pid(a)) !== idle;
      } finally {
        await b.query('rollback');
      }
    } finally {
      b.release();
    }
  } finally {
    a.release();
  }
}

/**
 * True when the server says it listens on another port than the URL's: something (a
 * pooler) sits in between. Cheap and certain where it applies; the session check below
 * covers a pooler on the server's own port, but can miss one while other clients (replicas
 * starting together) share it.
 */
async function answersOnAnotherPort(pool: Pool, url: string): Promise<boolean> {
  const { rows } = await pool.query<{ port: number | null }>('select inet_server_port() as port');
  const port = rows[0]?.port;
  const asked = Number(new URL(url).port || 5432);
  return port !== null && port !== undefined && Number(port) !== asked;
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
  let lock: ReturnType<typeof lockDataDir> | undefined;
  if (!inMemory) {
    location = join(dataDir, 'pglite');
    mkdirSync(location, { recursive: true, mode: 0o700 });
    // One process at a time on these files (datadir-lock.ts): a second gets DataDirLockedError.
    lock = lockDataDir(dataDir);
  }
  let pglite: PGlite;
  let orm: MikroORM;
  try {
    // int8 comes back as text on both drivers, so bigint parsing is uniform above this file.
    pglite = await PGlite.create(location, { parsers: { 20: (value: string) => value } });
    orm = await PgliteORM.init({ ...ormOptions, dbName: 'billing', driverOptions: { pglite } });
  } catch (error) {
    lock?.release();
    throw error;
  }
  type Tx = { query: PGlite['query'] };
  const query = async <R extends Row>(target: Tx, sql: string, params?: readonly unknown[]) =>
    (await target.query<R>(sql, params as unknown[] | undefined)).rows;
  return {
    kind: 'pglite',
    orm,
    // PGlite has one connection; its transaction() holds an exclusive lock, so concurrent
    // units of work queue here instead of interleaving their statements.
    transaction: (fn) => {
      checkDeadline();
      return pglite.transaction((tx) => fn({ query: (sql, params) => query(tx, sql, params) }));
    },
    query: (sql, params) => query(pglite, sql, params),
    admit: (fn) => fn(),
    ping: (timeoutMs = 2000) => withTimeout(pglite.query('select 1').then(() => true), timeoutMs),
    close: async () => {
      try {
        await orm.close(true);
        if (!pglite.closed) await pglite.close();
      } finally {
        lock?.release();
      }
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
 * Applies pending migrations. On PostgreSQL they run in one transaction that first takes a
 * transaction-scoped advisory lock, so replicas that start together take turns (the second
 * waits, then finds nothing pending) and the lock ends with the transaction: behind a
 * transaction pooler a session-level lock would be taken in one server session and released
 * in another, and stay held.
 */
export async function migrate(db: Database): Promise<string[]> {
  if (db.kind !== 'postgresql') return (await db.orm.migrator.up()).map((m) => m.name);
  const connection = db.orm.em.getDriver().getConnection();
  return connection.transactional(async (trx) => {
    await connection.execute(`set local statement_timeout = ${MIGRATION_STATEMENT_TIMEOUT_MS}`, [], 'run', trx);
    await connection.execute(`set local idle_in_transaction_session_timeout = ${IDLE_IN_TRANSACTION_TIMEOUT_MS}`, [], 'run', trx);
    await connection.execute(`select pg_advisory_xact_lock(hashtext('${MIGRATION_LOCK}'))`, [], 'run', trx);
    return (await db.orm.migrator.up({ transaction: trx })).map((m) => m.name);
  });
}

/** The advisory lock the migrations hold (hashtext of this text). */
export const MIGRATION_LOCK = 'billing.migrations';
