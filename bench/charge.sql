-- pgbench script: what one Charge of the service does in PostgreSQL, and nothing else.
-- Same round trips and SQL shape as src/ledger/mutation.ts → src/storage/ledger-sql.ts:
-- BEGIN; lockAccount (the lock, recording the clock; then the read); appendTransaction (one
-- CTE statement); COMMIT.
-- Values are literals shaped like a 1-milli-credit charge of product "bench" (the result
-- JSON is the one the service stores for such a charge, with this call's user and key).
--
--   pgbench -n -f bench/charge.sql -c 16 -j 2 -T 10 -D user_min=1 -D user_max=1000 <db>   (spread)
--   pgbench -n -f bench/charge.sql -c 16 -j 2 -T 10 -D user_min=0 -D user_max=0 <db>      (hot)
--
-- Users are "bench-user-<n>"; bench/run.ts seeds 1..1000 and the hot user 0 through Grant.
\set u random(:user_min, :user_max)
\set k random(1, 9000000000000000000)
BEGIN;
select set_config('billing.as_of', clock_timestamp()::text, true) as as_of
  from (select a.user_id from user_accounts a where a.user_id = 'bench-user-' || :u for update) locked;
select a.user_id, a.balance_millicredits::text as balance, a.reserved_millicredits::text as reserved, a.plan, a.entitlements,
  (select coalesce(sum(r.amount_millicredits), 0)::text || ' ' || count(*) from reservations r
    where r.user_id = a.user_id and r.status = 'ACTIVE'
      and r.expires_at <= coalesce(nullif(current_setting('billing.as_of', true), '')::timestamptz, now())) as expired,
  coalesce((select f.used from daily_free_usage f
            where f.user_id = a.user_id
              and f.day = (coalesce(nullif(current_setting('billing.as_of', true), '')::timestamptz, now()) at time zone 'utc')::date), 0)::text as free_used,
  k.request_hash, k.result
from user_accounts a
left join idempotency_keys k on k.user_id = a.user_id and k.idempotency_key = 'pgbench-' || :client_id || '-' || :k
where a.user_id = 'bench-user-' || :u;
with acct as (
  update user_accounts
     set balance_millicredits = balance_millicredits + (-1)::bigint,
         reserved_millicredits = reserved_millicredits + 0::bigint,
         updated_at = now()
   where user_id = 'bench-user-' || :u
   returning balance_millicredits
), txn as (
  insert into transactions (user_id, type, amount_millicredits, balance_after_millicredits, product, operation,
                            reference, reason, idempotency_key, metadata, waived_reason, refunded_transaction_id)
  select 'bench-user-' || :u, 'CHARGE', (-1)::bigint, acct.balance_millicredits, 'bench', '', '', '',
         'pgbench-' || :client_id || '-' || :k, '{}'::jsonb, null, null::bigint from acct
  returning id, balance_after_millicredits, created_at
), post as (
  insert into postings (transaction_id, account, amount_millicredits)
  select txn.id, p.account, p.amount
    from txn, unnest(array['user:bench-user-' || :u, 'system:revenue:bench']::text[], array[-1, 1]::bigint[]) as p (account, amount)
), idem as (
  insert into idempotency_keys (user_id, idempotency_key, request_hash, result)
  select 'bench-user-' || :u, 'pgbench-' || :client_id || '-' || :k,
         'fb54735d9d1198570a6356adf3909e9e8ad238d6ce5a08a60057ac1c2314f53f',
         jsonb_set(jsonb_set(('{"transaction":{"userId":"bench-user-' || :u || '","type":"CHARGE","amountMillicredits":{"$bigint":"-1"},"balanceAfterMillicredits":{"$bigint":"999999999"},"product":"bench","operation":"","reference":"","reason":"","idempotencyKey":"pgbench-' || :client_id || '-' || :k || '","metadata":{},"id":"","createdAtMs":0},"chargedMillicredits":{"$bigint":"1"},"shortfallMillicredits":{"$bigint":"0"},"price":{"costMillicredits":{"$bigint":"1"},"unroundedCostMillicredits":"","quantity":{"$bigint":"0"},"effectiveTokens":{"$bigint":"0"},"tokensPerUnit":{"$bigint":"0"},"outputWeight":{"$bigint":"0"},"modelMultiplier":"","unitPriceMillicredits":{"$bigint":"0"},"minimumApplied":false},"balance":{"userId":"bench-user-' || :u || '","balanceMillicredits":{"$bigint":"999999999"},"reservedMillicredits":{"$bigint":"0"},"availableMillicredits":{"$bigint":"999999999"},"lowBalance":false,"canStart":true,"plan":"FREE","entitlements":[],"freeOperationsRemaining":{"$bigint":"0"}}}')::jsonb, '{transaction,id}', to_jsonb(txn.id::text)),
                   '{transaction,createdAtMs}', to_jsonb(floor(extract(epoch from txn.created_at) * 1000)::bigint))
    from txn
)
select id::text as id, balance_after_millicredits::text as balance_after,
       floor(extract(epoch from created_at) * 1000)::text as created_ms
  from txn;
COMMIT;
