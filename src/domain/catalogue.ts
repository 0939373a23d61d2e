// The priced world as configuration describes it: models, operations, SKUs and the
// balance thresholds. Built once at start-up by config.ts, frozen, read by pricing.
import type { Decimal } from './money.js';

export type Plan = 'FREE' | 'PRO' | 'ADMIN';
export const PLANS: readonly Plan[] = ['FREE', 'PRO', 'ADMIN'];

export interface ModelPrice {
  readonly name: string;
  readonly tier: 'FAST' | 'STANDARD' | 'PREMIUM';
  readonly multiplier: Decimal;
  readonly proOnly: boolean;
}

export interface OperationPrice {
  readonly name: string;
  readonly priceMillicredits: bigint;
  /** Holders of this entitlement pay nothing for the operation (e.g. m4l.request). */
  readonly freeWithEntitlement?: string;
}

export interface Catalogue {
  readonly name: string;
  readonly tokensPerUnit: bigint;
  readonly outputWeight: bigint;
  readonly models: ReadonlyMap<string, ModelPrice>;
  readonly operations: ReadonlyMap<string, OperationPrice>;
  /** Free operations per user per UTC day, shared across `dailyFreeOperations`. */
  readonly dailyFreePerDay: bigint;
  readonly dailyFreeOperations: ReadonlySet<string>;
  readonly skus: ReadonlyMap<string, bigint>;
  readonly lowBalanceMillicredits: bigint;
  readonly minimumStartMillicredits: bigint;
  readonly dailyTopUpTargetMillicredits: bigint;
  readonly holdTtlSecondsDefault: number;
}

