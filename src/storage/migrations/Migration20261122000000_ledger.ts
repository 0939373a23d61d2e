import { Migration } from '@mikro-orm/migrations';

/**
 * The ledger: user accounts with materialised balances, append-only transactions and
 * their double-entry postings, idempotency records, holds, daily allowances and promo
 * codes. Every invariant the code relies on is also a constraint here, so a bug in the
 * code fails a statement instead of corrupting money.
 */
export class Migration20261122000000_ledger extends Migration {
  override name = 'Migration20261122000000_ledger';

  override up(): void {
    this.addSql(`
      create table user_accounts (
        user_id text primary key,
        balance_millicredits bigint not null default 0,
        reserved_millicredits bigint not null default 0,
        plan text not null default 'FREE',
        entitlements text[] not null default '{}',
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now(),
        constraint user_accounts_user_id_length check (char_length(user_id) between 1 and 128),
        constraint user_accounts_balance_nonnegative check (balance_millicredits >= 0),
        constraint user_accounts_reserved_nonnegative check (reserved_millicredits >= 0),
        constraint user_accounts_reserved_within_balance check (reserved_millicredits <= balance_millicredits),
        constraint user_accounts_balance_max check (balance_millicredits <= 1000000000000000),
        constraint user_accounts_plan_known check (plan in ('FREE', 'PRO', 'ADMIN'))
      )`);
    this.addSql(`
      create table transactions (
        id bigserial primary key,
        user_id text not null references user_accounts (user_id),
        type text not null,
        amount_millicredits bigint not null,
        balance_after_millicredits bigint not null,
        product text not null default '',
        operation text not null default '',
        reference text not null default '',
        reason text not null default '',
        idempotency_key text,
        metadata jsonb not null default '{}',
        waived_reason text,
        refunded_transaction_id bigint references transactions (id),
        created_at timestamptz not null default now(),
        constraint transactions_type_known
          check (type in ('CHARGE', 'REFUND', 'GRANT', 'PROMO', 'DAILY_TOP_UP', 'DEPOSIT')),
        constraint transactions_balance_after_nonnegative check (balance_after_millicredits >= 0),
        constraint transactions_refund_is_credit
          check (type <> 'REFUND' or (amount_millicredits > 0 and refunded_transaction_id is not null)),
        constraint transactions_charge_is_debit check (type <> 'CHARGE' or amount_millicredits <= 0)
      )`);
    this.addSql('create index transactions_user_id_id_index on transactions (user_id, id desc)');
    this.addSql(`create index transactions_refunded_transaction_id_index on transactions (refunded_transaction_id)
      where refunded_transaction_id is not null`);
    this.addSql(`
      create table postings (
        transaction_id bigint not null references transactions (id),
        account text not null,
        amount_millicredits bigint not null,
        primary key (transaction_id, account),
        constraint postings_amount_nonzero check (amount_millicredits <> 0)
      )`);
    this.addSql('create index postings_account_index on postings (account)');
    this.addSql(`
      create table idempotency_keys (
        user_id text not null,
        idempotency_key text not null,
        request_hash text not null,
        result jsonb not null,
        created_at timestamptz not null default now(),
        primary key (user_id, idempotency_key),
        constraint idempotency_keys_key_length check (char_length(idempotency_key) between 1 and 255)
      )`);
    this.addSql(`
      create table reservations (
        id bigserial primary key,
        user_id text not null references user_accounts (user_id),
        amount_millicredits bigint not null,
        status text not null,
        product text not null default '',
        expires_at timestamptz not null,
        created_at timestamptz not null default now(),
        settled_at timestamptz,
        constraint reservations_amount_nonnegative check (amount_millicredits >= 0),
        constraint reservations_status_known check (status in ('ACTIVE', 'CAPTURED', 'RELEASED', 'EXPIRED'))
      )`);
    this.addSql(`create index reservations_user_id_index on reservations (user_id) where status = 'ACTIVE'`);
    this.addSql(`create index reservations_expires_at_index on reservations (expires_at) where status = 'ACTIVE'`);
    this.addSql(`
      create table daily_free_usage (
        user_id text not null references user_accounts (user_id),
        day date not null,
        used integer not null,
        primary key (user_id, day),
        constraint daily_free_usage_used_nonnegative check (used >= 0)
      )`);
    this.addSql(`
      create table daily_top_ups (
        user_id text not null references user_accounts (user_id),
        day date not null,
        transaction_id bigint not null references transactions (id),
        primary key (user_id, day)
      )`);
    this.addSql(`
      create table promo_codes (
        code text primary key,
        amount_millicredits bigint not null,
        max_redemptions bigint not null default 0,
        redemptions bigint not null default 0,
        expires_at timestamptz,
        disabled boolean not null default false,
        created_at timestamptz not null default now(),
        constraint promo_codes_amount_positive check (amount_millicredits > 0),
        constraint promo_codes_max_nonnegative check (max_redemptions >= 0),
        constraint promo_codes_within_cap check (max_redemptions = 0 or redemptions <= max_redemptions)
      )`);
    this.addSql(`
      create table promo_redemptions (
        code text not null references promo_codes (code),
        user_id text not null references user_accounts (user_id),
        transaction_id bigint not null references transactions (id),
        created_at timestamptz not null default now(),
        primary key (code, user_id)
      )`);
  }
}
