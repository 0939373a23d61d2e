// Plans and entitlements: state-setting admin operations, idempotent by nature. They move
// no money, so they write no ledger transaction; with an `Audit` (every call through the
// API) the change is recorded in audit_events in the same transaction, before → after.
import type { Plan } from '../../domain/catalogue.js';
import { type Audit, auditEvent, type AuditEvent, AuditTrail } from '../audit/audit.js';
import type { Kernel } from '../kernel/unit-of-work.js';
import { balanceView, type BalanceView } from '../kernel/views.js';
import { lockPlanState, setEntitlement, setPlan } from './sql.js';

export class Plans {
  constructor(
    private readonly kernel: Kernel,
    private readonly trail: AuditTrail = new AuditTrail(),
  ) {}

  async setPlan(userId: string, plan: Plan, audit?: Audit): Promise<BalanceView> {
    const event = await this.kernel.db.transaction(async (s) => {
      const before = await lockPlanState(s, userId);
      await setPlan(s, userId, plan);
      if (!audit) return undefined;
      const recorded = auditEvent(audit, 'SetPlan', { kind: 'user', userId }, before.created ? null : { plan: before.plan }, { plan });
      await this.trail.record(s, recorded);
      return recorded;
    });
    return this.committed(userId, event);
  }

  async setEntitlement(userId: string, entitlement: string, active: boolean, audit?: Audit): Promise<BalanceView> {
    const event = await this.kernel.db.transaction(async (s) => {
      const before = await lockPlanState(s, userId);
      await setEntitlement(s, userId, entitlement, active);
      if (!audit) return undefined;
      const was = before.created ? null : { entitlement, active: before.entitlements.includes(entitlement) };
      const recorded = auditEvent(audit, 'SetEntitlement', { kind: 'user', userId }, was, { entitlement, active });
      await this.trail.record(s, recorded);
      return recorded;
    });
    return this.committed(userId, event);
  }

  private async committed(userId: string, event: AuditEvent | undefined): Promise<BalanceView> {
    if (event) this.trail.published(event);
    return balanceView(this.kernel.catalogue, await this.kernel.accounts.reread(this.kernel.db, userId));
  }
}
