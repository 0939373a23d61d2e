// The EVM chains the wallet can watch and the tokens it accepts on each by default. One
// table: configuration (config.ts) picks the chains whose RPC URL is set and may add tokens.
import { getAddress } from 'ethers';

export type ChainName = 'ethereum' | 'base' | 'arbitrum' | 'optimism';

export interface ChainSpec {
  readonly name: ChainName;
  readonly chainId: number;
  /** The environment variable holding its JSON-RPC URL. */
  readonly urlVariable: string;
  /** The environment variable that replaces the finalized tag by N confirmations. */
  readonly confirmationsVariable: string;
}

export const CHAINS: readonly ChainSpec[] = [
  { name: 'ethereum', chainId: 1, urlVariable: 'ETHEREUM_RPC_URL', confirmationsVariable: 'ETHEREUM_CONFIRMATIONS' },
  { name: 'base', chainId: 8453, urlVariable: 'BASE_RPC_URL', confirmationsVariable: 'BASE_CONFIRMATIONS' },
  { name: 'arbitrum', chainId: 42161, urlVariable: 'ARBITRUM_RPC_URL', confirmationsVariable: 'ARBITRUM_CONFIRMATIONS' },
  { name: 'optimism', chainId: 10, urlVariable: 'OPTIMISM_RPC_URL', confirmationsVariable: 'OPTIMISM_CONFIRMATIONS' },
];

export function chainByName(name: string): ChainSpec | undefined {
  return CHAINS.find((c) => c.name === name);
}

export interface TokenSpec {
  readonly chain: ChainName;
  readonly symbol: string;
  /** EIP-55 checksummed ERC-20 contract; empty for the chain's native coin. */
  readonly contract: string;
  readonly decimals: number;
}

/** Native ETH: every watched chain's gas coin. */
export const NATIVE_SYMBOL = 'ETH';
export const NATIVE_DECIMALS = 18;

/** Circle's native USDC on each chain (not the bridged USDC.e). */
export const USDC_CONTRACTS: Readonly<Record<ChainName, string>> = {
  ethereum: getAddress('0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48'),
  base: getAddress('0x833589fcd6edb6e08f4c7c32d4f71b54bda02913'),
  arbitrum: getAddress('0xaf88d065e77c8cc2239327c5edb3a432268e5831'),
  optimism: getAddress('0x0b2c639c533813f4aa9d7837caf62653d097ff85'),
};

/** The tokens accepted on a chain before the catalogue adds any: ETH and USDC. */
export function defaultTokens(chain: ChainName): TokenSpec[] {
  return [
    { chain, symbol: NATIVE_SYMBOL, contract: '', decimals: NATIVE_DECIMALS },
    { chain, symbol: 'USDC', contract: USDC_CONTRACTS[chain], decimals: 6 },
  ];
}

/** EIP-681: pay the native coin, or an ERC-20 via transfer(), to `address` on `chainId`. */
export function paymentUri(chainId: number, address: string, token?: TokenSpec): string {
  if (!token || token.contract === '') return `ethereum:${address}@${chainId}`;
  return `ethereum:${token.contract}@${chainId}/transfer?address=${address}`;
}
