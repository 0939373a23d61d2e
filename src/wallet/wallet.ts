// The wallet: deposit addresses for users, their deposits, and one watcher per configured
// chain polling in the background. Off (every call FAILED_PRECONDITION, WALLET_DISABLED)
// without key material, chains or the catalogue's deposit terms; the rest of the service
// runs either way.
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { DepositTerms, WalletConfig } from '../config.js';
import { BillingError } from '../domain/errors.js';
import { isId, pageSize as pageSizeOf } from '../domain/request.js';
import { cutPage, pageCodec } from '../domain/paging.js';
import { creditDeposit } from '../ledger/deposits/credit.js';
import type { Kernel } from '../ledger/kernel/unit-of-work.js';
import type { Database } from '../storage/database.js';
import { addressSamples, allocateAddress, type DepositRow, findAddress, listDeposits } from './sql.js';
import { AddressBook } from './address-book.js';
import { paymentUri, type TokenSpec } from './chains.js';
import type { WalletKeys } from './keys.js';
import { createWalletMetrics, type WalletMetrics } from './metrics.js';
import { formatExact } from './pricing.js';
import { ChainRpcError } from './rpc.js';
import { ChainWatcher, DeepReorgError, type PollReport, type WatcherState } from './watcher.js';

/** Longest wait for the chains' first check at start-up. */
const PREPARE_TIMEOUT_MS = 5_000;

/** Longest wait between polls after repeated RPC errors. */
const BACKOFF_SECONDS_MAX = 300;

/** A deposit as callers see it (the row keeps more: the token's decimals). */
export type DepositView = Omit<DepositRow, 'decimals'>;

function depositView(row: DepositRow): DepositView {
  const { decimals: _decimals, ...view } = row;
  return view;
}

export interface DepositAddressView {
  address: string;
  derivationIndex: number;
  chains: { chainId: number; name: string; paymentUri: string; finality: string }[];
  tokens: (TokenSpec & { chainId: number; paymentUri: string })[];
  minimumUsdCents: bigint;
  creditPriceUsdCents: string;
}

const DEPOSIT_PAGES = pageCodec('d1.', isId);

/** One chain's watcher for GetWatcherStatus: its state and what its last poll saw. */
export interface WatcherStatusView {
  chainId: number;
  name: string;
  finality: string;
  state: WatcherState;
  /** This process polls it on its schedule (the loop started, not stopped, the chain not refused). */
  running: boolean;
  refusal: string;
  head: number;
  finalized: number;
  cursor: number;
  /** head − cursor, at least 0 (as billing_wallet_lag_blocks). */
  lag: number;
  /** finalized − cursor, at least 0: final blocks not scanned yet. */
  finalLag: number;
  lastPollAtMs: number | undefined;
  lastError: string;
}

export class Wallet {
  readonly watchers: ChainWatcher[];
  private readonly metrics: WalletMetrics;
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly inflight = new Set<Promise<void>>();
  private stopped = false;
  private started = false;

  private readonly db: Database;

  constructor(
    kernel: Kernel,
    private readonly config: WalletConfig,
    private readonly log: Logger,
    registry: Registry,
  ) {
    const db = kernel.db;
    this.db = db;
    this.metrics = createWalletMetrics(registry, db);
    const terms = config.terms;
    const addresses = new AddressBook(db);
    this.watchers = config.keys && terms
      ? config.chains.map(
          (chain) =>
            new ChainWatcher(chain, {
              db,
              credit: (credit) => creditDeposit(kernel, credit),
              terms,
              addresses,
              blocksPerPoll: config.blocksPerPoll,
              metrics: this.metrics,
              log,
            }),
        )
      : [];
  }

  get enabled(): boolean {
    return this.config.keys !== undefined;
  }

  /**
   * Refuses keys that do not derive the addresses already handed out (a wrong seed or
   * xpub would watch, and show users, addresses nobody has sent to).
   */
  async checkKeys(): Promise<void> {
    const keys = this.config.keys;
    if (!keys) return;
    for (const row of await addressSamples(this.db)) {
      if (keys.addressAt(row.derivationIndex).toLowerCase() !== row.address) {
        throw new Error(
          `refusing to start: the wallet keys (${keys.source}) do not derive the deposit address already given to ` +
            `user index ${row.derivationIndex}; this is not the seed these addresses came from`,
        );
      }
    }
  }

  /**
   * Checks every chain once (chain id, finalized tag, cursor), waiting at most
   * PREPARE_TIMEOUT_MS: a chain is offered to users only once it is being watched. A chain
   * that does not answer yet is checked again by its first poll.
   */
  async prepare(): Promise<void> {
    const checks = this.watchers.map((w) =>
      w.check().catch((error: unknown) => {
        this.log.warn({ chain: w.name, error: (error as Error).message }, 'chain not checked yet; the first poll tries again');
      }),
    );
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(checks), new Promise((resolve) => (timer = setTimeout(resolve, PREPARE_TIMEOUT_MS)))]);
    clearTimeout(timer);
  }

  /** Starts every chain's poll loop. */
  start(): void {
    this.started = true;
    for (const watcher of this.watchers) this.schedule(watcher, 0, 0);
  }

  private schedule(watcher: ChainWatcher, delayMs: number, failures: number): void {
    if (this.stopped) return;
    const timer = setTimeout(() => {
      const poll = this.pollLoop(watcher, failures).finally(() => this.inflight.delete(poll));
      this.inflight.add(poll);
    }, delayMs);
    timer.unref();
    this.timers.set(watcher.name, timer);
  }

  private async pollLoop(watcher: ChainWatcher, failures: number): Promise<void> {
    const interval = this.config.pollSeconds * 1000;
    try {
      const report = await watcher.pollOnce();
      if (report.skipped === 'refused') return;
      this.schedule(watcher, report.behind ? 0 : interval, 0);
    } catch (error) {
      const kind = error instanceof ChainRpcError ? 'rpc' : error instanceof DeepReorgError ? 'deep-reorg' : 'internal';
      this.metrics.rpcErrors.inc({ chain: watcher.name, kind });
      const backoff = Math.min(interval * 2 ** failures, BACKOFF_SECONDS_MAX * 1000);
      // A ChainRpcError's message is safe (no URL); anything else is logged by its message only.
      this.log.warn({ chain: watcher.name, failures: failures + 1, retryInMs: backoff, error: (error as Error).message }, 'deposit poll failed');
      this.schedule(watcher, backoff, failures + 1);
    }
  }

  /** One poll of every chain, in turn (tests and the CLI). */
  async pollAll(): Promise<PollReport[]> {
    const reports: PollReport[] = [];
    for (const watcher of this.watchers) reports.push(await watcher.pollOnce());
    return reports;
  }

  private require(): { keys: WalletKeys; terms: DepositTerms } {
    const { keys, terms } = this.config;
    if (!keys || !terms) throw new BillingError('WALLET_DISABLED', this.config.disabledReason ?? 'crypto deposits are off');
    if (this.watchers.every((w) => w.state === 'refused')) {
      throw new BillingError(
        'WALLET_DISABLED',
        `crypto deposits are off: no configured chain can be watched (${this.watchers.map((w) => w.refusal).join('; ')})`,
      );
    }
    return { keys, terms };
  }

  async getDepositAddress(userId: string): Promise<DepositAddressView> {
    const { keys, terms } = this.require();
    // An address is shown for a chain only once its cursor exists: whatever is sent to it
    // after that is in a block the watcher will scan.
    if (!this.watchers.some((w) => w.state === 'watching')) {
      throw new BillingError('WALLET_NOT_READY', 'crypto deposits are not available yet: no chain has answered its start-up check; try again shortly');
    }
    const row = (await findAddress(this.db, userId)) ?? (await allocateAddress(this.db, userId, (i) => keys.addressAt(i)));
    const address = keys.addressAt(row.derivationIndex);
    if (address.toLowerCase() !== row.address) throw new Error(`deposit address of ${userId} does not re-derive from its index`);
    const watched = this.watchers.filter((w) => w.state === 'watching');
    return {
      address,
      derivationIndex: row.derivationIndex,
      chains: watched.map((w) => ({
        chainId: w.chain.spec.chainId,
        name: w.name,
        paymentUri: paymentUri(w.chain.spec.chainId, address),
        finality: w.chain.confirmations === undefined ? 'finalized' : `depth:${w.chain.confirmations}`,
      })),
      tokens: watched.flatMap((w) =>
        (terms.tokens.get(w.name) ?? []).map((t) => ({ ...t, chainId: w.chain.spec.chainId, paymentUri: paymentUri(w.chain.spec.chainId, address, t) })),
      ),
      minimumUsdCents: terms.minimumUsdCents,
      creditPriceUsdCents: formatExact(terms.creditPriceUsdCents),
    };
  }

  async listDeposits(input: { userId: string; pageSize: number; pageToken: string }): Promise<{ deposits: DepositView[]; nextPageToken: string }> {
    this.require();
    const pageSize = pageSizeOf(input.pageSize);
    const beforeId = DEPOSIT_PAGES.decode(input.pageToken);
    const rows = await listDeposits(this.db, input.userId, { ...(beforeId ? { beforeId } : {}), limit: pageSize + 1 });
    const { page, nextPageToken } = cutPage(rows, pageSize, DEPOSIT_PAGES, (row) => row.id);
    return { deposits: page.map(depositView), nextPageToken };
  }

  /**
   * Every configured chain's watcher, in configuration order; empty when deposits are off.
   * The numbers are those the metrics were last set to (0 before the first poll).
   */
  watcherStatus(): WatcherStatusView[] {
    return this.watchers.map((w) => {
      const { head = 0, finalized = 0, cursor = 0, lastPollAtMs, lastError = '' } = w.observed;
      return {
        chainId: w.chain.spec.chainId,
        name: w.name,
        finality: w.chain.confirmations === undefined ? 'finalized' : `depth:${w.chain.confirmations}`,
        state: w.state,
        running: this.started && !this.stopped && w.state !== 'refused',
        refusal: w.refusal ?? '',
        head,
        finalized,
        cursor,
        lag: Math.max(0, head - cursor),
        finalLag: Math.max(0, finalized - cursor),
        lastPollAtMs,
        lastError,
      };
    });
  }

  /** Stops the poll loops and waits for a poll under way to finish. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    await Promise.all([...this.inflight]);
    for (const watcher of this.watchers) watcher.stop();
  }
}
