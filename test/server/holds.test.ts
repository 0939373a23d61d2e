// ListHolds over real sockets against PostgreSQL: a user's active holds only (released,
// captured and expired ones left out), with their amounts, product and times, oldest first
// in pages; an unknown user has none; bad input names its field; the "spend" scope.
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { type Reservation, ReservationStatus } from '../../gen/billing/v1/types_pb.js';
import { failure, key, startTestApp, type TestApp } from '../support/app.js';

const SPENDER = 'spender-token-0123456789';
const GRANTER = 'granter-token-0123456789';
const spend = { headers: { authorization: `Bearer ${SPENDER}` } };
const grant = { headers: { authorization: `Bearer ${GRANTER}` } };
const USER = 'holds-list-user';

let t: TestApp;

beforeAll(async () => {
  t = await startTestApp({ env: { BILLING_TOKENS: `spender:${SPENDER}=spend,granter:${GRANTER}=grant` } });
});

afterAll(async () => {
  await t?.close();
});

const amount = (value: bigint) => ({ case: 'amountMillicredits' as const, value });

async function reserve(userId: string, value: bigint, ttlSeconds: number, product = 'muse'): Promise<Reservation> {
  const { reservation } = await t.billing.reserve({ userId, idempotencyKey: key('hold'), product, amount: amount(value), ttlSeconds }, spend);
  return reservation!;
}

/** What a test compares of a hold: everything the reply carries, times as milliseconds. */
function shape(r: Reservation) {
  return {
    id: r.id,
    userId: r.userId,
    amount: r.amountMillicredits,
    status: ReservationStatus[r.status],
    product: r.product,
    createdMs: r.createdAt ? timestampMs(r.createdAt) : undefined,
    expiresMs: r.expiresAt ? timestampMs(r.expiresAt) : undefined,
  };
}

describe('ListHolds', () => {
  let kept: Reservation[];

  beforeAll(async () => {
    await t.billing.grant({ userId: USER, idempotencyKey: key('fund'), grant: amount(20_000n), reason: 'test funds' }, grant);
    const first = await reserve(USER, 1_000n, 600);
    const released = await reserve(USER, 2_000n, 600);
    const expiring = await reserve(USER, 1_500n, 1);
    const captured = await reserve(USER, 500n, 300);
    const last = await reserve(USER, 700n, 900, 'vital_ai');
    await t.billing.release({ userId: USER, idempotencyKey: key('release'), reservationId: released.id }, spend);
    const charged = await t.billing.charge(
      { userId: USER, idempotencyKey: key('capture'), product: 'muse', usage: amount(400n), reservationId: captured.id },
      spend,
    );
    expect(charged.transaction?.reservationId).toBe(captured.id);
    // Let the 1-second hold run out by the clock (no sweeper runs in tests: it is still ACTIVE in its row).
    const wait = timestampMs(expiring.expiresAt!) - Date.now() + 250;
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const [row] = await t.app.db.query<{ status: string }>(`select status from reservations where id = $1::bigint`, [expiring.id]);
    expect(row?.status).toBe('ACTIVE');
    kept = [first, last];
  });

  it('returns exactly the active holds, oldest first, as Reserve returned them; their sum is the reserved balance', async () => {
    const reply = await t.billing.listHolds({ userId: USER }, spend);
    expect(reply.holds.map(shape)).toEqual(kept.map(shape));
    expect(reply.holds.map((h) => h.amountMillicredits)).toEqual([1_000n, 700n]);
    expect(reply.holds.every((h) => h.status === ReservationStatus.ACTIVE)).toBe(true);
    expect(reply.nextPageToken).toBe('');
    const { balance } = await t.billing.getBalance({ userId: USER }, spend);
    expect(balance?.reservedMillicredits).toBe(1_700n);
    // The same over Connect JSON on HTTP/1.1.
    const json = await t.billingHttp1.listHolds({ userId: USER }, spend);
    expect(json.holds.map(shape)).toEqual(kept.map(shape));
  });

  it('expiry times are what the ttl gave', async () => {
    const [first, last] = (await t.billing.listHolds({ userId: USER }, spend)).holds.map(shape);
    expect(first!.expiresMs! - first!.createdMs!).toBe(600_000);
    expect(last!.expiresMs! - last!.createdMs!).toBe(900_000);
    expect(last!.product).toBe('vital_ai');
  });

  it('pages: one hold a page, then the last page with no token', async () => {
    const one = await t.billing.listHolds({ userId: USER, pageSize: 1 }, spend);
    expect(one.holds.map((h) => h.id)).toEqual([kept[0]!.id]);
    expect(one.nextPageToken).not.toBe('');
    const two = await t.billing.listHolds({ userId: USER, pageSize: 1, pageToken: one.nextPageToken }, spend);
    expect(two.holds.map((h) => h.id)).toEqual([kept[1]!.id]);
    expect(two.nextPageToken).toBe('');
  });

  it('drops a hold from the list once it is released', async () => {
    const userId = 'holds-list-release';
    await t.billing.grant({ userId, idempotencyKey: key('fund'), grant: amount(5_000n), reason: 'test funds' }, grant);
    const a = await reserve(userId, 1_200n, 600);
    const b = await reserve(userId, 800n, 600);
    expect((await t.billing.listHolds({ userId }, spend)).holds.map((h) => h.id)).toEqual([a.id, b.id]);
    await t.billing.release({ userId, idempotencyKey: key('release'), reservationId: a.id }, spend);
    expect((await t.billing.listHolds({ userId }, spend)).holds.map(shape)).toEqual([shape(b)]);
  });

  it('an unknown user has no holds, and reading them creates nothing', async () => {
    const reply = await t.billing.listHolds({ userId: 'holds-nobody' }, spend);
    expect(reply.holds).toEqual([]);
    expect(reply.nextPageToken).toBe('');
    const rows = await t.app.db.query(`select 1 from user_accounts where user_id = 'holds-nobody'`);
    expect(rows).toHaveLength(0);
  });

  it('refuses a bad user_id, page_size or page_token as INVALID_ARGUMENT naming the field', async () => {
    const cases: [Parameters<typeof t.billing.listHolds>[0], string][] = [
      [{ userId: '' }, 'user_id'],
      [{ userId: 'a/b' }, 'user_id'],
      [{ userId: 'x'.repeat(129) }, 'user_id'],
      [{ userId: USER, pageSize: 101 }, 'page_size'],
      [{ userId: USER, pageSize: -1 }, 'page_size'],
      [{ userId: USER, pageToken: 'garbage' }, 'page_token'],
      // A ListTransactions token is not a ListHolds one.
      [{ userId: USER, pageToken: Buffer.from('t1.5').toString('base64url') }, 'page_token'],
    ];
    for (const [request, field] of cases) {
      const { error, detail } = await failure(t.billing.listHolds(request, spend));
      expect(error.code, JSON.stringify(request)).toBe(Code.InvalidArgument);
      expect(detail?.reason).toBe(ErrorReason.INVALID_FIELD);
      expect(detail?.field, JSON.stringify(request)).toBe(field);
      expect(error.rawMessage).toContain(field);
    }
  });

  it('needs the "spend" scope: a grant-only token and no token are refused', async () => {
    const refused = await failure(t.billing.listHolds({ userId: USER }, grant));
    expect(refused.error.code).toBe(Code.PermissionDenied);
    expect(refused.error.rawMessage).toContain('the caller "granter" lacks the "spend" scope');
    const anonymous = await failure(t.billing.listHolds({ userId: USER }));
    expect(anonymous.error.code).toBe(Code.Unauthenticated);
  });
});
