// The credit of a final, priced crypto deposit: one DEPOSIT ledger transaction from the
// chain's system account, written in the same database transaction that marks the
// deposit CREDITED. The deposit row is locked and re-read under the account lock, so two
// replicas settling the same deposit credit it once; the UNIQUE transaction_id and the
// idempotency record of the deposit are the second and third guards.
import { lockDeposit, settleDeposit, type DepositRow } from '../../wallet/sql.js';
import { creditDecision, TRANSACTION_RESULT } from '../kernel/credit.js';
import { requestHash } from '../kernel/idempotency-sql.js';
import { depositsAccount } from '../kernel/names.js';
import type { Kernel } from '../kernel/unit-of-work.js';
import type { TransactionResult } from '../kernel/views.js';

/**
 * The idempotency key of a deposit's credit. It starts with a control character, which
 * checkIdempotencyKey refuses from callers, so no Grant or Charge can ever take it.
 */
function depositIdempotencyKey(depositId: string): string {
  return `\u001fdeposit:${depositId}`;
}

/** Thrown inside the unit of work when the deposit was settled meanwhile: nothing is written. */
class AlreadySettled extends Error {}

export interface DepositCredit {
  readonly deposit: DepositRow;
  readonly chain: string;
  readonly millicredits: bigint;
  readonly priceUsdCents: string;
  readonly creditPriceUsdCents: string;
}

/**
 * Credits the deposit; returns the transaction, or undefined when another process settled
 * it first (its record is replayed, nothing is written) or it moved to another block since
 * it was read.
 */
export async function creditDeposit(kernel: Kernel, credit: DepositCredit): Promise<TransactionResult | undefined> {
  const { deposit } = credit;
  const idempotencyKey = depositIdempotencyKey(deposit.id);
  // Set only by a write of this call: a result replayed from the deposit's idempotency
  // record (another process credited it first) is not this call's credit.
  let wrote = false;
  try {
    const result = await kernel.post(
      TRANSACTION_RESULT,
      { userId: deposit.userId, idempotencyKey, requestHash: requestHash('Deposit', [deposit.id]), operation: 'Deposit' },
      async (s, account) => {
        // A batch that fails runs its units again alone (kernel/batch.ts): only the run that commits counts.
        wrote = false;
        const now = await lockDeposit(s, deposit.id);
        if (!now || (now.status !== 'PENDING' && now.status !== 'UNPRICED') || now.blockHash !== deposit.blockHash) {
          throw new AlreadySettled();
        }
        const decision = creditDecision(kernel.catalogue, account, 'DEPOSIT', depositsAccount(credit.chain), credit.millicredits, {
          userId: deposit.userId,
          product: '',
          operation: deposit.tokenSymbol,
          reference: `${credit.chain}:${deposit.txHash}:${deposit.logIndex}`,
          reason: 'crypto deposit',
          idempotencyKey,
          metadata: {
            chain_id: String(deposit.chainId),
            tx_hash: deposit.txHash,
            log_index: String(deposit.logIndex),
            token: deposit.tokenSymbol,
            raw_amount: deposit.rawAmount.toString(),
            price_usd_cents: credit.priceUsdCents,
            credit_price_usd_cents: credit.creditPriceUsdCents,
          },
        });
        return {
          ...decision,
          afterWrite: async (tx, transactionId) => {
            const settled = await settleDeposit(tx, deposit.id, {
              status: 'CREDITED',
              priceUsdCents: credit.priceUsdCents,
              creditPriceUsdCents: credit.creditPriceUsdCents,
              creditsMillicredits: credit.millicredits,
              transactionId,
            });
            if (!settled) throw new AlreadySettled();
            wrote = true;
          },
        };
      },
    );
    return wrote ? result : undefined;
  } catch (error) {
    if (error instanceof AlreadySettled) return undefined;
    throw error;
  }
}
