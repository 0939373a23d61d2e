// Holds: Reserve places one for a limited time, Release voids it, Charge captures it
// (ledger.ts), and the sweeper expires the ones nobody settled. Expired holds stop
// counting the moment they expire: every read and every lock subtracts them.
import type { Catalogue } from '../domain/catalogue.js';
import { HOLD_TTL_SECONDS_MAX } from '../domain/catalogue.js';
import { BillingError, invalidField } from '../domain/errors.js';
import { priceUsage, type Usage } from '../domain/pricing.js';
import { checkId, checkIdempotencyKey, checkName, checkUserId } from '../domain/validation.js';
import type { Database, SqlSession } from '../storage/database.js';
import {
  insertReservation,
  lockReservation,
  type ReservationRow,
  settleReservation,
  sweepExpiredHolds,
} from '../storage/holds-sql.js';
import { asEstimate, checkUsage } from './usage.js';
import { mutateHolds, requestHash } from './mutation.js';
import { balanceView, type BalanceView, pricingSubject } from './views.js';

export type { ReservationRow as ReservationView } from '../storage/holds-sql.js';

export interface HoldResult {
  reservation: ReservationRow;
  balance: BalanceView;
}

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

/** Accounts swept per sweeper transaction. */
export const SWEEP_BATCH_ACCOUNTS = 500;

export function checkReservationId(value: string, field = 'reservation_id'): string {
  return checkId(value, field, 'reservation');
}

/** Locks a hold of the user for capture; refuses one that is not ACTIVE, with its reason. */
export async function lockActiveHold(s: SqlSession, userId: string, reservationId: string): Promise<ReservationRow> {
  const hold = await lockReservation(s, userId, reservationId);
  const facts = { field: 'reservation_id', subject: reservationId };
  if (!hold) throw new BillingError('RESERVATION_NOT_FOUND', `reservation ${reservationId} not found for this user`, facts);
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
  constructor(
    private readonly db: Database,
    private readonly catalogue: Catalogue,
  ) {}

  async reserve(input: ReserveInput): Promise<HoldResult> {
    const userId = checkUserId(input.userId);
    const idempotencyKey = checkIdempotencyKey(input.idempotencyKey);
    const product = checkName(input.product, 'product');
    const usage = checkUsage(asEstimate(input.usage));
    const ttlSeconds = this.checkTtl(input.ttlSeconds);
    const hash = requestHash('Reserve', [product, usage, ttlSeconds]);
    return mutateHolds(this.db, { userId, idempotencyKey, requestHash: hash }, async (s, account) => {
      const priced = priceUsage(this.catalogue, usage, pricingSubject(this.catalogue, account));
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
      return { reservation, balance: balanceView(this.catalogue, after) };
    });
  }

  async release(input: ReleaseInput): Promise<HoldResult> {
    const userId = checkUserId(input.userId);
    const idempotencyKey = checkIdempotencyKey(input.idempotencyKey);
    const reservationId = checkReservationId(input.reservationId);
    const hash = requestHash('Release', [reservationId]);
    return mutateHolds(this.db, { userId, idempotencyKey, requestHash: hash }, async (s, account) => {
      const hold = await lockReservation(s, userId, reservationId);
      if (!hold) {
        throw new BillingError('RESERVATION_NOT_FOUND', `reservation ${reservationId} not found for this user`, {
          field: 'reservation_id',
          subject: reservationId,
        });
      }
      if (hold.status === 'CAPTURED') {
        throw new BillingError('RESERVATION_CAPTURED', `reservation ${reservationId} was captured and cannot be released`, {
          field: 'reservation_id',
          subject: reservationId,
        });
      }
      if (hold.status !== 'ACTIVE') return { reservation: hold, balance: balanceView(this.catalogue, account) };
      await settleReservation(s, hold, 'RELEASED', false);
      const after = { ...account, reservedMillicredits: account.reservedMillicredits - hold.amountMillicredits };
      return { reservation: { ...hold, status: 'RELEASED' as const }, balance: balanceView(this.catalogue, after) };
    });
  }

  /** Expires every hold past its expiry, a batch of accounts per transaction. */
  async sweep(): Promise<number> {
    let swept = 0;
    for (;;) {
      const batch = await this.db.transaction((s) => sweepExpiredHolds(s, SWEEP_BATCH_ACCOUNTS));
      swept += batch;
      if (batch < SWEEP_BATCH_ACCOUNTS) return swept;
    }
  }

  private checkTtl(ttlSeconds: number): number {
    if (ttlSeconds === 0) return this.catalogue.holdTtlSecondsDefault;
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > HOLD_TTL_SECONDS_MAX) {
      throw invalidField('ttl_seconds', `must be between 1 and ${HOLD_TTL_SECONDS_MAX}`);
    }
    return ttlSeconds;
  }
}
