// Deposit pricing in integer arithmetic: token amounts in base units (bigint), prices as
// exact decimals of US cents. Credits = value ÷ credit price, rounded down to the
// milli-credit. No floating point anywhere.
import { type Decimal, divFloor, formatRatio, MILLICREDITS_PER_CREDIT, parseDecimal, pow10 } from '../domain/money.js';

/**
 * An exact non-negative decimal, units / 10^scale: the domain's Decimal without its text,
 * and with room for prices (30 integer and 30 fractional digits, not 6 and 6).
 */
export type ExactDecimal = Pick<Decimal, 'units' | 'scale'>;

/** Digits a price may have on each side of the point. */
const PRICE_DIGITS_MAX = 30;

/** Parses "1.27" or "300000" exactly; undefined if the text is not such a decimal. */
export function parseExact(text: string): ExactDecimal | undefined {
  const parsed = parseDecimal(text, PRICE_DIGITS_MAX);
  return parsed && { units: parsed.units, scale: parsed.scale };
}

/** The shortest exact text of a decimal: "1.27", "300000". */
export function formatExact(d: ExactDecimal): string {
  return formatRatio(d.units, pow10(d.scale), d.scale);
}

/** A Chainlink answer with `decimals` decimals in US dollars, as US cents. */
export function centsFromFeedAnswer(answer: bigint, decimals: number): ExactDecimal {
  if (answer < 0n) throw new RangeError('a price cannot be negative');
  return decimals >= 2 ? { units: answer, scale: decimals - 2 } : { units: answer * pow10(2 - decimals), scale: 0 };
}

export interface DepositValue {
  /** Milli-credits granted: floor(value / credit price × 1000). */
  readonly millicredits: bigint;
  /** True when the value is under the minimum deposit. */
  readonly belowMinimum: boolean;
}

/**
 * Values `raw` base units of a token with `decimals` decimals at `priceUsdCents` per whole
 * token, in credits costing `creditPriceUsdCents` each.
 *
 *   value (cents)  = raw × P / 10^decimals
 *   milli-credits  = floor(value × 1000 / C)
 */
export function valueDeposit(
  raw: bigint,
  decimals: number,
  priceUsdCents: ExactDecimal,
  creditPriceUsdCents: ExactDecimal,
  minimumUsdCents: bigint,
): DepositValue {
  if (raw < 0n) throw new RangeError('a deposit cannot be negative');
  if (creditPriceUsdCents.units <= 0n) throw new RangeError('the credit price must be positive');
  // value = raw × P.units / 10^(decimals + P.scale); compare and divide without rounding.
  const valueNumerator = raw * priceUsdCents.units;
  const valueDenominator = pow10(decimals + priceUsdCents.scale);
  const belowMinimum = valueNumerator < minimumUsdCents * valueDenominator;
  // credits = value / (C.units / 10^C.scale) = valueNumerator × 10^C.scale / (valueDenominator × C.units)
  const millicredits = divFloor(
    valueNumerator * pow10(creditPriceUsdCents.scale) * MILLICREDITS_PER_CREDIT,
    valueDenominator * creditPriceUsdCents.units,
  );
  return { millicredits, belowMinimum };
}
