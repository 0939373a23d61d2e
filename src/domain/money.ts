// Money is bigint milli-credits end to end. Every division names its rounding.

/** 1 credit = 1,000 milli-credits. */
export const MILLICREDITS_PER_CREDIT = 1000n;
/**
 * The largest balance one account may hold: 10^15 milli-credits. Far above any real
 * balance, far below int64, so sums of a balance and an amount can never overflow.
 */
export const BALANCE_MILLICREDITS_MAX = 1_000_000_000_000_000n;

/** Rounds a non-negative quotient up. Throws on a non-positive divisor. */
export function divCeil(numerator: bigint, denominator: bigint): bigint {
  if (denominator <= 0n) throw new RangeError('divCeil: denominator must be positive');
  if (numerator < 0n) throw new RangeError('divCeil: numerator must be non-negative');
  return (numerator + denominator - 1n) / denominator;
}

/** Rounds a non-negative quotient down. Throws on a non-positive divisor. */
export function divFloor(numerator: bigint, denominator: bigint): bigint {
  if (denominator <= 0n) throw new RangeError('divFloor: denominator must be positive');
  if (numerator < 0n) throw new RangeError('divFloor: numerator must be non-negative');
  return numerator / denominator;
}

export function minBigint(a: bigint, b: bigint): bigint {
  return a < b ? a : b;
}

export function maxBigint(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}

/** An exact decimal: value = units / 10^scale. */
export interface Decimal {
  readonly units: bigint;
  readonly scale: number;
  /** The decimal as written in configuration, normalised (e.g. "2.2"). */
  readonly text: string;
}

const DECIMAL_PATTERNS = new Map<number, RegExp>();

/**
 * Parses a non-negative decimal such as "2.2" exactly, with at most `digitsMax` (default 6)
 * integer and as many fractional digits. Returns undefined when the text is not such a decimal.
 */
export function parseDecimal(text: string, digitsMax = 6): Decimal | undefined {
  let pattern = DECIMAL_PATTERNS.get(digitsMax);
  if (!pattern) {
    pattern = new RegExp(`^(\\d{1,${digitsMax}})(?:\\.(\\d{1,${digitsMax}}))?$`);
    DECIMAL_PATTERNS.set(digitsMax, pattern);
  }
  const match = pattern.exec(text);
  if (!match) return undefined;
  const whole = match[1] ?? '0';
  const fraction = (match[2] ?? '').replace(/0+$/, '');
  const units = BigInt(whole + fraction);
  const normalised = fraction === '' ? String(BigInt(whole)) : `${BigInt(whole)}.${fraction}`;
  return { units, scale: fraction.length, text: normalised };
}

/** 10^n as a bigint. */
export function pow10(n: number): bigint {
  return 10n ** BigInt(n);
}

/**
 * Formats numerator/denominator (both non-negative) as a decimal string truncated to
 * `digits` fractional digits, trailing zeros removed.
 */
export function formatRatio(numerator: bigint, denominator: bigint, digits: number): string {
  const scaled = divFloor(numerator * pow10(digits), denominator);
  const whole = scaled / pow10(digits);
  const fraction = (scaled % pow10(digits)).toString().padStart(digits, '0').replace(/0+$/, '');
  return fraction === '' ? whole.toString() : `${whole}.${fraction}`;
}
