import { Migration } from '@mikro-orm/migrations';

/**
 * A charge keeps how its cost was computed (the Price of its ChargeResponse), so the history
 * can show the breakdown: `price` jsonb in the replay record's form (bigints as
 * {"$bigint":"…"}). Only CHARGE rows have one; charges stored before this migration have
 * none (their usage was not kept, so it cannot be recomputed).
 */
export class Migration20261204120000_transaction_price extends Migration {
  override name = 'Migration20261204120000_transaction_price';

  override up(): void {
    this.addSql('alter table transactions add column price jsonb');
    this.addSql(`alter table transactions add constraint transactions_price_charge_only check (price is null or type = 'CHARGE')`);
  }

  override down(): void {
    this.addSql('alter table transactions drop column price');
  }
}
