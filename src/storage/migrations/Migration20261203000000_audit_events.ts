import { Migration } from '@mikro-orm/migrations';

/**
 * The audit trail of privileged actions (issue 13): who (actor), what (action on subject),
 * before → after (jsonb, money as decimal strings), in which call (request_id). A row is
 * written in the same transaction as the change it records (src/ledger/audit/). Append-only:
 * a trigger refuses UPDATE and DELETE, so a row cannot be edited by the service or by
 * mistake (TRUNCATE, by the database owner, is not a row change and stays possible).
 */
export class Migration20261203000000_audit_events extends Migration {
  override name = 'Migration20261203000000_audit_events';

  override up(): void {
    this.addSql(`create table audit_events (
      id bigserial primary key,
      at timestamptz not null default now(),
      actor text not null,
      action text not null constraint audit_events_action_known
        check (action in ('SetPlan', 'SetEntitlement', 'CreatePromoCode', 'DisablePromoCode', 'Grant', 'Refund', 'RunDailyTopUp')),
      subject text not null,
      before jsonb,
      after jsonb,
      request_id text)`);
    this.addSql('create index audit_events_subject_id_index on audit_events (subject, id)');
    this.addSql(`create function audit_events_append_only() returns trigger language plpgsql as $$
      begin
        raise exception 'audit_events is append-only';
      end $$`);
    this.addSql(`create trigger audit_events_append_only before update or delete on audit_events
      for each row execute function audit_events_append_only()`);
  }
}
