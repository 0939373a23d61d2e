// Holds (reservations) and the daily free-operation counter. Every function runs inside
// the caller's transaction, after the account row is locked, except the sweeper, which
// locks the accounts it touches itself, in user_id order.
import { AS_OF } from './clock.js';
import type { Row, SqlSession } from './database.js';

export type ReservationStatus = 'ACTIVE' | 'CAPTURED' | 'RELEASED' | 'EXPIRED';

export interface ReservationRow {
  id: string;
  userId: string;
  amountMillicredits: bigint;
  status: ReservationStatus;
  product: string;
  expiresAtMs: number;
  createdAtMs: number;
}

const RESERVATION_COLUMNS = `id::text as id, user_id, amount_millicredits::text as amount, status, product,
  floor(extract(epoch from expires_at) * 1000)::text as expires_ms,
  floor(extract(epoch from created_at) * 1000)::text as created_ms`;

function mapReservation(row: Row): ReservationRow {
  return {
    id: String(row.id),
    userId: String(row.user_id),
    amountMillicredits: BigInt(String(row.amount)),
    status: row.status as ReservationStatus,
    product: String(row.product),
    expiresAtMs: Number(row.expires_ms),
    createdAtMs: Number(row.created_ms),
  };
}

/** Places a hold and adds it to the account's reserved amount. */
export async function insertReservation(
  s: SqlSession,
  hold: { userId: string; amountMillicredits: bigint; product: string; ttlSeconds: number },
): Promise<ReservationRow> {
  const rows = await s.query(
    `with acct as (
       update user_accounts set reserved_millicredits = reserved_millicredits + $2::bigint, updated_at = now()
        where user_id = $1 returning user_id
     )
     insert into reservations (user_id, amount_millicredits, status, product, created_at, expires_at)
     select acct.user_id, $2::bigint, 'ACTIVE', $3, ${AS_OF}, ${AS_OF} + make_interval(secs => $4) from acct
     returning ${RESERVATION_COLUMNS}`,
    [hold.userId, hold.amountMillicredits.toString(), hold.product, hold.ttlSeconds],
  );
  if (!rows[0]) throw new Error(`reservation for ${hold.userId} found no account`);
  return mapReservation(rows[0]);
}

/** A hold of the user, locked for the rest of the transaction. */
export async function lockReservation(s: SqlSession, userId: string, id: string): Promise<ReservationRow | undefined> {
  const rows = await s.query(
    `select ${RESERVATION_COLUMNS} from reservations where id = $1::bigint and user_id = $2 for update`,
    [id, userId],
  );
  return rows[0] ? mapReservation(rows[0]) : undefined;
}

/**
 * Ends an ACTIVE hold as CAPTURED or RELEASED and takes it off the account's reserved
 * amount, unless `keepReserved` (a capture whose ledger write adjusts reserved itself).
 */
export async function settleReservation(
  s: SqlSession,
  hold: ReservationRow,
  status: 'CAPTURED' | 'RELEASED',
  keepReserved: boolean,
): Promise<void> {
  await s.query(
    `with r as (
       update reservations set status = $2, settled_at = now() where id = $1::bigint and status = 'ACTIVE' returning user_id
     )
     update user_accounts a set reserved_millicredits = reserved_millicredits - $3::bigint, updated_at = now()
       from r where a.user_id = r.user_id`,
    [hold.id, status, keepReserved ? '0' : hold.amountMillicredits.toString()],
  );
}

/** Marks the user's holds past their expiry EXPIRED and frees what they held. */
export async function expireUserHolds(s: SqlSession, userId: string): Promise<void> {
  await s.query(
    `with e as (
       update reservations set status = 'EXPIRED', settled_at = now()
        where user_id = $1 and status = 'ACTIVE' and expires_at <= ${AS_OF}
        returning amount_millicredits
     )
     update user_accounts set reserved_millicredits = reserved_millicredits - (select coalesce(sum(amount_millicredits), 0) from e)
      where user_id = $1`,
    [userId],
  );
}

/**
 * One sweeper batch: up to `limit` accounts with expired holds. Accounts are locked
 * first, in user_id order, skipping any a request holds right now (it expires its own
 * holds), so the sweeper never deadlocks with a charge that locks account then hold.
 * Returns how many accounts it swept.
 */
export async function sweepExpiredHolds(s: SqlSession, limit: number): Promise<number> {
  const locked = await s.query(
    `select a.user_id from user_accounts a
      where a.user_id in (select distinct r.user_id from reservations r
                           where r.status = 'ACTIVE' and r.expires_at <= now() limit $1)
      order by a.user_id for update of a skip locked`,
    [limit],
  );
  const users = locked.map((row) => String(row.user_id));
  if (users.length === 0) return 0;
  await s.query(
    `with e as (
       update reservations set status = 'EXPIRED', settled_at = now()
        where user_id = any($1::text[]) and status = 'ACTIVE' and expires_at <= now()
        returning user_id, amount_millicredits
     ), per_user as (select user_id, sum(amount_millicredits) as total from e group by user_id)
     update user_accounts a set reserved_millicredits = a.reserved_millicredits - per_user.total, updated_at = now()
       from per_user where a.user_id = per_user.user_id`,
    [users],
  );
  return users.length;
}

/** Counts free operations used today (UTC, by the unit of work's clock). */
export async function addFreeUsage(s: SqlSession, userId: string, used: bigint): Promise<void> {
  await s.query(
    `insert into daily_free_usage (user_id, day, used) values ($1, (${AS_OF} at time zone 'utc')::date, $2::int)
     on conflict (user_id, day) do update set used = daily_free_usage.used + excluded.used`,
    [userId, used.toString()],
  );
}

/** Records a reply for an idempotency key outside a ledger write (holds). */
export async function insertIdempotency(
  s: SqlSession,
  record: { userId: string; idempotencyKey: string; requestHash: string; resultJson: string },
): Promise<void> {
  await s.query(
    'insert into idempotency_keys (user_id, idempotency_key, request_hash, result) values ($1, $2, $3, $4::jsonb)',
    [record.userId, record.idempotencyKey, record.requestHash, record.resultJson],
  );
}
