// A chain's JSON-RPC endpoint, as the watcher uses it: a handful of read calls with a
// timeout, answers checked for shape, and errors that never carry the URL (a provider's
// URL often holds its API key).
import { FetchRequest, getBytes, JsonRpcProvider, keccak256, Network } from 'ethers';

/** An RPC failure whose message is safe to log: no URL, no request body. */
export class ChainRpcError extends Error {
  constructor(
    readonly chain: string,
    readonly method: string,
    detail: string,
    /** The node answered with a JSON-RPC error (as opposed to no answer at all). */
    readonly answered = false,
  ) {
    // A provider may echo its own URL (with the API key in it) in an error text.
    super(`${chain}: ${method} failed: ${detail.replace(/\b(?:https?|wss?):\/\/\S*/gi, '<url>')}`);
    this.name = 'ChainRpcError';
  }
}

export interface RpcTransaction {
  hash: string;
  from: string;
  /** Lower-case; null for a contract creation. */
  to: string | null;
  value: bigint;
  /** The node's answer for it did not parse; `to` is kept (lower-case) when it is an address. */
  malformed?: true;
}

export interface RpcBlock {
  number: number;
  hash: string;
  parentHash: string;
  timestamp: number;
  /** The 2048-bit logs bloom as bytes; empty if the node sent none (then nothing is skipped). */
  logsBloom: Uint8Array;
  transactions: RpcTransaction[];
}

export interface RpcLog {
  address: string;
  topics: string[];
  data: string;
  blockNumber: number;
  blockHash: string;
  transactionHash: string;
  logIndex: number;
  removed: boolean;
}

const RPC_TIMEOUT_MS = 10_000;

function quantity(value: unknown, what: string): number {
  if (typeof value !== 'string' || !/^0x[0-9a-fA-F]{1,16}$/.test(value)) throw new TypeError(`${what} is not a quantity`);
  const n = Number(BigInt(value));
  if (!Number.isSafeInteger(n)) throw new TypeError(`${what} is out of range`);
  return n;
}

function hash32(value: unknown, what: string): string {
  if (typeof value !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(value)) throw new TypeError(`${what} is not a 32-byte hash`);
  return value.toLowerCase();
}

function address(value: unknown, what: string): string {
  if (typeof value !== 'string' || !/^0x[0-9a-fA-F]{40}$/.test(value)) throw new TypeError(`${what} is not an address`);
  return value.toLowerCase();
}

export class ChainRpc {
  private readonly provider: JsonRpcProvider;

  constructor(
    readonly chain: string,
    url: string,
    chainId: number,
  ) {
    const request = new FetchRequest(url);
    request.timeout = RPC_TIMEOUT_MS;
    // A static network: no chain-id detection loop in the background, no batching, no cache.
    this.provider = new JsonRpcProvider(request, Network.from(chainId), {
      staticNetwork: true,
      batchMaxCount: 1,
      cacheTimeout: -1,
    });
  }

  async call(method: string, params: unknown[] = []): Promise<unknown> {
    try {
      return await this.provider.send(method, params);
    } catch (error) {
      const e = error as { code?: unknown; shortMessage?: unknown; error?: { message?: unknown } };
      const detail = typeof e.error?.message === 'string'
        ? e.error.message
        : typeof e.code === 'string'
          ? e.code
          : 'no answer';
      throw new ChainRpcError(this.chain, method, detail.slice(0, 200), typeof e.error?.message === 'string');
    }
  }

  private async checked<T>(method: string, params: unknown[], parse: (raw: unknown) => T): Promise<T> {
    const raw = await this.call(method, params);
    try {
      return parse(raw);
    } catch (error) {
      throw new ChainRpcError(this.chain, method, `malformed answer: ${(error as Error).message}`);
    }
  }

  chainId(): Promise<number> {
    return this.checked('eth_chainId', [], (raw) => quantity(raw, 'chain id'));
  }

  blockNumber(): Promise<number> {
    return this.checked('eth_blockNumber', [], (raw) => quantity(raw, 'block number'));
  }

  /** A block by tag or number; undefined if the node does not have it (yet). */
  block(tag: number | 'finalized' | 'latest', full: boolean): Promise<RpcBlock | undefined> {
    const param = typeof tag === 'number' ? `0x${tag.toString(16)}` : tag;
    return this.checked('eth_getBlockByNumber', [param, full], (raw) => (raw === null ? undefined : parseBlock(raw, full)));
  }

  /**
   * Logs of one block, named by its hash (EIP-234): a node that does not have that block
   * answers an error instead of an empty list, so a lagging node cannot hide a deposit.
   */
  logsOfBlock(blockHash: string, addresses: readonly string[] | undefined, topics: (string | string[] | null)[]): Promise<RpcLog[]> {
    return this.checked(
      'eth_getLogs',
      [{ blockHash, topics, ...(addresses ? { address: addresses } : {}) }],
      (raw) => {
        if (!Array.isArray(raw)) throw new TypeError('not a list');
        return raw.map(parseLog);
      },
    );
  }

  /** The receipt status of a mined transaction: 1 success, 0 reverted; undefined if unknown. */
  receiptStatus(txHash: string): Promise<{ status: number; blockHash: string } | undefined> {
    return this.checked('eth_getTransactionReceipt', [txHash], (raw) => {
      if (raw === null) return undefined;
      const r = raw as { status?: unknown; blockHash?: unknown };
      return { status: quantity(r.status, 'status'), blockHash: hash32(r.blockHash, 'blockHash') };
    });
  }

  /** eth_call at the latest block. */
  ethCall(to: string, data: string): Promise<string> {
    return this.checked('eth_call', [{ to, data }, 'latest'], (raw) => {
      if (typeof raw !== 'string' || !/^0x[0-9a-fA-F]*$/.test(raw)) throw new TypeError('not hex data');
      return raw;
    });
  }

  destroy(): void {
    this.provider.destroy();
  }
}

function parseBlock(raw: unknown, full: boolean): RpcBlock {
  const b = raw as { number?: unknown; hash?: unknown; parentHash?: unknown; timestamp?: unknown; transactions?: unknown };
  if (!Array.isArray(b.transactions)) throw new TypeError('block has no transaction list');
  return {
    number: quantity(b.number, 'block number'),
    hash: hash32(b.hash, 'block hash'),
    parentHash: hash32(b.parentHash, 'parent hash'),
    timestamp: quantity(b.timestamp, 'timestamp'),
    logsBloom:
      typeof (b as { logsBloom?: unknown }).logsBloom === 'string' && /^0x[0-9a-fA-F]{512}$/.test((b as { logsBloom: string }).logsBloom)
        ? getBytes((b as { logsBloom: string }).logsBloom)
        : new Uint8Array(0),
    // Lenient per transaction: one odd transaction (a type this code does not know) must not
    // stall the chain; only a transaction to a user address is looked at further.
    transactions: full
      ? b.transactions.flatMap((t: { hash?: unknown; from?: unknown; to?: unknown; value?: unknown }) => {
          try {
            if (typeof t.value !== 'string' || !/^0x[0-9a-fA-F]+$/.test(t.value)) throw new TypeError('tx value is not a quantity');
            return [{
              hash: hash32(t.hash, 'tx hash'),
              from: address(t.from, 'tx from'),
              to: t.to === null || t.to === undefined ? null : address(t.to, 'tx to'),
              value: BigInt(t.value),
            }];
          } catch {
            const to = typeof t.to === 'string' && /^0x[0-9a-fA-F]{40}$/.test(t.to) ? t.to.toLowerCase() : null;
            return [{ hash: '', from: '', to, value: 0n, malformed: true as const }];
          }
        })
      : [],
  };
}

function parseLog(raw: unknown): RpcLog {
  const l = raw as Record<string, unknown>;
  if (!Array.isArray(l.topics)) throw new TypeError('log has no topics');
  if (typeof l.data !== 'string' || !/^0x[0-9a-fA-F]*$/.test(l.data)) throw new TypeError('log data is not hex');
  return {
    address: address(l.address, 'log address'),
    topics: l.topics.map((t) => hash32(t, 'topic')),
    data: l.data.toLowerCase(),
    blockNumber: quantity(l.blockNumber, 'log block number'),
    blockHash: hash32(l.blockHash, 'log block hash'),
    transactionHash: hash32(l.transactionHash, 'log tx hash'),
    logIndex: quantity(l.logIndex, 'log index'),
    removed: l.removed === true,
  };
}

/** The three bloom bit positions of an item (an address or a topic), per the yellow paper. */
export function bloomBits(itemHex: string): [number, number, number] {
  const h = getBytes(keccak256(itemHex));
  return [0, 2, 4].map((i) => ((h[i]! << 8) | h[i + 1]!) & 2047) as [number, number, number];
}

/** False only if the bloom proves the item is in none of the block's logs (no false negatives). */
export function bloomMayContain(bloom: Uint8Array, bits: readonly number[]): boolean {
  if (bloom.length !== 256) return true;
  return bits.every((bit) => ((bloom[255 - (bit >> 3)] ?? 0) & (1 << (bit & 7))) !== 0);
}
