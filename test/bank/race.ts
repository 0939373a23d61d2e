// N requests started at the same moment over several connections, and a tally of what
// came back, so a counted limit can be asserted exactly: K successes, and every loser
// refused with the one code and reason the contract names.
import { Code } from '@connectrpc/connect';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import type { BankClient } from './clients.js';
import { describeOutcome, type Outcome, settle } from './outcome.js';

export async function race<R>(n: number, clients: readonly BankClient[], call: (client: BankClient, i: number) => Promise<R>): Promise<Outcome<R>[]> {
  // Every call is started before the first await, so all N are in flight together.
  const calls = Array.from({ length: n }, (_, i) => settle(call(clients[i % clients.length] as BankClient, i)));
  return Promise.all(calls);
}

export interface Tally<R> {
  readonly ok: R[];
  /** "CODE/REASON" -> how many losers got it. */
  readonly refused: Record<string, number>;
}

export function tally<R>(outcomes: readonly Outcome<R>[]): Tally<R> {
  const ok: R[] = [];
  const refused: Record<string, number> = {};
  for (const o of outcomes) {
    if (o.ok) ok.push(o.reply);
    else {
      const label = `${Code[o.code]}/${ErrorReason[o.reason]}`;
      refused[label] = (refused[label] ?? 0) + 1;
    }
  }
  return { ok, refused };
}

/** The tally an exact limit must give: k successes, the rest refused with code/reason. */
export function exactly(n: number, k: number, code: Code, reason: ErrorReason): { ok: number; refused: Record<string, number> } {
  return { ok: k, refused: n > k ? { [`${Code[code]}/${ErrorReason[reason]}`]: n - k } : {} };
}

export function shape<R>(t: Tally<R>): { ok: number; refused: Record<string, number> } {
  return { ok: t.ok.length, refused: t.refused };
}

/** Messages of the refusals, for an assertion's message. */
export function messages(outcomes: readonly Outcome<unknown>[]): string {
  return [...new Set(outcomes.filter((o) => !o.ok).map(describeOutcome))].slice(0, 5).join('; ');
}
