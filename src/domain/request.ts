// Normal forms of request values. The limits of every request field are stated once, in
// the contract (`(billing.v1.limit)` in proto/), and enforced by src/rpc/limits.ts before
// any operation runs; what is left for the operations is filling in defaults and putting
// values in one order, so that equal requests hash equal (kernel/idempotency-sql.ts).

/** The page size of a List call that asks for 0. */
export const PAGE_SIZE_DEFAULT = 50;

/** 0 means the default page size. */
export function pageSize(value: number): number {
  return value === 0 ? PAGE_SIZE_DEFAULT : value;
}

/** Metadata in key order: the form stored and hashed. */
export function sortedMetadata(value: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/** The largest value of a PostgreSQL bigint (and of protobuf int64): 2^63 - 1. */
export const ID_MAX = 9_223_372_036_854_775_807n;
const ID_PATTERN = /^[1-9]\d{0,18}$/;

/**
 * True for the decimal form of a row id: 1 to 2^63 - 1, no sign, no leading zeros. The
 * contract's ID limit and the page tokens of the histories use it.
 */
export function isId(value: string): boolean {
  return ID_PATTERN.test(value) && BigInt(value) <= ID_MAX;
}

/** Thrown where the contract's limits should have refused a request: a defect, not bad input. */
export function unchecked(what: string): Error {
  return new Error(`${what} reached an operation unchecked: the contract's limits (src/rpc/limits.ts) must run first`);
}
