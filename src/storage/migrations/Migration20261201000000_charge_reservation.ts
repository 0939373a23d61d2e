import { Migration } from '@mikro-orm/migrations';

/**
 * A charge that captured a hold names it: the audit trail then shows which hold each
 * capture settled. Only a charge can carry one, and a hold is captured at most once.
 */
export class Migration20261201000000_charge_reservation extends Migration {
  override name = 'Migration20261201000000_charge_reservation';

  override up(): void {
    this.addSql('alter table transactions add column reservation_id bigint references reservations (id)');
    this.addSql(`alter table transactions add constraint transactions_reservation_on_charge
      check (reservation_id is null or type = 'CHARGE')`);
    this.addSql(`create unique index transactions_reservation_id_unique on transactions (reservation_id)
      where reservation_id is not null`);
  }
}
