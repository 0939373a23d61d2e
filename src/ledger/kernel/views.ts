// The shapes the ledger hands to the rpc layer, jobs and tests. They are not the database
// rows (account-sql.ts, transactions-sql.ts) and not the replay record (replay.ts): each
// has its own type, so a column or a view field can change without the other noticing.
import type { Catalogue, Plan } from '../../domain/catalogue.js';
import type { AccountRow } from './account-sql.js';
import type { TransactionType } from './names.js';
import type { TransactionRow } from './transactions-sql.js';

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

/**
 * How a charge's cost was computed (the Price of Charge and Quote). Kept in the kernel
 * because a CHARGE transaction stores it (transactions.price), for the history to show.
 */
export interface PriceBreakdown {
  costMillicredits: bigint;
  effectiveTokens: bigint;
  modelMultiplier: string;
  tokensPerUnit: bigint;
  outputWeight: bigint;
  unroundedCostMillicredits: string;
  minimumApplied: boolean;
  unitPriceMillicredits: bigint;
  quantity: bigint;
}

export interface TransactionView {
  id: string;
  userId: string;
  type: TransactionType;
  amountMillicredits: bigint;
  balanceAfterMillicredits: bigint;
  product: string;
  operation: string;
  reference: string;
  reason: string;
  idempotencyKey: string;
  metadata: Record<string, string>;
  waivedReason?: string;
  refundedTransactionId?: string;
  /** For a charge that captured a hold: the hold's id. */
  reservationId?: string;
  /** For a charge: how its cost was computed, as priced at the charge (absent on charges stored before the column). */
  price?: PriceBreakdown;
  createdAtMs: number;
}

/** The reply of every operation that writes one ledger transaction. */
export interface TransactionResult {
  transaction: TransactionView;
  balance: BalanceView;
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
    entitlements: [...account.entitlements],
    freeOperationsRemaining: account.freeOperationsRemaining,
  };
}

export function transactionView(row: TransactionRow): TransactionView {
  const view: TransactionView = {
    id: row.id,
    userId: row.userId,
    type: row.type,
    amountMillicredits: row.amountMillicredits,
    balanceAfterMillicredits: row.balanceAfterMillicredits,
    product: row.product,
    operation: row.operation,
    reference: row.reference,
    reason: row.reason,
    idempotencyKey: row.idempotencyKey,
    metadata: row.metadata,
    createdAtMs: row.createdAtMs,
  };
  if (row.waivedReason !== undefined) view.waivedReason = row.waivedReason;
  if (row.refundedTransactionId !== undefined) view.refundedTransactionId = row.refundedTransactionId;
  if (row.reservationId !== undefined) view.reservationId = row.reservationId;
  if (row.price !== undefined) view.price = row.price;
  return view;
}
