// The ledger: the kernel and every rule built on it, composed once. app.ts serves it; the
// in-process tests (test/services/) drive it through the same routes without sockets.
import type { Catalogue } from '../domain/catalogue.js';
import type { Database } from '../storage/database.js';
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
  verify(): Promise<LedgerReport>;
}

/** `observer` hears what committed, what was replayed and what VerifyLedger found (app.ts counts them in the metrics). */
export function createLedger(db: Database, catalogue: Catalogue, batching: Partial<BatchOptions> = {}, observer: LedgerObserver = {}): Ledger {
  // Holds net out what expired, free operations read what is left today: the account as
  // every rule sees it (kernel/account-sql.ts).
  const kernel = new Kernel(db, catalogue, [holdsFacet, freeOperationsFacet(catalogue.dailyFreePerDay)], batching, observer);
  return {
    catalogue,
    kernel,
    charges: new Charges(kernel),
    holds: new Holds(kernel),
    credits: new Credits(kernel),
    history: new History(kernel),
    plans: new Plans(kernel),
    promos: new Promos(kernel),
    topUps: new DailyTopUps(db, catalogue, { observer }),
    verify: async () => {
      const report = await verifyLedger(db);
      tell(() => observer.verified?.(report.ok, report.violations.length));
      return report;
    },
  };
}
