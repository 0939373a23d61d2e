// Plans' and entitlements' SQL: set on the account row, creating it if needed.
import { PLANS, type Plan } from '../../domain/catalogue.js';
import type { Row, SqlSession } from '../../storage/database.js';

/** The plan and entitlements of an account as they were, and whether this transaction created it. */
export interface PlanState {
  plan: Plan;
  entitlements: string[];
  /** The account did not exist: it was created here (FREE, no entitlements). */
  created: boolean;
}

function planState(row: Row, created: boolean): PlanState {
  const plan = PLANS.find((p) => p === row.plan);
  if (!plan) throw new Error(`account with an unknown plan ${String(row.plan)}`);
  return { plan, entitlements: (row.entitlements as string[] | null) ?? [], created };
}

/**
 * Locks the account row for the rest of the transaction, creating it first if needed, and
 * returns what it held: the "before" of an audited change, exact even when two admins
 * create the same account at once (the second waits for the first's row and reads it).
 */
export async function lockPlanState(s: Pick<SqlSession, 'query'>, userId: string): Promise<PlanState> {
  const inserted = await s.query('insert into user_accounts (user_id) values ($1) on conflict (user_id) do nothing returning plan, entitlements', [userId]);
  if (inserted[0]) return planState(inserted[0], true);
  const rows = await s.query('select plan, entitlements from user_accounts where user_id = $1 for update', [userId]);
  if (!rows[0]) throw new Error(`account ${userId} vanished under its lock`);
  return planState(rows[0], false);
}

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
