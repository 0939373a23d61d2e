// A real local Ethereum chain for the crypto-deposit tests: starts the anvil binary shipped in
// node_modules (@foundry-rs/anvil-linux-amd64) on 127.0.0.1, compiles the tiny test contracts in
// test/contracts with solc-js, and wraps the JSON-RPC calls the tests need (mining, snapshots, sending ETH
// and tokens, placing a token at a fixed address, prices, re-broadcasting a signed transaction).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ethers } from 'ethers';
import solc from 'solc';
import { USDC_CONTRACTS } from '../../src/wallet/chains.js';

export const BASE_CHAIN_ID = 8453;
/** USDC's real address on Base, where tests place TestToken's code. */
export const BASE_USDC = USDC_CONTRACTS.base;
/** Chainlink's ETH/USD feed on Base, where the tests place MockAggregator. */
export const BASE_ETH_USD_FEED = '0x71041dddad3595F9CEd3DcCFBe3D1F4b0a16Bb70';
/** $3,000.00 with the feed's 8 decimals. */
export const ETH_USD_3000 = 3000n * 10n ** 8n;

/**
 * Makes anvil look like Base to config/mu.json: TestToken at USDC's real address and
 * MockAggregator at the real ETH/USD feed, priced at $3,000 as of now.
 */
export async function placeBaseFixtures(chain: Chain): Promise<void> {
  await chain.placeTokenAt(BASE_USDC);
  await chain.rpc('anvil_setCode', [BASE_ETH_USD_FEED, compileContracts().MockAggregator.deployedBytecode]);
  await chain.setPrice(BASE_ETH_USD_FEED, ETH_USD_3000, BigInt(Math.floor(Date.now() / 1000)));
}
/** Anvil's well-known public development mnemonic; its accounts start with 10,000 ETH. Not a secret. */
const DEV_MNEMONIC = 'test test test test test test test test test test test junk';

export interface CompiledContract {
  readonly abi: ethers.InterfaceAbi;
  readonly bytecode: string; // creation code, 0x-prefixed
  readonly deployedBytecode: string; // runtime code, 0x-prefixed (what anvil_setCode places)
}

export interface CompiledContracts {
  readonly TestToken: CompiledContract;
  readonly SpoofEmitter: CompiledContract;
  readonly MockAggregator: CompiledContract;
}

const CONTRACT_NAMES = ['TestToken', 'SpoofEmitter', 'MockAggregator'] as const;
type ContractName = (typeof CONTRACT_NAMES)[number];

let compiled: CompiledContracts | undefined;

/** Compiles test/contracts/*.sol once per process (solc-js, standard JSON) and caches the result. */
export function compileContracts(): CompiledContracts {
  if (compiled) return compiled;
  const sources: Record<string, { content: string }> = {};
  for (const name of CONTRACT_NAMES) {
    const file = fileURLToPath(new URL(`../contracts/${name}.sol`, import.meta.url));
    sources[`${name}.sol`] = { content: readFileSync(file, 'utf8') };
  }
  const input = {
    language: 'Solidity',
    sources,
    settings: {
      optimizer: { enabled: true, runs: 200 },
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input))) as {
    errors?: { severity: string; formattedMessage: string }[];
    contracts?: Record<
      string,
      Record<string, { abi: ethers.InterfaceAbi; evm: { bytecode: { object: string }; deployedBytecode: { object: string } } }>
    >;
  };
  const errors = (output.errors ?? []).filter((e) => e.severity === 'error');
  if (errors.length > 0) throw new Error(`solc: ${errors.map((e) => e.formattedMessage).join('\n')}`);
  const result = {} as Record<ContractName, CompiledContract>;
  for (const name of CONTRACT_NAMES) {
    const contract = output.contracts?.[`${name}.sol`]?.[name];
    if (!contract) throw new Error(`solc produced no ${name}`);
    result[name] = {
      abi: contract.abi,
      bytecode: `0x${contract.evm.bytecode.object}`,
      deployedBytecode: `0x${contract.evm.deployedBytecode.object}`,
    };
  }
  compiled = result;
  return compiled;
}

export interface SentTransaction {
  readonly hash: string;
  readonly blockNumber: number;
  readonly blockHash: string;
  readonly status: number; // 1 success, 0 reverted (still mined)
  /** The signed transaction, so a test can re-broadcast it (e.g. after evm_revert: re-inclusion). */
  readonly rawTx: string;
}

export interface TransactionOptions {
  /** A fixed gas limit skips estimation, so a transaction that reverts is still mined (status 0). */
  gasLimit?: bigint;
  /** The sender; by default the funder. Needs ETH for gas. */
  from?: ethers.BaseWallet;
}

export interface Chain {
  readonly url: string;
  readonly chainId: number;
  /** Static network, no request batching, no response cache: every call reaches the node. */
  readonly provider: ethers.JsonRpcProvider;
  /** Anvil dev account 0 (the public "test … junk" mnemonic), with 10,000 ETH. */
  readonly funder: ethers.Wallet;
  /** Dev account `index` (0–9) of the same mnemonic, connected to the provider; each has 10,000 ETH. */
  devAccount(index: number): ethers.Wallet;
  /** Raw JSON-RPC call; a JSON-RPC error becomes a thrown Error carrying the node's message. */
  rpc<T = unknown>(method: string, params?: unknown[]): Promise<T>;
  /** anvil_mine: mines `blocks` (default 1) empty blocks. */
  mine(blocks?: number): Promise<void>;
  /** eth_blockNumber. */
  head(): Promise<number>;
  /** Number of the block tagged 'finalized' (anvil: 64 behind the head, or 0 while the head is below 64). */
  finalized(): Promise<number>;
  /** Hash of block `number` (throws if there is no such block). */
  blockHash(number: number): Promise<string>;
  snapshot(): Promise<string>;
  /** evm_revert; throws if the node refuses the id. A snapshot id can be reverted to once. */
  revert(id: string): Promise<void>;
  sendEth(to: string, weiAmount: bigint, options?: TransactionOptions): Promise<SentTransaction>;
  /** eth_sendRawTransaction; returns the hash (anvil mines it at once unless mining is paused). */
  sendRaw(rawTx: string): Promise<string>;
  /** Waits until `hash` has a receipt (anvil auto-mines, so this is quick). */
  waitForReceipt(hash: string): Promise<ethers.TransactionReceipt>;
  deployToken(): Promise<string>;
  /** anvil_setCode with TestToken's runtime code (e.g. at BASE_USDC); balances start at zero there. */
  placeTokenAt(address: string): Promise<void>;
  mintToken(token: string, to: string, amount: bigint): Promise<void>;
  tokenBalance(token: string, owner: string): Promise<bigint>;
  transferToken(token: string, to: string, amount: bigint, options?: TransactionOptions): Promise<SentTransaction>;
  deploySpoof(): Promise<string>;
  spoofTransfer(spoof: string, to: string, amount: bigint): Promise<SentTransaction>;
  deployAggregator(): Promise<string>;
  setPrice(aggregator: string, answer: bigint, updatedAtSeconds: bigint): Promise<void>;
  /** Kills anvil and waits for it to exit. Safe to call twice. */
  stop(): Promise<void>;
}

export function anvilBinary(): string {
  const require = createRequire(import.meta.url);
  const pkg = require.resolve('@foundry-rs/anvil-linux-amd64/package.json');
  const bin = join(dirname(pkg), 'bin', 'anvil');
  if (!existsSync(bin)) throw new Error(`anvil binary missing at ${bin} (npm ci installs it)`);
  return bin;
}

/** Keeps the last `limit` characters of a stream, for error messages. */
class Tail {
  private text = '';
  constructor(private readonly limit = 8192) {}
  push(chunk: string): void {
    this.text += chunk;
    if (this.text.length > this.limit) this.text = this.text.slice(-this.limit);
  }
  toString(): string {
    return this.text.trim();
  }
}

const LISTENING = /Listening on (\S+):(\d+)/;

/**
 * Starts anvil on 127.0.0.1 with `--port 0` (the kernel picks a free port, so there is no race with other
 * test files; anvil prints the port it got) and resolves when eth_chainId answers.
 */
export async function startAnvil(options: { chainId?: number } = {}): Promise<Chain> {
  const chainId = options.chainId ?? BASE_CHAIN_ID;
  const child = spawn(anvilBinary(), ['--host', '127.0.0.1', '--port', '0', '--chain-id', String(chainId)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Anvil's start-up banner prints the dev accounts' private keys: it is read for the port and thrown away;
  // only what comes after it (request logs, errors) and stderr are kept for error messages.
  const stdout = new Tail();
  const stderr = new Tail();
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.once('error', () => resolve(null)); // spawn failed: there is no process to wait for
  });
  let alive = true;
  void exited.then(() => {
    alive = false;
  });
  const killOnExit = (): void => {
    if (alive) child.kill('SIGKILL');
  };
  process.once('exit', killOnExit);
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk));

  const port = await new Promise<number>((resolve, reject) => {
    let banner = '';
    let found = false;
    const timer = setTimeout(() => fail(new Error('anvil printed no "Listening on" line within 20 s')), 20_000);
    const fail = (error: Error): void => {
      clearTimeout(timer);
      reject(error);
    };
    child.once('error', fail);
    void exited.then((code) => {
      if (!found) fail(new Error(`anvil exited (code ${code}) before listening: ${stderr.toString()}`));
    });
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      if (found) {
        stdout.push(chunk);
        return;
      }
      banner += chunk;
      const match = LISTENING.exec(banner);
      if (match) {
        found = true;
        clearTimeout(timer);
        stdout.push(banner.slice(match.index + match[0].length));
        banner = '';
        resolve(Number(match[2]));
      }
    });
  }).catch(async (error: unknown) => {
    process.removeListener('exit', killOnExit);
    if (alive) {
      child.kill('SIGKILL');
      await exited;
    }
    throw error;
  });

  const url = `http://127.0.0.1:${port}`;
  const chain = new AnvilChain(child, exited, () => alive, killOnExit, url, chainId, () =>
    [stderr.toString(), stdout.toString()].filter((s) => s !== '').join('\n'),
  );
  try {
    await chain.waitReady();
  } catch (error) {
    await chain.stop();
    throw error;
  }
  return chain;
}

let rpcId = 0;

class AnvilChain implements Chain {
  readonly provider: ethers.JsonRpcProvider;
  readonly funder: ethers.Wallet;
  private readonly contracts = compileContracts();
  private readonly interfaces = {
    TestToken: new ethers.Interface(this.contracts.TestToken.abi),
    SpoofEmitter: new ethers.Interface(this.contracts.SpoofEmitter.abi),
    MockAggregator: new ethers.Interface(this.contracts.MockAggregator.abi),
  };
  /** One signing queue per sender, so back-to-back sends each read the node's pending nonce in turn. */
  private readonly queues = new Map<string, Promise<unknown>>();
  private stopped = false;

  constructor(
    private readonly child: ChildProcess,
    private readonly exited: Promise<number | null>,
    private readonly isAlive: () => boolean,
    private readonly killOnExit: () => void,
    readonly url: string,
    readonly chainId: number,
    private readonly output: () => string,
  ) {
    const network = ethers.Network.from(chainId);
    this.provider = new ethers.JsonRpcProvider(url, network, {
      staticNetwork: network,
      batchMaxCount: 1,
      cacheTimeout: -1,
      pollingInterval: 50,
    });
    this.funder = this.devAccount(0);
  }

  devAccount(index: number): ethers.Wallet {
    const node = ethers.HDNodeWallet.fromPhrase(DEV_MNEMONIC, undefined, `m/44'/60'/0'/0/${index}`);
    return new ethers.Wallet(node.privateKey, this.provider);
  }

  async waitReady(): Promise<void> {
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        const id = Number(await this.rpc<string>('eth_chainId'));
        if (id !== this.chainId) throw new Error(`anvil reports chain id ${id}, expected ${this.chainId}`);
        return;
      } catch (error) {
        if (error instanceof Error && error.message.startsWith('anvil reports')) throw error;
        if (!this.isAlive()) throw new Error(`anvil exited while starting: ${this.output()}`);
        if (Date.now() > deadline) throw new Error(`anvil at ${this.url} did not answer eth_chainId: ${String(error)}`);
        await sleep(25);
      }
    }
  }

  async rpc<T = unknown>(method: string, params: unknown[] = []): Promise<T> {
    const response = await fetch(this.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: ++rpcId, method, params }),
    });
    const body = (await response.json()) as { result?: T; error?: { code: number; message: string; data?: unknown } };
    if (body.error) {
      const data = body.error.data === undefined ? '' : ` ${JSON.stringify(body.error.data)}`;
      throw new Error(`${method}: ${body.error.message} (code ${body.error.code})${data}`);
    }
    return body.result as T;
  }

  async mine(blocks = 1): Promise<void> {
    await this.rpc('anvil_mine', [ethers.toQuantity(blocks)]);
  }

  async head(): Promise<number> {
    return Number(await this.rpc<string>('eth_blockNumber'));
  }

  async finalized(): Promise<number> {
    const block = await this.rpc<{ number: string } | null>('eth_getBlockByNumber', ['finalized', false]);
    if (!block) throw new Error('no finalized block');
    return Number(block.number);
  }

  async blockHash(number: number): Promise<string> {
    const block = await this.rpc<{ hash: string } | null>('eth_getBlockByNumber', [ethers.toQuantity(number), false]);
    if (!block) throw new Error(`no block ${number}`);
    return block.hash;
  }

  async snapshot(): Promise<string> {
    return this.rpc<string>('evm_snapshot');
  }

  async revert(id: string): Promise<void> {
    const ok = await this.rpc<boolean>('evm_revert', [id]);
    if (!ok) throw new Error(`evm_revert ${id} refused`);
  }

  async sendRaw(rawTx: string): Promise<string> {
    return this.rpc<string>('eth_sendRawTransaction', [rawTx]);
  }

  async waitForReceipt(hash: string): Promise<ethers.TransactionReceipt> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const receipt = await this.provider.getTransactionReceipt(hash);
      if (receipt) return receipt;
      if (Date.now() > deadline) throw new Error(`no receipt for ${hash} within 10 s`);
      await sleep(10);
    }
  }

  async sendEth(to: string, weiAmount: bigint, options: TransactionOptions = {}): Promise<SentTransaction> {
    return this.send({ to, value: weiAmount }, options);
  }

  async deployToken(): Promise<string> {
    return this.deploy('TestToken');
  }

  async placeTokenAt(address: string): Promise<void> {
    await this.rpc('anvil_setCode', [ethers.getAddress(address), this.contracts.TestToken.deployedBytecode]);
  }

  async mintToken(token: string, to: string, amount: bigint): Promise<void> {
    const sent = await this.send({ to: token, data: this.interfaces.TestToken.encodeFunctionData('mint', [to, amount]) });
    if (sent.status !== 1) throw new Error(`mint reverted in ${sent.hash}`);
  }

  async tokenBalance(token: string, owner: string): Promise<bigint> {
    const data = this.interfaces.TestToken.encodeFunctionData('balanceOf', [owner]);
    const result = await this.rpc<string>('eth_call', [{ to: token, data }, 'latest']);
    return BigInt(this.interfaces.TestToken.decodeFunctionResult('balanceOf', result)[0] as bigint);
  }

  async transferToken(token: string, to: string, amount: bigint, options: TransactionOptions = {}): Promise<SentTransaction> {
    const data = this.interfaces.TestToken.encodeFunctionData('transfer', [to, amount]);
    return this.send({ to: token, data }, options);
  }

  async deploySpoof(): Promise<string> {
    return this.deploy('SpoofEmitter');
  }

  async spoofTransfer(spoof: string, to: string, amount: bigint): Promise<SentTransaction> {
    const sent = await this.send({ to: spoof, data: this.interfaces.SpoofEmitter.encodeFunctionData('fake', [to, amount]) });
    if (sent.status !== 1) throw new Error(`spoof transfer reverted in ${sent.hash}`);
    return sent;
  }

  async deployAggregator(): Promise<string> {
    return this.deploy('MockAggregator');
  }

  async setPrice(aggregator: string, answer: bigint, updatedAtSeconds: bigint): Promise<void> {
    const data = this.interfaces.MockAggregator.encodeFunctionData('set', [answer, updatedAtSeconds]);
    const sent = await this.send({ to: aggregator, data });
    if (sent.status !== 1) throw new Error(`setPrice reverted in ${sent.hash}`);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.provider.destroy();
    process.removeListener('exit', this.killOnExit);
    if (this.isAlive()) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5_000);
      await this.exited;
      clearTimeout(timer);
    }
  }

  private async deploy(name: ContractName): Promise<string> {
    const sent = await this.send({ data: this.contracts[name].bytecode });
    const receipt = await this.waitForReceipt(sent.hash);
    if (sent.status !== 1 || !receipt.contractAddress) throw new Error(`deploying ${name} failed in ${sent.hash}`);
    return receipt.contractAddress;
  }

  /**
   * Signs with the pending nonce read from the node just before signing (never a cached one, so it stays right
   * after evm_revert or a re-broadcast), sends the raw transaction and waits for its receipt. Sends from one
   * sender are queued so back-to-back calls never collide on a nonce.
   */
  private async send(
    tx: { to?: string; value?: bigint; data?: string },
    options: TransactionOptions = {},
  ): Promise<SentTransaction> {
    const wallet = options.from ?? this.funder;
    const from = wallet.address;
    const previous = this.queues.get(from) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.signAndSend(wallet, tx, options.gasLimit));
    this.queues.set(from, run);
    return run;
  }

  private async signAndSend(
    wallet: ethers.BaseWallet,
    tx: { to?: string; value?: bigint; data?: string },
    gasLimit: bigint | undefined,
  ): Promise<SentTransaction> {
    const from = wallet.address;
    const call = {
      from,
      ...(tx.to === undefined ? {} : { to: tx.to }),
      ...(tx.value === undefined ? {} : { value: ethers.toQuantity(tx.value) }),
      ...(tx.data === undefined ? {} : { data: tx.data }),
    };
    const [nonce, latest, gas] = await Promise.all([
      this.rpc<string>('eth_getTransactionCount', [from, 'pending']),
      this.rpc<{ baseFeePerGas?: string }>('eth_getBlockByNumber', ['latest', false]),
      gasLimit === undefined ? this.rpc<string>('eth_estimateGas', [call]) : Promise.resolve(ethers.toQuantity(gasLimit)),
    ]);
    const tip = 1_000_000_000n; // 1 gwei
    const baseFee = BigInt(latest.baseFeePerGas ?? '0x0');
    const rawTx = await wallet.signTransaction({
      type: 2,
      chainId: this.chainId,
      nonce: Number(nonce),
      to: tx.to ?? null,
      value: tx.value ?? 0n,
      data: tx.data ?? '0x',
      gasLimit: BigInt(gas),
      maxPriorityFeePerGas: tip,
      maxFeePerGas: baseFee * 2n + tip,
    });
    const hash = await this.sendRaw(rawTx);
    const receipt = await this.waitForReceipt(hash);
    return { hash, blockNumber: receipt.blockNumber, blockHash: receipt.blockHash, status: receipt.status ?? 0, rawTx };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
