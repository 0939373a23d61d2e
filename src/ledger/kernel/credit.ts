// A credit of a user from a system account (grants, refunds, promo codes, deposits): the
// decision every earning operation makes under the account lock, and the replay record of
// its result. (The daily top-up credits many users in one statement: top-up/sql.ts.)
import { z } from 'zod';
import type { Catalogue } from '../../domain/catalogue.js';
import { BillingError } from '../../domain/errors.js';
import { BALANCE_MILLICREDITS_MAX } from '../../domain/money.js';
import type { AccountRow } from './account-sql.js';
import { type TransactionType, userAccount } from './names.js';
import { balanceRecord, replayKind, type Same, transactionRecord } from './replay.js';
import type { Decision } from './unit-of-work.js';
import { balanceView, type TransactionResult, type TransactionView } from './views.js';

const transactionResultRecord = z.object({ transaction: transactionRecord, balance: balanceRecord });
const matchesView: Same<z.output<typeof transactionResultRecord>, TransactionResult> = true;
void matchesView;

/** The replay record of an operation that returns a transaction and a balance. */
export const TRANSACTION_RESULT = replayKind<TransactionResult>('transaction', transactionResultRecord);

export type CreditFields = Omit<TransactionView, 'id' | 'createdAtMs' | 'type' | 'amountMillicredits' | 'balanceAfterMillicredits'>;

/** A transaction whose id and time the write fills in. */
export function placeholderTransaction(fields: Omit<TransactionView, 'id' | 'createdAtMs'>): TransactionView {
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
      postings: [
        { account: source, amountMillicredits: -amount },
        { account: userAccount(account.userId), amountMillicredits: amount },
      ],
    },
  };
}
