// The replay record (src/ledger/kernel/replay.ts): what a retried request gets back is the
// first run's result, read through a versioned, checked record. Records written before
// versioning still replay; a record that no longer matches its schema is refused loudly
// (INTERNAL) instead of being revived half-filled; a retry after either writes nothing.
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { failure, fund, key } from '../support/app.js';
import { startServices, type TestServices } from '../support/services.js';

let t: TestServices;
beforeAll(async () => {
  t = await startServices();
});
afterAll(async () => {
  await t.close();
});

async function record(userId: string, idempotencyKey: string): Promise<Record<string, unknown>> {
  const [row] = await t.app.db.query<{ result: Record<string, unknown> }>(
    'select result from idempotency_keys where user_id = $1 and idempotency_key = $2',
    [userId, idempotencyKey],
  );
  return row!.result;
}

async function rewrite(userId: string, idempotencyKey: string, sql: string): Promise<void> {
  await t.app.db.query(`update idempotency_keys set result = ${sql} where user_id = $1 and idempotency_key = $2`, [userId, idempotencyKey]);
}

async function counts(): Promise<string> {
  const [row] = await t.app.db.query<{ c: string }>(
    `select (select count(*) from transactions) || '/' || (select count(*) from reservations) || '/' || (select count(*) from idempotency_keys) as c`,
  );
  return row!.c;
}

describe('replay records', () => {
  it('are written as version 1 with their kind, for charges, holds and credits', async () => {
    const user = 'replay-kinds';
    const grantKey = key('g');
    await t.billing.grant({ userId: user, idempotencyKey: grantKey, grant: { case: 'amountMillicredits', value: 9000n }, reason: 'r' });
    const holdKey = key('h');
    await t.billing.reserve({ userId: user, idempotencyKey: holdKey, product: 'muse', amount: { case: 'amountMillicredits', value: 1000n } });
    const chargeKey = key('c');
    await t.billing.charge({ userId: user, idempotencyKey: chargeKey, product: 'muse', usage: { case: 'amountMillicredits', value: 500n } });
    expect(await record(user, grantKey)).toMatchObject({ v: 1, kind: 'transaction' });
    expect(await record(user, holdKey)).toMatchObject({ v: 1, kind: 'hold' });
    expect(await record(user, chargeKey)).toMatchObject({ v: 1, kind: 'charge' });
  });

  it('written before versioning (no v, no kind) replay the same reply', async () => {
    const user = 'replay-legacy';
    await fund(t, user, 10_000n);
    const request = {
      userId: user,
      idempotencyKey: key('c'),
      product: 'muse',
      usage: { case: 'operation' as const, value: { name: 'sample.generate', quantity: 2n } },
      reference: 'run-1',
      metadata: { a: 'b' },
    };
    const first = await t.billing.charge(request);
    await rewrite(user, request.idempotencyKey, "result - 'v' - 'kind'");
    expect(await record(user, request.idempotencyKey)).not.toHaveProperty('v');
    const before = await counts();
    const again = await t.billing.charge(request);
    expect(again).toEqual(first);
    expect(await counts()).toBe(before);

    const hold = { userId: user, idempotencyKey: key('h'), product: 'muse', amount: { case: 'amountMillicredits' as const, value: 700n } };
    const held = await t.billing.reserve(hold);
    await rewrite(user, hold.idempotencyKey, "result - 'v' - 'kind'");
    expect(await t.billing.reserve(hold)).toEqual(held);
  });

  it('that no longer match their schema are INTERNAL, never a half-filled reply, and write nothing', async () => {
    const user = 'replay-broken';
    await fund(t, user, 10_000n);
    const cases: { name: string; sql: string }[] = [
      { name: 'a renamed field', sql: `(result - 'chargedMillicredits') || '{"charged": {"$bigint": "1"}}'` },
      { name: 'a bigint stored as a float', sql: `jsonb_set(result, '{shortfallMillicredits}', '1.5')` },
      { name: 'a newer version', sql: `jsonb_set(result, '{v}', '2')` },
      { name: 'another kind', sql: `jsonb_set(result, '{kind}', '"hold"')` },
      { name: 'an unknown transaction type', sql: `jsonb_set(result, '{transaction,type}', '"GIFT"')` },
    ];
    for (const c of cases) {
      const request = { userId: user, idempotencyKey: key('c'), product: 'muse', usage: { case: 'amountMillicredits' as const, value: 100n } };
      await t.billing.charge(request);
      await rewrite(user, request.idempotencyKey, c.sql);
      const before = await counts();
      const { error } = await failure(t.billing.charge(request));
      expect(error.code, c.name).toBe(Code.Internal);
      // The message says nothing about the record's content.
      expect(error.rawMessage, c.name).not.toContain('charged');
      expect(await counts(), c.name).toBe(before);
    }
  });
});
