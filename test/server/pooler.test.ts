// Issue 11, defect 2: the service behind PgBouncer in transaction mode (Debian's 1.18, a
// PgBouncer of the test's own on a loopback port, test/support/pgbouncer.ts). Replicas
// start together on a fresh database and take turns on the migrations; concurrent charges
// through the pooler are all correct; the statement timeout is in force in each
// transaction and nothing of it stays behind in the pooled server sessions.
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { MIGRATION_LOCK, migrationsList, sharesServerSessions, sqlState } from '../../src/storage/database.js';
import { fund, key, outcome, refusal, startTestApp, type TestApp } from '../support/app.js';
import { startPgBouncer, type PgBouncer } from '../support/pgbouncer.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

let bouncer: PgBouncer;
let database: TestDatabase;
let pooled: string;
const apps: TestApp[] = [];

beforeAll(async () => {
  bouncer = await startPgBouncer();
  database = await createTestDatabase('billing_pooler');
  pooled = bouncer.url(database.name);
});

afterAll(async () => {
  for (const app of apps) await app.close();
  await bouncer?.close();
  await database?.drop();
});

async function direct<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: database.url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function start(env: Record<string, string> = {}): Promise<TestApp> {
  const app = await startTestApp({ databaseUrl: pooled, env });
  apps.push(app);
  return app;
}

describe('behind PgBouncer in transaction mode', () => {
  it('starts two replicas together on a fresh database and a third after them', async () => {
    // The first two detect the pooler (DATABASE_PREPARED_STATEMENTS=auto); the third is told.
    await Promise.all([start(), start()]);
    await start({ DATABASE_PREPARED_STATEMENTS: 'off' });
    const applied = await direct((c) => c.query<{ name: string }>('select name from mikro_orm_migrations order by id'));
    expect(applied.rows.map((r) => r.name)).toEqual(migrationsList.map((m) => m.name));
    // No migration lock stays behind in an idle pooled session.
    const locks = await direct((c) => c.query("select 1 from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())"));
    expect(locks.rowCount).toBe(0);
  });

  it('answers 64 concurrent charges through it, all correct, over three replicas', async () => {
    expect(apps.length).toBeGreaterThanOrEqual(3);
    const users = ['pooler-hot', 'pooler-a', 'pooler-b', 'pooler-c'];
    for (const user of users) await fund(apps[0]!, user, 100_000n);
    // 48 charges with keys of their own, and 8 keys each sent twice at once to two replicas.
    const calls = Array.from({ length: 48 }, (_, i) => ({ user: users[i % 4 === 0 ? 0 : i % 4]!, key: key('pool'), amount: BigInt(100 + i) }));
    const twice = Array.from({ length: 8 }, (_, i) => ({ user: users[0]!, key: key('twice'), amount: BigInt(500 + i) }));
    const sent = [...calls, ...twice, ...twice];
    expect(sent.length).toBe(64);
    const outcomes = await Promise.all(
      sent.map((c, i) =>
        outcome(apps[i % apps.length]!.billing.charge({ userId: c.user, idempotencyKey: c.key, product: 'muse', usage: { case: 'amountMillicredits', value: c.amount } })),
      ),
    );
    expect(outcomes.map(refusal).filter((r) => r !== 'succeeded')).toEqual([]);
    const ids = new Map<string, string>();
    for (const [i, o] of outcomes.entries()) {
      if (!o.ok) continue;
      const id = o.value.transaction!.id;
      const previous = ids.get(sent[i]!.key);
      if (previous !== undefined) expect(id, 'a key sent twice answers one transaction').toBe(previous);
      ids.set(sent[i]!.key, id);
    }
    for (const user of users) {
      const spent = [...calls, ...twice].filter((c) => c.user === user).reduce((sum, c) => sum + c.amount, 0n);
      const balance = await apps[1]!.billing.getBalance({ userId: user });
      expect(balance.balance?.balanceMillicredits, user).toBe(100_000n - spent);
    }
    const report = await verifyLedger(apps[2]!.app.db);
    expect(report.violations).toEqual([]);
    expect(report.transactionsChecked).toBe(BigInt(users.length + calls.length + twice.length));
  });

  it('finds that pooled connections share server sessions, and that direct ones do not', async () => {
    const viaPooler = new pg.Pool({ connectionString: pooled, max: 4 });
    const viaServer = new pg.Pool({ connectionString: database.url, max: 4 });
    try {
      expect(await sharesServerSessions(viaPooler)).toBe(true);
      expect(await sharesServerSessions(viaServer)).toBe(false);
    } finally {
      await viaPooler.end();
      await viaServer.end();
    }
  });

  it('keeps the statement timeout in force in every transaction, and nothing of it in the session', async () => {
    const t = await start({ DATABASE_STATEMENT_TIMEOUT_MS: '300', DATABASE_PREPARED_STATEMENTS: 'off' });
    const db = t.app.db;
    const settings = await db.transaction(async (s) => [
      await s.query<{ statement_timeout: string }>('show statement_timeout'),
      await s.query<{ idle_in_transaction_session_timeout: string }>('show idle_in_transaction_session_timeout'),
    ]);
    expect(settings.map((rows) => Object.values(rows[0] ?? {})[0])).toEqual(['300ms', '30s']);
    // A long statement is cancelled, in a transaction and as a plain query.
    const inTransaction = await db.transaction((s) => s.query('select pg_sleep(20)')).catch((error: unknown) => error);
    expect(sqlState(inTransaction).code).toBe('57014');
    const plain = await db.query('select pg_sleep(20)').catch((error: unknown) => error);
    expect(sqlState(plain).code).toBe('57014');
    // The pooled server sessions carry no setting of the service's: each was local to its transaction.
    const client = new pg.Client({ connectionString: pooled });
    await client.connect();
    try {
      for (let i = 0; i < 8; i += 1) {
        expect((await client.query<{ statement_timeout: string }>('show statement_timeout')).rows[0]?.statement_timeout).toBe('0');
      }
    } finally {
      await client.end();
    }
  });

  it('makes a replica wait for the migrations lock held by another, then start', async () => {
    await direct(async (holder) => {
      await holder.query('begin');
      await holder.query('select pg_advisory_xact_lock(hashtext($1))', [MIGRATION_LOCK]);
      let started = false;
      const starting = start().then(() => {
        started = true;
      });
      try {
        const until = Date.now() + 30_000;
        const waiting = async () =>
          (await holder.query(
            "select 1 from pg_locks where locktype = 'advisory' and not granted and database = (select oid from pg_database where datname = current_database())",
          )).rowCount === 1;
        while (!(await waiting())) {
          if (Date.now() > until) throw new Error('the replica never waited for the migrations lock');
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        expect(started, 'started while another held the migrations lock').toBe(false);
      } finally {
        await holder.query('commit');
      }
      await starting;
      expect(started).toBe(true);
    });
  });
});
