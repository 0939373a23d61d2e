// Proves the local-chain harness (test/support/chain.ts) on a real anvil before the deposit tests rely on
// it: chain id, finality lag, ETH and token transfers, a reverted transfer, a spoofed Transfer event, the
// price feed mock, and a reorg by snapshot/revert followed by re-inclusion of the same signed transaction.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ethers } from 'ethers';
import { BASE_USDC, compileContracts, startAnvil, type Chain } from '../support/chain.js';

const TRANSFER_TOPIC = ethers.id('Transfer(address,address,uint256)');

function addressTopic(address: string): string {
  return ethers.zeroPadValue(ethers.getAddress(address), 32).toLowerCase();
}

describe('local chain harness (anvil)', () => {
  let chain: Chain;

  beforeAll(async () => {
    const t0 = performance.now();
    compileContracts();
    const t1 = performance.now();
    chain = await startAnvil();
    const t2 = performance.now();
    console.log(`solc compile ${Math.round(t1 - t0)} ms, anvil start ${Math.round(t2 - t1)} ms`);
  });

  afterAll(async () => {
    await chain?.stop();
  });

  it('compiles the three contracts to creation and runtime code', () => {
    const contracts = compileContracts();
    expect(compileContracts()).toBe(contracts); // cached
    for (const contract of [contracts.TestToken, contracts.SpoofEmitter, contracts.MockAggregator]) {
      expect(contract.bytecode).toMatch(/^0x[0-9a-f]{100,}$/);
      expect(contract.deployedBytecode).toMatch(/^0x[0-9a-f]{100,}$/);
      expect(contract.bytecode.length).toBeGreaterThan(contract.deployedBytecode.length);
    }
  });

  it('reports chain id 8453 (Base) over raw RPC and through ethers', async () => {
    expect(chain.chainId).toBe(8453);
    expect(await chain.rpc<string>('eth_chainId')).toBe('0x2105');
    expect((await chain.provider.getNetwork()).chainId).toBe(8453n);
    expect(chain.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  });

  it('keeps the finalized block 64 behind the head (0 while the head is below 64)', async () => {
    const start = await chain.head();
    if (start < 64) expect(await chain.finalized()).toBe(0);
    await chain.mine(100);
    const head = await chain.head();
    expect(head).toBe(start + 100);
    expect(await chain.finalized()).toBe(head - 64);
    await chain.mine();
    expect(await chain.head()).toBe(head + 1);
    expect(await chain.finalized()).toBe(head + 1 - 64);
  });

  it('sends ETH: the recipient balance changes by exactly the amount', async () => {
    const recipient = ethers.Wallet.createRandom().address;
    expect(await chain.provider.getBalance(recipient)).toBe(0n);
    const amount = 1_234_567_890_123_456_789n;
    const sent = await chain.sendEth(recipient, amount);
    expect(sent.status).toBe(1);
    expect(sent.blockNumber).toBe(await chain.head());
    expect(await chain.blockHash(sent.blockNumber)).toBe(sent.blockHash);
    expect(ethers.Transaction.from(sent.rawTx).hash).toBe(sent.hash);
    expect(await chain.provider.getBalance(recipient)).toBe(amount);
  });

  it('sends back to back without nonce collisions', async () => {
    const recipient = ethers.Wallet.createRandom().address;
    const sent = await Promise.all([1n, 2n, 3n, 4n, 5n].map((wei) => chain.sendEth(recipient, wei)));
    expect(sent.every((s) => s.status === 1)).toBe(true);
    expect(new Set(sent.map((s) => ethers.Transaction.from(s.rawTx).nonce)).size).toBe(5);
    expect(await chain.provider.getBalance(recipient)).toBe(15n);
  });

  it('places TestToken at the USDC address on Base: mints, transfers and logs Transfer', async () => {
    await chain.placeTokenAt(BASE_USDC);
    const token = new ethers.Contract(BASE_USDC, compileContracts().TestToken.abi, chain.provider);
    expect(await token.getFunction('decimals')()).toBe(6n);
    expect(await token.getFunction('symbol')()).toBe('USDC');

    const holder = chain.devAccount(1);
    const recipient = ethers.Wallet.createRandom().address;
    await chain.mintToken(BASE_USDC, holder.address, 25_000_000n);
    expect(await chain.tokenBalance(BASE_USDC, holder.address)).toBe(25_000_000n);

    const sent = await chain.transferToken(BASE_USDC, recipient, 10_500_000n, { from: holder });
    expect(sent.status).toBe(1);
    expect(await chain.tokenBalance(BASE_USDC, recipient)).toBe(10_500_000n);
    expect(await chain.tokenBalance(BASE_USDC, holder.address)).toBe(14_500_000n);

    const receipt = await chain.waitForReceipt(sent.hash);
    expect(receipt.logs).toHaveLength(1);
    const log = receipt.logs[0]!;
    expect(log.address).toBe(ethers.getAddress(BASE_USDC));
    expect(log.topics).toEqual([TRANSFER_TOPIC, addressTopic(holder.address), addressTopic(recipient)]);
    expect(BigInt(log.data)).toBe(10_500_000n);

    // And the watcher's view: eth_getLogs by address and topic over the block.
    const logs = await chain.provider.getLogs({
      address: BASE_USDC,
      topics: [TRANSFER_TOPIC, null, addressTopic(recipient)],
      fromBlock: sent.blockNumber,
      toBlock: sent.blockNumber,
    });
    expect(logs.map((l) => l.transactionHash)).toEqual([sent.hash]);
  });

  it('deploys TestToken at a fresh address too', async () => {
    const token = await chain.deployToken();
    expect(ethers.isAddress(token)).toBe(true);
    expect(await chain.provider.getCode(token)).toBe(compileContracts().TestToken.deployedBytecode);
    const recipient = ethers.Wallet.createRandom().address;
    await chain.mintToken(token, recipient, 7n);
    expect(await chain.tokenBalance(token, recipient)).toBe(7n);
  });

  it('mines a transfer beyond the balance with status 0 and no log', async () => {
    await chain.placeTokenAt(BASE_USDC);
    const poor = chain.devAccount(2);
    const recipient = ethers.Wallet.createRandom().address;
    await chain.mintToken(BASE_USDC, poor.address, 1_000_000n);
    // Without a fixed gas limit the estimate itself fails, with the contract's reason.
    await expect(chain.transferToken(BASE_USDC, recipient, 1_000_001n, { from: poor })).rejects.toThrow(/balance/);

    const headBefore = await chain.head();
    const sent = await chain.transferToken(BASE_USDC, recipient, 1_000_001n, { from: poor, gasLimit: 100_000n });
    expect(sent.status).toBe(0);
    expect(sent.blockNumber).toBe(headBefore + 1);
    const receipt = await chain.waitForReceipt(sent.hash);
    expect(receipt.logs).toEqual([]);
    expect(await chain.tokenBalance(BASE_USDC, recipient)).toBe(0n);
    expect(await chain.tokenBalance(BASE_USDC, poor.address)).toBe(1_000_000n);
  });

  it('spoofs a Transfer log whose address is the spoof contract, moving no balance', async () => {
    await chain.placeTokenAt(BASE_USDC);
    const spoof = await chain.deploySpoof();
    const recipient = ethers.Wallet.createRandom().address;
    const sent = await chain.spoofTransfer(spoof, recipient, 5_000_000n);
    const receipt = await chain.waitForReceipt(sent.hash);
    expect(receipt.logs).toHaveLength(1);
    const log = receipt.logs[0]!;
    expect(log.address).toBe(ethers.getAddress(spoof));
    expect(log.address).not.toBe(ethers.getAddress(BASE_USDC));
    expect(log.topics).toEqual([TRANSFER_TOPIC, addressTopic(chain.funder.address), addressTopic(recipient)]);
    expect(BigInt(log.data)).toBe(5_000_000n);
    expect(await chain.tokenBalance(BASE_USDC, recipient)).toBe(0n);
  });

  it('returns from the aggregator what was set, a new round each time', async () => {
    const aggregator = await chain.deployAggregator();
    const feed = new ethers.Contract(aggregator, compileContracts().MockAggregator.abi, chain.provider);
    expect(await feed.getFunction('decimals')()).toBe(8n);
    expect(typeof (await feed.getFunction('description')())).toBe('string');
    expect(await feed.getFunction('version')()).toBe(4n);

    await chain.setPrice(aggregator, 312_345_678_901n, 1_760_000_000n);
    let round = (await feed.getFunction('latestRoundData')()) as bigint[];
    expect([...round]).toEqual([1n, 312_345_678_901n, 1_760_000_000n, 1_760_000_000n, 1n]);

    await chain.setPrice(aggregator, -5n, 1_760_000_060n);
    round = (await feed.getFunction('latestRoundData')()) as bigint[];
    expect([...round]).toEqual([2n, -5n, 1_760_000_060n, 1_760_000_060n, 2n]);
  });

  it('reorgs: snapshot, send, revert (the tx is gone), re-broadcast the raw tx into a different block', async () => {
    const recipient = ethers.Wallet.createRandom().address;
    const snap = await chain.snapshot();
    const original = await chain.sendEth(recipient, 777n);
    expect(await chain.provider.getBalance(recipient)).toBe(777n);

    await chain.revert(snap);
    expect(await chain.head()).toBe(original.blockNumber - 1);
    expect(await chain.rpc('eth_getTransactionReceipt', [original.hash])).toBeNull();
    expect(await chain.provider.getBalance(recipient)).toBe(0n);

    // The replacement chain gets an empty block at the old height first, so the tx lands one block later.
    await chain.mine();
    const replaced = await chain.blockHash(original.blockNumber);
    expect(replaced).not.toBe(original.blockHash);

    expect(await chain.sendRaw(original.rawTx)).toBe(original.hash);
    const again = await chain.waitForReceipt(original.hash);
    expect(again.status).toBe(1);
    expect(again.blockNumber).toBe(original.blockNumber + 1);
    expect(again.blockHash).not.toBe(original.blockHash);
    expect(await chain.provider.getBalance(recipient)).toBe(777n);

    // The helpers read the nonce from the node, so sending goes on after the revert and re-broadcast.
    const next = await chain.sendEth(recipient, 1n);
    expect(ethers.Transaction.from(next.rawTx).nonce).toBe(ethers.Transaction.from(original.rawTx).nonce + 1);
    expect(await chain.provider.getBalance(recipient)).toBe(778n);
  });

  it('refuses an unknown snapshot id and stops cleanly', async () => {
    await expect(chain.revert('0xdeadbeef')).rejects.toThrow();
    const other = await startAnvil({ chainId: 31337 });
    expect(other.url).not.toBe(chain.url);
    expect(await other.rpc<string>('eth_chainId')).toBe('0x7a69');
    await other.stop();
    await other.stop(); // idempotent
    await expect(fetch(other.url, { method: 'POST', body: '{}' })).rejects.toThrow();
  });
});
