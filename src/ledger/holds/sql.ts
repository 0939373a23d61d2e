// Holds (reservations) as stored. Every function runs inside the caller's transaction,
// after the account row is locked, except the sweeper, which locks the accounts it touches
// itself, in user_id order. END_HOLDS is the only statement that lowers an account's
// reserved amount: release, capture, expiry at lock time and the sweeper all end holds
// through it.
import type { Row, SqlSession } from '../../storage/database.js';
import { toBigint } from '../../storage/rows.js';
import type { AccountFacet, AccountRow } from '../kernel/account-sql.js';
import { AS_OF } from '../kernel/clock.js';

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
    amountMillicredits: toBigint(row.amount),
    status: row.status as ReservationStatus,
    product: String(row.product),
    expiresAtMs: Number(row.expires_ms),
    createdAtMs: Number(row.created_ms),
  };
}

/**
 * Expired holds stop counting the moment they expire: every account read nets out the
 * ACTIVE holds past their expiry, and the lock ends them (so the stored reserved amount
 * matches before the operation changes the balance, and a hold of 0 past its expiry can no
 * longer be captured by this operation either).
 */
export const holdsFacet: AccountFacet = {
  // "<sum> <count>" of the ACTIVE holds past their expiry: a hold of 0 counts too.
  columns: `(select coalesce(sum(r.amount_millicredits), 0)::text || ' ' || count(*) from reservations r
    where r.user_id = a.user_id and r.status = 'ACTIVE' and r.expires_at <= ${AS_OF}) as holds_expired`,
  read: (row: Row, account: AccountRow) => {
    const [expiredSum = '0'] = String(row.holds_expired).split(' ');
    return { ...account, reservedMillicredits: account.reservedMillicredits - toBigint(expiredSum) };
  },
  afterLock: async (s: SqlSession, row: Row, account: AccountRow) => {
    const [, expiredCount = '0'] = String(row.holds_expired).split(' ');
    if (Number(expiredCount) > 0) await expireUserHolds(s, account.userId);
  },
};

/** Ends the ACTIVE holds `where` selects as status $1 and lowers their owners' reserved amounts. */
function endHolds(where: string): string {
  return `with ended as (
       update reservations set status = $1, settled_at = now()
        where status = 'ACTIVE' and ${where}
        returning user_id, amount_millicredits
     ), per_user as (select user_id, sum(amount_millicredits) as total from ended group by user_id)
     update user_accounts a set reserved_millicredits = a.reserved_millicredits - per_user.total, updated_at = now()
       from per_user where a.user_id = per_user.user_id`;
}

const END_HOLD_BY_ID = endHolds('id = $2::bigint');
const END_USER_EXPIRED_HOLDS = endHolds(`user_id = $2 and expires_at <= ${AS_OF}`);
const END_EXPIRED_HOLDS_OF = endHolds('user_id = any($2::text[]) and expires_at <= now()');

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

/** Ends an ACTIVE hold as CAPTURED or RELEASED and takes it off the account's reserved amount. */
export async function settleReservation(s: SqlSession, hold: ReservationRow, status: 'CAPTURED' | 'RELEASED'): Promise<void> {
  await s.query(END_HOLD_BY_ID, [status, hold.id]);
}

/** Marks the user's holds past their expiry EXPIRED and frees what they held. */
export async function expireUserHolds(s: SqlSession, userId: string): Promise<void> {
  await s.query(END_USER_EXPIRED_HOLDS, ['EXPIRED', userId]);
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
  await s.query(END_EXPIRED_HOLDS_OF, ['EXPIRED', users]);
  return users.length;
}

/**
 * One page of the user's active holds (ACTIVE and not past their expiry), in id order,
 * strictly after afterId if given. A plain read, no locks: ACTIVE holds past their expiry
 * that nobody has ended yet are left out, the way every account read nets them out.
 */
export async function listActiveHolds(
  s: Pick<SqlSession, 'query'>,
  userId: string,
  options: { afterId?: string; limit: number },
): Promise<ReservationRow[]> {
  const rows = await s.query(
    // Qualified column names: the select list aliases id as text (see history/sql.ts).
    `select ${RESERVATION_COLUMNS} from reservations r
      where r.user_id = $1 and r.status = 'ACTIVE' and r.expires_at > ${AS_OF}
        and ($2::bigint is null or r.id > $2::bigint)
      order by r.id limit $3`,
    [userId, options.afterId ?? null, options.limit],
  );
  return rows.map(mapReservation);
}

/** What the ACTIVE, unexpired holds keep, summed over all users (one range scan of the partial index on expires_at). */
export async function activeHoldTotals(s: Pick<SqlSession, 'query'>): Promise<{ holds: bigint; heldMillicredits: bigint }> {
  const rows = await s.query(
    `select count(*)::text as holds, coalesce(sum(amount_millicredits), 0)::text as held
       from reservations where status = 'ACTIVE' and expires_at > now()`,
  );
  return { holds: BigInt(String(rows[0]?.holds ?? '0')), heldMillicredits: BigInt(String(rows[0]?.held ?? '0')) };
}
