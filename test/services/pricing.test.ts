// Pricing (SPEC §3): the token formula over every default model, both ends of both
// configurable constants, the 0.5-credit minimum, values where binary floating point
// misrounds, finish reasons, plans, the operations catalogue, and Quote agreeing with
// Charge over real sockets against real PostgreSQL.
//
// Every expected cost below was worked out by hand from
//   credits = ceil(10 × max(0.5, effectiveTokens / tokensPerUnit × multiplier)) / 10
//   effectiveTokens = tokensIn + outputWeight × tokensOut
// and is written into the tables in milli-credits; the tests never re-derive it.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { Plan, WaivedReason } from '../../gen/billing/v1/types_pb.js';
import { ConfigError, loadConfig, parseCatalogue } from '../../src/config.js';
import type { Catalogue } from '../../src/domain/catalogue.js';
import { BillingError } from '../../src/domain/errors.js';
import { priceTokens, priceUsage, type PricingSubject, type Usage } from '../../src/ledger/charge/pricing.js';
import { failure, fund, key } from '../support/app.js';
import { useServices } from '../support/services.js';

const MUSE_TEXT = readFileSync(new URL('../../config/muse.json', import.meta.url), 'utf8');
const MU_TEXT = readFileSync(new URL('../../config/mu.json', import.meta.url), 'utf8');
const MUSE_JSON = JSON.parse(MUSE_TEXT) as Record<string, unknown>;

const muse = parseCatalogue(MUSE_TEXT, 'config/muse.json').catalogue;
const mu = parseCatalogue(MU_TEXT, 'config/mu.json').catalogue;

/** The Muse catalogue with its `pricing` object replaced. */
function pricingText(pricing: Record<string, unknown>): string {
  return JSON.stringify({ ...MUSE_JSON, pricing });
}

function withPricing(tokensPerUnit: number, outputWeight: number): Catalogue {
  return parseCatalogue(pricingText({ tokensPerUnit, outputWeight }), 'test').catalogue;
}

/** The default model table of SPEC §3, as the float a naive implementation would use. */
const MULTIPLIERS: Readonly<Record<string, { text: string; float: number; proOnly: boolean }>> = {
  'gpt-5-mini': { text: '0.5', float: 0.5, proOnly: false },
  'gpt-5.2': { text: '1.5', float: 1.5, proOnly: false },
  'claude-haiku-4.5': { text: '1.5', float: 1.5, proOnly: false },
  'claude-sonnet-4.5': { text: '2.2', float: 2.2, proOnly: true },
  'gpt-5.2-high': { text: '2.6', float: 2.6, proOnly: true },
  'claude-opus-4.6': { text: '3.2', float: 3.2, proOnly: true },
};
const PREMIUM = Object.keys(MULTIPLIERS).filter((m) => MULTIPLIERS[m]?.proOnly);

/**
 * The formula as a naive implementation would write it, in binary floating point. Used
 * only to prove that a case marked `floatTrap` really is one; never for expectations.
 */
function naiveFloatMillicredits(effective: bigint, tokensPerUnit: number, model: string): number {
  const m = MULTIPLIERS[model]!.float;
  return (Math.ceil(10 * Math.max(0.5, (Number(effective) / tokensPerUnit) * m)) / 10) * 1000;
}

interface TokenCase {
  readonly model: string;
  readonly tokensIn: bigint;
  readonly tokensOut: bigint;
  /** tokensIn + outputWeight × tokensOut, by hand. */
  readonly effective: bigint;
  /** The cost in milli-credits, by hand. */
  readonly cost: bigint;
  /** The working, for the reader. */
  readonly why: string;
  /** Asserted only where the flag is unambiguous. */
  readonly minimum?: boolean;
  /** The naive float formula charges one tenth of a credit too much here. */
  readonly floatTrap?: boolean;
  /** The exact cost before minimum and rounding, as the breakdown reports it. */
  readonly unrounded?: string;
}

const PRO: PricingSubject = { plan: 'PRO', entitlements: [], freeOperationsRemaining: 0n };
const FREE: PricingSubject = { plan: 'FREE', entitlements: [], freeOperationsRemaining: 0n };
const ADMIN: PricingSubject = { plan: 'ADMIN', entitlements: [], freeOperationsRemaining: 0n };

function tokens(model: string, tokensIn: bigint, tokensOut: bigint, finishReason = 'stop'): Usage {
  return { kind: 'tokens', model, tokensIn, tokensOut, finishReason };
}

/** The BillingError a call threw; fails the test if it returned or threw anything else. */
function billingError(call: () => unknown): BillingError {
  try {
    call();
  } catch (error) {
    expect(error).toBeInstanceOf(BillingError);
    return error as BillingError;
  }
  throw new Error('expected a BillingError, but the call returned');
}

function configError(call: () => unknown): ConfigError {
  try {
    call();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError, but the call returned');
}

// Default constants: tokensPerUnit 20,000, outputWeight 4.
// cost in tenths of a credit = ceil(E × multiplier / 2,000), at least 5.
const DEFAULT_TABLE: readonly TokenCase[] = [
  // gpt-5-mini, 0.5: tenths = ceil(E / 4,000)
  { model: 'gpt-5-mini', tokensIn: 0n, tokensOut: 0n, effective: 0n, cost: 500n, minimum: true, unrounded: '0', why: 'zero tokens: the 0.5 minimum' },
  { model: 'gpt-5-mini', tokensIn: 1n, tokensOut: 0n, effective: 1n, cost: 500n, minimum: true, unrounded: '0.025', why: '1 token = 0.000025 credits: minimum' },
  { model: 'gpt-5-mini', tokensIn: 0n, tokensOut: 1n, effective: 4n, cost: 500n, minimum: true, unrounded: '0.1', why: '1 output token weighs 4: minimum' },
  { model: 'gpt-5-mini', tokensIn: 12_000n, tokensOut: 2_000n, effective: 20_000n, cost: 500n, minimum: false, unrounded: '500', why: '20,000 × 0.5 / 20,000 = 0.5 exactly: the minimum is not needed' },
  { model: 'gpt-5-mini', tokensIn: 20_001n, tokensOut: 0n, effective: 20_001n, cost: 600n, minimum: false, unrounded: '500.025', why: '0.500025 rounds up to 0.6' },
  { model: 'gpt-5-mini', tokensIn: 30_000n, tokensOut: 2_500n, effective: 40_000n, cost: 1_000n, minimum: false, why: '40,000 × 0.5 / 20,000 = 1.0' },
  { model: 'gpt-5-mini', tokensIn: 39_999n, tokensOut: 0n, effective: 39_999n, cost: 1_000n, why: '0.999975 rounds up to 1.0' },
  { model: 'gpt-5-mini', tokensIn: 40_001n, tokensOut: 0n, effective: 40_001n, cost: 1_100n, why: '1.000025 rounds up to 1.1' },
  { model: 'gpt-5-mini', tokensIn: 100_000n, tokensOut: 25_000n, effective: 200_000n, cost: 5_000n, why: '200,000 × 0.5 / 20,000 = 5.0' },
  // gpt-5.2, 1.5: tenths = ceil(3E / 4,000)
  { model: 'gpt-5.2', tokensIn: 100n, tokensOut: 50n, effective: 300n, cost: 500n, minimum: true, unrounded: '22.5', why: '0.0225 credits: minimum' },
  { model: 'gpt-5.2', tokensIn: 6_666n, tokensOut: 0n, effective: 6_666n, cost: 500n, unrounded: '499.95', minimum: true, why: '0.49995 is under the minimum' },
  { model: 'gpt-5.2', tokensIn: 6_667n, tokensOut: 0n, effective: 6_667n, cost: 600n, minimum: false, unrounded: '500.025', why: '0.500025 rounds up to 0.6' },
  { model: 'gpt-5.2', tokensIn: 8_000n, tokensOut: 0n, effective: 8_000n, cost: 600n, minimum: false, floatTrap: true, unrounded: '600', why: '8,000 × 1.5 / 20,000 = 0.6 exactly (float: 0.6000000000000001)' },
  { model: 'gpt-5.2', tokensIn: 0n, tokensOut: 4_000n, effective: 16_000n, cost: 1_200n, floatTrap: true, why: '16,000 × 1.5 / 20,000 = 1.2 exactly (float: 1.2000000000000002)' },
  { model: 'gpt-5.2', tokensIn: 4_000n, tokensOut: 20_000n, effective: 84_000n, cost: 6_300n, floatTrap: true, why: '84,000 × 1.5 / 20,000 = 6.3 exactly (float: 6.300000000000001)' },
  // claude-haiku-4.5, 1.5
  { model: 'claude-haiku-4.5', tokensIn: 8_000n, tokensOut: 2_000n, effective: 16_000n, cost: 1_200n, floatTrap: true, why: '1.2 exactly' },
  { model: 'claude-haiku-4.5', tokensIn: 31_999n, tokensOut: 0n, effective: 31_999n, cost: 2_400n, why: '2.399925 rounds up to 2.4' },
  { model: 'claude-haiku-4.5', tokensIn: 32_000n, tokensOut: 0n, effective: 32_000n, cost: 2_400n, floatTrap: true, unrounded: '2400', why: '2.4 exactly (float: 2.4000000000000004)' },
  { model: 'claude-haiku-4.5', tokensIn: 32_001n, tokensOut: 0n, effective: 32_001n, cost: 2_500n, unrounded: '2400.075', why: '2.400075 rounds up to 2.5' },
  // claude-sonnet-4.5, 2.2: tenths = ceil(11E / 10,000)
  { model: 'claude-sonnet-4.5', tokensIn: 20_000n, tokensOut: 0n, effective: 20_000n, cost: 2_200n, minimum: false, unrounded: '2200', why: '20,000 × 2.2 / 20,000 = 2.2 exactly: 2,200, never 2,300' },
  { model: 'claude-sonnet-4.5', tokensIn: 4_000n, tokensOut: 4_000n, effective: 20_000n, cost: 2_200n, unrounded: '2200', why: '4,000 + 4 × 4,000 = 20,000: 2.2 exactly' },
  { model: 'claude-sonnet-4.5', tokensIn: 4_545n, tokensOut: 0n, effective: 4_545n, cost: 500n, unrounded: '499.95', why: '0.49995 rounds up to 0.5' },
  { model: 'claude-sonnet-4.5', tokensIn: 4_546n, tokensOut: 0n, effective: 4_546n, cost: 600n, minimum: false, unrounded: '500.06', why: '0.50006 rounds up to 0.6' },
  { model: 'claude-sonnet-4.5', tokensIn: 69_999n, tokensOut: 0n, effective: 69_999n, cost: 7_700n, unrounded: '7699.89', why: '7.69989 rounds up to 7.7' },
  { model: 'claude-sonnet-4.5', tokensIn: 70_000n, tokensOut: 0n, effective: 70_000n, cost: 7_700n, floatTrap: true, unrounded: '7700', why: '7.7 exactly (float: 7.700000000000001)' },
  { model: 'claude-sonnet-4.5', tokensIn: 30_000n, tokensOut: 10_000n, effective: 70_000n, cost: 7_700n, floatTrap: true, why: '30,000 + 4 × 10,000 = 70,000: 7.7 exactly' },
  { model: 'claude-sonnet-4.5', tokensIn: 70_001n, tokensOut: 0n, effective: 70_001n, cost: 7_800n, unrounded: '7700.11', why: '7.70011 rounds up to 7.8' },
  { model: 'claude-sonnet-4.5', tokensIn: 10_000n, tokensOut: 25_000n, effective: 110_000n, cost: 12_100n, floatTrap: true, why: '12.1 exactly (float: 12.100000000000001)' },
  { model: 'claude-sonnet-4.5', tokensIn: 1_000_000_000n, tokensOut: 0n, effective: 1_000_000_000n, cost: 110_000_000n, floatTrap: true, unrounded: '110000000', why: '10^9 × 2.2 / 20,000 = 110,000 credits exactly (float: 110000.00000000001)' },
  // gpt-5.2-high, 2.6: tenths = ceil(13E / 10,000)
  { model: 'gpt-5.2-high', tokensIn: 3_846n, tokensOut: 0n, effective: 3_846n, cost: 500n, why: '0.49998 rounds up to 0.5' },
  { model: 'gpt-5.2-high', tokensIn: 3_847n, tokensOut: 0n, effective: 3_847n, cost: 600n, minimum: false, why: '0.50011 rounds up to 0.6' },
  { model: 'gpt-5.2-high', tokensIn: 20_000n, tokensOut: 0n, effective: 20_000n, cost: 2_600n, unrounded: '2600', why: '2.6 exactly' },
  { model: 'gpt-5.2-high', tokensIn: 90_000n, tokensOut: 0n, effective: 90_000n, cost: 11_700n, floatTrap: true, unrounded: '11700', why: '11.7 exactly (float: 11.700000000000001)' },
  { model: 'gpt-5.2-high', tokensIn: 10_000n, tokensOut: 20_000n, effective: 90_000n, cost: 11_700n, floatTrap: true, why: '10,000 + 4 × 20,000 = 90,000: 11.7 exactly' },
  { model: 'gpt-5.2-high', tokensIn: 50_000n, tokensOut: 20_000n, effective: 130_000n, cost: 16_900n, floatTrap: true, why: '16.9 exactly (float: 16.900000000000002)' },
  // claude-opus-4.6, 3.2: tenths = ceil(E / 625)
  { model: 'claude-opus-4.6', tokensIn: 0n, tokensOut: 1n, effective: 4n, cost: 500n, minimum: true, unrounded: '0.64', why: '0.00064 credits: minimum' },
  { model: 'claude-opus-4.6', tokensIn: 3_125n, tokensOut: 0n, effective: 3_125n, cost: 500n, minimum: false, unrounded: '500', why: '3,125 × 3.2 / 20,000 = 0.5 exactly' },
  { model: 'claude-opus-4.6', tokensIn: 3_126n, tokensOut: 0n, effective: 3_126n, cost: 600n, minimum: false, unrounded: '500.16', why: '0.50016 rounds up to 0.6' },
  { model: 'claude-opus-4.6', tokensIn: 3_750n, tokensOut: 0n, effective: 3_750n, cost: 600n, floatTrap: true, unrounded: '600', why: '0.6 exactly (float: 0.6000000000000001)' },
  { model: 'claude-opus-4.6', tokensIn: 1_500n, tokensOut: 1_500n, effective: 7_500n, cost: 1_200n, floatTrap: true, why: '1,500 + 4 × 1,500 = 7,500: 1.2 exactly (float: 1.2000000000000002)' },
  { model: 'claude-opus-4.6', tokensIn: 14_375n, tokensOut: 0n, effective: 14_375n, cost: 2_300n, floatTrap: true, why: '2.3 exactly' },
  { model: 'claude-opus-4.6', tokensIn: 1_000_000_000n, tokensOut: 1_000_000_000n, effective: 5_000_000_000n, cost: 800_000_000n, unrounded: '800000000', why: 'the largest run: 5 × 10^9 × 3.2 / 20,000 = 800,000 credits' },
];

interface ConstantsCase extends TokenCase {
  readonly tokensPerUnit: number;
  readonly outputWeight: number;
}

// Both ends of both constants: tokensPerUnit 10,000 / 50,000, outputWeight 4 / 8.
const CONSTANTS_TABLE: readonly ConstantsCase[] = [
  // 10,000 tokens per unit, weight 4
  { tokensPerUnit: 10_000, outputWeight: 4, model: 'claude-sonnet-4.5', tokensIn: 10_000n, tokensOut: 0n, effective: 10_000n, cost: 2_200n, unrounded: '2200', why: '10,000 × 2.2 / 10,000 = 2.2' },
  { tokensPerUnit: 10_000, outputWeight: 4, model: 'claude-sonnet-4.5', tokensIn: 15_000n, tokensOut: 5_000n, effective: 35_000n, cost: 7_700n, floatTrap: true, why: '35,000 × 2.2 / 10,000 = 7.7 exactly' },
  { tokensPerUnit: 10_000, outputWeight: 4, model: 'gpt-5-mini', tokensIn: 10_000n, tokensOut: 0n, effective: 10_000n, cost: 500n, minimum: false, why: '0.5 exactly' },
  { tokensPerUnit: 10_000, outputWeight: 4, model: 'gpt-5-mini', tokensIn: 10_001n, tokensOut: 0n, effective: 10_001n, cost: 600n, unrounded: '500.05', why: '0.50005 rounds up to 0.6' },
  { tokensPerUnit: 10_000, outputWeight: 4, model: 'claude-opus-4.6', tokensIn: 1_875n, tokensOut: 0n, effective: 1_875n, cost: 600n, floatTrap: true, why: '1,875 × 3.2 / 10,000 = 0.6 exactly' },
  { tokensPerUnit: 10_000, outputWeight: 4, model: 'gpt-5.2', tokensIn: 0n, tokensOut: 1_000n, effective: 4_000n, cost: 600n, floatTrap: true, why: '4 × 1,000 × 1.5 / 10,000 = 0.6 exactly' },
  // 10,000 tokens per unit, weight 8
  { tokensPerUnit: 10_000, outputWeight: 8, model: 'gpt-5.2-high', tokensIn: 5_000n, tokensOut: 5_000n, effective: 45_000n, cost: 11_700n, floatTrap: true, why: '5,000 + 8 × 5,000 = 45,000: 11.7 exactly' },
  { tokensPerUnit: 10_000, outputWeight: 8, model: 'claude-haiku-4.5', tokensIn: 0n, tokensOut: 500n, effective: 4_000n, cost: 600n, floatTrap: true, why: '8 × 500 = 4,000: 0.6 exactly' },
  { tokensPerUnit: 10_000, outputWeight: 8, model: 'gpt-5-mini', tokensIn: 2_000n, tokensOut: 1_000n, effective: 10_000n, cost: 500n, minimum: false, why: '2,000 + 8 × 1,000 = 10,000: 0.5 exactly' },
  { tokensPerUnit: 10_000, outputWeight: 8, model: 'gpt-5-mini', tokensIn: 2_001n, tokensOut: 1_000n, effective: 10_001n, cost: 600n, why: '0.50005 rounds up to 0.6' },
  { tokensPerUnit: 10_000, outputWeight: 8, model: 'claude-opus-4.6', tokensIn: 0n, tokensOut: 1n, effective: 8n, cost: 500n, minimum: true, unrounded: '2.56', why: '0.00256 credits: minimum' },
  // 50,000 tokens per unit, weight 4
  { tokensPerUnit: 50_000, outputWeight: 4, model: 'claude-sonnet-4.5', tokensIn: 175_000n, tokensOut: 0n, effective: 175_000n, cost: 7_700n, floatTrap: true, unrounded: '7700', why: '175,000 × 2.2 / 50,000 = 7.7 exactly' },
  { tokensPerUnit: 50_000, outputWeight: 4, model: 'claude-opus-4.6', tokensIn: 9_375n, tokensOut: 0n, effective: 9_375n, cost: 600n, floatTrap: true, why: '9,375 × 3.2 / 50,000 = 0.6 exactly' },
  { tokensPerUnit: 50_000, outputWeight: 4, model: 'gpt-5.2', tokensIn: 20_000n, tokensOut: 0n, effective: 20_000n, cost: 600n, floatTrap: true, why: '20,000 × 1.5 / 50,000 = 0.6 exactly' },
  { tokensPerUnit: 50_000, outputWeight: 4, model: 'gpt-5-mini', tokensIn: 50_000n, tokensOut: 0n, effective: 50_000n, cost: 500n, minimum: false, why: '0.5 exactly' },
  { tokensPerUnit: 50_000, outputWeight: 4, model: 'gpt-5-mini', tokensIn: 0n, tokensOut: 12_501n, effective: 50_004n, cost: 600n, unrounded: '500.04', why: '4 × 12,501 = 50,004: 0.50004 rounds up to 0.6' },
  { tokensPerUnit: 50_000, outputWeight: 4, model: 'gpt-5-mini', tokensIn: 24_999n, tokensOut: 0n, effective: 24_999n, cost: 500n, minimum: true, unrounded: '249.99', why: '0.24999 credits: minimum' },
  // 50,000 tokens per unit, weight 8
  { tokensPerUnit: 50_000, outputWeight: 8, model: 'claude-sonnet-4.5', tokensIn: 15_000n, tokensOut: 20_000n, effective: 175_000n, cost: 7_700n, floatTrap: true, why: '15,000 + 8 × 20,000 = 175,000: 7.7 exactly' },
  { tokensPerUnit: 50_000, outputWeight: 8, model: 'gpt-5.2-high', tokensIn: 10_000n, tokensOut: 5_000n, effective: 50_000n, cost: 2_600n, unrounded: '2600', why: '10,000 + 8 × 5,000 = 50,000: 2.6' },
  { tokensPerUnit: 50_000, outputWeight: 8, model: 'claude-opus-4.6', tokensIn: 0n, tokensOut: 25_000n, effective: 200_000n, cost: 12_800n, why: '8 × 25,000 = 200,000: 12.8' },
  { tokensPerUnit: 50_000, outputWeight: 8, model: 'claude-haiku-4.5', tokensIn: 20_000n, tokensOut: 0n, effective: 20_000n, cost: 600n, floatTrap: true, why: '0.6 exactly' },
  { tokensPerUnit: 50_000, outputWeight: 8, model: 'gpt-5-mini', tokensIn: 0n, tokensOut: 1n, effective: 8n, cost: 500n, minimum: true, unrounded: '0.08', why: '0.00008 credits: minimum' },
];

function label(c: TokenCase): string {
  return `${c.model} in=${c.tokensIn} out=${c.tokensOut} → ${c.cost} (${c.why})`;
}

function checkCase(catalogue: Catalogue, c: TokenCase): void {
  const price = priceTokens(catalogue, c.model, c.tokensIn, c.tokensOut);
  expect(price.effectiveTokens).toBe(c.effective);
  expect(price.costMillicredits).toBe(c.cost);
  expect(price.costMillicredits % 100n).toBe(0n);
  expect(price.costMillicredits).toBeGreaterThanOrEqual(500n);
  expect(price.modelMultiplier).toBe(MULTIPLIERS[c.model]!.text);
  expect(price.tokensPerUnit).toBe(catalogue.tokensPerUnit);
  expect(price.outputWeight).toBe(catalogue.outputWeight);
  if (c.minimum !== undefined) expect(price.minimumApplied).toBe(c.minimum);
  if (c.unrounded !== undefined) expect(price.unroundedCostMillicredits).toBe(c.unrounded);
  // Operation fields stay at their zero value for token usage.
  expect(price.unitPriceMillicredits).toBe(0n);
  expect(price.quantity).toBe(0n);

  // priceUsage charges the same for a run that finished normally.
  const priced = priceUsage(catalogue, tokens(c.model, c.tokensIn, c.tokensOut), PRO);
  expect(priced.chargeMillicredits).toBe(c.cost);
  expect(priced.waivedReason).toBeUndefined();
  expect(priced.price).toEqual(price);
  expect(priced.operation).toBe(c.model);

  const naive = naiveFloatMillicredits(c.effective, Number(catalogue.tokensPerUnit), c.model);
  if (c.floatTrap) {
    // A real trap: the float formula charges a tenth of a credit too much.
    expect(naive).toBe(Number(c.cost) + 100);
  }
}

describe('token pricing at the default constants (20,000 tokens per unit, output weight 4)', () => {
  it('the shipped catalogues carry the default constants and the default model table', () => {
    for (const catalogue of [muse, mu]) {
      expect(catalogue.tokensPerUnit).toBe(20_000n);
      expect(catalogue.outputWeight).toBe(4n);
      expect([...catalogue.models.keys()].sort()).toEqual(Object.keys(MULTIPLIERS).sort());
      for (const [name, m] of catalogue.models) {
        expect(m.multiplier.text).toBe(MULTIPLIERS[name]!.text);
        expect(m.proOnly).toBe(MULTIPLIERS[name]!.proOnly);
      }
    }
  });

  it('the table covers every default model, with a float trap for each multiplier a float can misround', () => {
    expect(new Set(DEFAULT_TABLE.map((c) => c.model))).toEqual(new Set(Object.keys(MULTIPLIERS)));
    const trapped = new Set(DEFAULT_TABLE.filter((c) => c.floatTrap).map((c) => MULTIPLIERS[c.model]!.text));
    // 0.5 is a power of two, so the float formula is exact for it.
    expect(trapped).toEqual(new Set(['1.5', '2.2', '2.6', '3.2']));
  });

  it.each(DEFAULT_TABLE.map((c) => [label(c), c] as const))('%s', (_name, c) => {
    checkCase(muse, c);
  });

  it('a 2.2× run of exactly 20,000 effective tokens costs 2,200 milli-credits, not 2,300', () => {
    const price = priceTokens(muse, 'claude-sonnet-4.5', 20_000n, 0n);
    expect(price.costMillicredits).toBe(2_200n);
    expect(price.unroundedCostMillicredits).toBe('2200');
    // One more effective token crosses into the next tenth.
    expect(priceTokens(muse, 'claude-sonnet-4.5', 20_001n, 0n).costMillicredits).toBe(2_300n);
    expect(priceTokens(muse, 'claude-sonnet-4.5', 20_001n, 0n).unroundedCostMillicredits).toBe('2200.11');
  });

  it('charges at least 0.5 credits and always a multiple of 0.1 credit, never less than the exact cost', () => {
    for (const model of Object.keys(MULTIPLIERS)) {
      let previous = 0n;
      for (let effective = 0n; effective <= 200_000n; effective += 997n) {
        const price = priceTokens(muse, model, effective, 0n);
        expect(price.costMillicredits % 100n).toBe(0n);
        expect(price.costMillicredits).toBeGreaterThanOrEqual(500n);
        // More tokens never cost less.
        expect(price.costMillicredits).toBeGreaterThanOrEqual(previous);
        previous = price.costMillicredits;
        const unrounded = Number(price.unroundedCostMillicredits);
        expect(Number(price.costMillicredits)).toBeGreaterThanOrEqual(unrounded);
        // Rounding adds less than one tenth, unless the minimum lifted the cost.
        if (price.minimumApplied) {
          expect(price.costMillicredits).toBe(500n);
          expect(unrounded).toBeLessThan(500);
        } else {
          expect(Number(price.costMillicredits) - unrounded).toBeLessThan(100);
        }
      }
    }
  });

  it('truncates the unrounded breakdown to 6 fractional digits rather than rounding it', () => {
    // 30,000 tokens per unit makes the ratio repeat: 1 × 0.5 / 30,000 credits = 0.01666… milli-credits.
    const catalogue = withPricing(30_000, 4);
    expect(priceTokens(catalogue, 'gpt-5-mini', 1n, 0n).unroundedCostMillicredits).toBe('0.016666');
    // 10,000 × 2.2 / 30,000 = 0.7333… credits = 733.333… milli-credits → 0.8 credits.
    const sonnet = priceTokens(catalogue, 'claude-sonnet-4.5', 10_000n, 0n);
    expect(sonnet.unroundedCostMillicredits).toBe('733.333333');
    expect(sonnet.costMillicredits).toBe(800n);
  });
});

describe('token pricing at both ends of both constants', () => {
  const catalogues = new Map<string, Catalogue>();
  function catalogueFor(c: ConstantsCase): Catalogue {
    const k = `${c.tokensPerUnit}/${c.outputWeight}`;
    let catalogue = catalogues.get(k);
    if (!catalogue) {
      catalogue = withPricing(c.tokensPerUnit, c.outputWeight);
      catalogues.set(k, catalogue);
    }
    return catalogue;
  }

  it('the table covers all four corners', () => {
    expect(new Set(CONSTANTS_TABLE.map((c) => `${c.tokensPerUnit}/${c.outputWeight}`))).toEqual(
      new Set(['10000/4', '10000/8', '50000/4', '50000/8']),
    );
  });

  it.each(CONSTANTS_TABLE.map((c) => [`${c.tokensPerUnit}/${c.outputWeight}: ${label(c)}`, c] as const))('%s', (_name, c) => {
    const catalogue = catalogueFor(c);
    expect(catalogue.tokensPerUnit).toBe(BigInt(c.tokensPerUnit));
    expect(catalogue.outputWeight).toBe(BigInt(c.outputWeight));
    checkCase(catalogue, c);
  });

  it('the same run costs what each corner says: 10,000 in + 10,000 out on claude-sonnet-4.5', () => {
    // E = 50,000 at weight 4, 90,000 at weight 8.
    expect(priceTokens(withPricing(10_000, 4), 'claude-sonnet-4.5', 10_000n, 10_000n).costMillicredits).toBe(11_000n); // 5 × 2.2
    expect(priceTokens(withPricing(10_000, 8), 'claude-sonnet-4.5', 10_000n, 10_000n).costMillicredits).toBe(19_800n); // 9 × 2.2
    expect(priceTokens(withPricing(50_000, 4), 'claude-sonnet-4.5', 10_000n, 10_000n).costMillicredits).toBe(2_200n); // 1 × 2.2
    expect(priceTokens(withPricing(50_000, 8), 'claude-sonnet-4.5', 10_000n, 10_000n).costMillicredits).toBe(4_000n); // 1.8 × 2.2 = 3.96 → 4.0
  });

  it('a missing constant takes its default', () => {
    const catalogue = parseCatalogue(pricingText({}), 'test').catalogue;
    expect(catalogue.tokensPerUnit).toBe(20_000n);
    expect(catalogue.outputWeight).toBe(4n);
  });
});

describe('constants outside their ranges are refused at start-up', () => {
  const refusedTokensPerUnit: readonly unknown[] = [9_999, 50_001, 20_000.5, 10_000.1, 0, -20_000, '20000', null];
  const refusedOutputWeight: readonly unknown[] = [3, 9, 4.5, 7.9, 0, -4, '4', null];

  it.each(refusedTokensPerUnit.map((v) => [JSON.stringify(v), v] as const))('tokensPerUnit %s', (_name, value) => {
    const error = configError(() => parseCatalogue(pricingText({ tokensPerUnit: value, outputWeight: 4 }), 'test'));
    expect(error.problems.some((p) => p.includes('pricing.tokensPerUnit'))).toBe(true);
    expect(error.problems.some((p) => p.includes('outputWeight'))).toBe(false);
    expect(error.message).toContain('pricing.tokensPerUnit');
  });

  it.each(refusedOutputWeight.map((v) => [JSON.stringify(v), v] as const))('outputWeight %s', (_name, value) => {
    const error = configError(() => parseCatalogue(pricingText({ tokensPerUnit: 20_000, outputWeight: value }), 'test'));
    expect(error.problems.some((p) => p.includes('pricing.outputWeight'))).toBe(true);
    expect(error.problems.some((p) => p.includes('tokensPerUnit'))).toBe(false);
  });

  it('reports both when both are out of range', () => {
    const error = configError(() => parseCatalogue(pricingText({ tokensPerUnit: 50_001, outputWeight: 3 }), 'test'));
    expect(error.problems.some((p) => p.includes('pricing.tokensPerUnit'))).toBe(true);
    expect(error.problems.some((p) => p.includes('pricing.outputWeight'))).toBe(true);
  });

  it('accepts every integer at the ends of the ranges', () => {
    for (const [tokensPerUnit, outputWeight] of [[10_000, 4], [10_000, 8], [50_000, 4], [50_000, 8]] as const) {
      expect(() => withPricing(tokensPerUnit, outputWeight)).not.toThrow();
    }
  });

  describe('loadConfig, as the service starts', () => {
    let dir: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'pricing-test-'));
    });
    afterAll(() => {
      rmSync(dir, { recursive: true, force: true });
    });

    function startWith(pricing: Record<string, unknown>) {
      const path = join(dir, `catalogue-${key('cfg')}.json`);
      writeFileSync(path, pricingText(pricing));
      return () => loadConfig({ PORT: '0', BILLING_CONFIG: path, BILLING_DATA_DIR: 'memory://', LOG_LEVEL: 'silent' });
    }

    it('starts at the ends of the ranges', () => {
      const config = startWith({ tokensPerUnit: 50_000, outputWeight: 8 })();
      expect(config.catalogue.tokensPerUnit).toBe(50_000n);
      expect(config.catalogue.outputWeight).toBe(8n);
      expect(startWith({ tokensPerUnit: 10_000, outputWeight: 4 })().catalogue.tokensPerUnit).toBe(10_000n);
    });

    it.each([
      [{ tokensPerUnit: 9_999, outputWeight: 4 }, 'pricing.tokensPerUnit'],
      [{ tokensPerUnit: 50_001, outputWeight: 4 }, 'pricing.tokensPerUnit'],
      [{ tokensPerUnit: 20_000, outputWeight: 3 }, 'pricing.outputWeight'],
      [{ tokensPerUnit: 20_000, outputWeight: 9 }, 'pricing.outputWeight'],
      [{ tokensPerUnit: 20_000, outputWeight: 4.5 }, 'pricing.outputWeight'],
    ] as const)('refuses %o', (pricing, field) => {
      const error = configError(startWith(pricing));
      expect(error.problems.some((p) => p.includes(field))).toBe(true);
    });
  });
});

describe('finish reasons, models and plans (domain)', () => {
  it.each(['stop', 'length'])('"%s" is charged', (finishReason) => {
    const priced = priceUsage(muse, tokens('claude-sonnet-4.5', 20_000n, 0n, finishReason), PRO);
    expect(priced.chargeMillicredits).toBe(2_200n);
    expect(priced.price.costMillicredits).toBe(2_200n);
    expect(priced.waivedReason).toBeUndefined();
  });

  it.each([
    ['tool_calls', 'FINISH_TOOL_CALLS'],
    ['error', 'FINISH_ERROR'],
  ] as const)('"%s" is not charged (%s), but the price is still computed', (finishReason, reason) => {
    const priced = priceUsage(muse, tokens('gpt-5.2-high', 90_000n, 0n, finishReason), PRO);
    expect(priced.chargeMillicredits).toBe(0n);
    expect(priced.waivedReason).toBe(reason);
    expect(priced.price.costMillicredits).toBe(11_700n);
    expect(priced.price.effectiveTokens).toBe(90_000n);
    // A waived tiny run still reports the minimum it would have cost.
    const tiny = priceUsage(muse, tokens('gpt-5-mini', 0n, 0n, finishReason), FREE);
    expect(tiny.chargeMillicredits).toBe(0n);
    expect(tiny.waivedReason).toBe(reason);
    expect(tiny.price.costMillicredits).toBe(500n);
    expect(tiny.price.minimumApplied).toBe(true);
  });

  it.each(['content_filter', '', 'STOP', 'Stop', ' stop', 'tool-calls', 'cancelled'])('"%s" is INVALID_ARGUMENT on token_usage.finish_reason', (finishReason) => {
    const error = billingError(() => priceUsage(muse, tokens('gpt-5-mini', 100n, 100n, finishReason), PRO));
    expect(error.reason).toBe('INVALID_FIELD');
    expect(error.facts.field).toBe('token_usage.finish_reason');
  });

  it('an unknown model is UNKNOWN_MODEL on token_usage.model', () => {
    for (const model of ['gpt-4', 'claude-opus-4.5', 'GPT-5-MINI', 'gpt-5-mini ']) {
      const direct = billingError(() => priceTokens(muse, model, 1n, 1n));
      expect(direct.reason).toBe('UNKNOWN_MODEL');
      expect(direct.facts.field).toBe('token_usage.model');
      const viaUsage = billingError(() => priceUsage(muse, tokens(model, 1n, 1n), PRO));
      expect(viaUsage.reason).toBe('UNKNOWN_MODEL');
      expect(viaUsage.facts.field).toBe('token_usage.model');
    }
  });

  it.each(PREMIUM)('%s on the FREE plan is PLAN_REQUIRED, whatever the finish reason; PRO and ADMIN may use it', (model) => {
    for (const finishReason of ['stop', 'length', 'tool_calls', 'error']) {
      const error = billingError(() => priceUsage(muse, tokens(model, 20_000n, 0n, finishReason), FREE));
      expect(error.reason).toBe('PLAN_REQUIRED');
      expect(error.facts.field).toBe('token_usage.model');
    }
    expect(priceUsage(muse, tokens(model, 20_000n, 0n), PRO).chargeMillicredits).toBeGreaterThan(0n);
    const admin = priceUsage(muse, tokens(model, 20_000n, 0n), ADMIN);
    expect(admin.chargeMillicredits).toBe(0n);
    expect(admin.waivedReason).toBe('ADMIN_PLAN');
    expect(admin.price.costMillicredits).toBeGreaterThan(0n);
  });

  it.each(Object.keys(MULTIPLIERS).filter((m) => !MULTIPLIERS[m]!.proOnly))('%s is open to the FREE plan', (model) => {
    const priced = priceUsage(muse, tokens(model, 20_000n, 0n), FREE);
    expect(priced.chargeMillicredits).toBe(model === 'gpt-5-mini' ? 500n : 1_500n);
  });
});

describe('operations catalogue (domain)', () => {
  const museOps: readonly (readonly [string, bigint, bigint, bigint])[] = [
    // name, quantity, unit price, total (by hand)
    ['vital_ai.generate', 1n, 1_000n, 1_000n],
    ['vital_ai.generate', 5n, 1_000n, 5_000n],
    ['sample.generate', 1n, 2_000n, 2_000n],
    ['sample.generate', 3n, 2_000n, 6_000n],
    ['midi.generate', 2n, 1_000n, 2_000n],
    ['m4l.request', 1n, 500n, 500n],
    ['m4l.request', 7n, 500n, 3_500n],
    ['sample.generate', 10_000n, 2_000n, 20_000_000n],
  ];

  it.each(museOps)('muse: %s × %s = %s', (name, quantity, unit, total) => {
    expect(quantity * unit).toBe(total);
    const priced = priceUsage(muse, { kind: 'operation', name, quantity }, PRO);
    expect(priced.chargeMillicredits).toBe(total);
    expect(priced.price.costMillicredits).toBe(total);
    expect(priced.price.unitPriceMillicredits).toBe(unit);
    expect(priced.price.quantity).toBe(quantity);
    expect(priced.waivedReason).toBeUndefined();
    // Token fields stay at their zero value for operations.
    expect(priced.price.effectiveTokens).toBe(0n);
    expect(priced.price.modelMultiplier).toBe('');
    expect(priced.price.unroundedCostMillicredits).toBe('');
    expect(priced.price.minimumApplied).toBe(false);
  });

  it('m4l.request is free with the m4l entitlement, still priced', () => {
    const priced = priceUsage(muse, { kind: 'operation', name: 'm4l.request', quantity: 2n }, { ...PRO, entitlements: ['m4l'] });
    expect(priced.chargeMillicredits).toBe(0n);
    expect(priced.waivedReason).toBe('ENTITLEMENT');
    expect(priced.price.costMillicredits).toBe(1_000n);
  });

  it('an unknown operation is UNKNOWN_OPERATION on operation.name', () => {
    const error = billingError(() => priceUsage(muse, { kind: 'operation', name: 'news.search', quantity: 1n }, PRO));
    expect(error.reason).toBe('UNKNOWN_OPERATION');
    expect(error.facts.field).toBe('operation.name');
  });

  it('mu: prices, zero-priced operations and the daily free allowance', () => {
    const op = (name: string, quantity: bigint, freeOperationsRemaining = 0n) =>
      priceUsage(mu, { kind: 'operation', name, quantity }, { plan: 'FREE', entitlements: [], freeOperationsRemaining });
    expect(op('agent.run', 2n).chargeMillicredits).toBe(10_000n);
    expect(op('email.external', 1n).chargeMillicredits).toBe(4_000n);
    expect(op('chat.query', 3n).chargeMillicredits).toBe(9_000n);
    const watch = op('video.watch', 4n);
    expect(watch.chargeMillicredits).toBe(0n);
    expect(watch.waivedReason).toBe('ZERO_PRICE');
    const allFree = op('chat.query', 2n, 10n);
    expect(allFree.chargeMillicredits).toBe(0n);
    expect(allFree.waivedReason).toBe('FREE_DAILY_OPERATION');
    expect(allFree.freeOperationsUsed).toBe(2n);
    expect(allFree.price.costMillicredits).toBe(6_000n);
    // One free left: 1 of 3 is free, 2 × 3,000 are paid.
    const partly = op('chat.query', 3n, 1n);
    expect(partly.chargeMillicredits).toBe(6_000n);
    expect(partly.freeOperationsUsed).toBe(1n);
    expect(partly.waivedReason).toBeUndefined();
    expect(partly.price.costMillicredits).toBe(9_000n);
    // Not a daily-free operation: the allowance is not touched.
    const summary = op('news.summary', 2n, 10n);
    expect(summary.chargeMillicredits).toBe(2_000n);
    expect(summary.freeOperationsUsed).toBe(0n);
  });
});

describe('over RPC against PostgreSQL', () => {
  const t = useServices();
  const PRODUCT = 'muse';

  function tokenUsage(model: string, tokensIn: bigint, tokensOut: bigint, finishReason = 'stop') {
    return { case: 'tokenUsage' as const, value: { model, tokensIn, tokensOut, finishReason } };
  }

  function charge(userId: string, usage: ReturnType<typeof tokenUsage> | { case: 'operation'; value: { name: string; quantity: bigint } }) {
    return t.billing.charge({ userId, idempotencyKey: key('charge'), product: PRODUCT, usage });
  }

  function quote(userId: string, usage: ReturnType<typeof tokenUsage> | { case: 'operation'; value: { name: string; quantity: bigint } }) {
    return t.billing.quote({ userId, product: PRODUCT, usage });
  }

  describe('Quote and Charge agree on every case of the default table', () => {
    const user = 'pricing-pro';
    const funds = 10_000_000_000n; // 10 million credits
    let spent = 0n;
    /** Each charge's Price, by its transaction id. */
    const prices = new Map<string, unknown>();

    beforeAll(async () => {
      await t.admin.setPlan({ userId: user, plan: Plan.PRO });
      await fund(t, user, funds);
    });

    it.each(DEFAULT_TABLE.map((c) => [label(c), c] as const))('%s', async (_name, c) => {
      const usage = tokenUsage(c.model, c.tokensIn, c.tokensOut);
      const q = await quote(user, usage);
      expect(q.costMillicredits).toBe(c.cost);
      expect(q.waivedReason).toBe(WaivedReason.UNSPECIFIED);
      expect(q.price?.costMillicredits).toBe(c.cost);
      expect(q.price?.effectiveTokens).toBe(c.effective);
      expect(q.price?.modelMultiplier).toBe(MULTIPLIERS[c.model]!.text);
      expect(q.price?.tokensPerUnit).toBe(20_000n);
      expect(q.price?.outputWeight).toBe(4n);
      if (c.minimum !== undefined) expect(q.price?.minimumApplied).toBe(c.minimum);
      if (c.unrounded !== undefined) expect(q.price?.unroundedCostMillicredits).toBe(c.unrounded);

      const charged = await charge(user, usage);
      expect(charged.chargedMillicredits).toBe(q.costMillicredits);
      expect(charged.shortfallMillicredits).toBe(0n);
      expect(charged.waivedReason).toBe(WaivedReason.UNSPECIFIED);
      expect(charged.price).toEqual(q.price);
      expect(charged.transaction?.amountMillicredits).toBe(-c.cost);
      expect(charged.transaction?.operation).toBe(c.model);
      // The reply has the breakdown once, as its own price; the history keeps it (below).
      expect(charged.transaction?.price).toBeUndefined();
      prices.set(charged.transaction!.id, charged.price);
      spent += c.cost;
      expect(charged.balance?.balanceMillicredits).toBe(funds - spent);
    });

    it('the history keeps each charge\'s price breakdown, given with include_price; the funding grant has none', async () => {
      const seen = new Map<string, unknown>();
      let pageToken = '';
      let grants = 0;
      do {
        const page = await t.billing.listTransactions({ userId: user, pageSize: 100, pageToken, includePrice: true });
        for (const row of page.transactions) {
          if (prices.has(row.id)) seen.set(row.id, row.price);
          else {
            grants += 1;
            expect(row.price).toBeUndefined();
          }
        }
        pageToken = page.nextPageToken;
      } while (pageToken !== '');
      expect(grants).toBe(1);
      expect(seen).toEqual(prices);
      // Without include_price the same rows come without it.
      const plain = await t.billing.listTransactions({ userId: user, pageSize: 100 });
      expect(plain.transactions.length).toBeGreaterThan(1);
      expect(plain.transactions.filter((row) => row.price !== undefined)).toEqual([]);
    });

    it('a replayed charge returns its transaction with the price', async () => {
      const usage = tokenUsage('gpt-5.2', 12_345n, 678n);
      const request = { userId: user, idempotencyKey: key('replay-price'), product: PRODUCT, usage };
      const first = await t.billing.charge(request);
      const again = await t.billing.charge(request);
      expect(first.price?.effectiveTokens).toBe(12_345n + 4n * 678n);
      expect(again.transaction).toEqual(first.transaction);
      expect(again.price).toEqual(first.price);
      const { transactions } = await t.billing.listTransactions({ userId: user, pageSize: 1, includePrice: true });
      expect(transactions[0]?.id).toBe(first.transaction?.id);
      expect(transactions[0]?.price).toEqual(first.price);
      spent += first.chargedMillicredits;
    });

    it('the balance is the grant less every charge', async () => {
      const { balance } = await t.billing.getBalance({ userId: user });
      expect(balance?.balanceMillicredits).toBe(funds - spent);
    });
  });

  describe('finish reasons', () => {
    const user = 'pricing-finish';

    beforeAll(async () => {
      await t.admin.setPlan({ userId: user, plan: Plan.PRO });
      await fund(t, user, 100_000n);
    });

    it('"length" is charged like "stop"', async () => {
      const usage = tokenUsage('claude-sonnet-4.5', 20_000n, 0n, 'length');
      const q = await quote(user, usage);
      const charged = await charge(user, usage);
      expect(q.costMillicredits).toBe(2_200n);
      expect(charged.chargedMillicredits).toBe(2_200n);
      expect(charged.price).toEqual(q.price);
      expect(charged.balance?.balanceMillicredits).toBe(97_800n);
    });

    it.each([
      ['tool_calls', WaivedReason.FINISH_TOOL_CALLS],
      ['error', WaivedReason.FINISH_ERROR],
    ] as const)('"%s" is recorded at 0 with the reason and the price', async (finishReason, reason) => {
      const before = (await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits;
      const usage = tokenUsage('gpt-5.2-high', 90_000n, 0n, finishReason);
      const q = await quote(user, usage);
      expect(q.costMillicredits).toBe(0n);
      expect(q.waivedReason).toBe(reason);
      expect(q.price?.costMillicredits).toBe(11_700n);
      const charged = await charge(user, usage);
      expect(charged.chargedMillicredits).toBe(0n);
      expect(charged.waivedReason).toBe(reason);
      expect(charged.price?.costMillicredits).toBe(11_700n);
      expect(charged.price).toEqual(q.price);
      expect(charged.transaction?.amountMillicredits).toBe(0n);
      expect(charged.transaction?.waivedReason).toBe(reason);
      expect(charged.balance?.balanceMillicredits).toBe(before);
    });

    it.each(['content_filter', '', 'STOP'])('"%s" is INVALID_ARGUMENT on Charge and changes nothing', async (finishReason) => {
      const before = (await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits;
      const { error, detail } = await failure(charge(user, tokenUsage('gpt-5-mini', 1_000n, 1_000n, finishReason)));
      expect(error.code).toBe(Code.InvalidArgument);
      expect(detail?.reason).toBe(ErrorReason.INVALID_FIELD);
      expect(detail?.field).toBe('token_usage.finish_reason');
      expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(before);
    });

    it('Quote refuses an unknown finish reason too, and prices a planned run (no finish reason) as "stop"', async () => {
      const { error, detail } = await failure(quote(user, tokenUsage('gpt-5-mini', 1_000n, 1_000n, 'content_filter')));
      expect(error.code).toBe(Code.InvalidArgument);
      expect(detail?.field).toBe('token_usage.finish_reason');
      const planned = await quote(user, tokenUsage('claude-opus-4.6', 3_750n, 0n, ''));
      expect(planned.costMillicredits).toBe(600n);
      expect(planned.waivedReason).toBe(WaivedReason.UNSPECIFIED);
    });

    it('an unknown model is INVALID_ARGUMENT (UNKNOWN_MODEL) on Quote and Charge', async () => {
      for (const call of [() => quote(user, tokenUsage('gpt-4', 1n, 1n)), () => charge(user, tokenUsage('gpt-4', 1n, 1n))]) {
        const { error, detail } = await failure(call());
        expect(error.code).toBe(Code.InvalidArgument);
        expect(detail?.reason).toBe(ErrorReason.UNKNOWN_MODEL);
        expect(detail?.field).toBe('token_usage.model');
      }
    });
  });

  describe('plans', () => {
    const user = 'pricing-free';

    beforeAll(async () => {
      await fund(t, user, 20_000n);
    });

    it.each(PREMIUM)('%s is PERMISSION_DENIED (PLAN_REQUIRED) for a FREE user on Quote and Charge', async (model) => {
      for (const call of [() => quote(user, tokenUsage(model, 20_000n, 0n)), () => charge(user, tokenUsage(model, 20_000n, 0n))]) {
        const { error, detail } = await failure(call());
        expect(error.code).toBe(Code.PermissionDenied);
        expect(detail?.reason).toBe(ErrorReason.PLAN_REQUIRED);
        expect(detail?.field).toBe('token_usage.model');
      }
    });

    it('a FREE user may use a standard model', async () => {
      const charged = await charge(user, tokenUsage('gpt-5.2', 8_000n, 0n));
      expect(charged.chargedMillicredits).toBe(600n);
      expect(charged.balance?.balanceMillicredits).toBe(19_400n);
    });

    it('after SetPlan PRO the premium model is allowed', async () => {
      const set = await t.admin.setPlan({ userId: user, plan: Plan.PRO });
      expect(set.balance?.plan).toBe(Plan.PRO);
      const usage = tokenUsage('claude-sonnet-4.5', 20_000n, 0n);
      const q = await quote(user, usage);
      expect(q.costMillicredits).toBe(2_200n);
      const charged = await charge(user, usage);
      expect(charged.chargedMillicredits).toBe(2_200n);
      expect(charged.price).toEqual(q.price);
      expect(charged.balance?.balanceMillicredits).toBe(17_200n);
    });
  });

  describe('operations', () => {
    const user = 'pricing-ops';

    beforeAll(async () => {
      await fund(t, user, 50_000n);
    });

    it('sample.generate × 3 quotes and charges 6,000', async () => {
      const usage = { case: 'operation' as const, value: { name: 'sample.generate', quantity: 3n } };
      const q = await quote(user, usage);
      expect(q.costMillicredits).toBe(6_000n);
      expect(q.price?.unitPriceMillicredits).toBe(2_000n);
      expect(q.price?.quantity).toBe(3n);
      expect(q.price?.unroundedCostMillicredits).toBe('');
      const charged = await charge(user, usage);
      expect(charged.chargedMillicredits).toBe(6_000n);
      expect(charged.price).toEqual(q.price);
      expect(charged.balance?.balanceMillicredits).toBe(44_000n);
    });

    it('quantity 0 means 1: m4l.request costs 500', async () => {
      const usage = { case: 'operation' as const, value: { name: 'm4l.request', quantity: 0n } };
      const q = await quote(user, usage);
      expect(q.costMillicredits).toBe(500n);
      expect(q.price?.quantity).toBe(1n);
      const charged = await charge(user, usage);
      expect(charged.chargedMillicredits).toBe(500n);
      expect(charged.price).toEqual(q.price);
    });
  });
});
