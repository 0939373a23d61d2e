// Issue 11, defect 4: a call whose deadline has passed is not executed. The server refuses
// it before its unit of work starts (DEADLINE_EXCEEDED, nothing written), and a unit of
// work that is under way is bounded by the time left: its statement timeout is lowered to
// it and it does not commit after it. The calls go over raw Connect JSON with a
// `connect-timeout-ms` header and no client-side timer, so the answer read is the server's.
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { fund, key, useTestApp } from '../support/app.js';

const t = useTestApp();

interface Answer {
  readonly status: number;
  readonly code?: string;
}

function charge(userId: string, idempotencyKey: string, timeoutMs?: number): Promise<Answer> {
  return fetch(`${t.url}/billing.v1.BillingService/Charge`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'connect-protocol-version': '1',
      ...(timeoutMs === undefined ? {} : { 'connect-timeout-ms': String(timeoutMs) }),
    },
    body: JSON.stringify({ userId, idempotencyKey, product: 'muse', amountMillicredits: '250' }),
  }).then(async (res) => ({ status: res.status, code: ((await res.json()) as { code?: string }).code }));
}

async function written(userId: string, idempotencyKey: string): Promise<number> {
  const rows = await t.app.db.query<{ n: string }>('select count(*)::text as n from idempotency_keys where user_id = $1 and idempotency_key = $2', [userId, idempotencyKey]);
  return Number(rows[0]?.n);
}

async function balance(userId: string): Promise<bigint> {
  return (await t.billing.getBalance({ userId })).balance?.balanceMillicredits ?? -1n;
}

/** Holds the user's account row lock from a connection of the test's own until released. */
async function lockAccount(userId: string): Promise<{ waiting(): Promise<number>; release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: t.database!.url });
  await client.connect();
  await client.query('begin');
  await client.query('select 1 from user_accounts where user_id = $1 for update', [userId]);
  const pid = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid;
  return {
    // Backends waiting for this connection's locks: the charge's statement while it waits.
    waiting: async () =>
      Number((await client.query<{ n: string }>('select count(*)::text as n from pg_stat_activity where $1 = any(pg_blocking_pids(pid))', [pid])).rows[0]?.n),
    release: async () => {
      await client.query('commit');
      await client.end();
    },
  };
}

async function eventually(check: () => Promise<boolean>, what: string, ms = 20_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe('deadlines', () => {
  it('does not execute a Charge whose deadline has already passed', async () => {
    const user = 'deadline-passed';
    await fund(t, user, 10_000n);
    for (const [i, timeoutMs] of [0, 0, 0].entries()) {
      const k = `passed-${i}-${key()}`;
      expect(await charge(user, k, timeoutMs)).toEqual({ status: 504, code: 'deadline_exceeded' });
      expect(await written(user, k)).toBe(0);
    }
    expect(await balance(user)).toBe(10_000n);
    // The same key without a deadline is charged, once.
    const k = key('after');
    expect((await charge(user, k)).status).toBe(200);
    expect((await charge(user, k)).status).toBe(200);
    expect(await balance(user)).toBe(9_750n);
  });

  // The account is locked by another transaction, so the Charge cannot finish before its
  // deadline whatever the machine's speed: it must be answered DEADLINE_EXCEEDED while the
  // lock is still held (its waiting statement cut by the statement timeout the deadline set),
  // and nothing may be written once the lock is released.
  for (const timeoutMs of [1, 1_500]) {
    it(`cuts a Charge with a ${timeoutMs} ms deadline that waits for a lock, and writes nothing`, async () => {
      const user = `deadline-${timeoutMs}`;
      await fund(t, user, 10_000n);
      const lock = await lockAccount(user);
      const k = key('late');
      const call = charge(user, k, timeoutMs);
      // Without the deadline in the database the charge would wait here for the lock (up to
      // the 10 s statement cap) and then commit; the lock is released after 8 s at the latest.
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<'still waiting'>((resolve) => {
        timer = setTimeout(() => resolve('still waiting'), 8_000);
      });
      try {
        const first = await Promise.race([call, late]);
        expect(first, 'answered while the lock was still held').toEqual({ status: 504, code: 'deadline_exceeded' });
        // The statement was cancelled in the server, not left waiting behind the caller.
        await eventually(async () => (await lock.waiting()) === 0, 'the waiting statement to be cancelled', 5_000);
      } finally {
        clearTimeout(timer);
        await lock.release();
        await call.catch(() => undefined);
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(await written(user, k)).toBe(0);
      expect(await balance(user)).toBe(10_000n);
    });
  }

  it('leaves calls with time to spare alone', async () => {
    const user = 'deadline-ample';
    await fund(t, user, 10_000n);
    expect((await charge(user, key(), 30_000)).status).toBe(200);
    expect(await balance(user)).toBe(9_750n);
  });
});
