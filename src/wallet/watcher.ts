// One chain's deposit watcher. Each poll: read the head and the finalized block (both may
// only move forward), scan the next bounded range of blocks after the persisted cursor
// (native ETH to user addresses, ERC-20 Transfer logs to user addresses), store what it
// found and move the cursor in one database transaction, then settle the deposits whose
// blocks are final: still canonical → priced → credited, below minimum or unpriced.
//
// Parent-hash continuity finds reorganisations: when the next block does not extend the
// cursor, the cursor walks back over the kept hashes of unfinalized blocks to a common
// ancestor, the pending deposits above it become REORGED, and the scan resumes from there
// (a transfer mined again is found again). RPC errors end the poll; the cursor never
// passes a block that was not scanned, so nothing is skipped.
import type { Logger } from 'pino';
import type { DepositTerms, WatchedChain } from '../config.js';
import { BillingError } from '../domain/errors.js';
import type { DepositCredit } from '../ledger/deposits/credit.js';
import type { TransactionResult } from '../ledger/kernel/views.js';
import type { Database } from '../storage/database.js';
import {
  advanceCursor,
  type ChainCursor,
  type DepositRow,
  type DetectedTransfer,
  initCursor,
  lockCursor,
  openDeposits,
  readCursor,
  recordFinalized,
  recordTips,
  rewindCursor,
  scannedHash,
  settleDeposit,
  upsertDeposits,
} from './sql.js';
import { formatExact, valueDeposit } from './pricing.js';
import { type PriceAnswer, priceOf } from './prices.js';
import { type AddressBook, addressTopic } from './address-book.js';
import { type ChainName, NATIVE_DECIMALS, NATIVE_SYMBOL } from './chains.js';
import { bloomBits, bloomMayContain, ChainRpc, ChainRpcError, type RpcBlock, type RpcLog } from './rpc.js';
import type { WalletMetrics } from './metrics.js';

/** keccak256("Transfer(address,address,uint256)") */
export const TRANSFER_TOPIC = '0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef';

const TRANSFER_BITS = bloomBits(TRANSFER_TOPIC);

/** Addresses per eth_getLogs topic filter. */
const ADDRESSES_PER_LOG_QUERY = 200;
/** Blocks fetched at once within a poll. */
const BLOCK_FETCH_CONCURRENCY = 4;
/** Hashes of this many blocks below the finalized one are kept for finding an ancestor. */
const HASHES_KEPT_BELOW_FINALIZED = 128;

export type WatcherState = 'starting' | 'watching' | 'refused';

/** The node disagrees with blocks at or below the last settled finalized block. */
export class DeepReorgError extends Error {
  override readonly name = 'DeepReorgError';
}

export interface PollReport {
  /** Why nothing was scanned, when nothing was. */
  skipped?: 'distrusted' | 'refused' | 'raced' | 'not-ready';
  scannedTo?: number;
  reorgedTo?: number;
  detected: number;
  credited: number;
  /** More blocks wait after this poll's range: poll again without waiting. */
  behind: boolean;
}

/**
 * What the last poll saw: the numbers the billing_wallet_*_block gauges are set to, kept
 * beside them for GetWatcherStatus. Unset until a poll has read the chain.
 */
export interface WatcherObservation {
  head?: number;
  finalized?: number;
  cursor?: number;
  /** When the last poll that read the chain ended. */
  lastPollAtMs?: number;
  /** The message of the last failed poll (safe: a ChainRpcError carries no URL); unset after a good one. */
  lastError?: string;
}

export interface WatcherDeps {
  readonly db: Database;
  /** Credits a final, priced deposit (ledger/deposits/); undefined when another process did. */
  readonly credit: (credit: DepositCredit) => Promise<TransactionResult | undefined>;
  readonly terms: DepositTerms;
  readonly addresses: AddressBook;
  readonly blocksPerPoll: number;
  readonly metrics: WalletMetrics;
  readonly log: Logger;
  /** Wall clock in seconds, for price staleness. */
  readonly nowSeconds?: () => number;
}

export class ChainWatcher {
  readonly rpc: ChainRpc;
  state: WatcherState = 'starting';
  /** Why the chain is refused (wrong chain id, no finalized tag). */
  refusal?: string;
  /** The last poll's numbers (the same values as the metrics) and error. */
  readonly observed: WatcherObservation = {};

  constructor(
    readonly chain: WatchedChain,
    private readonly deps: WatcherDeps,
  ) {
    this.rpc = new ChainRpc(chain.spec.name, chain.url, chain.spec.chainId);
  }

  get name(): ChainName {
    return this.chain.spec.name;
  }

  /**
   * Checks the endpoint once: it must answer for this chain and, unless a confirmation depth
   * is configured, answer the finalized tag. A wrong answer refuses the chain for good; an
   * RPC error leaves it starting, to be checked again next poll.
   */
  async check(): Promise<void> {
    const chainId = await this.rpc.chainId();
    if (chainId !== this.chain.spec.chainId) {
      return this.refuse(`${this.chain.spec.urlVariable} answers for chain ${chainId}, not ${this.name} (${this.chain.spec.chainId})`);
    }
    if (this.chain.confirmations === undefined) {
      // A node that answers the tag with an error (or with nothing) does not support it; a
      // node that does not answer at all is tried again.
      const finalized = await this.rpc.block('finalized', false).catch((error: unknown) => {
        if (error instanceof ChainRpcError && error.answered) return undefined;
        throw error;
      });
      if (!finalized) {
        return this.refuse(
          `${this.chain.spec.urlVariable} does not answer the "finalized" block tag; set ${this.chain.spec.confirmationsVariable}`,
        );
      }
    }
    // The cursor exists before the chain is listed to users: nothing sent to an address the
    // service handed out for this chain can predate the first block it scans.
    await this.cursor((await this.tips()).finalized);
    this.state = 'watching';
  }

  private refuse(why: string): void {
    this.state = 'refused';
    this.refusal = why;
    this.deps.log.error({ chain: this.name }, `not watching ${this.name}: ${why}`);
  }

  /** The head and the block at or below which deposits are final. */
  private async tips(): Promise<{ head: number; finalized: RpcBlock }> {
    const head = await this.rpc.blockNumber();
    const target = this.chain.confirmations === undefined ? 'finalized' : Math.max(0, head - this.chain.confirmations + 1);
    const finalized = await this.rpc.block(target, false);
    if (!finalized) throw new ChainRpcError(this.name, 'eth_getBlockByNumber', `the node has no block ${String(target)}`);
    if (target === 'finalized') {
      // One answer routed to another node (or network) must not decide what is final: the
      // block at that number, asked for again, must be the same block.
      const again = await this.rpc.block(finalized.number, false);
      if (again?.hash !== finalized.hash) {
        throw new ChainRpcError(this.name, 'eth_getBlockByNumber', 'the finalized block and the block at its number differ');
      }
    }
    return { head, finalized };
  }

  /** One poll; its error (if any) is kept in `observed.lastError` and thrown. */
  async pollOnce(): Promise<PollReport> {
    try {
      const report = await this.poll();
      delete this.observed.lastError;
      return report;
    } catch (error) {
      this.observed.lastError = error instanceof Error ? error.message : String(error);
      throw error;
    }
  }

  private async poll(): Promise<PollReport> {
    const report: PollReport = { detected: 0, credited: 0, behind: false };
    if (this.state === 'starting') await this.check();
    if (this.state === 'refused') return { ...report, skipped: 'refused' };
    const { head, finalized } = await this.tips();
    const cursor = await this.cursor(finalized);
    const metrics = this.deps.metrics;
    metrics.head.set({ chain: this.name }, head);
    metrics.finalized.set({ chain: this.name }, finalized.number);
    this.observed.head = head;
    this.observed.finalized = finalized.number;
    // A node that is syncing, or a load balancer switching nodes, can report a head behind
    // the blocks already scanned, or an older finalized block: that is not a deep
    // reorganisation, only a poll to distrust. A head behind stops the scan; a finalized
    // block behind stops the settling; neither is stored.
    const headBehind = head < cursor.number || finalized.number > head;
    const finalizedBehind = finalized.number < cursor.finalizedNumber;
    if (headBehind || finalizedBehind) {
      metrics.distrusted.inc({ chain: this.name });
      this.deps.log.warn(
        { chain: this.name, head, finalized: finalized.number, scanned: cursor.number, settledTo: cursor.finalizedNumber },
        'chain tips went backwards: poll distrusted',
      );
      report.skipped = 'distrusted';
    }
    let scanError: unknown;
    if (!headBehind) {
      await recordTips(this.deps.db, this.chain.spec.chainId, head);
      try {
        await this.scan(cursor, head, finalized.number, report);
      } catch (error) {
        // The deposits already final are settled all the same; the scan's error then ends
        // the poll (and backs off).
        scanError = error;
      }
    }
    const scanned = report.scannedTo ?? report.reorgedTo ?? cursor.number;
    metrics.cursor.set({ chain: this.name }, scanned);
    metrics.lag.set({ chain: this.name }, Math.max(0, head - scanned));
    this.observed.cursor = scanned;
    this.observed.lastPollAtMs = Date.now();
    if (!finalizedBehind) {
      // Only what has been scanned can be settled, and never past the block verified final.
      report.credited = await this.settle(Math.min(finalized.number, scanned));
      await recordFinalized(this.deps.db, this.chain.spec.chainId, finalized.number);
    }
    if (scanError !== undefined) throw scanError;
    return report;
  }

  /** The stored cursor, or a new one at the current finalized block (first watch of the chain). */
  private async cursor(finalized: RpcBlock): Promise<ChainCursor> {
    const stored = await readCursor(this.deps.db, this.chain.spec.chainId);
    if (stored) return stored;
    return initCursor(this.deps.db, {
      chainId: this.chain.spec.chainId,
      number: finalized.number,
      hash: finalized.hash,
      headNumber: finalized.number,
      finalizedNumber: finalized.number,
    });
  }

  private async scan(cursor: ChainCursor, head: number, finalized: number, report: PollReport): Promise<void> {
    const from = cursor.number + 1;
    const to = Math.min(head, cursor.number + this.deps.blocksPerPoll);
    report.behind = to < head;
    if (from > to) return;
    const notReady = () => {
      // The node lacks a block or disagrees with itself: read the range again next poll.
      report.skipped = 'not-ready';
      report.behind = false;
    };
    const blocks = await this.fetchBlocks(from, to);
    if (!blocks) return notReady();
    if (blocks[0]!.parentHash !== cursor.hash) {
      const ancestor = await this.rewind(cursor);
      if (ancestor === undefined) return notReady();
      report.reorgedTo = ancestor;
      report.behind = true;
      return;
    }
    for (let i = 1; i < blocks.length; i += 1) {
      if (blocks[i]!.parentHash !== blocks[i - 1]!.hash) return notReady();
    }
    const transfers = await this.detect(blocks);
    if (!transfers) return notReady();
    const moved = await this.deps.db.transaction(async (s) => {
      const locked = await lockCursor(s, this.chain.spec.chainId);
      // Another replica scanned this range first: its result stands.
      if (locked.number !== cursor.number || locked.hash !== cursor.hash) return false;
      await upsertDeposits(s, this.chain.spec.chainId, transfers);
      await advanceCursor(s, this.chain.spec.chainId, blocks, Math.min(finalized, to) - HASHES_KEPT_BELOW_FINALIZED);
      return true;
    });
    if (!moved) return void (report.skipped = 'raced');
    report.scannedTo = to;
    report.detected = transfers.length;
    if (transfers.length > 0) {
      this.deps.log.info({ chain: this.name, from, to, transfers: transfers.length }, 'deposits detected');
    }
  }

  /** Blocks from..to with their transactions, in order; undefined if the node lacks one. */
  private async fetchBlocks(from: number, to: number): Promise<RpcBlock[] | undefined> {
    const numbers = Array.from({ length: to - from + 1 }, (_, i) => from + i);
    const blocks: RpcBlock[] = [];
    for (let i = 0; i < numbers.length; i += BLOCK_FETCH_CONCURRENCY) {
      const batch = await Promise.all(numbers.slice(i, i + BLOCK_FETCH_CONCURRENCY).map((n) => this.rpc.block(n, true)));
      for (const block of batch) {
        if (!block) return undefined;
        blocks.push(block);
      }
    }
    return blocks;
  }

  /**
   * Walks back from the cursor to the newest block whose kept hash the node still has, and
   * rewinds there; undefined when the node cannot say yet (it lacks a block). Never below
   * the finalized block deposits were last settled against: a disagreement there is a fault
   * of the node or a reorganisation deeper than the configured depth, which could otherwise
   * credit a re-included token transfer twice (its log index changes). It is raised, not acted on.
   */
  private async rewind(cursor: ChainCursor): Promise<number | undefined> {
    for (let number = cursor.number; number >= cursor.finalizedNumber; number -= 1) {
      const kept = await scannedHash(this.deps.db, this.chain.spec.chainId, number);
      if (kept === undefined) break;
      const canonical = await this.rpc.block(number, false);
      if (!canonical) return undefined;
      if (canonical.hash !== kept) continue;
      const marked = await this.deps.db.transaction(async (s) => {
        const locked = await lockCursor(s, this.chain.spec.chainId);
        if (locked.number !== cursor.number || locked.hash !== cursor.hash) return -1;
        return rewindCursor(s, this.chain.spec.chainId, { number, hash: kept });
      });
      if (marked >= 0) {
        this.deps.metrics.reorgs.inc({ chain: this.name });
        this.deps.log.warn({ chain: this.name, from: cursor.number, to: number, reorged: marked }, 'chain reorganisation: cursor rewound');
      }
      return number;
    }
    throw new DeepReorgError(
      `${this.name}: no common ancestor at or above block ${cursor.finalizedNumber} (the last block settled as final); ` +
        'the node disagrees with blocks already scanned: not scanning until it agrees',
    );
  }

  /** Transfers to user addresses in the blocks; undefined if the node's answers disagree. */
  private async detect(blocks: readonly RpcBlock[]): Promise<DetectedTransfer[] | undefined> {
    const book = await this.deps.addresses.refresh();
    const found = new Map<string, DetectedTransfer>();
    for (const block of blocks) {
      for (const tx of block.transactions) {
        const userId = tx.to === null ? undefined : book.get(tx.to);
        if (userId === undefined) continue;
        // A transaction to a user that the node's answer does not let us read: not skipped.
        if (tx.malformed) return undefined;
        if (tx.value <= 0n) continue;
        const receipt = await this.rpc.receiptStatus(tx.hash);
        if (!receipt || receipt.blockHash !== block.hash) return undefined;
        if (receipt.status !== 1) continue;
        found.set(`${tx.hash}:-1`, {
          txHash: tx.hash,
          logIndex: -1,
          userId,
          fromAddress: tx.from,
          tokenSymbol: NATIVE_SYMBOL,
          tokenContract: '',
          decimals: NATIVE_DECIMALS,
          rawAmount: tx.value,
          blockNumber: block.number,
          blockHash: block.hash,
          status: 'PENDING',
        });
      }
      const logs = await this.blockTransferLogs(block, book);
      if (!logs) return undefined;
      for (const transfer of logs) found.set(`${transfer.txHash}:${transfer.logIndex}`, transfer);
    }
    return [...found.values()];
  }

  /**
   * ERC-20 Transfers to user addresses in one block. The logs bloom skips blocks that hold
   * no Transfer to any user (a bloom has false positives, never false negatives). Accepted
   * tokens are asked for by contract address, and that query must succeed; every other
   * contract's Transfers (recorded UNSUPPORTED, never credited) are a second, best-effort
   * query, so nobody can stall crediting by spamming Transfer events from a contract of
   * their own.
   */
  private async blockTransferLogs(block: RpcBlock, book: ReadonlyMap<string, string>): Promise<DetectedTransfer[] | undefined> {
    const bloom = block.logsBloom;
    if (!bloomMayContain(bloom, TRANSFER_BITS)) return [];
    const users = [...book.keys()].filter((a) => bloomMayContain(bloom, this.deps.addresses.topicBits(a))).map(addressTopic);
    if (users.length === 0) return [];
    const tokens = (this.deps.terms.tokens.get(this.name) ?? []).filter((t) => t.contract !== '');
    const contracts = tokens.map((t) => t.contract.toLowerCase());
    const transfers: DetectedTransfer[] = [];
    for (let i = 0; i < users.length; i += ADDRESSES_PER_LOG_QUERY) {
      const topics = [TRANSFER_TOPIC, null, users.slice(i, i + ADDRESSES_PER_LOG_QUERY)];
      const accepted = contracts.length > 0 ? await this.rpc.logsOfBlock(block.hash, contracts, topics) : [];
      let others: RpcLog[] = [];
      try {
        others = (await this.rpc.logsOfBlock(block.hash, undefined, topics)).filter((l) => !contracts.includes(l.address));
      } catch (error) {
        this.deps.metrics.rpcErrors.inc({ chain: this.name, kind: 'unsupported-logs' });
        this.deps.log.warn({ chain: this.name, block: block.number, error: (error as Error).message }, 'Transfers of unsupported contracts not read');
      }
      for (const log of [...accepted, ...others]) {
        if (log.removed) continue;
        if (log.blockHash !== block.hash || log.blockNumber !== block.number) return undefined;
        // ERC-20 Transfer: three topics and a 32-byte amount. (ERC-721 shares the event name
        // with a fourth, indexed token id: not a deposit.)
        if (log.topics.length !== 3 || log.data.length !== 66) continue;
        const userId = book.get(`0x${log.topics[2]!.slice(26)}`);
        const raw = BigInt(log.data);
        if (userId === undefined || raw === 0n) continue;
        const token = tokens.find((t) => t.contract.toLowerCase() === log.address);
        transfers.push({
          txHash: log.transactionHash,
          logIndex: log.logIndex,
          userId,
          fromAddress: `0x${log.topics[1]!.slice(26)}`,
          tokenSymbol: token?.symbol ?? '',
          tokenContract: log.address,
          decimals: token?.decimals,
          rawAmount: raw,
          blockNumber: log.blockNumber,
          blockHash: log.blockHash,
          status: token ? 'PENDING' : 'UNSUPPORTED',
        });
      }
    }
    return transfers;
  }

  /** Settles the open deposits at or below the finalized block; returns how many were credited. */
  private async settle(finalized: number): Promise<number> {
    const open = await openDeposits(this.deps.db, this.chain.spec.chainId, finalized);
    const canonical = new Map<number, string | undefined>();
    const prices = new Map<string, Promise<PriceAnswer>>();
    let credited = 0;
    for (const deposit of open) {
      if (!canonical.has(deposit.blockNumber)) canonical.set(deposit.blockNumber, (await this.rpc.block(deposit.blockNumber, false))?.hash);
      const hash = canonical.get(deposit.blockNumber);
      if (hash !== deposit.blockHash) {
        // Not credited while the node does not show the block it was seen in. Marking it
        // REORGED is the rewind's job, which checks continuity; one odd answer here is not.
        this.deps.log.warn({ chain: this.name, deposit: deposit.id }, 'the block of a final deposit is not canonical on the node: not settled');
        continue;
      }
      try {
        if (await this.settleOne(deposit, prices)) credited += 1;
      } catch (error) {
        // A credit the ledger refuses (the account is at its limit) must not hold up the
        // other deposits of the chain: it stays open and is tried again next poll.
        if (!(error instanceof BillingError)) throw error;
        this.deps.log.error({ chain: this.name, deposit: deposit.id, reason: error.reason }, `deposit not credited: ${error.message}`);
      }
    }
    return credited;
  }

  private async settleOne(deposit: DepositRow, prices: Map<string, Promise<PriceAnswer>>): Promise<boolean> {
    const terms = this.deps.terms;
    // One price per token per poll: every deposit of a poll is valued alike.
    let pending = prices.get(deposit.tokenSymbol);
    if (!pending) {
      pending = priceOf(terms.prices.get(deposit.tokenSymbol), this.name, this.rpc, this.now());
      prices.set(deposit.tokenSymbol, pending);
    }
    const price = await pending;
    if (!price.ok) {
      if (deposit.status === 'PENDING') {
        await settleDeposit(this.deps.db, deposit.id, { status: 'UNPRICED' });
        this.deps.log.warn({ chain: this.name, deposit: deposit.id, token: deposit.tokenSymbol, why: price.why }, 'deposit unpriced');
      }
      return false;
    }
    const priceUsdCents = formatExact(price.usdCents);
    const creditPriceUsdCents = formatExact(terms.creditPriceUsdCents);
    const value = valueDeposit(deposit.rawAmount, deposit.decimals ?? 0, price.usdCents, terms.creditPriceUsdCents, terms.minimumUsdCents);
    if (value.belowMinimum || value.millicredits === 0n) {
      await settleDeposit(this.deps.db, deposit.id, { status: 'BELOW_MINIMUM', priceUsdCents, creditPriceUsdCents });
      return false;
    }
    const result = await this.deps.credit({
      deposit,
      chain: this.name,
      millicredits: value.millicredits,
      priceUsdCents,
      creditPriceUsdCents,
    });
    if (result) {
      this.deps.log.info(
        { chain: this.name, deposit: deposit.id, user: deposit.userId, millicredits: value.millicredits.toString(), transaction: result.transaction.id },
        'deposit credited',
      );
    }
    return result !== undefined;
  }

  private now(): number {
    return this.deps.nowSeconds ? this.deps.nowSeconds() : Date.now() / 1000;
  }

  stop(): void {
    this.rpc.destroy();
  }
}
