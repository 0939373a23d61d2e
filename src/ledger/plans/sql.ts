// Plans' and entitlements' SQL: set on the account row, creating it if needed.
import type { Plan } from '../../domain/catalogue.js';
import type { SqlSession } from '../../storage/database.js';

/** Sets a user's plan, creating the account if needed. */
export async function setPlan(s: Pick<SqlSession, 'query'>, userId: string, plan: Plan): Promise<void> {
  await s.query(
    `insert into user_accounts (user_id, plan) values ($1, $2)
     on conflict (user_id) do update set plan = excluded.plan, updated_at = now()`,
    [userId, plan],
  );
}

/** Grants (active) or revokes an entitlement, creating the account if needed. */
export async function setEntitlement(
  s: Pick<SqlSession, 'query'>,
  userId: string,
  entitlement: string,
  active: boolean,
): Promise<void> {
  await s.query(
    `insert into user_accounts (user_id, entitlements) values ($1, case when $3 then array[$2::text] else '{}'::text[] end)
     on conflict (user_id) do update set
       entitlements = case
         when $3 then array(select distinct e from unnest(user_accounts.entitlements || $2::text) as e order by e)
         else array_remove(user_accounts.entitlements, $2::text) end,
       updated_at = now()`,
    [userId, entitlement, active],
  );
}
