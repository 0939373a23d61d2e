// Holds: Reserve places one for a limited time, Release voids it, Charge captures it
// (charge/), and the sweeper expires the ones nobody settled. Expired holds stop counting
// the moment they expire (holdsFacet in sql.ts).
import { z } from 'zod';
import { BillingError } from '../../domain/errors.js';
import { cutPage, pageCodec } from '../../domain/paging.js';
import { isId, pageSize as pageSizeOf } from '../../domain/request.js';
import type { SqlSession } from '../../storage/database.js';
import { priceUsage, type Usage } from '../charge/pricing.js';
import { asEstimate, normalUsage } from '../charge/usage.js';
import { requestHash } from '../kernel/idempotency-sql.js';
import { balanceRecord, replayKind, type Same, storedBigint } from '../kernel/replay.js';
import type { Kernel } from '../kernel/unit-of-work.js';
import { balanceView, type BalanceView } from '../kernel/views.js';
import { activeHoldTotals, insertReservation, listActiveHolds, lockReservation, type ReservationRow, settleReservation, sweepExpiredHolds } from './sql.js';

export interface ReservationView {
  id: string;
  userId: string;
  amountMillicredits: bigint;
  status: 'ACTIVE' | 'CAPTURED' | 'RELEASED' | 'EXPIRED';
  product: string;
  expiresAtMs: number;
  createdAtMs: number;
}

export interface HoldResult {
  reservation: ReservationView;
  balance: BalanceView;
}

const holdRecord = z.object({
  reservation: z.object({
    id: z.string(),
    userId: z.string(),
    amountMillicredits: storedBigint,
    status: z.enum(['ACTIVE', 'CAPTURED', 'RELEASED', 'EXPIRED']),
    product: z.string(),
    expiresAtMs: z.number().int(),
    createdAtMs: z.number().int(),
  }),
  balance: balanceRecord,
});
const holdMatchesView: Same<z.output<typeof holdRecord>, HoldResult> = true;
void holdMatchesView;

/** The replay record of Reserve and Release. */
export const HOLD_RESULT = replayKind<HoldResult>('hold', holdRecord);

export interface ReserveInput {
  userId: string;
  idempotencyKey: string;
  product: string;
  usage: Usage | undefined;
  /** 0 means the configured default. */
  ttlSeconds: number;
}

export interface ReleaseInput {
  userId: string;
  idempotencyKey: string;
  reservationId: string;
}

export interface ListHoldsInput {
  userId: string;
  /** 0 means the default. */
  pageSize: number;
  pageToken: string;
}

/** Page tokens of ListHolds: "h1." and the id of the last hold of the previous page. */
const HOLD_PAGES = pageCodec('h1.', isId);

/** Accounts swept per sweeper transaction. */
export const SWEEP_BATCH_ACCOUNTS = 500;

export function reservationView(row: ReservationRow): ReservationView {
  return { ...row };
}

function notFound(reservationId: string): BillingError {
  return new BillingError('RESERVATION_NOT_FOUND', `reservation ${reservationId} not found for this user`, {
    field: 'reservation_id',
    subject: reservationId,
  });
}

/** Locks a hold of the user for capture; refuses one that is not ACTIVE, with its reason. */
export async function lockActiveHold(s: SqlSession, userId: string, reservationId: string): Promise<ReservationRow> {
  const hold = await lockReservation(s, userId, reservationId);
  const facts = { field: 'reservation_id', subject: reservationId };
  if (!hold) throw notFound(reservationId);
  switch (hold.status) {
    case 'ACTIVE':
      return hold;
    case 'CAPTURED':
      throw new BillingError('RESERVATION_CAPTURED', `reservation ${reservationId} was already captured`, facts);
    case 'RELEASED':
      throw new BillingError('RESERVATION_RELEASED', `reservation ${reservationId} was released`, facts);
    case 'EXPIRED':
      throw new BillingError('RESERVATION_EXPIRED', `reservation ${reservationId} expired before it was captured`, facts);
  }
}

export class Holds {
  constructor(private readonly kernel: Kernel) {}

  async reserve(input: ReserveInput): Promise<HoldResult> {
    const { catalogue } = this.kernel;
    const { userId, idempotencyKey, product } = input;
    const usage = normalUsage(asEstimate(input.usage));
    const ttlSeconds = input.ttlSeconds === 0 ? catalogue.holdTtlSecondsDefault : input.ttlSeconds;
    const hash = requestHash('Reserve', [product, usage, ttlSeconds]);
    return this.kernel.record(HOLD_RESULT, { userId, idempotencyKey, requestHash: hash, operation: 'Reserve' }, async (s, account) => {
      const priced = priceUsage(catalogue, usage, account);
      const amount = priced.chargeMillicredits;
      const available = account.balanceMillicredits - account.reservedMillicredits;
      if (amount > available) {
        throw new BillingError('INSUFFICIENT_BALANCE', `insufficient balance: the hold needs ${amount} milli-credits, ${available} available`, {
          requiredMillicredits: amount,
          availableMillicredits: available,
        });
      }
      const reservation = await insertReservation(s, { userId, amountMillicredits: amount, product, ttlSeconds });
      const after = { ...account, reservedMillicredits: account.reservedMillicredits + amount };
      return { reservation: reservationView(reservation), balance: balanceView(catalogue, after) };
    });
  }

  async release(input: ReleaseInput): Promise<HoldResult> {
    const { catalogue } = this.kernel;
    const { userId, idempotencyKey, reservationId } = input;
    const hash = requestHash('Release', [reservationId]);
    return this.kernel.record(HOLD_RESULT, { userId, idempotencyKey, requestHash: hash, operation: 'Release' }, async (s, account) => {
      const hold = await lockReservation(s, userId, reservationId);
      if (!hold) throw notFound(reservationId);
      if (hold.status === 'CAPTURED') {
        throw new BillingError('RESERVATION_CAPTURED', `reservation ${reservationId} was captured and cannot be released`, {
          field: 'reservation_id',
          subject: reservationId,
        });
      }
      if (hold.status !== 'ACTIVE') return { reservation: reservationView(hold), balance: balanceView(catalogue, account) };
      await settleReservation(s, hold, 'RELEASED');
      const after = { ...account, reservedMillicredits: account.reservedMillicredits - hold.amountMillicredits };
      return { reservation: reservationView({ ...hold, status: 'RELEASED' }), balance: balanceView(catalogue, after) };
    });
  }

  /**
   * A page of the user's active holds, oldest first (by id). An unknown user has none, as
   * GetBalance reads them at 0 reserved; nothing is created.
   */
  async active(input: ListHoldsInput): Promise<{ holds: ReservationView[]; nextPageToken: string }> {
    const pageSize = pageSizeOf(input.pageSize);
    const afterId = HOLD_PAGES.decode(input.pageToken);
    const rows = await listActiveHolds(this.kernel.db, input.userId, { ...(afterId ? { afterId } : {}), limit: pageSize + 1 });
    const { page, nextPageToken } = cutPage(rows, pageSize, HOLD_PAGES, (row) => row.id);
    return { holds: page.map(reservationView), nextPageToken };
  }

  /** How many holds are ACTIVE and unexpired now, and what they keep in all (read without locks). */
  totals(): Promise<{ holds: bigint; heldMillicredits: bigint }> {
    return activeHoldTotals(this.kernel.db);
  }

  /** Expires every hold past its expiry, a batch of accounts per transaction. */
  async sweep(): Promise<number> {
    let swept = 0;
    for (;;) {
      const batch = await this.kernel.db.transaction((s) => sweepExpiredHolds(s, SWEEP_BATCH_ACCOUNTS));
      swept += batch;
      if (batch < SWEEP_BATCH_ACCOUNTS) return swept;
    }
  }
}
