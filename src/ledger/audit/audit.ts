// The audit trail of privileged actions: who changed what, from what to what. An action
// that changes state writes its row into audit_events in the same database transaction as
// the change (so the change and its record commit or roll back together) and, once that
// has committed, the same event goes to the sink (the service's log, as `msg: "audit"`).
// VerifyLedger changes nothing and only goes to the sink. A replay (an idempotency key used
// again, an identical CreatePromoCode) is not a new action: no row, no event.
//
// Who and which call come from the handler, explicitly (`Audit`); an operation called
// without one (tests, the scheduled jobs, the bench) records nothing.
import type { Logger } from 'pino';
import type { SqlSession } from '../../storage/database.js';
import { insertAuditEvent } from './sql.js';

/** Who asked for a privileged action, and in which call. */
export interface Audit {
  /** The caller's actor (src/rpc/caller.ts): a token's or certificate's name, "open". */
  readonly actor: string;
  /** The call's request id (the access log's), when there is a call. */
  readonly requestId?: string | undefined;
}

/** The actions audited; the first seven change state (audit_events.action allows exactly those). */
export const AUDITED_ACTIONS = [
  'SetPlan',
  'SetEntitlement',
  'CreatePromoCode',
  'DisablePromoCode',
  'Grant',
  'Refund',
  'RunDailyTopUp',
  'VerifyLedger',
] as const;
export type AuditAction = (typeof AUDITED_ACTIONS)[number];

export type AuditJson = string | number | boolean | null | AuditJson[] | { [key: string]: AuditJson };
/** A state as audited; money as decimal strings of milli-credits (exact, as in proto3 JSON). */
export type AuditState = { [key: string]: AuditJson };

/** What was acted on. */
export type AuditSubject = { kind: 'user'; userId: string } | { kind: 'promo'; code: string } | { kind: 'day'; day: string } | { kind: 'ledger' };

export interface AuditEvent {
  readonly action: AuditAction;
  readonly actor: string;
  readonly subject: AuditSubject;
  /** null: nothing before (an account or promo code created by the action). */
  readonly before: AuditState | null;
  readonly after: AuditState | null;
  readonly requestId: string | null;
}

/** Where committed events go (the log); must not throw. */
export type AuditSink = (event: AuditEvent) => void;

/** audit_events.subject: "user:<id>", "promo:<CODE>", "day:<YYYY-MM-DD>" or "ledger". */
export function subjectText(subject: AuditSubject): string {
  switch (subject.kind) {
    case 'user':
      return `user:${subject.userId}`;
    case 'promo':
      return `promo:${subject.code}`;
    case 'day':
      return `day:${subject.day}`;
    case 'ledger':
      return 'ledger';
  }
}

export function auditEvent(audit: Audit, action: AuditAction, subject: AuditSubject, before: AuditState | null, after: AuditState | null): AuditEvent {
  return { action, actor: audit.actor, subject, before, after, requestId: audit.requestId ?? null };
}

/** The trail the operations write to: rows in their transactions, events once committed. */
export class AuditTrail {
  constructor(private readonly sink: AuditSink = () => undefined) {}

  /** Writes the event's row in `s`, the transaction that makes the change. */
  async record(s: Pick<SqlSession, 'query'>, event: AuditEvent): Promise<void> {
    await insertAuditEvent(s, { ...event, subject: subjectText(event.subject) });
  }

  /** Tells the sink about an event whose change has committed (or that changes nothing). */
  published(event: AuditEvent): void {
    this.sink(event);
  }
}

/**
 * The sink that logs each event as one line at info:
 * `{event: "audit", action, actor, subject, userId | code | day, before, after, requestId}`.
 */
export function logAuditEvents(log: Logger): AuditSink {
  return (event) => {
    const { subject } = event;
    const named = subject.kind === 'user' ? { userId: subject.userId } : subject.kind === 'promo' ? { code: subject.code } : subject.kind === 'day' ? { day: subject.day } : {};
    log.info(
      { event: 'audit', action: event.action, actor: event.actor, subject: subjectText(subject), ...named, before: event.before, after: event.after, requestId: event.requestId },
      'audit',
    );
  };
}
