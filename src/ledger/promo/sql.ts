// Promo codes' SQL. Codes arrive here already validated and upper-cased. Redemption
// statements run inside the redeeming user's ledger transaction (after the account row
// lock); the conditional UPDATE of the code's row is what keeps the total cap exact.
import { AS_OF } from '../kernel/clock.js';
import type { Row, SqlSession } from '../../storage/database.js';

export interface PromoCodeRow {
  code: string;
  amountMillicredits: bigint;
  /** 0 means unlimited. */
  maxRedemptions: bigint;
  redemptions: bigint;
  expiresAtMs?: number;
  disabled: boolean;
  /** Past its expiry by the database's clock (the transaction's start time). */
  expired: boolean;
  createdAtMs: number;
}

export interface NewPromoCode {
  code: string;
  amountMillicredits: bigint;
  maxRedemptions: bigint;
  expiresAtMs?: number;
}

type Query = Pick<SqlSession, 'query'>;

const PROMO_COLUMNS = `code, amount_millicredits::text as amount, max_redemptions::text as max,
  redemptions::text as redemptions, floor(extract(epoch from expires_at) * 1000)::text as expires_ms, disabled,
  coalesce(expires_at <= ${AS_OF}, false) as expired, floor(extract(epoch from created_at) * 1000)::text as created_ms`;

function mapPromo(row: Row): PromoCodeRow {
  const base: PromoCodeRow = {
    code: String(row.code),
    amountMillicredits: BigInt(String(row.amount)),
    maxRedemptions: BigInt(String(row.max)),
    redemptions: BigInt(String(row.redemptions)),
    disabled: row.disabled === true,
    expired: row.expired === true,
    createdAtMs: Number(row.created_ms),
  };
  if (row.expires_ms !== null && row.expires_ms !== undefined) base.expiresAtMs = Number(row.expires_ms);
  return base;
}

/** Inserts a code; undefined when a code of that name already exists. */
export async function insertPromoCode(s: Query, code: NewPromoCode): Promise<PromoCodeRow | undefined> {
  const rows = await s.query(
    `insert into promo_codes (code, amount_millicredits, max_redemptions, expires_at)
     values ($1, $2::bigint, $3::bigint, $4::timestamptz)
     on conflict (code) do nothing
     returning ${PROMO_COLUMNS}`,
    [
      code.code,
      code.amountMillicredits.toString(),
      code.maxRedemptions.toString(),
      code.expiresAtMs === undefined ? null : new Date(code.expiresAtMs).toISOString(),
    ],
  );
  return rows[0] ? mapPromo(rows[0]) : undefined;
}

export async function findPromoCode(s: Query, code: string): Promise<PromoCodeRow | undefined> {
  const rows = await s.query(`select ${PROMO_COLUMNS} from promo_codes where code = $1`, [code]);
  return rows[0] ? mapPromo(rows[0]) : undefined;
}

/**
 * One page of codes, newest first, strictly after `afterCode` in that order. Codes are
 * never deleted, so the previous page's last code always locates the next page exactly.
 */
export async function listPromoCodes(s: Query, options: { afterCode?: string; limit: number }): Promise<PromoCodeRow[]> {
  const rows = await s.query(
    // Qualified column names, so that ORDER BY can never pick up a text alias of the select
    // list (it sorts by the real timestamp, as the cursor compares).
    `select ${PROMO_COLUMNS} from promo_codes p
      where $1::text is null
         or (p.created_at, p.code) < (select c.created_at, c.code from promo_codes c where c.code = $1)
      order by p.created_at desc, p.code desc
      limit $2`,
    [options.afterCode ?? null, options.limit],
  );
  return rows.map(mapPromo);
}

/** A code under its row lock, for the rest of the transaction; undefined when there is no such code. */
export async function lockPromoCode(s: Query, code: string): Promise<PromoCodeRow | undefined> {
  const rows = await s.query(`select ${PROMO_COLUMNS} from promo_codes where code = $1 for update`, [code]);
  return rows[0] ? mapPromo(rows[0]) : undefined;
}

/** Disables a code (again, harmlessly); undefined when there is no such code. */
export async function disablePromoCode(s: Query, code: string): Promise<PromoCodeRow | undefined> {
  const rows = await s.query(`update promo_codes set disabled = true where code = $1 returning ${PROMO_COLUMNS}`, [code]);
  return rows[0] ? mapPromo(rows[0]) : undefined;
}

/** True when the user already redeemed the code. Safe to act on under the account lock. */
export async function hasRedeemed(s: SqlSession, code: string, userId: string): Promise<boolean> {
  const rows = await s.query('select 1 from promo_redemptions where code = $1 and user_id = $2', [code, userId]);
  return rows.length > 0;
}

/**
 * Counts one redemption if the code is redeemable now, and returns its amount; undefined
 * when it is not (missing, disabled, expired or at its cap). The row lock this UPDATE
 * takes makes concurrent redemptions of one code queue here, and each re-checks the cap
 * against the count the previous one committed, so the cap can never be passed.
 */
export async function claimRedemption(s: SqlSession, code: string): Promise<bigint | undefined> {
  const rows = await s.query(
    `update promo_codes set redemptions = redemptions + 1
      where code = $1 and not disabled
        and (max_redemptions = 0 or redemptions < max_redemptions)
        and (expires_at is null or expires_at > ${AS_OF})
      returning amount_millicredits::text as amount`,
    [code],
  );
  return rows[0] ? BigInt(String(rows[0].amount)) : undefined;
}

/** Records that the user redeemed the code with this transaction. */
export async function insertRedemption(s: SqlSession, code: string, userId: string, transactionId: string): Promise<void> {
  await s.query('insert into promo_redemptions (code, user_id, transaction_id) values ($1, $2, $3::bigint)', [
    code,
    userId,
    transactionId,
  ]);
}
