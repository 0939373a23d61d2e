// The ledger's SQL. Each function is one statement (or one round trip) inside the caller's
// transaction. Rows are mapped to plain domain records here; nothing above sees SQL.
import type { Plan } from '../domain/catalogue.js';
import type { Row, SqlSession } from './database.js';
import { AS_OF, LOCK_ACCOUNT_SQL } from './clock.js';
import { expireUserHolds } from './holds-sql.js';

export interface AccountRow {
  userId: string;
  balanceMillicredits: bigint;
  /** Held by ACTIVE holds that have not expired; expired holds stop counting at once. */
  reservedMillicredits: bigint;
  /** Held by ACTIVE holds past their expiry, still in the stored reserved column. */
  expiredReservedMillicredits: bigint;
  /** How many ACTIVE holds are past their expiry (holds of 0 included). */
  expiredHolds: number;
  plan: Plan;
  entitlements: string[];
  /** Daily free operations used today (UTC). */
  freeOperationsUsedToday: bigint;
}

export interface IdempotentReplay {
  requestHash: string;
  result: unknown;
}

export interface PostingSpec {
  account: string;
  amountMillicredits: bigint;
}

export type TransactionType = 'CHARGE' | 'REFUND' | 'GRANT' | 'PROMO' | 'DAILY_TOP_UP' | 'DEPOSIT';

export interface TransactionRow {
  id: string;
  userId: string;
  type: TransactionType;
  amountMillicredits: bigint;
  balanceAfterMillicredits: bigint;
  product: string;
  operation: string;
  reference: string;
  reason: string;
  idempotencyKey: string;
  metadata: Record<string, string>;
  waivedReason?: string;
  refundedTransactionId?: string;
  /** For a charge that captured a hold: the hold's id. */
  reservationId?: string;
  createdAtMs: number;
}

/** Everything one ledger transaction writes, computed under the account lock. */
export interface LedgerWrite extends Omit<TransactionRow, 'id' | 'createdAtMs'> {
  /** Signed change of the user's stored reserved amount (holds captured). */
  reservedDeltaMillicredits: bigint;
  requestHash: string;
  postings: PostingSpec[];
  /** The result to replay for this key, minus the transaction's id and time. */
  result: unknown;
}

export const USER_ACCOUNT_PREFIX = 'user:';

export function userAccount(userId: string): string {
  return `${USER_ACCOUNT_PREFIX}${userId}`;
}

function toBigint(value: unknown): bigint {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'string' || typeof value === 'number') return BigInt(value);
  throw new TypeError(`expected an integer, got ${typeof value}`);
}

const ACCOUNT_COLUMNS = `
  a.user_id, a.balance_millicredits::text as balance, a.reserved_millicredits::text as reserved, a.plan, a.entitlements,
  (select coalesce(sum(r.amount_millicredits), 0)::text || ' ' || count(*) from reservations r
    where r.user_id = a.user_id and r.status = 'ACTIVE' and r.expires_at <= ${AS_OF}) as expired,
  coalesce((select f.used from daily_free_usage f
            where f.user_id = a.user_id and f.day = (${AS_OF} at time zone 'utc')::date), 0)::text as free_used`;

function mapAccount(row: Row): AccountRow {
  const reserved = toBigint(row.reserved);
  // "<sum> <count>" of the ACTIVE holds past their expiry: a hold of 0 counts too.
  const [expiredSum = '0', expiredCount = '0'] = String(row.expired).split(' ');
  const expired = toBigint(expiredSum);
  return {
    userId: String(row.user_id),
    balanceMillicredits: toBigint(row.balance),
    reservedMillicredits: reserved - expired,
    expiredReservedMillicredits: expired,
    expiredHolds: Number(expiredCount),
    plan: row.plan as Plan,
    entitlements: [...((row.entitlements as string[] | null) ?? [])].sort(),
    freeOperationsUsedToday: toBigint(row.free_used),
  };
}

/** Reads an account without locking it; undefined for a user never seen. */
export async function readAccount(s: Pick<SqlSession, 'query'>, userId: string): Promise<AccountRow | undefined> {
  const rows = await s.query(`select ${ACCOUNT_COLUMNS} from user_accounts a where a.user_id = $1`, [userId]);
  return rows[0] ? mapAccount(rows[0]) : undefined;
}

/**
 * Locks the user's account row (creating it if needed) for the rest of the transaction,
 * and returns any result already recorded under the idempotency key. Every balance change
 * of the user happens after this lock, so the check-then-write below it is safe.
 *
 * Two statements: the lock (which also records the clock, clock.ts), then the read. A
 * statement that waited for FOR UPDATE re-reads only the locked row; its joins and
 * subqueries come from the snapshot it started with, before the previous holder of the lock
 * committed (its idempotency record, captured holds, free operations). The read runs in a
 * new statement, with a snapshot taken while the lock is held.
 */
export async function lockAccount(
  s: SqlSession,
  userId: string,
  idempotencyKey: string,
): Promise<{ account: AccountRow; replay?: IdempotentReplay }> {
  let locked = await s.query(LOCK_ACCOUNT_SQL, [userId]);
  if (!locked[0]) {
    await s.query('insert into user_accounts (user_id) values ($1) on conflict (user_id) do nothing', [userId]);
    locked = await s.query(LOCK_ACCOUNT_SQL, [userId]);
  }
  const rows = await s.query(
    `select ${ACCOUNT_COLUMNS}, k.request_hash, k.result
       from user_accounts a
       left join idempotency_keys k on k.user_id = a.user_id and k.idempotency_key = $2
      where a.user_id = $1`,
    [userId, idempotencyKey],
  );
  const row = rows[0];
  if (!locked[0] || !row) throw new Error(`account ${userId} vanished while being locked`);
  const account = mapAccount(row);
  if (account.expiredHolds > 0) {
    // Expired holds already stopped counting; end them now so that the stored reserved
    // amount matches before this transaction changes the balance, and so that a hold of 0
    // past its expiry is EXPIRED to this transaction too (it moves no amount, but it can no
    // longer be captured).
    await expireUserHolds(s, userId);
    account.expiredReservedMillicredits = 0n;
    account.expiredHolds = 0;
  }
  return typeof row.request_hash === 'string'
    ? { account, replay: { requestHash: row.request_hash, result: row.result } }
    : { account };
}

/** Reads the result recorded under an idempotency key, outside any lock. */
export async function findIdempotent(
  s: Pick<SqlSession, 'query'>,
  userId: string,
  idempotencyKey: string,
): Promise<IdempotentReplay | undefined> {
  const rows = await s.query(
    'select request_hash, result from idempotency_keys where user_id = $1 and idempotency_key = $2',
    [userId, idempotencyKey],
  );
  const row = rows[0];
  return row ? { requestHash: String(row.request_hash), result: row.result } : undefined;
}

/**
 * Writes one ledger transaction in one statement: the balance update, the transaction
 * row, its postings and the idempotency record. Returns the new transaction's id and
 * time. Throws if the stored balance disagrees with what the caller computed.
 */
export async function appendTransaction(s: SqlSession, w: LedgerWrite): Promise<{ id: string; createdAtMs: number }> {
  const rows = await s.query(
    `with acct as (
       update user_accounts
          set balance_millicredits = balance_millicredits + $2::bigint,
              reserved_millicredits = reserved_millicredits + $3::bigint,
              updated_at = now()
        where user_id = $1
        returning balance_millicredits
     ), txn as (
       insert into transactions (user_id, type, amount_millicredits, balance_after_millicredits, product, operation,
                                 reference, reason, idempotency_key, metadata, waived_reason, refunded_transaction_id,
                                 reservation_id)
       select $1, $4, $2::bigint, acct.balance_millicredits, $5, $6, $7, $8, $9, $10::jsonb, $11, $12::bigint, $17::bigint
         from acct
       returning id, balance_after_millicredits, created_at
     ), post as (
       insert into postings (transaction_id, account, amount_millicredits)
       select txn.id, p.account, p.amount from txn, unnest($13::text[], $14::bigint[]) as p (account, amount)
     ), idem as (
       insert into idempotency_keys (user_id, idempotency_key, request_hash, result)
       select $1, $9, $15,
              jsonb_set(jsonb_set($16::jsonb, '{transaction,id}', to_jsonb(txn.id::text)),
                        '{transaction,createdAtMs}', to_jsonb(floor(extract(epoch from txn.created_at) * 1000)::bigint))
         from txn
     )
     select id::text as id, balance_after_millicredits::text as balance_after,
            floor(extract(epoch from created_at) * 1000)::text as created_ms
       from txn`,
    [
      w.userId,
      w.amountMillicredits.toString(),
      w.reservedDeltaMillicredits.toString(),
      w.type,
      w.product,
      w.operation,
      w.reference,
      w.reason,
      w.idempotencyKey,
      JSON.stringify(w.metadata),
      w.waivedReason ?? null,
      w.refundedTransactionId ?? null,
      w.postings.map((p) => p.account),
      w.postings.map((p) => p.amountMillicredits.toString()),
      w.requestHash,
      JSON.stringify(w.result, bigintReplacer),
      w.reservationId ?? null,
    ],
  );
  const row = rows[0];
  if (!row) throw new Error(`ledger write for ${w.userId} updated no account`);
  const balanceAfter = toBigint(row.balance_after);
  if (balanceAfter !== w.balanceAfterMillicredits) {
    throw new Error(`ledger drift for ${w.userId}: expected balance ${w.balanceAfterMillicredits}, stored ${balanceAfter}`);
  }
  return { id: String(row.id), createdAtMs: Number(row.created_ms) };
}

/** JSON.stringify replacer that keeps bigints exact: {"$bigint":"123"}. */
export function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? { $bigint: value.toString() } : value;
}

/** Reverses bigintReplacer on an already parsed JSON value. */
export function reviveBigints<T>(value: unknown): T {
  if (Array.isArray(value)) return value.map((v) => reviveBigints(v)) as T;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>);
    const only = entries[0];
    if (entries.length === 1 && only && only[0] === '$bigint' && typeof only[1] === 'string') return BigInt(only[1]) as T;
    return Object.fromEntries(entries.map(([k, v]) => [k, reviveBigints(v)])) as T;
  }
  return value as T;
}

const TRANSACTION_COLUMNS = `id::text as id, user_id, type, amount_millicredits::text as amount,
  balance_after_millicredits::text as balance_after, product, operation, reference, reason, idempotency_key, metadata,
  waived_reason, refunded_transaction_id::text as refunded_id, reservation_id::text as reservation_id,
  floor(extract(epoch from created_at) * 1000)::text as created_ms`;

function mapTransaction(row: Row): TransactionRow {
  const base: TransactionRow = {
    id: String(row.id),
    userId: String(row.user_id),
    type: row.type as TransactionType,
    amountMillicredits: toBigint(row.amount),
    balanceAfterMillicredits: toBigint(row.balance_after),
    product: String(row.product),
    operation: String(row.operation),
    reference: String(row.reference),
    reason: String(row.reason),
    idempotencyKey: String(row.idempotency_key ?? ''),
    metadata: (row.metadata as Record<string, string> | null) ?? {},
    createdAtMs: Number(row.created_ms),
  };
  if (typeof row.waived_reason === 'string') base.waivedReason = row.waived_reason;
  if (typeof row.refunded_id === 'string') base.refundedTransactionId = row.refunded_id;
  if (typeof row.reservation_id === 'string') base.reservationId = row.reservation_id;
  return base;
}

/** One page of a user's history, newest first, strictly older than beforeId if given. */
export async function listTransactions(
  s: Pick<SqlSession, 'query'>,
  userId: string,
  options: { beforeId?: string; types?: readonly TransactionType[]; limit: number },
): Promise<TransactionRow[]> {
  const rows = await s.query(
    // Qualified column names: a bare "id" in ORDER BY would sort the text alias of the
    // select list ("10" < "9"), while the cursor compares numbers.
    `select ${TRANSACTION_COLUMNS} from transactions t
      where t.user_id = $1 and ($2::bigint is null or t.id < $2::bigint)
        and ($3::text[] is null or t.type = any($3::text[]))
      order by t.id desc limit $4`,
    [userId, options.beforeId ?? null, options.types && options.types.length > 0 ? options.types : null, options.limit],
  );
  return rows.map(mapTransaction);
}

/** A charge of the user and how much of it has been refunded so far. */
export async function findChargeForRefund(
  s: SqlSession,
  userId: string,
  transactionId: string,
): Promise<{ charge: TransactionRow; refundedMillicredits: bigint } | undefined> {
  const rows = await s.query(
    `select ${TRANSACTION_COLUMNS},
       (select coalesce(sum(r.amount_millicredits), 0) from transactions r
         where r.refunded_transaction_id = t.id)::text as refunded
     from transactions t where t.id = $1::bigint and t.user_id = $2`,
    [transactionId, userId],
  );
  const row = rows[0];
  return row ? { charge: mapTransaction(row), refundedMillicredits: toBigint(row.refunded) } : undefined;
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
