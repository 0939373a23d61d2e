// Milli-credits (int64, bigint in the generated code) to and from the credits people type.

/** 12345n → "12.345". */
export function credits(milli: bigint): string {
  const sign = milli < 0n ? '-' : '';
  const abs = milli < 0n ? -milli : milli;
  return `${sign}${(abs / 1000n).toLocaleString('en-US')}.${(abs % 1000n).toString().padStart(3, '0')}`;
}

/** "12.5" → 12500n; undefined unless a positive amount with at most 3 decimals. */
export function parseCredits(text: string): bigint | undefined {
  const match = /^\s*(\d{1,12})(?:\.(\d{1,3}))?\s*$/.exec(text);
  if (!match) return undefined;
  const milli = BigInt(match[1] ?? '0') * 1000n + BigInt((match[2] ?? '').padEnd(3, '0') || '0');
  return milli > 0n ? milli : undefined;
}
