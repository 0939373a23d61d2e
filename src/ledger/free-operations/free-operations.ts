// Daily free operations: each user gets catalogue.dailyFreePerDay operations a UTC day
// (shared across catalogue.dailyFreeOperations) before they are charged. Pricing decides
// how many a usage takes (charge/pricing.ts); this module keeps the count per user and day
// and reads what is left into every account.
import { maxBigint } from '../../domain/money.js';
import type { Row, SqlSession } from '../../storage/database.js';
import { toBigint } from '../../storage/rows.js';
import type { AccountFacet, AccountRow } from '../kernel/account-sql.js';
import { AS_OF } from '../kernel/clock.js';

/** The UTC day of the unit of work's clock. */
const TODAY = `(${AS_OF} at time zone 'utc')::date`;

/** Reads the operations left today into the account. */
export function freeOperationsFacet(perDay: bigint): AccountFacet {
  return {
    columns: `coalesce((select f.used from daily_free_usage f where f.user_id = a.user_id and f.day = ${TODAY}), 0)::text as free_used`,
    read: (row: Row, account: AccountRow) => ({ ...account, freeOperationsRemaining: maxBigint(0n, perDay - toBigint(row.free_used)) }),
    unseen: (account: AccountRow) => ({ ...account, freeOperationsRemaining: perDay }),
  };
}

/** Counts free operations used today, under the account lock. */
export async function addFreeUsage(s: SqlSession, userId: string, used: bigint): Promise<void> {
  await s.query(
    `insert into daily_free_usage (user_id, day, used) values ($1, ${TODAY}, $2::int)
     on conflict (user_id, day) do update set used = daily_free_usage.used + excluded.used`,
    [userId, used.toString()],
  );
}
