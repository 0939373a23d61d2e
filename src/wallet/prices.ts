// Token prices in US cents per whole token, from the catalogue's sources: a static price,
// or a Chainlink AggregatorV3 feed read through the chain's own RPC, refused when stale.
// A missing or stale price is `undefined`: the deposit stays unpriced and is retried.
import { Interface } from 'ethers';
import type { PriceSource } from '../config.js';
import type { ChainName } from './chains.js';
import { centsFromFeedAnswer, type ExactDecimal } from './pricing.js';
import type { ChainRpc } from './rpc.js';

const AGGREGATOR = new Interface([
  'function decimals() view returns (uint8)',
  'function latestRoundData() view returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)',
]);

export type PriceAnswer =
  | { readonly ok: true; readonly usdCents: ExactDecimal }
  | { readonly ok: false; readonly why: string };

/** The price of `symbol` on `chain` now, or why there is none. `nowSeconds` is the wall clock. */
export async function priceOf(
  source: PriceSource | undefined,
  chain: ChainName,
  rpc: ChainRpc,
  nowSeconds: number,
): Promise<PriceAnswer> {
  if (!source) return { ok: false, why: 'the catalogue sets no price for this token' };
  if (source.kind === 'static') return { ok: true, usdCents: source.usdCents };
  const feed = source.feeds.get(chain);
  if (!feed) return { ok: false, why: `no price feed is configured on ${chain}` };
  let decimals: number;
  let answer: bigint;
  let updatedAt: bigint;
  try {
    [decimals] = AGGREGATOR.decodeFunctionResult('decimals', await rpc.ethCall(feed, AGGREGATOR.encodeFunctionData('decimals'))).map(Number) as [number];
    const round = AGGREGATOR.decodeFunctionResult('latestRoundData', await rpc.ethCall(feed, AGGREGATOR.encodeFunctionData('latestRoundData')));
    answer = round[1] as bigint;
    updatedAt = round[3] as bigint;
  } catch (error) {
    return { ok: false, why: `the price feed did not answer: ${(error as Error).message.slice(0, 200)}` };
  }
  if (answer <= 0n) return { ok: false, why: 'the price feed has no positive answer' };
  const age = BigInt(Math.floor(nowSeconds)) - updatedAt;
  if (updatedAt === 0n || age > BigInt(source.maxAgeSeconds)) {
    return { ok: false, why: `the price feed is stale (updated ${age} s ago, limit ${source.maxAgeSeconds} s)` };
  }
  return { ok: true, usdCents: centsFromFeedAnswer(answer, decimals) };
}
