// The usage oneof shared by Quote, Reserve and Charge, after the contract's limits passed.
import { unchecked } from '../../domain/request.js';
import type { Usage } from './pricing.js';

/** The usage in its normal form: an operation's quantity 0 means 1. */
export function normalUsage(usage: Usage | undefined): Usage {
  if (!usage) throw unchecked('a request without a usage');
  return usage.kind === 'operation' && usage.quantity === 0n ? { ...usage, quantity: 1n } : usage;
}

/** Estimates (Quote, Reserve) may leave finish_reason empty: an estimate is of a charged run. */
export function asEstimate(usage: Usage | undefined): Usage | undefined {
  return usage?.kind === 'tokens' && usage.finishReason === '' ? { ...usage, finishReason: 'stop' } : usage;
}
