// The service's Prometheus metrics beyond RPC counts (rpc/metrics.ts) and the wallet's
// (wallet/metrics.ts), in the same registry: the money the ledger moved, holds, idempotent
// replays, the jobs, VerifyLedger and requests refused before any handler. The ledger,
// the jobs and the server know nothing of prom-client: they are handed the observer, the
// job recorder and the refusal callback made here (app.ts wires them).
//
// Money is counted in milli-credits. Prometheus values are doubles, exact for integers up to
// 2^53 (9,007,199,254,740,992 milli-credits, about 9 × 10^12 credits) per series since the
// process started; the bigint amounts are converted once, here, and nothing else is
// computed on them.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { JobRecorder } from './jobs/recorder.js';
import type { LedgerObserver } from './ledger/kernel/observer.js';
import type { RefusedBeforeHandler } from './rpc/handler.js';

/** Distinct `product` label values at most; further products are counted as "_other" (products are caller-chosen names). */
export const PRODUCT_LABELS_MAX = 100;
export const OTHER_PRODUCT = '_other';

export interface ServiceMetrics {
  readonly ledger: LedgerObserver;
  readonly jobs: JobRecorder;
  readonly refused: (reason: RefusedBeforeHandler) => void;
  /** Adds the holds gauges, read at scrape time from `totals`. */
  watchHolds(totals: () => Promise<{ holds: bigint; heldMillicredits: bigint }>): void;
}

export function createServiceMetrics(registry: Registry): ServiceMetrics {
  const registers = [registry];
  const moved = new Counter({
    name: 'billing_credits_moved_millicredits_total',
    help: 'Milli-credits moved by committed ledger transactions (absolute amounts), by transaction type and product.',
    labelNames: ['type', 'product'] as const,
    registers,
  });
  const transactions = new Counter({
    name: 'billing_ledger_transactions_total',
    help: 'Committed ledger transactions (a waived charge too, at 0), by transaction type and product.',
    labelNames: ['type', 'product'] as const,
    registers,
  });
  const replays = new Counter({
    name: 'billing_idempotent_replays_total',
    help: 'Calls answered from the record of an earlier call with the same idempotency key, by operation.',
    labelNames: ['operation'] as const,
    registers,
  });
  const verifyOk = new Gauge({ name: 'billing_ledger_verify_ok', help: 'The last VerifyLedger run in this process: 1 no findings, 0 findings.', registers });
  const verifyFindings = new Gauge({ name: 'billing_ledger_verify_findings', help: 'Findings (violations listed, at most 1000) of the last VerifyLedger run.', registers });
  const verifyLast = new Gauge({ name: 'billing_ledger_verify_last_run_timestamp_seconds', help: 'When the last VerifyLedger run ended (unix seconds).', registers });
  const jobRuns = new Counter({ name: 'billing_job_runs_total', help: 'Job runs started, by job and trigger (schedule, rpc).', labelNames: ['job', 'trigger'] as const, registers });
  const jobFailures = new Counter({ name: 'billing_job_failures_total', help: 'Job runs that failed, by job and trigger.', labelNames: ['job', 'trigger'] as const, registers });
  const jobSeconds = new Histogram({
    name: 'billing_job_duration_seconds',
    help: 'Job run time, failed runs included, by job and trigger.',
    labelNames: ['job', 'trigger'] as const,
    buckets: [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600],
    registers,
  });
  const jobLastSuccess = new Gauge({ name: 'billing_job_last_success_timestamp_seconds', help: 'When a run of the job last succeeded (unix seconds), whatever started it.', labelNames: ['job'] as const, registers });
  const refusals = new Counter({
    name: 'billing_rpc_refused_total',
    help: 'Requests and connections refused before any handler or interceptor saw them, by reason.',
    labelNames: ['reason'] as const,
    registers,
  });
  const products = new Set<string>();
  const productLabel = (product: string): string => {
    if (products.has(product)) return product;
    if (products.size >= PRODUCT_LABELS_MAX) return OTHER_PRODUCT;
    products.add(product);
    return product;
  };
  const ledger: LedgerObserver = {
    committed: (all) => {
      for (const m of all) {
        const labels = { type: m.type.toLowerCase(), product: productLabel(m.product) };
        moved.inc(labels, Number(m.millicredits));
        transactions.inc(labels, m.transactions);
      }
    },
    replayed: (operation) => replays.inc({ operation }),
    verified: (ok, findings) => {
      verifyOk.set(ok ? 1 : 0);
      verifyFindings.set(findings);
      verifyLast.set(Date.now() / 1000);
    },
  };
  const jobs: JobRecorder = {
    run: async (job, trigger, work) => {
      jobRuns.inc({ job, trigger });
      const end = jobSeconds.startTimer({ job, trigger });
      try {
        const result = await work();
        jobLastSuccess.set({ job }, Date.now() / 1000);
        return result;
      } catch (error) {
        jobFailures.inc({ job, trigger });
        throw error;
      } finally {
        end();
      }
    },
  };
  return {
    ledger,
    jobs,
    refused: (reason) => refusals.inc({ reason }),
    watchHolds: (totals) => {
      // One query per scrape: the two gauges' collect() run together and share the read.
      let reading: Promise<{ holds: bigint; heldMillicredits: bigint } | undefined> | undefined;
      const read = () => (reading ??= totals().then((t) => t, () => undefined).finally(() => (reading = undefined)));
      const gauge = (name: string, help: string, pick: (t: { holds: bigint; heldMillicredits: bigint }) => bigint) =>
        new Gauge({
          name,
          help,
          registers,
          // If the database does not answer, the gauge keeps its last value rather than failing the whole scrape.
          async collect() {
            const t = await read();
            if (t) this.set(Number(pick(t)));
          },
        });
      gauge('billing_holds_active', 'Holds ACTIVE and unexpired now (read from the database at scrape time).', (t) => t.holds);
      gauge('billing_holds_held_millicredits', 'Milli-credits the ACTIVE, unexpired holds keep now (read at scrape time).', (t) => t.heldMillicredits);
    },
  };
}
