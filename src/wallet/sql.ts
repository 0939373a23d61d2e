// The wallet's SQL: deposit addresses, chain cursors with the hashes of recent blocks, and
// detected deposits. Each function is one statement (or one short transaction of its own,
// where the name says so). Addresses are stored lower-case; callers checksum for display.
import type { Database, Row, SqlSession } from '../storage/database.js';

export type DepositStatus = 'PENDING' | 'CREDITED' | 'BELOW_MINIMUM' | 'UNPRICED' | 'REORGED' | 'UNSUPPORTED';

export interface AddressRow {
  userId: string;
  derivationIndex: number;
  /** Lower-case 0x hex. */
  address: string;
}

export interface DepositRow {
  id: string;
  chainId: number;
  txHash: string;
  logIndex: number;
  userId: string;
  fromAddress: string;
  tokenSymbol: string;
  tokenContract: string;
  decimals: number | undefined;
  rawAmount: bigint;
  blockNumber: number;
  blockHash: string;
  status: DepositStatus;
  priceUsdCents: string;
  creditPriceUsdCents: string;
  creditsMillicredits: bigint;
  transactionId: string;
  detectedAtMs: number;
  /** From the chain's last poll: head − block + 1, at least 0. */
  confirmations: number;
}

/** A transfer seen in a scanned block, before it is stored. */
export type DetectedTransfer = Pick<
  DepositRow,
  'txHash' | 'logIndex' | 'userId' | 'fromAddress' | 'tokenSymbol' | 'tokenContract' | 'decimals' | 'rawAmount' | 'blockNumber' | 'blockHash'
> & {
  /** PENDING for an accepted token, UNSUPPORTED for any other contract. */
  status: 'PENDING' | 'UNSUPPORTED';
};

export interface ChainCursor {
  chainId: number;
  /** The last block fully scanned. */
  number: number;
  hash: string;
  /** The head at the last poll, and the highest finalized block deposits were settled against. */
  headNumber: number;
  finalizedNumber: number;
}

function mapAddress(row: Row): AddressRow {
  return { userId: String(row.user_id), derivationIndex: Number(row.derivation_index), address: String(row.address) };
}

export async function findAddress(s: Pick<SqlSession, 'query'>, userId: string): Promise<AddressRow | undefined> {
  const rows = await s.query('select user_id, derivation_index, address from deposit_addresses where user_id = $1', [userId]);
  return rows[0] ? mapAddress(rows[0]) : undefined;
}

/**
 * Gives the user the next index, in its own transaction. The counter row is the lock that
 * serialises first calls across requests and replicas; the user is looked up again after
 * it is held (a concurrent first call of the same user may have just committed). The
 * UNIQUE constraints on index and address stay as the last line of defence.
 */
export async function allocateAddress(db: Database, userId: string, derive: (index: number) => string): Promise<AddressRow> {
  return db.transaction(async (s) => {
    const counter = await s.query('select last_index from deposit_address_counter where id for update');
    const existing = await findAddress(s, userId);
    if (existing) return existing;
    const index = Number(counter[0]?.last_index ?? 0) + 1;
    const address = derive(index).toLowerCase();
    await s.query('update deposit_address_counter set last_index = $1 where id', [index]);
    await s.query('insert into deposit_addresses (user_id, derivation_index, address) values ($1, $2, $3)', [userId, index, address]);
    return { userId, derivationIndex: index, address };
  });
}

/** Addresses with an index above `afterIndex`, in index order (the watcher's incremental load). */
export async function addressesAfter(s: Pick<SqlSession, 'query'>, afterIndex: number): Promise<AddressRow[]> {
  const rows = await s.query(
    'select user_id, derivation_index, address from deposit_addresses where derivation_index > $1 order by derivation_index',
    [afterIndex],
  );
  return rows.map(mapAddress);
}

/** The lowest and highest allocated addresses, to check at start that the keys still derive them. */
export async function addressSamples(s: Pick<SqlSession, 'query'>): Promise<AddressRow[]> {
  const rows = await s.query(
    `(select user_id, derivation_index, address from deposit_addresses order by derivation_index limit 1)
     union all
     (select user_id, derivation_index, address from deposit_addresses order by derivation_index desc limit 1)`,
  );
  return rows.map(mapAddress);
}

function mapCursor(row: Row): ChainCursor {
  return {
    chainId: Number(row.chain_id),
    number: Number(row.cursor_number),
    hash: String(row.cursor_hash),
    headNumber: Number(row.head_number),
    finalizedNumber: Number(row.finalized_number),
  };
}

export async function readCursor(s: Pick<SqlSession, 'query'>, chainId: number): Promise<ChainCursor | undefined> {
  const rows = await s.query('select * from wallet_chains where chain_id = $1', [chainId]);
  return rows[0] ? mapCursor(rows[0]) : undefined;
}

/** Starts a chain's cursor unless one exists (a concurrent replica's start wins). */
export async function initCursor(db: Database, start: ChainCursor): Promise<ChainCursor> {
  await db.transaction(async (s) => {
    const rows = await s.query(
      `insert into wallet_chains (chain_id, cursor_number, cursor_hash, head_number, finalized_number)
       values ($1, $2, $3, $4, $5) on conflict (chain_id) do nothing returning chain_id`,
      [start.chainId, start.number, start.hash, start.headNumber, start.finalizedNumber],
    );
    if (rows.length === 1) {
      await s.query('insert into wallet_blocks (chain_id, number, hash) values ($1, $2, $3)', [start.chainId, start.number, start.hash]);
    }
  });
  const cursor = await readCursor(db, start.chainId);
  if (!cursor) throw new Error(`chain ${start.chainId}: cursor vanished`);
  return cursor;
}

/** Locks the chain's cursor row for the rest of the transaction. */
export async function lockCursor(s: SqlSession, chainId: number): Promise<ChainCursor> {
  const rows = await s.query('select * from wallet_chains where chain_id = $1 for update', [chainId]);
  if (!rows[0]) throw new Error(`chain ${chainId} has no cursor`);
  return mapCursor(rows[0]);
}

/** Records the head seen at the last poll (for confirmations and metrics only). */
export async function recordTips(s: Pick<SqlSession, 'query'>, chainId: number, head: number): Promise<void> {
  await s.query('update wallet_chains set head_number = $2, updated_at = now() where chain_id = $1', [chainId, head]);
}

/** Records the finalized block deposits were settled against; it only ever increases. */
export async function recordFinalized(s: Pick<SqlSession, 'query'>, chainId: number, finalized: number): Promise<void> {
  await s.query(
    'update wallet_chains set finalized_number = greatest(finalized_number, $2), updated_at = now() where chain_id = $1',
    [chainId, finalized],
  );
}

/** Moves the cursor (under lockCursor) and keeps the hashes of the blocks just scanned. */
export async function advanceCursor(
  s: SqlSession,
  chainId: number,
  blocks: readonly { number: number; hash: string }[],
  keepFrom: number,
): Promise<void> {
  const last = blocks[blocks.length - 1];
  if (!last) return;
  await s.query(
    `insert into wallet_blocks (chain_id, number, hash) select $1, n, h from unnest($2::bigint[], $3::text[]) as b (n, h)
     on conflict (chain_id, number) do update set hash = excluded.hash`,
    [chainId, blocks.map((b) => b.number), blocks.map((b) => b.hash)],
  );
  await s.query('update wallet_chains set cursor_number = $2, cursor_hash = $3, updated_at = now() where chain_id = $1', [
    chainId,
    last.number,
    last.hash,
  ]);
  // Hashes below the finalized block are no longer needed to find a common ancestor.
  await s.query('delete from wallet_blocks where chain_id = $1 and number < $2', [chainId, keepFrom]);
}

/** The hash this chain's scan recorded for a block, if it is still kept. */
export async function scannedHash(s: Pick<SqlSession, 'query'>, chainId: number, number: number): Promise<string | undefined> {
  const rows = await s.query('select hash from wallet_blocks where chain_id = $1 and number = $2', [chainId, number]);
  return rows[0] ? String(rows[0].hash) : undefined;
}

/**
 * Rewinds the cursor (under lockCursor) to a common ancestor after a reorganisation: the
 * pending deposits above it are marked REORGED, the forgotten block hashes dropped.
 * Returns the deposits marked.
 */
export async function rewindCursor(s: SqlSession, chainId: number, ancestor: { number: number; hash: string }): Promise<number> {
  const marked = await s.query(
    `update deposits set status = 'REORGED', updated_at = now()
      where chain_id = $1 and block_number > $2 and status = 'PENDING' returning id`,
    [chainId, ancestor.number],
  );
  await s.query('delete from wallet_blocks where chain_id = $1 and number > $2', [chainId, ancestor.number]);
  await s.query('update wallet_chains set cursor_number = $2, cursor_hash = $3, updated_at = now() where chain_id = $1', [
    chainId,
    ancestor.number,
    ancestor.hash,
  ]);
  return marked.length;
}

/**
 * Stores transfers seen in scanned blocks. Seeing one again is a no-op, except that a
 * pending or reorganised deposit seen in a different block (mined again after a
 * reorganisation) moves to that block and is pending again.
 */
export async function upsertDeposits(s: SqlSession, chainId: number, transfers: readonly DetectedTransfer[]): Promise<void> {
  if (transfers.length === 0) return;
  await s.query(
    `insert into deposits (chain_id, tx_hash, log_index, user_id, from_address, token_symbol, token_contract, decimals,
                           raw_amount, block_number, block_hash, status)
     select $1, t.tx_hash, t.log_index, t.user_id, t.from_address, t.token_symbol, t.token_contract, t.decimals,
            t.raw_amount::numeric, t.block_number, t.block_hash, t.status
       from unnest($2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[],
                   $10::bigint[], $11::text[], $12::text[])
         as t (tx_hash, log_index, user_id, from_address, token_symbol, token_contract, decimals, raw_amount,
               block_number, block_hash, status)
     on conflict (chain_id, tx_hash, log_index) do update
        set block_number = excluded.block_number, block_hash = excluded.block_hash, status = 'PENDING', updated_at = now()
      where deposits.status = 'REORGED' or (deposits.status = 'PENDING' and deposits.block_hash <> excluded.block_hash)`,
    [
      chainId,
      transfers.map((t) => t.txHash),
      transfers.map((t) => t.logIndex),
      transfers.map((t) => t.userId),
      transfers.map((t) => t.fromAddress),
      transfers.map((t) => t.tokenSymbol),
      transfers.map((t) => t.tokenContract),
      transfers.map((t) => t.decimals ?? null),
      transfers.map((t) => t.rawAmount.toString()),
      transfers.map((t) => t.blockNumber),
      transfers.map((t) => t.blockHash),
      transfers.map((t) => t.status),
    ],
  );
}

const DEPOSIT_COLUMNS = `d.id::text as id, d.chain_id, d.tx_hash, d.log_index, d.user_id, d.from_address, d.token_symbol,
  d.token_contract, d.decimals, d.raw_amount::text as raw_amount, d.block_number, d.block_hash, d.status,
  d.price_usd_cents, d.credit_price_usd_cents, d.credits_millicredits::text as credits, d.transaction_id::text as transaction_id,
  floor(extract(epoch from d.detected_at) * 1000)::text as detected_ms,
  greatest(coalesce(c.head_number, 0) - d.block_number + 1, 0) as confirmations`;

function mapDeposit(row: Row): DepositRow {
  return {
    id: String(row.id),
    chainId: Number(row.chain_id),
    txHash: String(row.tx_hash),
    logIndex: Number(row.log_index),
    userId: String(row.user_id),
    fromAddress: String(row.from_address),
    tokenSymbol: String(row.token_symbol),
    tokenContract: String(row.token_contract),
    decimals: row.decimals === null || row.decimals === undefined ? undefined : Number(row.decimals),
    rawAmount: BigInt(String(row.raw_amount)),
    blockNumber: Number(row.block_number),
    blockHash: String(row.block_hash),
    status: row.status as DepositStatus,
    priceUsdCents: String(row.price_usd_cents ?? ''),
    creditPriceUsdCents: String(row.credit_price_usd_cents ?? ''),
    creditsMillicredits: BigInt(String(row.credits)),
    transactionId: String(row.transaction_id ?? ''),
    detectedAtMs: Number(row.detected_ms),
    confirmations: Number(row.confirmations),
  };
}

/** One page of a user's deposits, newest first, strictly older than beforeId if given. */
export async function listDeposits(
  s: Pick<SqlSession, 'query'>,
  userId: string,
  options: { beforeId?: string; limit: number },
): Promise<DepositRow[]> {
  const rows = await s.query(
    `select ${DEPOSIT_COLUMNS} from deposits d left join wallet_chains c on c.chain_id = d.chain_id
      where d.user_id = $1 and ($2::bigint is null or d.id < $2::bigint)
      order by d.id desc limit $3`,
    [userId, options.beforeId ?? null, options.limit],
  );
  return rows.map(mapDeposit);
}

/** Deposits of a chain waiting for finality or a price, with blocks at or below `finalized`. */
export async function openDeposits(s: Pick<SqlSession, 'query'>, chainId: number, finalized: number): Promise<DepositRow[]> {
  const rows = await s.query(
    `select ${DEPOSIT_COLUMNS} from deposits d left join wallet_chains c on c.chain_id = d.chain_id
      where d.chain_id = $1 and d.status in ('PENDING', 'UNPRICED') and d.block_number <= $2
      order by d.status = 'UNPRICED', d.block_number, d.id limit 500`,
    [chainId, finalized],
  );
  return rows.map(mapDeposit);
}

/** Locks one deposit row and returns it as it stands now. */
export async function lockDeposit(s: SqlSession, id: string): Promise<DepositRow | undefined> {
  await s.query('select id from deposits where id = $1 for update', [id]);
  const rows = await s.query(
    `select ${DEPOSIT_COLUMNS} from deposits d left join wallet_chains c on c.chain_id = d.chain_id where d.id = $1`,
    [id],
  );
  return rows[0] ? mapDeposit(rows[0]) : undefined;
}

/**
 * Settles an open deposit: CREDITED (with its ledger transaction), BELOW_MINIMUM or
 * UNPRICED (REORGED is only ever set by rewindCursor). Only a PENDING or UNPRICED deposit
 * changes; returns whether this one did.
 */
export async function settleDeposit(
  s: Pick<SqlSession, 'query'>,
  id: string,
  outcome: {
    status: 'CREDITED' | 'BELOW_MINIMUM' | 'UNPRICED';
    priceUsdCents?: string;
    creditPriceUsdCents?: string;
    creditsMillicredits?: bigint;
    transactionId?: string;
  },
): Promise<boolean> {
  const rows = await s.query(
    `update deposits set status = $2, price_usd_cents = coalesce($3, price_usd_cents),
            credit_price_usd_cents = coalesce($4, credit_price_usd_cents), credits_millicredits = $5::bigint,
            transaction_id = $6::bigint, updated_at = now()
      where id = $1 and status in ('PENDING', 'UNPRICED') returning id`,
    [
      id,
      outcome.status,
      outcome.priceUsdCents ?? null,
      outcome.creditPriceUsdCents ?? null,
      (outcome.creditsMillicredits ?? 0n).toString(),
      outcome.transactionId ?? null,
    ],
  );
  return rows.length === 1;
}

/** Deposits per chain and status, for the metrics. */
export async function depositCounts(s: Pick<SqlSession, 'query'>): Promise<{ chainId: number; status: DepositStatus; count: number }[]> {
  const rows = await s.query('select chain_id, status, count(*)::int as n from deposits group by chain_id, status');
  return rows.map((r) => ({ chainId: Number(r.chain_id), status: r.status as DepositStatus, count: Number(r.n) }));
}
