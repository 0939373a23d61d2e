// What the model test generates: plain data that refers to users, holds, transactions
// and promo codes by index (resolved against the sequence's state when a command runs, in
// commands.ts), so that every command always applies and shrinking keeps it meaningful.
import fc from 'fast-check';
import type { ModelCatalogue, Plan, TxType, UsageReq } from './spec.js';

export type Via = 'grpc' | 'connect';
export type KeyRef = { fresh: true } | { reuse: number; sameUser: boolean };
/**
 * A hold: one of the user's active ones, one of the user's settled ones (captured,
 * released, expired), one of the user's own, any hold of the sequence (often another
 * user's), or one that does not exist.
 */
export type HoldRef = { active: number } | { settled: number } | { mine: number } | { any: number } | 'unknown';
/** A transaction: one of the user's charges with something left to refund, any of the user's, any at all, or none. */
export type TxRef = { refundable: number } | { mine: number } | { any: number } | 'unknown';
export type RefundAmount = 'all' | 'half' | bigint;
export type CodeRef = number | 'unknown';
export type Keyed = { user: number; keyRef: KeyRef; via: Via };

export type Op =
  | (Keyed & { op: 'grant'; grant: { sku: string } | { amount: bigint }; reason: string; reference: string; metadata: Record<string, string> })
  | (Keyed & { op: 'charge'; usage: UsageReq; capture: HoldRef | null; allowPartial: boolean; reference: string; metadata: Record<string, string> })
  | (Keyed & { op: 'reserve'; usage: UsageReq; ttl: number })
  | (Keyed & { op: 'release'; hold: HoldRef })
  | (Keyed & { op: 'refund'; tx: TxRef; amount: RefundAmount; reason: string })
  | (Keyed & { op: 'redeem'; code: CodeRef; lower: boolean })
  | { op: 'retry'; k: number; via: Via }
  | { op: 'burst'; user: number; count: number; via: Via }
  | { op: 'setPlan'; user: number; plan: Plan | 'UNSPECIFIED' }
  | { op: 'setEntitlement'; user: number; name: string; active: boolean }
  | { op: 'topUp'; daysBack: number | 'empty' }
  | { op: 'list'; user: number; pageSize: number; types: TxType[]; via: Via }
  | { op: 'balance'; user: number; via: Via }
  | { op: 'quote'; user: number; usage: UsageReq; via: Via }
  | { op: 'expireHold'; hold: number }
  | { op: 'expirePromo'; code: number }
  | { op: 'disablePromo'; code: CodeRef }
  | { op: 'getPromo'; code: CodeRef };

export const USERS_PER_SEQUENCE = 3;
const TX_TYPES: readonly TxType[] = ['CHARGE', 'REFUND', 'GRANT', 'PROMO', 'DAILY_TOP_UP', 'DEPOSIT'];

const weighted = <T>(...pairs: [number, fc.Arbitrary<T>][]) =>
  fc.oneof(...pairs.map(([weight, arbitrary]) => ({ weight, arbitrary })));

function usageArbs(cat: ModelCatalogue) {
  const models = [...cat.models.keys()];
  const operations = [...cat.operations.keys()];
  const tokens = (finishes: fc.Arbitrary<string>, model: fc.Arbitrary<string>) =>
    fc
      .record({
        model,
        tokensIn: weighted([3, fc.bigInt(0n, 60_000n)], [1, fc.bigInt(0n, 400_000n)]),
        tokensOut: weighted([3, fc.bigInt(0n, 10_000n)], [1, fc.bigInt(0n, 60_000n)]),
        finish: finishes,
      })
      .map((t): UsageReq => ({ kind: 'tokens', ...t }));
  const operation = (names: fc.Arbitrary<string>) =>
    fc
      .record({ name: names, quantity: weighted([6, fc.bigInt(0n, 3n)], [1, fc.bigInt(4n, 14n)]) })
      .map((o): UsageReq => ({ kind: 'operation', ...o }));
  const amount = (max: bigint) => fc.bigInt(1n, max).map((a): UsageReq => ({ kind: 'amount', amount: a }));
  const finishes = fc.constantFrom('stop', 'stop', 'length', 'tool_calls', 'error');
  const knownModel = fc.constantFrom(...models);
  // Operations that can be waived (by an entitlement or the daily free allowance) come up twice as often.
  const waivable = operations.filter((name) => cat.operations.get(name)?.freeWith || cat.dailyFreeOperations.has(name));
  const knownOperation = fc.constantFrom(...operations, ...waivable);
  return {
    // A charge may also be bad input: an amount of 0, an empty finish reason, an unknown
    // model or operation — each refused before the key or the account is looked at.
    charge: weighted<UsageReq>(
      [5, amount(9_000n)],
      [4, tokens(weighted([12, finishes], [1, fc.constant('')]), weighted([12, knownModel], [1, fc.constant('gpt-0-unknown')]))],
      [6, operation(weighted([12, knownOperation], [1, fc.constant('no.such.op')]))],
      [1, fc.constant<UsageReq>({ kind: 'amount', amount: 0n })],
    ),
    // Holds get only valid usages: the server prices a hold under the account lock, so an
    // unknown name sent with a reused key would meet the key check first — an ordering the
    // spec leaves open and this model does not pin down.
    reserve: weighted<UsageReq>(
      [5, weighted([3, amount(3_000n)], [1, amount(12_000n)])],
      [3, tokens(fc.constantFrom('', 'stop', 'length', 'tool_calls', 'error'), knownModel)],
      [5, operation(knownOperation)],
    ),
    quote: weighted<UsageReq>([1, tokens(fc.constantFrom('', 'stop', 'tool_calls'), knownModel)], [1, operation(knownOperation)]),
  };
}

export function opArb(cat: ModelCatalogue): fc.Arbitrary<Op> {
  // Most commands go to the first user, so that some histories grow past 10 rows.
  const user = weighted([5, fc.constant(0)], [3, fc.constant(1)], [1, fc.constant(2)]);
  const via = weighted<Via>([3, fc.constant('grpc')], [1, fc.constant('connect')]);
  const keyRef = weighted<KeyRef>(
    [10, fc.constant({ fresh: true as const })],
    [2, fc.record({ reuse: fc.nat(), sameUser: weighted([4, fc.constant(true)], [1, fc.constant(false)]) })],
  );
  const keyed = { user, keyRef, via };
  const holdRef = weighted<HoldRef>(
    [6, fc.record({ active: fc.nat() })],
    [2, fc.record({ settled: fc.nat() })],
    [1, fc.record({ mine: fc.nat() })],
    [1, fc.record({ any: fc.nat() })],
    [1, fc.constant('unknown' as const)],
  );
  const txRef = weighted<TxRef>(
    [6, fc.record({ refundable: fc.nat() })],
    [2, fc.record({ mine: fc.nat() })],
    [2, fc.record({ any: fc.nat() })],
    [1, fc.constant('unknown' as const)],
  );
  const codeRef = weighted<CodeRef>([6, fc.nat()], [1, fc.constant('unknown' as const)]);
  const metadata = weighted([4, fc.constant({})], [1, fc.dictionary(fc.constantFrom('run', 'model', 'x'), fc.string({ maxLength: 6 }), { maxKeys: 2 })]);
  const reference = weighted([3, fc.constant('')], [1, fc.constantFrom('run-1', 'inv-7', 'r')]);
  const usage = usageArbs(cat);
  const grant = weighted<{ sku: string } | { amount: bigint }>(
    [6, fc.record({ amount: weighted([3, fc.bigInt(1n, 40_000n)], [1, fc.bigInt(1n, 500n)]) })],
    [1, fc.record({ sku: fc.constantFrom(...cat.skus.keys(), 'no_such_sku') })],
  );
  return weighted<Op>(
    [12, fc.record({ op: fc.constant('grant' as const), ...keyed, grant, reason: weighted([12, fc.constant('test funds')], [1, fc.constant('')]), reference, metadata })],
    [18, fc.record({ op: fc.constant('charge' as const), ...keyed, usage: usage.charge, capture: weighted<HoldRef | null>([1, fc.constant(null)], [1, holdRef]), allowPartial: weighted([3, fc.constant(false)], [1, fc.constant(true)]), reference, metadata })],
    [14, fc.record({ op: fc.constant('reserve' as const), ...keyed, usage: usage.reserve, ttl: fc.constantFrom(0, 60, 3_600, 86_400) })],
    [4, fc.record({ op: fc.constant('release' as const), ...keyed, hold: holdRef })],
    [5, fc.record({ op: fc.constant('refund' as const), ...keyed, tx: txRef, amount: weighted<RefundAmount>([2, fc.constant('all')], [2, fc.constant('half')], [2, fc.bigInt(1n, 6_000n)]), reason: weighted([12, fc.constant('goodwill')], [1, fc.constant('')]) })],
    [4, fc.record({ op: fc.constant('redeem' as const), ...keyed, code: codeRef, lower: fc.boolean() })],
    [4, fc.record({ op: fc.constant('retry' as const), k: fc.nat(), via })],
    [2, fc.record({ op: fc.constant('burst' as const), user, count: fc.integer({ min: 2, max: 12 }), via })],
    [4, fc.record({ op: fc.constant('setPlan' as const), user, plan: weighted<Plan | 'UNSPECIFIED'>([3, fc.constant('FREE')], [2, fc.constant('PRO')], [2, fc.constant('ADMIN')], [1, fc.constant('UNSPECIFIED')]) })],
    [3, fc.record({ op: fc.constant('setEntitlement' as const), user, name: fc.constantFrom('m4l', 'm4l', 'beta.tester'), active: weighted([3, fc.constant(true)], [1, fc.constant(false)]) })],
    [2, fc.record({ op: fc.constant('topUp' as const), daysBack: weighted<number | 'empty'>([2, fc.constant('empty')], [4, fc.integer({ min: 0, max: 7 })], [1, fc.constantFrom(-1, 8)]) })],
    [4, fc.record({ op: fc.constant('list' as const), user, pageSize: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constantFrom(0, 7, 100)), types: fc.subarray([...TX_TYPES]), via })],
    [3, fc.record({ op: fc.constant('balance' as const), user, via })],
    [2, fc.record({ op: fc.constant('quote' as const), user, usage: usage.quote, via })],
    [3, fc.record({ op: fc.constant('expireHold' as const), hold: fc.nat() })],
    [1, fc.record({ op: fc.constant('expirePromo' as const), code: fc.nat() })],
    [1, fc.record({ op: fc.constant('disablePromo' as const), code: codeRef })],
    [1, fc.record({ op: fc.constant('getPromo' as const), code: codeRef })],
  );
}

/**
 * Per sequence: the promo codes to create, an opening grant for each user (or none), and
 * how far below a digit boundary to move the ids.
 */
export interface SequenceSetup {
  promos: { amount: bigint; max: bigint; expires: boolean }[];
  funds: (bigint | null)[];
  /** Put the next ids this many below the next power of ten (null: leave them). */
  idsBelowBoundary: number | null;
}

export const setupArb: fc.Arbitrary<SequenceSetup> = fc.record({
  promos: fc.array(
    fc.record({ amount: fc.bigInt(1n, 8_000n), max: fc.constantFrom(0n, 1n, 2n, 3n), expires: fc.boolean() }),
    { minLength: 1, maxLength: 3 },
  ),
  funds: fc.array(fc.option(fc.bigInt(1n, 60_000n), { freq: 3 }), { minLength: USERS_PER_SEQUENCE, maxLength: USERS_PER_SEQUENCE }),
  idsBelowBoundary: fc.option(fc.integer({ min: 1, max: 8 }), { freq: 4 }),
});

export type KeyedOp = Extract<Op, { keyRef: KeyRef }>;
