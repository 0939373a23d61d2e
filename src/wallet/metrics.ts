// The wallet's Prometheus metrics, per chain: head, finalized block, cursor, lag, deposits
// by status (read from the database at scrape time), RPC errors, distrusted polls, reorgs.
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Database } from '../storage/database.js';
import { depositCounts } from './sql.js';
import { CHAINS } from './chains.js';

export interface WalletMetrics {
  readonly head: Gauge<'chain'>;
  readonly finalized: Gauge<'chain'>;
  readonly cursor: Gauge<'chain'>;
  readonly lag: Gauge<'chain'>;
  readonly rpcErrors: Counter<'chain' | 'kind'>;
  readonly distrusted: Counter<'chain'>;
  readonly reorgs: Counter<'chain'>;
}

export function createWalletMetrics(registry: Registry, db: Database): WalletMetrics {
  const chainName = new Map(CHAINS.map((c) => [c.chainId, c.name]));
  const gauge = (name: string, help: string) => new Gauge({ name, help, labelNames: ['chain'] as const, registers: [registry] });
  new Gauge({
    name: 'billing_deposits',
    help: 'Deposits recorded, by chain and status.',
    labelNames: ['chain', 'status'] as const,
    registers: [registry],
    async collect() {
      this.reset();
      for (const row of await depositCounts(db)) {
        this.set({ chain: chainName.get(row.chainId) ?? String(row.chainId), status: row.status }, row.count);
      }
    },
  });
  return {
    head: gauge('billing_wallet_head_block', 'The chain head at the last poll.'),
    finalized: gauge('billing_wallet_finalized_block', 'The block at or below which deposits are final, at the last poll.'),
    cursor: gauge('billing_wallet_cursor_block', 'The last block scanned for deposits.'),
    lag: gauge('billing_wallet_lag_blocks', 'Blocks between the head and the last block scanned.'),
    rpcErrors: new Counter({
      name: 'billing_wallet_rpc_errors_total',
      help: 'Failed polls, by chain and kind (rpc, deep-reorg, internal).',
      labelNames: ['chain', 'kind'] as const,
      registers: [registry],
    }),
    distrusted: new Counter({
      name: 'billing_wallet_distrusted_polls_total',
      help: 'Polls skipped because the node reported its head or finalized block going backwards.',
      labelNames: ['chain'] as const,
      registers: [registry],
    }),
    reorgs: new Counter({
      name: 'billing_wallet_reorgs_total',
      help: 'Reorganisations that rewound the cursor.',
      labelNames: ['chain'] as const,
      registers: [registry],
    }),
  };
}
