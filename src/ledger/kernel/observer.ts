// What the ledger tells an observer (the service's metrics, src/service-metrics.ts) once
// it is true: the transactions a commit wrote, and the replays it answered. The ledger
// imports no metrics library; an observer that throws is ignored, so watching the ledger
// can never change an answer.
import type { TransactionType } from './names.js';

/** Committed ledger transactions of one type and product, summed. */
export interface MoneyMoved {
  readonly type: TransactionType;
  /** The charge's product ('' for a grant, promo, top-up or deposit). */
  readonly product: string;
  readonly transactions: number;
  /** The sum of the transactions' absolute amounts (a charge's amount is negative). */
  readonly millicredits: bigint;
}

export interface LedgerObserver {
  /** After a commit: what it wrote. Never for a refused, rolled-back or replayed unit. */
  committed?(moved: readonly MoneyMoved[]): void;
  /** After a commit: a unit answered from its idempotency record; `operation` as in requestHash ('Charge', 'Grant', …). */
  replayed?(operation: string): void;
  /** A VerifyLedger run that completed: its verdict and how many findings it listed. */
  verified?(ok: boolean, findings: number): void;
}

/** Calls the observer, ignoring what it throws. */
export function tell(observe: () => void): void {
  try {
    observe();
  } catch {
    // Metrics are not worth an answer: a failing observer is ignored.
  }
}

/** The writes of a commit summed by type and product. */
export function moneyMoved(writes: readonly { type: TransactionType; product: string; amountMillicredits: bigint }[]): MoneyMoved[] {
  const sums = new Map<string, { type: TransactionType; product: string; transactions: number; millicredits: bigint }>();
  for (const w of writes) {
    const key = `${w.type}\u0000${w.product}`;
    const sum = sums.get(key) ?? { type: w.type, product: w.product, transactions: 0, millicredits: 0n };
    sum.transactions += 1;
    sum.millicredits += w.amountMillicredits < 0n ? -w.amountMillicredits : w.amountMillicredits;
    sums.set(key, sum);
  }
  return [...sums.values()];
}
