// Crypto deposits end to end against a real chain node: anvil playing Base (chain 8453),
// the real service on PostgreSQL, the mu catalogue (USDC at its official Base address,
// ETH priced by a Chainlink feed at Base's ETH/USD address, both placed there with
// anvil_setCode). The watcher is polled by hand, so each step is deterministic.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Code } from '@connectrpc/connect';
import { getAddress, Interface, parseEther } from 'ethers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { DepositStatus, WatcherState } from '../../gen/billing/v1/wallet_service_pb.js';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { accountNodeFromMnemonic } from '../../src/wallet/keys.js';
import { BASE_ETH_USD_FEED, BASE_USDC, type Chain, compileContracts, ETH_USD_3000, placeBaseFixtures, startAnvil } from '../support/chain.js';
import { failure, startTestApp, type TestApp } from '../support/app.js';

// A fixed 24-word test mnemonic (never holds funds): "abandon" × 23 + "art".
const SEED = `${'abandon '.repeat(23)}art`;
const USDC = BASE_USDC;
const ETH_USD = ETH_USD_3000;
/** Anvil's finalized block trails its head by this many blocks. */
const FINALITY = 64;

let chain: Chain;
let t: TestApp;

const now = () => BigInt(Math.floor(Date.now() / 1000));

async function poll(times = 1) {
  for (let i = 0; i < times; i += 1) await t.app.wallet.pollAll();
}

/** Mines past finality and polls until the watcher has settled what is final. */
async function finalize() {
  await chain.mine(FINALITY + 1);
  await poll(3);
}

async function deposits(userId: string) {
  return (await t.wallet.listDeposits({ userId, pageSize: 100 })).deposits;
}

async function balance(userId: string) {
  return (await t.billing.getBalance({ userId })).balance!.balanceMillicredits;
}

beforeAll(async () => {
  chain = await startAnvil({ chainId: 8453 });
  await placeBaseFixtures(chain);
  t = await startTestApp({ catalogue: 'mu', env: { BASE_RPC_URL: chain.url, WALLET_SEED: SEED } });
});

afterAll(async () => {
  await t?.close();
  await chain?.stop();
});

describe('deposit addresses', () => {
  it('gives a user index 1 first, the same address every time, derived from the seed, with payment URIs', async () => {
    const first = await t.wallet.getDepositAddress({ userId: 'addr-first' });
    const again = await t.wallet.getDepositAddress({ userId: 'addr-first' });
    expect(again.address).toBe(first.address);
    expect(first.derivationIndex).toBeGreaterThanOrEqual(1n);
    expect(first.address).toBe(accountNodeFromMnemonic(SEED).addressAt(Number(first.derivationIndex)));
    expect(first.address).toBe(getAddress(first.address));
    expect(first.chains.map((c) => [c.chainId, c.name, c.paymentUri, c.finality])).toEqual([
      [8453n, 'base', `ethereum:${first.address}@8453`, 'finalized'],
    ]);
    expect(first.tokens.map((k) => [k.symbol, k.contractAddress, k.decimals, k.paymentUri])).toEqual([
      ['ETH', '', 18, `ethereum:${first.address}@8453`],
      ['USDC', USDC, 6, `ethereum:${USDC}@8453/transfer?address=${first.address}`],
    ]);
    expect(first.minimumDepositUsdCents).toBe(100n);
    expect(first.creditPriceUsdCents).toBe('1.27');
  });

  it('gives eight users asking at once eight different, contiguous indexes', async () => {
    const replies = await Promise.all(
      Array.from({ length: 8 }, (_, i) => t.wallet.getDepositAddress({ userId: `addr-race-${i}` })),
    );
    const indexes = replies.map((r) => Number(r.derivationIndex)).sort((a, b) => a - b);
    expect(new Set(indexes).size).toBe(8);
    expect(indexes[7]! - indexes[0]!).toBe(7);
    expect(new Set(replies.map((r) => r.address)).size).toBe(8);
    // And the same user asking eight times at once gets one index.
    const same = await Promise.all(Array.from({ length: 8 }, () => t.wallet.getDepositAddress({ userId: 'addr-same' })));
    expect(new Set(same.map((r) => r.derivationIndex)).size).toBe(1);
  });

  it('never hands out index 0, the treasury', async () => {
    const [row] = await t.app.db.query<{ n: string }>('select count(*)::text as n from deposit_addresses where derivation_index = 0');
    expect(row!.n).toBe('0');
  });

  it('refuses a bad user id, naming the field', async () => {
    const { error, detail } = await failure(t.wallet.getDepositAddress({ userId: '' }));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(detail?.field).toBe('user_id');
  });
});

describe('detection, finality and crediting', () => {
  it('credits ETH once, after finality, at the feed price', async () => {
    const { address } = await t.wallet.getDepositAddress({ userId: 'eth-user' });
    const sent = await chain.sendEth(address, parseEther('0.01'));
    await poll();
    const [pending] = await deposits('eth-user');
    expect(pending).toMatchObject({
      status: DepositStatus.PENDING,
      txHash: sent.hash,
      logIndex: -1n,
      tokenSymbol: 'ETH',
      rawAmount: '10000000000000000',
      blockNumber: BigInt(sent.blockNumber),
      creditsMillicredits: 0n,
    });
    expect(pending!.confirmations).toBeGreaterThanOrEqual(1n);
    expect(await balance('eth-user')).toBe(0n);
    await chain.mine(FINALITY - 10);
    await poll(2);
    expect((await deposits('eth-user'))[0]!.status).toBe(DepositStatus.PENDING);
    await finalize();
    const [credited] = await deposits('eth-user');
    // 0.01 ETH × $3,000 = 3,000 cents; ÷ 1.27 cents = 2,362.204724… credits.
    expect(credited).toMatchObject({
      status: DepositStatus.CREDITED,
      priceUsdCents: '300000',
      creditPriceUsdCents: '1.27',
      creditsMillicredits: 2_362_204n,
    });
    expect(credited!.transactionId).not.toBe('');
    expect(await balance('eth-user')).toBe(2_362_204n);
    await finalize();
    expect(await balance('eth-user')).toBe(2_362_204n);
    const history = await t.billing.listTransactions({ userId: 'eth-user' });
    expect(history.transactions.map((x) => [x.id, x.amountMillicredits])).toEqual([[credited!.transactionId, 2_362_204n]]);
  });

  it('credits USDC at the official contract; a spoof, a reverted and a zero transfer credit nothing; dust is below minimum', async () => {
    const { address } = await t.wallet.getDepositAddress({ userId: 'usdc-user' });
    await chain.mintToken(USDC, await chain.funder.getAddress(), 100_000_000n);
    const good = await chain.transferToken(USDC, address, 5_000_000n);
    const dust = await chain.transferToken(USDC, address, 500_000n);
    await chain.transferToken(USDC, address, 0n);
    const reverted = await chain.transferToken(USDC, address, 10n ** 15n, { gasLimit: 100_000n });
    expect(reverted.status).toBe(0);
    const spoof = await chain.deploySpoof();
    const spoofed = await chain.spoofTransfer(spoof, address, 1_000_000_000n);
    await poll();
    const seen = await deposits('usdc-user');
    expect(seen.map((d) => [d.txHash, d.status]).sort()).toEqual(
      [
        [good.hash, DepositStatus.PENDING],
        [dust.hash, DepositStatus.PENDING],
        [spoofed.hash, DepositStatus.UNSUPPORTED],
      ].sort(),
    );
    const unsupported = seen.find((d) => d.txHash === spoofed.hash)!;
    expect(unsupported.tokenSymbol).toBe('');
    expect(unsupported.tokenContract).toBe(getAddress(spoof));
    await finalize();
    const settled = new Map((await deposits('usdc-user')).map((d) => [d.txHash, d]));
    // 5 USDC = 500 cents ÷ 1.27 = 393.700787… credits.
    expect(settled.get(good.hash)).toMatchObject({ status: DepositStatus.CREDITED, creditsMillicredits: 393_700n, priceUsdCents: '100' });
    expect(settled.get(dust.hash)).toMatchObject({ status: DepositStatus.BELOW_MINIMUM, creditsMillicredits: 0n });
    expect(settled.get(spoofed.hash)!.status).toBe(DepositStatus.UNSUPPORTED);
    expect(await balance('usdc-user')).toBe(393_700n);
  });

  it('leaves ETH unpriced while the feed is stale, and credits it once a fresh price exists', async () => {
    const { address } = await t.wallet.getDepositAddress({ userId: 'stale-user' });
    await chain.setPrice(BASE_ETH_USD_FEED, ETH_USD, now() - 7200n);
    await chain.sendEth(address, parseEther('0.02'));
    await poll();
    await finalize();
    expect((await deposits('stale-user'))[0]).toMatchObject({ status: DepositStatus.UNPRICED, creditsMillicredits: 0n });
    expect(await balance('stale-user')).toBe(0n);
    await poll(2);
    expect(await balance('stale-user')).toBe(0n);
    // A fresh round without a positive answer is no price either.
    await chain.setPrice(BASE_ETH_USD_FEED, 0n, now());
    await poll();
    expect((await deposits('stale-user'))[0]!.status).toBe(DepositStatus.UNPRICED);
    expect(await balance('stale-user')).toBe(0n);
    await chain.setPrice(BASE_ETH_USD_FEED, ETH_USD * 2n, now());
    await poll();
    // 0.02 ETH × $6,000 = 12,000 cents ÷ 1.27 = 9,448.818897… credits.
    expect((await deposits('stale-user'))[0]).toMatchObject({ status: DepositStatus.CREDITED, creditsMillicredits: 9_448_818n, priceUsdCents: '600000' });
    expect(await balance('stale-user')).toBe(9_448_818n);
    await chain.setPrice(BASE_ETH_USD_FEED, ETH_USD, now());
  });

  it('never credits a deposit whose block is reorganised away before finality', async () => {
    const { address } = await t.wallet.getDepositAddress({ userId: 'reorg-user' });
    await poll();
    const before = await chain.head();
    const snapshot = await chain.snapshot();
    await chain.sendEth(address, parseEther('0.01'));
    await chain.mine(2);
    await poll();
    expect((await deposits('reorg-user'))[0]!.status).toBe(DepositStatus.PENDING);
    await chain.revert(snapshot);
    expect(await chain.head()).toBe(before);
    // The other branch grows past the old head (a head going backwards is distrusted).
    await chain.mine(6);
    await poll(2);
    expect((await deposits('reorg-user'))[0]!.status).toBe(DepositStatus.REORGED);
    await finalize();
    expect((await deposits('reorg-user'))[0]!.status).toBe(DepositStatus.REORGED);
    expect(await balance('reorg-user')).toBe(0n);
  });

  it('credits once, from its new block, a deposit mined again after a reorganisation', async () => {
    const { address } = await t.wallet.getDepositAddress({ userId: 'reinclude-user' });
    await poll();
    const snapshot = await chain.snapshot();
    const sent = await chain.sendEth(address, parseEther('0.01'));
    await chain.mine(2);
    await poll();
    await chain.revert(snapshot);
    await chain.mine(1);
    await chain.sendRaw(sent.rawTx);
    await chain.mine(6);
    await poll(3);
    const [again] = await deposits('reinclude-user');
    expect(again).toMatchObject({ status: DepositStatus.PENDING, txHash: sent.hash });
    expect(again!.blockHash).not.toBe(sent.blockHash);
    await finalize();
    const all = await deposits('reinclude-user');
    expect(all).toHaveLength(1);
    expect(all[0]).toMatchObject({ status: DepositStatus.CREDITED, creditsMillicredits: 2_362_204n });
    expect(await balance('reinclude-user')).toBe(2_362_204n);
  });

  it('credits a token transfer once when it is mined again at another log index after a reorganisation', async () => {
    const { address } = await t.wallet.getDepositAddress({ userId: 'relog-user' });
    await chain.mintToken(USDC, await chain.funder.getAddress(), 10_000_000n);
    await poll();
    const snapshot = await chain.snapshot();
    const sent = await chain.transferToken(USDC, address, 2_000_000n);
    await chain.mine(2);
    await poll();
    expect((await deposits('relog-user')).map((d) => [d.logIndex, d.status])).toEqual([[0n, DepositStatus.PENDING]]);
    await chain.revert(snapshot);
    // The other branch mines the same transfer behind another account's mint in one block,
    // so its Transfer log has index 1 there: a different (tx hash, log index) key.
    await chain.rpc('evm_setAutomine', [false]);
    try {
      const other = chain.devAccount(3);
      const { TestToken } = compileContracts();
      const mint = new Interface(TestToken.abi).encodeFunctionData('mint', [other.address, 1n]);
      const [nonce, latest] = await Promise.all([
        chain.rpc<string>('eth_getTransactionCount', [other.address, 'pending']),
        chain.rpc<{ baseFeePerGas: string }>('eth_getBlockByNumber', ['latest', false]),
      ]);
      const rawMint = await other.signTransaction({
        type: 2,
        chainId: 8453,
        nonce: Number(nonce),
        to: USDC,
        data: mint,
        gasLimit: 200_000n,
        maxPriorityFeePerGas: 50_000_000_000n,
        maxFeePerGas: BigInt(latest.baseFeePerGas) * 2n + 50_000_000_000n,
      });
      await chain.sendRaw(rawMint);
      await chain.sendRaw(sent.rawTx);
      await chain.mine(1);
    } finally {
      await chain.rpc('evm_setAutomine', [true]);
    }
    await chain.mine(6);
    await poll(3);
    const rows = new Map((await deposits('relog-user')).map((d) => [d.logIndex, d]));
    expect(rows.get(0n)?.status).toBe(DepositStatus.REORGED);
    expect(rows.get(1n)).toMatchObject({ status: DepositStatus.PENDING, txHash: sent.hash });
    await finalize();
    const settled = await deposits('relog-user');
    expect(settled.map((d) => [d.logIndex, d.status]).sort()).toEqual([
      [0n, DepositStatus.REORGED],
      [1n, DepositStatus.CREDITED],
    ]);
    // 2 USDC = 200 cents ÷ 1.27 = 157.480314… credits, once.
    expect(await balance('relog-user')).toBe(157_480n);
  });

  it('keeps credited deposits and DEPOSIT transactions one to one (VerifyLedger)', async () => {
    const report = await verifyLedger(t.app.db);
    expect(report.violations).toEqual([]);
    const [row] = await t.app.db.query<{ credited: string; txns: string }>(
      `select (select count(*) from deposits where status = 'CREDITED')::text as credited,
              (select count(*) from transactions where type = 'DEPOSIT')::text as txns`,
    );
    expect(Number(row!.credited)).toBeGreaterThanOrEqual(4);
    expect(row!.txns).toBe(row!.credited);
  });

  it('VerifyLedger finds a deposit whose credit differs from its transaction, and a DEPOSIT no deposit names', async () => {
    const [row] = await t.app.db.query<{ id: string; txn: string; credits: string }>(
      `select id::text, transaction_id::text as txn, credits_millicredits::text as credits from deposits
        where status = 'CREDITED' order by id limit 1`,
    );
    const pairs = async () => (await verifyLedger(t.app.db)).violations.filter((v) => v.invariant === 'deposit_matches_transaction');
    await t.app.db.query('update deposits set credits_millicredits = credits_millicredits + 1 where id = $1', [row!.id]);
    expect((await pairs()).map((v) => [v.transactionId, v.description])).toEqual([
      [row!.txn, `deposit ${row!.id} credited ${BigInt(row!.credits) + 1n} but its transaction moved ${row!.credits}`],
    ]);
    await t.app.db.query('update deposits set credits_millicredits = $2 where id = $1', [row!.id, row!.credits]);
    const [orphan] = await t.app.db.query<{ id: string }>(
      `insert into transactions (user_id, type, amount_millicredits, balance_after_millicredits)
       values ('eth-user', 'DEPOSIT', 0, 0) returning id::text`,
    );
    expect((await pairs()).map((v) => [v.transactionId, v.description])).toEqual([
      [orphan!.id, 'a DEPOSIT transaction that no credited deposit names'],
    ]);
    await t.app.db.query('delete from transactions where id = $1', [orphan!.id]);
    expect(await pairs()).toEqual([]);
  });

  it('exports per-chain metrics: head, finalized, cursor, lag and deposits by status', async () => {
    await poll();
    const text = await t.app.metrics.registry.metrics();
    const value = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
    const head = await chain.head();
    expect(value('billing_wallet_head_block\\{chain="base"\\}')).toBe(head);
    expect(value('billing_wallet_finalized_block\\{chain="base"\\}')).toBe(head - FINALITY);
    expect(value('billing_wallet_cursor_block\\{chain="base"\\}')).toBe(head);
    expect(value('billing_wallet_lag_blocks\\{chain="base"\\}')).toBe(0);
    expect(value('billing_deposits\\{chain="base",status="CREDITED"\\}')).toBeGreaterThanOrEqual(4);
    expect(value('billing_deposits\\{chain="base",status="UNSUPPORTED"\\}')).toBe(1);
    expect(value('billing_wallet_reorgs_total\\{chain="base"\\}')).toBeGreaterThanOrEqual(2);
    expect(text).not.toContain(SEED.split(' ')[0]!);
  });

  it('GetWatcherStatus reports the head, finalized block and cursor the chain has, and they move as blocks are mined', async () => {
    const watchers = async () => (await t.wallet.getWatcherStatus({})).watchers;
    await poll();
    const head = await chain.head();
    const [base, ...others] = await watchers();
    expect(others).toEqual([]);
    expect(base).toMatchObject({
      chainId: 8453n,
      name: 'base',
      finality: 'finalized',
      state: WatcherState.WATCHING,
      // The test app does not start the poll loop (the test polls by hand).
      running: false,
      refusal: '',
      headBlock: BigInt(head),
      finalizedBlock: BigInt(head - FINALITY),
      cursorBlock: BigInt(head),
      lagBlocks: 0n,
      finalLagBlocks: 0n,
      lastError: '',
    });
    const firstPollMs = timestampMs(base!.lastPollAt!);
    expect(Math.abs(firstPollMs - Date.now())).toBeLessThan(60_000);
    // Mined but not polled: the status is the last poll's, like the metrics.
    await chain.mine(250);
    expect((await watchers())[0]!.headBlock).toBe(BigInt(head));
    // One poll scans DEPOSIT_BLOCKS_PER_POLL (100) blocks: the cursor trails the head by 150
    // and the finalized block (64 behind the head) by 86.
    await poll();
    const behind = (await watchers())[0]!;
    expect([behind.headBlock, behind.finalizedBlock, behind.cursorBlock, behind.lagBlocks, behind.finalLagBlocks]).toEqual([
      BigInt(head + 250),
      BigInt(head + 250 - FINALITY),
      BigInt(head + 100),
      150n,
      86n,
    ]);
    expect(timestampMs(behind.lastPollAt!)).toBeGreaterThanOrEqual(firstPollMs);
    // The same numbers as the metrics.
    const text = await t.app.metrics.registry.metrics();
    expect(text).toContain(`billing_wallet_cursor_block{chain="base"} ${head + 100}`);
    expect(text).toContain(`billing_wallet_lag_blocks{chain="base"} 150`);
    await poll(2);
    const caughtUp = (await watchers())[0]!;
    expect([caughtUp.cursorBlock, caughtUp.lagBlocks, caughtUp.finalLagBlocks]).toEqual([BigInt(head + 250), 0n, 0n]);
  });

  it('pages deposits newest first', async () => {
    const first = await t.wallet.listDeposits({ userId: 'usdc-user', pageSize: 1 });
    const second = await t.wallet.listDeposits({ userId: 'usdc-user', pageSize: 100, pageToken: first.nextPageToken });
    const ids = [...first.deposits, ...second.deposits].map((d) => BigInt(d.id));
    expect(ids).toHaveLength(3);
    expect([...ids].sort((a, b) => (a > b ? -1 : 1))).toEqual(ids);
    const { detail } = await failure(t.wallet.listDeposits({ userId: 'usdc-user', pageToken: 'garbage' }));
    expect(detail?.field).toBe('page_token');
  });
});

describe('a wallet that is off or pointed at the wrong chain', () => {
  it('answers FAILED_PRECONDITION WALLET_DISABLED without chains, and the rest runs', async () => {
    const off = await startTestApp({ catalogue: 'mu', embedded: true, env: { WALLET_SEED: SEED } });
    try {
      const { error, detail } = await failure(off.wallet.getDepositAddress({ userId: 'u' }));
      expect(error.code).toBe(Code.FailedPrecondition);
      expect(detail?.reason).toBe(ErrorReason.WALLET_DISABLED);
      expect(error.rawMessage).toContain('no chain RPC URL');
      expect((await failure(off.wallet.listDeposits({ userId: 'u' }))).detail?.reason).toBe(ErrorReason.WALLET_DISABLED);
      // The operators' view is not refused: no chain, no watcher.
      expect((await off.wallet.getWatcherStatus({})).watchers).toEqual([]);
      expect((await off.billing.getBalance({ userId: 'u' })).balance?.balanceMillicredits).toBe(0n);
    } finally {
      await off.close();
    }
  });

  it('fails a poll against an endpoint that does not answer with an error that does not quote the URL', async () => {
    const dead = await startTestApp({
      catalogue: 'mu',
      embedded: true,
      env: { BASE_RPC_URL: 'http://127.0.0.1:9/v2/SECRETKEY123', WALLET_SEED: SEED },
    });
    try {
      const error = await dead.app.wallet.pollAll().then(() => undefined, (e: unknown) => e as Error);
      expect(error?.name).toBe('ChainRpcError');
      expect(error?.message).toMatch(/^base: eth_chainId failed/);
      expect(error?.message).not.toContain('SECRETKEY123');
      expect(error?.message).not.toContain('127.0.0.1');
      expect(dead.app.wallet.watchers[0]!.state).toBe('starting');
      // GetWatcherStatus shows the chain starting, never polled, with the poll's error (no URL).
      const [status] = (await dead.wallet.getWatcherStatus({})).watchers;
      expect(status).toMatchObject({ name: 'base', state: WatcherState.STARTING, headBlock: 0n, cursorBlock: 0n });
      expect(status!.lastPollAt).toBeUndefined();
      expect(status!.lastError).toMatch(/^base: eth_chainId failed/);
      expect(status!.lastError).not.toContain('SECRETKEY123');
      // No address is handed out for a chain that is not watched yet; the history still reads.
      const { error: notReady, detail } = await failure(dead.wallet.getDepositAddress({ userId: 'u' }));
      expect([notReady.code, detail?.reason]).toEqual([Code.Unavailable, ErrorReason.WALLET_NOT_READY]);
      expect((await dead.wallet.listDeposits({ userId: 'u' })).deposits).toEqual([]);
    } finally {
      await dead.close();
    }
  });

  it('refuses a node without the finalized tag, and with a confirmation depth credits at that depth', async () => {
    // A JSON-RPC proxy in front of anvil that answers the "finalized" tag as some L2
    // providers do: with an error.
    const proxy = http.createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        const call = JSON.parse(body) as { id: number; method: string; params: unknown[] };
        if (call.method === 'eth_getBlockByNumber' && call.params[0] === 'finalized') {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ jsonrpc: '2.0', id: call.id, error: { code: -32602, message: 'invalid block tag' } }));
          return;
        }
        fetch(chain.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then(
          async (r) => res.writeHead(r.status, { 'content-type': 'application/json' }).end(await r.text()),
          () => res.writeHead(502).end(),
        );
      });
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/`;
    const database = t.database!.url;
    try {
      const noTag = await startTestApp({ catalogue: 'mu', databaseUrl: database, env: { BASE_RPC_URL: url, WALLET_SEED: SEED } });
      try {
        expect(noTag.app.wallet.watchers[0]!.refusal).toBe('BASE_RPC_URL does not answer the "finalized" block tag; set BASE_CONFIRMATIONS');
      } finally {
        await noTag.close();
      }
      const depth = await startTestApp({
        catalogue: 'mu',
        databaseUrl: database,
        env: { BASE_RPC_URL: url, BASE_CONFIRMATIONS: '3', WALLET_SEED: SEED },
      });
      try {
        const { address, chains } = await depth.wallet.getDepositAddress({ userId: 'depth-user' });
        expect(chains.map((c) => c.finality)).toEqual(['depth:3']);
        await chain.sendEth(address, parseEther('0.01'));
        await chain.mine(1);
        await depth.app.wallet.pollAll();
        expect((await depth.wallet.listDeposits({ userId: 'depth-user' })).deposits[0]).toMatchObject({
          status: DepositStatus.PENDING,
          confirmations: 2n,
        });
        await chain.mine(1);
        await depth.app.wallet.pollAll();
        expect((await depth.wallet.listDeposits({ userId: 'depth-user' })).deposits[0]).toMatchObject({
          status: DepositStatus.CREDITED,
          creditsMillicredits: 2_362_204n,
        });
      } finally {
        await depth.close();
      }
    } finally {
      await new Promise((resolve) => proxy.close(resolve));
    }
  });

  it('refuses to watch a URL that answers for another chain', async () => {
    const wrong = await startTestApp({ catalogue: 'mu', embedded: true, env: { ETHEREUM_RPC_URL: chain.url, WALLET_SEED: SEED } });
    try {
      const [report] = await wrong.app.wallet.pollAll();
      expect(report?.skipped).toBe('refused');
      expect(wrong.app.wallet.watchers[0]!.refusal).toContain('answers for chain 8453');
      const { detail, error } = await failure(wrong.wallet.getDepositAddress({ userId: 'u' }));
      expect(detail?.reason).toBe(ErrorReason.WALLET_DISABLED);
      expect(error.rawMessage).toContain('ETHEREUM_RPC_URL answers for chain 8453');
      expect(error.rawMessage).not.toContain(chain.url);
    } finally {
      await wrong.close();
    }
  });
});
