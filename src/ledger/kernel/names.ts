// The ledger's words: the names of accounts and the types of transactions. Every module
// spells an account through these functions, and SQL that names accounts interpolates
// USER_ACCOUNT_PREFIX (a constant, never caller input).

/** A user's own account is `user:<user_id>`; every other account is a system account. */
export const USER_ACCOUNT_PREFIX = 'user:';

export function userAccount(userId: string): string {
  return `${USER_ACCOUNT_PREFIX}${userId}`;
}

/** Where grants come from. */
export const SYSTEM_GRANTS = 'system:grants';
/** Where promo-code credits come from. */
export const SYSTEM_PROMO = 'system:promo';
/** Where the daily free top-up comes from. */
export const SYSTEM_DAILY_TOP_UP = 'system:daily-top-up';

/** Where a product's charges go, and its refunds come from. */
export function revenueAccount(product: string): string {
  return `system:revenue:${product}`;
}

/** Where the credits for a chain's crypto deposits come from. */
export function depositsAccount(chain: string): string {
  return `system:deposits:${chain}`;
}

/** Every kind of ledger transaction; the transactions.type CHECK lists the same names. */
export const TRANSACTION_TYPES = ['CHARGE', 'REFUND', 'GRANT', 'PROMO', 'DAILY_TOP_UP', 'DEPOSIT'] as const;
export type TransactionType = (typeof TRANSACTION_TYPES)[number];
