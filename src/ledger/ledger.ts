// The ledger: the kernel and every rule built on it, composed once. app.ts serves it; the
// in-process tests (test/services/) drive it through the same routes without sockets.
import type { Catalogue } from '../domain/catalogue.js';
import { JobProgress } from '../jobs/progress.js';
import type { Database } from '../storage/database.js';
import { type Audit, auditEvent, type AuditSink, AuditTrail } from './audit/audit.js';
import { Charges } from './charge/charge.js';
import { Credits } from './credits/credits.js';
import { freeOperationsFacet } from './free-operations/free-operations.js';
import { History } from './history/history.js';
import { Holds } from './holds/holds.js';
import { holdsFacet } from './holds/sql.js';
import type { BatchOptions } from './kernel/batch.js';
import { type LedgerObserver, tell } from './kernel/observer.js';
import { Kernel } from './kernel/unit-of-work.js';
import { Plans } from './plans/plans.js';
import { Promos } from './promo/promo.js';
import { DailyTopUps } from './top-up/top-up.js';
import { type LedgerReport, verifyLedger } from './verify/verify.js';

export interface Ledger {
  readonly catalogue: Catalogue;
  readonly kernel: Kernel;
  readonly charges: Charges;
  readonly holds: Holds;
  readonly credits: Credits;
  readonly history: History;
  readonly plans: Plans;
  readonly promos: Promos;
  readonly topUps: DailyTopUps;
  /** The progress of the long jobs (top-up, verify) run through this ledger. */
  readonly progress: JobProgress;
  /** Checks every invariant; with an audit, the run and its verdict are an audit event (logged, not stored: it changes nothing). */
  verify(audit?: Audit): Promise<LedgerReport>;
}

/** What the process around the ledger gives it; tests usually give nothing. */
export interface LedgerServices {
  /** Receives every committed audit event (app.ts logs them); without it they are only stored. */
  readonly auditSink?: AuditSink;
  /** Where the long jobs report progress; default: tracked for GetJobProgress but not logged. */
  readonly progress?: JobProgress;
  /** Hears what committed, what was replayed and what VerifyLedger found (app.ts counts them in the metrics). */
  readonly observer?: LedgerObserver;
}

export function createLedger(db: Database, catalogue: Catalogue, batching: Partial<BatchOptions> = {}, services: LedgerServices = {}): Ledger {
  const progress = services.progress ?? new JobProgress();
  const observer = services.observer ?? {};
  // Holds net out what expired, free operations read what is left today: the account as
  // every rule sees it (kernel/account-sql.ts).
  const kernel = new Kernel(db, catalogue, [holdsFacet, freeOperationsFacet(catalogue.dailyFreePerDay)], batching, observer);
  const trail = new AuditTrail(services.auditSink);
  return {
    catalogue,
    kernel,
    charges: new Charges(kernel),
    holds: new Holds(kernel),
    credits: new Credits(kernel, trail),
    history: new History(kernel),
    plans: new Plans(kernel, trail),
    promos: new Promos(kernel, trail),
    topUps: new DailyTopUps(db, catalogue, { trail, progress, observer }),
    progress,
    verify: async (audit) => {
      const report = await verifyLedger(db, progress);
      tell(() => observer.verified?.(report.ok, report.violations.length));
      if (audit) {
        const after = {
          ok: report.ok,
          accountsChecked: report.accountsChecked.toString(),
          transactionsChecked: report.transactionsChecked.toString(),
          violations: report.violations.length,
        };
        trail.published(auditEvent(audit, 'VerifyLedger', { kind: 'ledger' }, null, after));
      }
      return report;
    },
  };
}
