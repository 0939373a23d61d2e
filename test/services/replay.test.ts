// The replay record (src/ledger/kernel/replay.ts): what a retried request gets back is the
// first run's result, read through a versioned, checked record. Records written before
// versioning still replay; a record that no longer matches its schema is refused loudly
// (INTERNAL) instead of being revived half-filled; a retry after either writes nothing.
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHARGE_RESULT } from '../../src/ledger/charge/charge.js';
import { HOLD_RESULT } from '../../src/ledger/holds/holds.js';
import { TRANSACTION_RESULT } from '../../src/ledger/kernel/credit.js';
import { decodeReplay, type ReplayKind } from '../../src/ledger/kernel/replay.js';
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

    // The optional fields: a capture (reservation_id), a waived charge (waived_reason) and a
    // refund (refunded_transaction_id). The old writer stored exactly these fields, without
    // the envelope.
    const captureHold = await t.billing.reserve({ ...hold, idempotencyKey: key('h') });
    const capture = { ...request, idempotencyKey: key('c'), reservationId: captureHold.reservation!.id };
    const waived = {
      userId: user,
      idempotencyKey: key('c'),
      product: 'muse',
      usage: { case: 'tokenUsage' as const, value: { model: 'gpt-5-mini', tokensIn: 10n, tokensOut: 10n, finishReason: 'tool_calls' } },
    };
    const captured = await t.billing.charge(capture);
    const waivedReply = await t.billing.charge(waived);
    const refund = { userId: user, idempotencyKey: key('r'), transactionId: first.transaction!.id, amountMillicredits: 0n, reason: 'refund' };
    const refunded = await t.billing.refund(refund);
    expect(captured.transaction!.reservationId).toBe(captureHold.reservation!.id);
    expect(waivedReply.waivedReason).not.toBe(0);
    expect(refunded.transaction!.refundedTransactionId).toBe(first.transaction!.id);
    for (const k of [capture.idempotencyKey, waived.idempotencyKey, refund.idempotencyKey]) await rewrite(user, k, "result - 'v' - 'kind'");
    const beforeRetries = await counts();
    expect(await t.billing.charge(capture)).toEqual(captured);
    expect(await t.billing.charge(waived)).toEqual(waivedReply);
    expect(await t.billing.refund(refund)).toEqual(refunded);
    expect(await counts()).toBe(beforeRetries);
  });

  it('written by every operation of this file decode under the schema of their kind', async () => {
    const kinds = { charge: CHARGE_RESULT, hold: HOLD_RESULT, transaction: TRANSACTION_RESULT } as const;
    const rows = await t.app.db.query<{ result: { v?: number; kind?: keyof typeof kinds } }>(
      "select result from idempotency_keys where result ? 'v'",
    );
    expect(new Set(rows.map((r) => r.result.kind))).toEqual(new Set(['charge', 'hold', 'transaction']));
    for (const { result } of rows) {
      const kind: ReplayKind<unknown> | undefined = kinds[result.kind!] as ReplayKind<unknown> | undefined;
      expect(kind, JSON.stringify(result)).toBeDefined();
      expect(() => decodeReplay(kind!, result)).not.toThrow();
    }
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
