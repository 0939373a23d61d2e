import { Migration } from '@mikro-orm/migrations';

/**
 * Crypto deposits (SPEC §5). One address per user (a BIP-44 index allocated once, never
 * reused), one cursor per watched chain with the hashes of the blocks it scanned and that
 * are not yet final (parent-hash continuity), and one row per detected transfer, unique per
 * (chain, tx hash, log index). A credited deposit names its DEPOSIT ledger transaction and a
 * ledger transaction is named by at most one deposit.
 */
export class Migration20261202000000_deposits extends Migration {
  override name = 'Migration20261202000000_deposits';

  override up(): void {
    // The last index handed out; allocation locks this one row, so indexes are contiguous
    // (a restored wallet finds every address within the usual gap limit).
    this.addSql(`create table deposit_address_counter (
      id boolean primary key default true constraint deposit_address_counter_single_row check (id),
      last_index bigint not null constraint deposit_address_counter_last_index_nonnegative check (last_index >= 0))`);
    this.addSql('insert into deposit_address_counter (id, last_index) values (true, 0)');
    this.addSql(`create table deposit_addresses (
      user_id text primary key,
      derivation_index bigint not null constraint deposit_addresses_index_range check (derivation_index between 1 and 2147483647),
      address text not null constraint deposit_addresses_address_lower_hex check (address ~ '^0x[0-9a-f]{40}$'),
      created_at timestamptz not null default now(),
      constraint deposit_addresses_index_unique unique (derivation_index),
      constraint deposit_addresses_address_unique unique (address))`);
    this.addSql(`create table wallet_chains (
      chain_id bigint primary key,
      cursor_number bigint not null constraint wallet_chains_cursor_nonnegative check (cursor_number >= 0),
      cursor_hash text not null,
      head_number bigint not null,
      finalized_number bigint not null,
      updated_at timestamptz not null default now())`);
    this.addSql(`create table wallet_blocks (
      chain_id bigint not null references wallet_chains (chain_id),
      number bigint not null,
      hash text not null,
      primary key (chain_id, number))`);
    this.addSql(`create table deposits (
      id bigserial primary key,
      chain_id bigint not null,
      tx_hash text not null constraint deposits_tx_hash_hex check (tx_hash ~ '^0x[0-9a-f]{64}$'),
      log_index bigint not null constraint deposits_log_index_range check (log_index >= -1),
      user_id text not null references deposit_addresses (user_id),
      from_address text not null,
      token_symbol text not null,
      token_contract text not null,
      decimals int,
      raw_amount numeric(78, 0) not null constraint deposits_raw_amount_positive check (raw_amount > 0),
      block_number bigint not null,
      block_hash text not null,
      status text not null constraint deposits_status_known
        check (status in ('PENDING', 'CREDITED', 'BELOW_MINIMUM', 'UNPRICED', 'REORGED', 'UNSUPPORTED')),
      price_usd_cents text,
      credit_price_usd_cents text,
      credits_millicredits bigint not null default 0 constraint deposits_credits_nonnegative check (credits_millicredits >= 0),
      transaction_id bigint references transactions (id),
      detected_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      constraint deposits_transfer_unique unique (chain_id, tx_hash, log_index),
      constraint deposits_transaction_unique unique (transaction_id),
      constraint deposits_credited_has_transaction check ((status = 'CREDITED') = (transaction_id is not null)),
      constraint deposits_unsupported_has_no_symbol check ((status = 'UNSUPPORTED') = (token_symbol = '')))`);
    this.addSql('create index deposits_user_id_id_index on deposits (user_id, id)');
    this.addSql(`create index deposits_open_index on deposits (chain_id, block_number)
      where status in ('PENDING', 'UNPRICED')`);
  }
}
