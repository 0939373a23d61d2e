// Validation of the usage oneof shared by Quote, Reserve and Charge.
import { invalidField } from '../../domain/errors.js';
import type { Usage } from './pricing.js';
import { checkAmount, checkName, checkQuantity, checkText, checkTokens } from '../../domain/validation.js';

/** Validates a usage oneof; `undefined` means the caller set none. */
export function checkUsage(usage: Usage | undefined, prefix = ''): Usage {
  if (!usage) throw invalidField(`${prefix}usage`, 'one of amount_millicredits, token_usage or operation is required');
  switch (usage.kind) {
    case 'amount':
      return { ...usage, amountMillicredits: checkAmount(usage.amountMillicredits, `${prefix}amount_millicredits`) };
    case 'tokens':
      if (usage.model.length === 0) throw invalidField(`${prefix}token_usage.model`, 'is required');
      checkText(usage.model, `${prefix}token_usage.model`, 64, true);
      return {
        ...usage,
        tokensIn: checkTokens(usage.tokensIn, `${prefix}token_usage.tokens_in`),
        tokensOut: checkTokens(usage.tokensOut, `${prefix}token_usage.tokens_out`),
      };
    case 'operation':
      checkName(usage.name, `${prefix}operation.name`);
      return { ...usage, quantity: checkQuantity(usage.quantity, `${prefix}operation.quantity`) };
  }
}


/** Estimates (Quote, Reserve) may leave finish_reason empty: an estimate is of a charged run. */
export function asEstimate(usage: Usage | undefined): Usage | undefined {
  return usage?.kind === 'tokens' && usage.finishReason === '' ? { ...usage, finishReason: 'stop' } : usage;
}
