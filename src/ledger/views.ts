// The shapes the ledger returns to its callers (the rpc layer, jobs and tests).
import type { Catalogue, Plan } from '../domain/catalogue.js';
import { maxBigint } from '../domain/money.js';
import type { PriceBreakdown, PricingSubject, WaivedReason } from '../domain/pricing.js';
import type { AccountRow, TransactionRow } from '../storage/ledger-sql.js';

export type { TransactionRow as TransactionView } from '../storage/ledger-sql.js';

export interface BalanceView {
  userId: string;
  balanceMillicredits: bigint;
  reservedMillicredits: bigint;
  availableMillicredits: bigint;
  lowBalance: boolean;
  canStart: boolean;
  plan: Plan;
  entitlements: string[];
  freeOperationsRemaining: bigint;
}

export interface ChargeResult {
  transaction: TransactionRow;
  chargedMillicredits: bigint;
  shortfallMillicredits: bigint;
  waivedReason?: WaivedReason;
  price: PriceBreakdown;
  balance: BalanceView;
}

export interface TransactionResult {
  transaction: TransactionRow;
  balance: BalanceView;
}

/** The balance of a user never seen: 0 on the FREE plan. */
export function emptyAccount(userId: string): AccountRow {
  return {
    userId,
    balanceMillicredits: 0n,
    reservedMillicredits: 0n,
    expiredReservedMillicredits: 0n,
    expiredHolds: 0,
    plan: 'FREE',
    entitlements: [],
    freeOperationsUsedToday: 0n,
  };
}

export function freeOperationsRemaining(catalogue: Catalogue, account: AccountRow): bigint {
  return maxBigint(0n, catalogue.dailyFreePerDay - account.freeOperationsUsedToday);
}

/** The caller-facing balance of an account state, with its flags. */
export function balanceView(catalogue: Catalogue, account: AccountRow): BalanceView {
  const available = account.balanceMillicredits - account.reservedMillicredits;
  return {
    userId: account.userId,
    balanceMillicredits: account.balanceMillicredits,
    reservedMillicredits: account.reservedMillicredits,
    availableMillicredits: available,
    lowBalance: available <= catalogue.lowBalanceMillicredits,
    canStart: account.plan === 'ADMIN' || available >= catalogue.minimumStartMillicredits,
    plan: account.plan,
    entitlements: account.entitlements,
    freeOperationsRemaining: freeOperationsRemaining(catalogue, account),
  };
}

/** What pricing needs to know about the account. */
export function pricingSubject(catalogue: Catalogue, account: AccountRow): PricingSubject {
  return {
    plan: account.plan,
    entitlements: account.entitlements,
    freeOperationsRemaining: freeOperationsRemaining(catalogue, account),
  };
}
