// A credit of a user from a system account (grants, refunds, promo codes, top-ups,
// deposits): the decision every earning operation makes under the account lock.
import type { Catalogue } from '../domain/catalogue.js';
import { BillingError } from '../domain/errors.js';
import { BALANCE_MILLICREDITS_MAX } from '../domain/money.js';
import { type AccountRow, type TransactionRow, type TransactionType, userAccount } from '../storage/ledger-sql.js';
import type { Decision } from './mutation.js';
import { balanceView, type TransactionResult } from './views.js';

export type CreditFields = Omit<TransactionRow, 'id' | 'createdAtMs' | 'type' | 'amountMillicredits' | 'balanceAfterMillicredits'>;

/** A transaction whose id and time the write fills in. */
export function placeholderTransaction(fields: Omit<TransactionRow, 'id' | 'createdAtMs'>): TransactionRow {
  return { ...fields, id: '', createdAtMs: 0 };
}

/**
 * Credits `amount` from the system account `source` to the user. Refused with
 * BALANCE_LIMIT_EXCEEDED past the per-account limit, so a sum never overflows.
 */
export function creditDecision(
  catalogue: Catalogue,
  account: AccountRow,
  type: TransactionType,
  source: string,
  amount: bigint,
  fields: CreditFields,
): Decision<TransactionResult> {
  const balanceAfter = account.balanceMillicredits + amount;
  if (balanceAfter > BALANCE_MILLICREDITS_MAX) {
    throw new BillingError('BALANCE_LIMIT_EXCEEDED', `the balance would exceed ${BALANCE_MILLICREDITS_MAX} milli-credits`, {
      requiredMillicredits: amount,
      availableMillicredits: BALANCE_MILLICREDITS_MAX - account.balanceMillicredits,
    });
  }
  const transaction = placeholderTransaction({ ...fields, type, amountMillicredits: amount, balanceAfterMillicredits: balanceAfter });
  return {
    result: { transaction, balance: balanceView(catalogue, { ...account, balanceMillicredits: balanceAfter }) },
    write: {
      ...transaction,
      reservedDeltaMillicredits: 0n,
      postings: [
        { account: source, amountMillicredits: -amount },
        { account: userAccount(account.userId), amountMillicredits: amount },
      ],
    },
  };
}
