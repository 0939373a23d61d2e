import { Migration } from '@mikro-orm/migrations';

/**
 * What the daily top-up did for each UTC day, summed over its runs (issue 14, the console's
 * health page and GetJobProgress.last_daily_top_up): one row per day, upserted as each run
 * ends (src/ledger/top-up/sql.ts), so it survives restarts and is the same from every
 * replica. One row a day: no index beyond the key is needed to find the latest.
 */
export class Migration20261204000000_daily_top_up_days extends Migration {
  override name = 'Migration20261204000000_daily_top_up_days';

  override up(): void {
    this.addSql(`create table daily_top_up_days (
      day date primary key,
      accounts_topped_up bigint not null,
      total_millicredits bigint not null,
      runs bigint not null,
      failed_runs bigint not null,
      last_started_at timestamptz not null,
      last_finished_at timestamptz not null,
      last_failed boolean not null)`);
  }
}
