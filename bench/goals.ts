// The goals of issue 12, computed from one bench run: each is a figure, its bound and
// whether it is met. A goal whose inputs were not measured in this run (no top-up, no
// history mode) is left out rather than reported as met.

export interface Goal {
  name: string;
  value: number;
  /** The bound, read with `op`: value op goal. */
  goal: number;
  op: '>=' | '<=';
  met: boolean;
  /** How the value is computed, in words. */
  means: string;
}

export interface GoalInputs {
  /** calls/s by scenario name of the empty-ledger run. */
  callsPerSecond: Record<string, number | undefined>;
  halfRateP99Ms: number | undefined;
  pgbenchSpreadTps: number;
  pgbenchHotTps: number;
  serverPeakRssMiB: number;
  topUpSeconds: number | undefined;
  /** Accounts the top-up ran over (the goal is stated for 1,000,000). */
  topUpAccounts: number | undefined;
  /** calls/s by scenario name of the history run (after seeding). */
  historyCallsPerSecond: Record<string, number | undefined> | undefined;
}

const round = (value: number) => Math.round(value * 100) / 100;

function goal(name: string, value: number | undefined, op: Goal['op'], bound: number, means: string): Goal[] {
  if (value === undefined) return [];
  const v = round(value);
  // NaN (a scenario that produced nothing) is never met.
  const met = op === '>=' ? v >= bound : v <= bound;
  return [{ name, value: v, goal: bound, op, met, means }];
}

const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? Number.NaN : a / b);

export function goals(inputs: GoalInputs): Goal[] {
  const c = inputs.callsPerSecond;
  const list: Goal[] = [
    ...goal('charge-spread / pgbench.spread.tps', ratio(c['charge-spread'], inputs.pgbenchSpreadTps), '>=', 1.0,
      'Charge calls/s over 1,000 users ÷ pgbench tps of the same charge transaction'),
    ...goal('charge-hot / pgbench.hot.tps', ratio(c['charge-hot'], inputs.pgbenchHotTps), '>=', 1.5,
      'Charge calls/s on one hot user ÷ pgbench tps on that user'),
    ...goal('get-balance-spread / charge-spread', ratio(c['get-balance-spread'], c['charge-spread']), '>=', 3,
      'GetBalance calls/s ÷ Charge calls/s, both over 1,000 users'),
    ...goal('charge-spread-half-rate p99 ms', inputs.halfRateP99Ms ?? Number.NaN, '<=', 10,
      'p99 from the scheduled send time, open loop at half the charge-spread rate'),
    ...goal('serverPeakRssMiB', inputs.serverPeakRssMiB, '<=', 200, "the server's peak resident memory over the run"),
    ...goal(
      inputs.topUpAccounts === 1_000_000 ? 'daily top-up seconds' : `daily top-up seconds (${inputs.topUpAccounts} accounts, not the goal's 1,000,000)`,
      inputs.topUpSeconds, '<=', 30, 'one daily top-up run over the seeded FREE accounts'),
  ];
  const h = inputs.historyCallsPerSecond;
  if (h) {
    for (const name of ['charge-spread', 'get-balance-spread', 'list-transactions-spread']) {
      list.push(
        ...goal(`history ${name} slowdown`, ratio(c[name], h[name]), '<=', 1.2,
          `${name} calls/s on the empty ledger ÷ calls/s after seeding the history`),
      );
    }
  }
  return list;
}

export function printGoals(list: readonly Goal[]): string {
  const rows = list.map((g) => [g.name, String(g.value), `${g.op} ${g.goal}`, g.met ? 'met' : 'NOT MET']);
  const header = ['goal (issue 12)', 'value', 'bound', ''];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const format = (row: string[]) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  const met = list.filter((g) => g.met).length;
  return [format(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(format), `${met} of ${list.length} goals met`].join('\n');
}
