// Deposit pricing: exact integer arithmetic, checked against worked examples and, as a
// property, against the definition of rounding down (the result m is the largest integer
// with m × price-of-a-milli-credit ≤ value). Seeded: PRICING_SEED replays a failure.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { centsFromFeedAnswer, type ExactDecimal, formatExact, parseExact, valueDeposit } from '../../src/wallet/pricing.js';

const d = (text: string): ExactDecimal => parseExact(text)!;

describe('deposit pricing', () => {
  it('values worked examples exactly, rounded down to the milli-credit', () => {
    // 5 USDC at $1, a credit at 1.27 cents: 500 / 1.27 = 393.700787… credits.
    expect(valueDeposit(5_000_000n, 6, d('100'), d('1.27'), 100n)).toEqual({ millicredits: 393_700n, belowMinimum: false });
    // 0.01 ETH at $3,000.12345678: 3000.12345678 cents / 1.27 = 2362.3019…
    expect(valueDeposit(10n ** 16n, 18, d('300012.345678'), d('1.27'), 100n).millicredits).toBe(2_362_301n);
    // 1 wei of ETH is worth nothing.
    expect(valueDeposit(1n, 18, d('300000'), d('1'), 0n)).toEqual({ millicredits: 0n, belowMinimum: false });
    // 0.99 USDC is under a $1 minimum; exactly $1 is not.
    expect(valueDeposit(990_000n, 6, d('100'), d('1'), 100n).belowMinimum).toBe(true);
    expect(valueDeposit(1_000_000n, 6, d('100'), d('1'), 100n).belowMinimum).toBe(false);
  });

  it('parses and prints exact decimals without loss', () => {
    expect(formatExact(d('1.270'))).toBe('1.27');
    expect(formatExact(d('0.000001'))).toBe('0.000001');
    expect(formatExact(d('300000'))).toBe('300000');
    expect(parseExact('1e3')).toBeUndefined();
    expect(parseExact('-1')).toBeUndefined();
    expect(parseExact('1.')).toBeUndefined();
    // A Chainlink answer with 8 decimals of dollars is cents with 6.
    expect(formatExact(centsFromFeedAnswer(300_012_345_678n, 8))).toBe('300012.345678');
    expect(formatExact(centsFromFeedAnswer(3n, 0))).toBe('300');
  });

  it('rounds down exactly, for any amount, decimals and prices (property)', () => {
    const seed = Number(process.env.PRICING_SEED ?? Date.now() % 2 ** 31);
    console.log(`deposit pricing property: PRICING_SEED=${seed}`);
    const decimal = fc.record({ units: fc.bigInt({ min: 1n, max: 10n ** 20n }), scale: fc.integer({ min: 0, max: 18 }) });
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: 10n ** 30n }),
        fc.integer({ min: 0, max: 36 }),
        decimal,
        decimal,
        fc.bigInt({ min: 0n, max: 10n ** 8n }),
        (raw, decimals, price, credit, minimum) => {
          const { millicredits, belowMinimum } = valueDeposit(raw, decimals, price, credit, minimum);
          // value in units of 10^-(decimals + price.scale + credit.scale) cents, all integers:
          const value = raw * price.units * 10n ** BigInt(credit.scale);
          const milliPrice = credit.units * 10n ** BigInt(decimals + price.scale);
          // m × (credit price / 1000) ≤ value < (m + 1) × (credit price / 1000)
          expect(millicredits * milliPrice <= value * 1000n).toBe(true);
          expect((millicredits + 1n) * milliPrice > value * 1000n).toBe(true);
          expect(belowMinimum).toBe(raw * price.units < minimum * 10n ** BigInt(decimals + price.scale));
          expect(formatExact(parseExact(formatExact(price))!)).toBe(formatExact(price));
        },
      ),
      { seed, numRuns: 2000 },
    );
  });
});
