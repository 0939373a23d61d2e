// Reading values out of database rows: PostgreSQL bigints and numerics arrive as text (or
// as numbers from PGlite), never as JavaScript floats that could round.

/** A bigint column (selected as ::text) as an exact bigint. */
export function toBigint(value: unknown): bigint {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'string' || typeof value === 'number') return BigInt(value);
  throw new TypeError(`expected an integer, got ${typeof value}`);
}

