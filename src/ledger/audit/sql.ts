// The audit trail's SQL: one append-only table, audit_events (migration 20261203000000).
import type { SqlSession } from '../../storage/database.js';
import type { AuditState } from './audit.js';

export interface AuditRow {
  action: string;
  actor: string;
  subject: string;
  before: AuditState | null;
  after: AuditState | null;
  requestId: string | null;
}

/** Appends one event in the caller's transaction; `at` is the transaction's time (now()). */
export async function insertAuditEvent(s: Pick<SqlSession, 'query'>, row: AuditRow): Promise<void> {
  await s.query(
    `insert into audit_events (actor, action, subject, before, after, request_id)
     values ($1, $2, $3, $4::jsonb, $5::jsonb, $6)`,
    [row.actor, row.action, row.subject, row.before === null ? null : JSON.stringify(row.before), row.after === null ? null : JSON.stringify(row.after), row.requestId],
  );
}
