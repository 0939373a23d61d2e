// Pricing: pure functions from a usage and a user's plan to a cost in milli-credits.
// Everything is integer arithmetic; a 2.2x multiplier is 22/10, never the float 2.2.
import type { Catalogue, Plan } from '../../domain/catalogue.js';
import { BillingError, invalidField } from '../../domain/errors.js';
import { divCeil, formatRatio, maxBigint, minBigint, pow10 } from '../../domain/money.js';
import type { PriceBreakdown } from '../kernel/views.js';

/** The minimum cost of a charged run: 0.5 credits, in tenths of a credit. */
const RUN_MINIMUM_TENTHS = 5n;
const MILLICREDITS_PER_TENTH = 100n;

export type WaivedReason =
  | 'FINISH_TOOL_CALLS'
  | 'FINISH_ERROR'
  | 'ADMIN_PLAN'
  | 'ENTITLEMENT'
  | 'FREE_DAILY_OPERATION'
  | 'ZERO_PRICE';

export type Usage =
  | { readonly kind: 'amount'; readonly amountMillicredits: bigint }
  | {
      readonly kind: 'tokens';
      readonly model: string;
      readonly tokensIn: bigint;
      readonly tokensOut: bigint;
      readonly finishReason: string;
    }
  | { readonly kind: 'operation'; readonly name: string; readonly quantity: bigint };

/** How a cost was computed; fields that do not apply stay at their zero value (kernel/views.ts). */
export type { PriceBreakdown };

/** What the user of a charge is, as far as pricing cares. */
export interface PricingSubject {
  readonly plan: Plan;
  readonly entitlements: readonly string[];
  /** Free operations left today under the catalogue's daily allowance. */
  readonly freeOperationsRemaining: bigint;
}

export interface PricedUsage {
  /** What to debit: the price, or 0 when waived. */
  readonly chargeMillicredits: bigint;
  readonly price: PriceBreakdown;
  readonly waivedReason?: WaivedReason;
  /** Daily free operations this usage consumes. */
  readonly freeOperationsUsed: bigint;
  /** The model or operation name, for the history; empty for explicit amounts. */
  readonly operation: string;
}

const CHARGED_FINISH = new Set(['stop', 'length']);
const WAIVED_FINISH: ReadonlyMap<string, WaivedReason> = new Map([
  ['tool_calls', 'FINISH_TOOL_CALLS'],
  ['error', 'FINISH_ERROR'],
]);

function emptyBreakdown(): PriceBreakdown {
  return {
    costMillicredits: 0n,
    effectiveTokens: 0n,
    modelMultiplier: '',
    tokensPerUnit: 0n,
    outputWeight: 0n,
    unroundedCostMillicredits: '',
    minimumApplied: false,
    unitPriceMillicredits: 0n,
    quantity: 0n,
  };
}

function checkFinishReason(usage: { readonly finishReason: string }): WaivedReason | undefined {
  const waivedByFinish = WAIVED_FINISH.get(usage.finishReason);
  if (!waivedByFinish && !CHARGED_FINISH.has(usage.finishReason)) {
    throw invalidField('token_usage.finish_reason', 'must be one of stop, length, tool_calls, error');
  }
  return waivedByFinish;
}

function modelOf(catalogue: Catalogue, model: string) {
  const entry = catalogue.models.get(model);
  if (!entry) throw invalidField('token_usage.model', `unknown model "${model}"`, 'UNKNOWN_MODEL');
  return entry;
}

function operationOf(catalogue: Catalogue, name: string, field = 'operation.name') {
  const entry = catalogue.operations.get(name);
  if (!entry) throw invalidField(field, `unknown operation "${name}"`, 'UNKNOWN_OPERATION');
  return entry;
}

/**
 * The token formula of SPEC §3, exactly:
 * credits = ceil(10 × max(0.5, effective / tokensPerUnit × multiplier)) / 10.
 * Since 0.5 credits is a whole number of tenths, max and ceil commute.
 */
export function priceTokens(catalogue: Catalogue, model: string, tokensIn: bigint, tokensOut: bigint): PriceBreakdown {
  const entry = modelOf(catalogue, model);
  const effective = tokensIn + catalogue.outputWeight * tokensOut;
  const denominator = catalogue.tokensPerUnit * pow10(entry.multiplier.scale);
  const numerator = effective * entry.multiplier.units;
  const tenths = divCeil(10n * numerator, denominator);
  const chargedTenths = maxBigint(RUN_MINIMUM_TENTHS, tenths);
  return {
    ...emptyBreakdown(),
    costMillicredits: chargedTenths * MILLICREDITS_PER_TENTH,
    effectiveTokens: effective,
    modelMultiplier: entry.multiplier.text,
    tokensPerUnit: catalogue.tokensPerUnit,
    outputWeight: catalogue.outputWeight,
    unroundedCostMillicredits: formatRatio(numerator * 1000n, denominator, 6),
    // The minimum applies whenever the exact cost is under 0.5 credits, even if rounding
    // up alone would also have reached 0.5.
    minimumApplied: 10n * numerator < RUN_MINIMUM_TENTHS * denominator,
  };
}

export function priceOperation(catalogue: Catalogue, name: string, quantity: bigint, field = 'operation.name'): PriceBreakdown {
  const entry = operationOf(catalogue, name, field);
  return {
    ...emptyBreakdown(),
    costMillicredits: entry.priceMillicredits * quantity,
    unitPriceMillicredits: entry.priceMillicredits,
    quantity,
  };
}

/**
 * Refuses, without pricing, a usage that no account could be charged for: an unknown
 * model, operation or finish reason, with the error priceUsage would give. A charge calls
 * it before taking any lock.
 */
export function checkPriceable(catalogue: Catalogue, usage: Usage): void {
  switch (usage.kind) {
    case 'amount':
      return;
    case 'tokens':
      checkFinishReason(usage);
      modelOf(catalogue, usage.model);
      return;
    case 'operation':
      operationOf(catalogue, usage.name);
  }
}

/**
 * Prices a usage for a subject and decides any waiver. Throws INVALID_ARGUMENT for an
 * unknown model, operation or finish reason, PERMISSION_DENIED (PLAN_REQUIRED) for a
 * premium model on the FREE plan. `usagePrefix` is the request field holding the usage.
 */
export function priceUsage(catalogue: Catalogue, usage: Usage, subject: PricingSubject): PricedUsage {
  switch (usage.kind) {
    case 'amount': {
      const price = { ...emptyBreakdown(), costMillicredits: usage.amountMillicredits };
      return finish(price, subject, '', undefined, 0n);
    }
    case 'tokens': {
      const waivedByFinish = checkFinishReason(usage);
      const price = priceTokens(catalogue, usage.model, usage.tokensIn, usage.tokensOut);
      const model = catalogue.models.get(usage.model);
      if (model?.proOnly && subject.plan === 'FREE') {
        throw new BillingError('PLAN_REQUIRED', `model "${usage.model}" needs the PRO plan`, {
          field: 'token_usage.model',
        });
      }
      return finish(price, subject, usage.model, waivedByFinish, 0n);
    }
    case 'operation': {
      const price = priceOperation(catalogue, usage.name, usage.quantity);
      const entry = catalogue.operations.get(usage.name);
      if (entry?.freeWithEntitlement && subject.entitlements.includes(entry.freeWithEntitlement)) {
        return finish(price, subject, usage.name, 'ENTITLEMENT', 0n);
      }
      if (price.costMillicredits === 0n) return finish(price, subject, usage.name, 'ZERO_PRICE', 0n);
      return priceWithDailyAllowance(catalogue, price, subject, usage.name, usage.quantity);
    }
  }
}

function priceWithDailyAllowance(
  catalogue: Catalogue,
  price: PriceBreakdown,
  subject: PricingSubject,
  name: string,
  quantity: bigint,
): PricedUsage {
  if (subject.plan === 'ADMIN' || !catalogue.dailyFreeOperations.has(name)) {
    return finish(price, subject, name, undefined, 0n);
  }
  const free = minBigint(quantity, maxBigint(0n, subject.freeOperationsRemaining));
  if (free === quantity) return finish(price, subject, name, 'FREE_DAILY_OPERATION', free);
  // Part of the quantity is free, the rest is paid at the unit price.
  const charge = (quantity - free) * price.unitPriceMillicredits;
  return { chargeMillicredits: charge, price, freeOperationsUsed: free, operation: name };
}

function finish(
  price: PriceBreakdown,
  subject: PricingSubject,
  operation: string,
  waived: WaivedReason | undefined,
  freeUsed: bigint,
): PricedUsage {
  const reason = waived ?? (subject.plan === 'ADMIN' ? 'ADMIN_PLAN' : undefined);
  const charge = reason ? 0n : price.costMillicredits;
  return reason
    ? { chargeMillicredits: charge, price, waivedReason: reason, freeOperationsUsed: freeUsed, operation }
    : { chargeMillicredits: charge, price, freeOperationsUsed: freeUsed, operation };
}
