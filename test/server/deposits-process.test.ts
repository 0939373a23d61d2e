// Crypto deposits across real service processes: `tsx src/main.ts` spawned on one PostgreSQL
// database, watching anvil playing Base (chain 8453) with USDC at its official address and
// a MockAggregator at Base's ETH/USD feed address. Processes are SIGKILLed mid-scan, stopped
// while deposits arrive, run two at once and rewound to re-scan; every deposit must be
// credited exactly once with the exact amount. Every process's stdout and stderr is kept and
// searched for the mnemonic and the RPC URL's secret path (anvil answers on "/" only, so a
// loopback proxy plays a provider URL with an API key in its path). The kill points come
// from a printed seed; DEPOSITS_KILL_SEED=<seed> replays them.
import { execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseEther } from 'ethers';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { openDatabase } from '../../src/storage/database.js';
import { accountNodeFromMnemonic } from '../../src/wallet/keys.js';
import { BASE_CHAIN_ID, BASE_USDC, type Chain, placeBaseFixtures, startAnvil } from '../support/chain.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { killService as killProcess, type RunningService, type ServiceProcess, ServiceProcesses, stopService as stopProcess } from '../support/process.js';

/**
 * A fixed test-only mnemonic (never holds funds): bip39.entropyToMnemonic of
 * sha256("billing deposits-process test mnemonic 3"). Its 24 words are all different, so
 * any three of them in a row in a log is a leak, not chance.
 */
const SEED = 'mobile toilet sand shadow bargain unique awake salad traffic state great morning horror sell elbow mercy educate season tape rude critic aunt view fame';
const SEED_WORDS = SEED.split(' ');
const USDC = BASE_USDC;
/** Anvil's finalized block trails its head by this many blocks. */
const FINALITY = 64;
/** An API-key-looking path on the RPC URL: it must never be printed. */
const SECRET_PATH = 'v2/SECRETKEY123';
/** 5 USDC = 500 cents ÷ 1.27 = 393.700787… credits. */
const USDC_5_MILLICREDITS = 393_700n;
/** 0.01 ETH × $3,000 = 3,000 cents ÷ 1.27 = 2,362.204724… credits. */
const ETH_001_MILLICREDITS = 2_362_204n;

const KILL_SEED = process.env.DEPOSITS_KILL_SEED ? Number(process.env.DEPOSITS_KILL_SEED) : randomInt(2 ** 31);
console.log(`deposits-process: DEPOSITS_KILL_SEED=${KILL_SEED}`);

/** mulberry32: a small seeded PRNG, so a kill schedule replays from its seed. */
function prng(seed: number): (lo: number, hi: number) => number {
  let a = seed >>> 0;
  return (lo, hi) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const r = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    return lo + Math.floor(r * (hi - lo + 1));
  };
}
const random = prng(KILL_SEED);

let chain: Chain;
let rpcUrl: string;
let proxy: http.Server;
/** JSON-RPC requests the services sent through the proxy, on the secret path. */
let proxied = 0;
let database: TestDatabase;
/** The seed-file test's own database: its generated seed derives other addresses than SEED. */
let seedFileDatabase: TestDatabase;
/** The start with a wrong seed word, spawned in beforeAll to overlap the set-up; judged last. */
let badSeed: { proc: Proc; position: number; words: string[] };
let sql: pg.Pool;
const dirs: string[] = [];

/** Every process this file started, with everything it printed. */
const processes = new ServiceProcesses();
const procs = processes.all;
type Proc = ServiceProcess;
/** How long each service took from spawn to "listening", for the summary. */
const startups: string[] = [];
/** How long each SIGTERM took to end its process. */
const stops: string[] = [];

function spawnProc(label: string, env: Record<string, string>): Proc {
  return processes.spawn(label, { LOG_LEVEL: 'info', ...env });
}

/** Spawns the service and waits for its "listening" log line. */
async function startService(label: string, env: Record<string, string>): Promise<RunningService> {
  const s = await processes.start(label, { LOG_LEVEL: 'info', ...env });
  startups.push(`${label} ${s.startupMs} ms`);
  return s;
}

async function stopService(s: Proc): Promise<void> {
  const started = Date.now();
  const code = await stopProcess(s);
  stops.push(`${s.label} ${Date.now() - started} ms`);
  expect(code, `${s.label} exit code on SIGTERM\n${s.output()}`).toBe(0);
}

async function killService(s: Proc): Promise<void> {
  expect(await killProcess(s)).toBe('SIGKILL');
}

/** The environment of a service on the shared PostgreSQL database. */
function pgEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: database.url,
    BILLING_CONFIG: 'config/mu.json',
    BILLING_DATA_DIR: tempDir(),
    BASE_RPC_URL: rpcUrl,
    WALLET_SEED: SEED,
    DEPOSIT_POLL_SECONDS: '0.2',
    ...extra,
  };
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'deposits-process-'));
  dirs.push(dir);
  return dir;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/**
 * One Connect JSON call on a connection of its own (no keep-alive): the service's SIGTERM
 * waits for idle HTTP/1.1 keep-alive connections to time out (about 3 s each stop; see the
 * report), which a keep-alive client such as fetch would add to every restart.
 */
async function call(port: number, method: string, body: unknown): Promise<Record<string, unknown>> {
  const payload = JSON.stringify(body);
  const { status, text } = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: `/${method}`, method: 'POST', agent: false, headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
  const json = JSON.parse(text) as Record<string, unknown>;
  expect([method, status, json.code]).toEqual([method, 200, undefined]);
  return json;
}

async function depositAddress(port: number, userId: string): Promise<string> {
  const reply = await call(port, 'billing.v1.WalletService/GetDepositAddress', { userId });
  expect(reply.address).toMatch(/^0x[0-9a-fA-F]{40}$/);
  return String(reply.address);
}

async function balance(port: number, userId: string): Promise<bigint> {
  const reply = await call(port, 'billing.v1.BillingService/GetBalance', { userId });
  // proto3 JSON omits a zero int64.
  return BigInt(String((reply.balance as Record<string, unknown>).balanceMillicredits ?? '0'));
}

async function cursor(): Promise<{ number: number; hash: string } | undefined> {
  const { rows } = await sql.query<{ n: string; h: string }>(
    'select cursor_number::text as n, cursor_hash as h from wallet_chains where chain_id = $1',
    [BASE_CHAIN_ID],
  );
  return rows[0] ? { number: Number(rows[0].n), hash: rows[0].h } : undefined;
}

interface DepositFact {
  txHash: string;
  logIndex: number;
  userId: string;
  status: string;
  credits: bigint;
}

async function depositsOf(users: readonly string[]): Promise<DepositFact[]> {
  const { rows } = await sql.query<{ tx_hash: string; log_index: string; user_id: string; status: string; credits: string }>(
    `select tx_hash, log_index::text, user_id, status, credits_millicredits::text as credits
       from deposits where user_id = any($1::text[]) order by id`,
    [users],
  );
  return rows.map((r) => ({ txHash: r.tx_hash, logIndex: Number(r.log_index), userId: r.user_id, status: r.status, credits: BigInt(r.credits) }));
}

/** DEPOSIT ledger transactions of these users, per reference (chain:tx:log). */
async function depositTransactions(users: readonly string[]): Promise<Map<string, number>> {
  const { rows } = await sql.query<{ reference: string; n: string }>(
    `select reference, count(*)::text as n from transactions where type = 'DEPOSIT' and user_id = any($1::text[]) group by reference`,
    [users],
  );
  return new Map(rows.map((r) => [r.reference, Number(r.n)]));
}

async function allDepositTransactions(): Promise<number> {
  const { rows } = await sql.query<{ n: string }>(`select count(*)::text as n from transactions where type = 'DEPOSIT'`);
  return Number(rows[0]!.n);
}

/** Waits until the watcher's cursor has reached the chain's head. */
async function cursorAtHead(timeoutMs = 30_000): Promise<number> {
  const head = await chain.head();
  return waitFor(`the cursor to reach the head ${head}`, async () => ((await cursor())?.number ?? -1) >= head && head, timeoutMs);
}

/** Log lines (pino JSON) with this message. */
function logLines(p: Proc, msg: string): Record<string, unknown>[] {
  return p
    .output()
    .split('\n')
    .filter((line) => line.includes(`"msg":"${msg}"`))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function assertLedgerClean(): Promise<void> {
  const db = await openDatabase({ databaseUrl: database.url, dataDir: 'memory://', poolSizeMax: 2, migrate: false });
  try {
    const report = await verifyLedger(db);
    expect(report.violations).toEqual([]);
    expect(report.ok).toBe(true);
    const { rows } = await sql.query<{ credited: string; txns: string }>(
      `select (select count(*) from deposits where status = 'CREDITED')::text as credited,
              (select count(*) from transactions where type = 'DEPOSIT')::text as txns`,
    );
    expect(rows[0]!.txns).toBe(rows[0]!.credited);
  } finally {
    await db.close();
  }
}

beforeAll(async () => {
  // One word of SEED made wrong (not in the word list) at a seeded position.
  const position = random(1, 24);
  const words = [...SEED_WORDS];
  words[position - 1] = `${words[position - 1]}x`;
  badSeed = {
    position,
    words,
    proc: spawnProc('bad-seed', {
      DATABASE_URL: 'postgresql://postgres@127.0.0.1:5432/unused',
      BILLING_CONFIG: 'config/mu.json',
      BILLING_DATA_DIR: tempDir(),
      BASE_RPC_URL: `http://127.0.0.1:9/${SECRET_PATH}`,
      WALLET_SEED: words.join(' '),
    }),
  };
  chain = await startAnvil({ chainId: BASE_CHAIN_ID });
  proxy = await startPathProxy(chain.url);
  rpcUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}/${SECRET_PATH}`;
  await placeBaseFixtures(chain);
  await chain.mintToken(USDC, await chain.funder.getAddress(), 1_000_000_000n);
  database = await createTestDatabase('deposits_process');
  seedFileDatabase = await createTestDatabase('deposits_process_seed_file');
  sql = new pg.Pool({ connectionString: database.url, max: 2 });
});

afterAll(async () => {
  await processes.killAll();
  await sql?.end();
  await database?.drop();
  await seedFileDatabase?.drop();
  const mine = () => pgrepChildren();
  const before = mine();
  await chain?.stop();
  await new Promise<void>((resolve) => (proxy ? proxy.close(() => resolve()) : resolve()));
  // No orphans: neither anvil nor any service process of this worker is left.
  const after = mine();
  console.log(`deposits-process: spawn → listening: ${startups.join(', ')}`);
  console.log(`deposits-process: SIGTERM → exit: ${stops.join(', ')}`);
  console.log(`deposits-process: children of worker ${process.pid} before cleanup: ${before || '(none)'}; after: ${after || '(none)'}`);
  expect(before).toMatch(/\banvil\b/);
  expect(after).toBe('');
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('deposits across service processes', () => {
  it('kill -9 mid-range, restarts and a forced re-scan of blocks already seen credit every deposit exactly once', async () => {
    const users = Array.from({ length: 5 }, (_, i) => `kill-user-${i}`);
    const env = pgEnv({ DEPOSIT_BLOCKS_PER_POLL: '1' });
    // The first process starts the chain's cursor (at the finalized block) and hands out the
    // addresses; the deposits come after it stops, so every one lies above the cursor.
    const first = await startService('kill:first', env);
    const addresses = await Promise.all(users.map((u) => depositAddress(first.port, u)));
    await cursorAtHead();
    await stopService(first);
    const start = (await cursor())!;
    expect(start.hash).toBe((await chain.blockHash(start.number)).toLowerCase());

    const sent: { hash: string; user: string; block: number }[] = [];
    for (let i = 0; i < 10; i += 1) {
      const user = users[i % users.length]!;
      const tx = await chain.transferToken(USDC, addresses[i % users.length]!, 5_000_000n);
      expect(tx.status).toBe(1);
      sent.push({ hash: tx.hash.toLowerCase(), user, block: tx.blockNumber });
      await chain.mine(random(1, 6));
    }
    await chain.mine(FINALITY + 1);
    const head = await chain.head();
    console.log(`deposits-process kill: cursor starts at ${start.number}, head ${head}, ${head - start.number} blocks to scan one per poll`);

    // Kill cycles: each process is SIGKILLed once its cursor passes a random block, after a
    // further random 0–40 ms (inside a poll, between scan and credit, …). The targets lie
    // among the deposits' blocks while any is left, so kills land with credits half done.
    const lastDeposit = sent.at(-1)!.block;
    const kills: string[] = [];
    const cycles = 3;
    for (let cycle = 0; cycle < cycles; cycle += 1) {
      const before = (await cursor())!.number;
      const end = before < lastDeposit ? lastDeposit : head - 1;
      const target = before + random(1, Math.max(1, Math.floor((end - before) / (cycles - cycle))));
      const extraMs = random(0, 40);
      const p = await startService(`kill:cycle-${cycle}`, env);
      await waitFor(`cycle ${cycle}'s cursor to pass ${target}`, async () => ((await cursor())?.number ?? 0) >= target);
      await sleep(extraMs);
      await killService(p);
      const at = (await cursor())!.number;
      const credited = (await depositsOf(users)).filter((d) => d.status === 'CREDITED').length;
      kills.push(`cycle ${cycle}: target ${target} +${extraMs} ms → killed at cursor ${at}, ${credited}/10 credited`);
      // Killed mid-range, not after the work was done.
      expect(at).toBeLessThan(head);
    }
    console.log(`deposits-process kill (seed ${KILL_SEED}):\n  ${kills.join('\n  ')}`);

    // One run to the end: every deposit credited. From here on 25 blocks a poll: only the
    // kills needed small steps.
    const wide = { ...env, DEPOSIT_BLOCKS_PER_POLL: '25' };
    const last = await startService('kill:last', wide);
    await waitFor('all 10 deposits CREDITED', async () => {
      const ds = await depositsOf(users);
      return ds.length === 10 && ds.every((d) => d.status === 'CREDITED');
    });
    await cursorAtHead();
    await stopService(last);

    // Forced re-scan: the cursor goes back to where the first scan started (the real hash of
    // that block, so the next block extends it and nothing looks reorganised).
    await sql.query('update wallet_chains set cursor_number = $2, cursor_hash = $3 where chain_id = $1', [
      BASE_CHAIN_ID,
      start.number,
      start.hash,
    ]);
    const rescan = await startService('kill:rescan', wide);
    await cursorAtHead();
    // Two more polls after reaching the head: settling has run with everything in view.
    await sleep(500);
    const detected = logLines(rescan, 'deposits detected').reduce((n, l) => n + Number(l.transfers), 0);
    expect(detected).toBe(10); // the re-scan did see every deposit again
    expect(logLines(rescan, 'deposit credited')).toEqual([]);

    const deposits = await depositsOf(users);
    expect(deposits.map((d) => d.txHash).sort()).toEqual(sent.map((s) => s.hash).sort());
    for (const d of deposits) expect([d.txHash, d.status, d.credits]).toEqual([d.txHash, 'CREDITED', USDC_5_MILLICREDITS]);
    const txns = await depositTransactions(users);
    expect([...txns.values()]).toEqual(Array(10).fill(1));
    expect([...txns.keys()].sort()).toEqual(deposits.map((d) => `base:${d.txHash}:${d.logIndex}`).sort());
    expect(await allDepositTransactions()).toBe(10);
    // Two deposits each, each rounded down on its own: 2 × 393,700 (not 787,401 of 10 USDC).
    for (const user of users) expect([user, await balance(rescan.port, user)]).toEqual([user, 2n * USDC_5_MILLICREDITS]);
    await stopService(rescan);
    await assertLedgerClean();
  }, 90_000);

  it('credits once, after it starts, a deposit made while the service was down; another restart changes nothing', async () => {
    const user = 'down-user';
    const env = pgEnv({ DEPOSIT_BLOCKS_PER_POLL: '50' });
    const up = await startService('down:before', env);
    const address = await depositAddress(up.port, user);
    await cursorAtHead();
    await stopService(up);

    const sent = await chain.sendEth(address, parseEther('0.01'));
    await chain.mine(FINALITY + 1);
    const before = await allDepositTransactions();

    const after = await startService('down:after', env);
    await waitFor('the ETH deposit CREDITED', async () => (await depositsOf([user]))[0]?.status === 'CREDITED');
    const [deposit] = await depositsOf([user]);
    expect(deposit).toEqual({ txHash: sent.hash.toLowerCase(), logIndex: -1, userId: user, status: 'CREDITED', credits: ETH_001_MILLICREDITS });
    expect(await balance(after.port, user)).toBe(ETH_001_MILLICREDITS);
    expect(logLines(after, 'deposit credited').length).toBe(1);
    await stopService(after);

    const again = await startService('down:again', env);
    await chain.mine(3);
    await cursorAtHead();
    await sleep(500);
    expect(await balance(again.port, user)).toBe(ETH_001_MILLICREDITS);
    expect(await depositsOf([user])).toHaveLength(1);
    expect(await depositTransactions([user])).toEqual(new Map([[`base:${sent.hash.toLowerCase()}:-1`, 1]]));
    expect(await allDepositTransactions()).toBe(before + 1);
    expect(logLines(again, 'deposit credited')).toEqual([]);
    await stopService(again);
  });

  it('two service processes watching the same chain credit each deposit once', async () => {
    const users = ['pair-user-0', 'pair-user-1', 'pair-user-2', 'pair-user-3'];
    const env = pgEnv({ DEPOSIT_BLOCKS_PER_POLL: '2' });
    const [a, b] = await Promise.all([startService('pair:a', env), startService('pair:b', env)]);
    const addresses = await Promise.all(users.map((u, i) => depositAddress(i % 2 === 0 ? a.port : b.port, u)));
    await cursorAtHead();
    const before = await allDepositTransactions();

    // [user index, token]
    const plan: [number, 'ETH' | 'USDC'][] = [[0, 'ETH'], [1, 'USDC'], [2, 'USDC'], [1, 'ETH'], [3, 'USDC'], [2, 'USDC'], [3, 'ETH']];
    const expected = new Map(users.map((u) => [u, 0n]));
    for (const [i, token] of plan) {
      const to = addresses[i]!;
      if (token === 'ETH') await chain.sendEth(to, parseEther('0.01'));
      else expect((await chain.transferToken(USDC, to, 5_000_000n)).status).toBe(1);
      expected.set(users[i]!, expected.get(users[i]!)! + (token === 'ETH' ? ETH_001_MILLICREDITS : USDC_5_MILLICREDITS));
      const gap = random(0, 2);
      if (gap > 0) await chain.mine(gap);
    }
    await chain.mine(FINALITY + 1);
    await waitFor(`all ${plan.length} deposits CREDITED`, async () => {
      const ds = await depositsOf(users);
      return ds.length === plan.length && ds.every((d) => d.status === 'CREDITED');
    });
    await cursorAtHead();
    await sleep(500);

    const txns = await depositTransactions(users);
    expect([...txns.values()]).toEqual(Array(plan.length).fill(1));
    expect(await allDepositTransactions()).toBe(before + plan.length);
    for (const user of users) {
      expect([user, await balance(a.port, user)]).toEqual([user, expected.get(user)]);
      expect([user, await balance(b.port, user)]).toEqual([user, expected.get(user)]);
    }
    const creditedA = logLines(a, 'deposit credited');
    const creditedB = logLines(b, 'deposit credited');
    const byA = creditedA.length;
    const byB = creditedB.length;
    const idsA = new Set(creditedA.map((l) => String(l.deposit)));
    const both = creditedB.filter((l) => idsA.has(String(l.deposit))).map((l) => `deposit ${String(l.deposit)} → transaction ${String(l.transaction)}`);
    const failed = [...logLines(a, 'deposit poll failed'), ...logLines(b, 'deposit poll failed')].map((l) => l.error);
    console.log(
      `deposits-process pair: 'deposit credited' lines: A ${byA}, B ${byB} for ${plan.length} deposits; ` +
        `logged by both: ${both.length ? both.join(', ') : 'none'}; failed polls: ${JSON.stringify(failed)}`,
    );
    await Promise.all([stopService(a), stopService(b)]);
    await assertLedgerClean();
    // Last, after every exactly-once check above: one 'deposit credited' line per deposit.
    // Fails while a replica that loses the race logs (and counts) a credit the other made.
    expect(byA + byB).toBe(plan.length);
  });

  it('generates a 0600 seed file in a 0700 directory, serves from it, and refuses to start once it is readable by others', async () => {
    const dir = tempDir();
    const env = {
      DATABASE_URL: seedFileDatabase.url,
      BILLING_CONFIG: 'config/mu.json',
      BILLING_DATA_DIR: dir,
      BASE_RPC_URL: rpcUrl,
      DEPOSIT_POLL_SECONDS: '0.2',
    };
    const s = await startService('seed-file:first', env);
    const file = join(dir, 'wallet', 'seed');
    expect((statSync(join(dir, 'wallet')).mode & 0o777).toString(8)).toBe('700');
    expect((statSync(file).mode & 0o777).toString(8)).toBe('600');
    const mnemonic = readFileSync(file, 'utf8').trim();
    generatedSeeds.push(mnemonic);
    expect(mnemonic.split(' ')).toHaveLength(24);
    const reply = await call(s.port, 'billing.v1.WalletService/GetDepositAddress', { userId: 'seed-file-user' });
    expect(reply.address).toBe(accountNodeFromMnemonic(mnemonic).addressAt(Number(reply.derivationIndex)));
    expect(s.output()).toContain('"keys":"seed-file"');
    await stopService(s);

    chmodSync(file, 0o644);
    const refused = spawnProc('seed-file:refused', env);
    const { code } = await refused.exit;
    expect(code).not.toBe(0);
    expect(refused.output()).toContain(`wallet seed file ${file} has mode 0644; it must be 0600`);
  });

  it('never prints the mnemonic or the RPC URL; a seed with a wrong word fails naming its position only', async () => {
    const { proc: bad, position, words } = badSeed;
    const { code } = await bad.exit;
    expect(code).toBe(1);
    const text = bad.output();
    expect(text).toContain(`WALLET_SEED: word ${position} is not in the BIP-39 English word list`);
    for (const word of words) expect([word, new RegExp(`\\b${word}\\b`, 'i').test(text)]).toEqual([word, false]);

    // Every process of this file: services, killed ones, refused ones.
    expect(procs.length).toBe(14);
    // The services did reach the chain through the secret-path URL.
    expect(proxied).toBeGreaterThan(100);
    const xpub = accountNodeFromMnemonic(SEED).accountXpub;
    for (const p of procs) {
      const out = p.output();
      expect(out.length, `${p.label} printed nothing`).toBeGreaterThan(0);
      for (const mnemonic of [SEED, ...generatedSeeds]) {
        expect(out).not.toContain(mnemonic);
        expect([p.label, leakedWindow(out, mnemonic)]).toEqual([p.label, undefined]);
      }
      expect(out).not.toContain('SECRETKEY123');
      expect(out).not.toContain(rpcUrl);
      expect(out).not.toContain(xpub);
    }
  });
});

/** Mnemonics generated by processes of this file (the seed-file test), also never to be printed. */
const generatedSeeds: string[] = [];

/**
 * The first run of 3 consecutive words of the mnemonic found in text, whatever separates
 * them there (spaces, JSON quotes and commas, newlines); undefined if none.
 */
function leakedWindow(text: string, mnemonic: string): string | undefined {
  const words = mnemonic.split(' ');
  const windows = new Set(words.slice(0, -2).map((_, i) => words.slice(i, i + 3).join(' ')));
  const tokens = text.toLowerCase().split(/[^a-z]+/).filter(Boolean);
  for (let i = 0; i + 2 < tokens.length; i += 1) {
    const window = tokens.slice(i, i + 3).join(' ');
    if (windows.has(window)) return window;
  }
  return undefined;
}

/**
 * anvil answers JSON-RPC on "/" only (404 elsewhere), so a loopback proxy plays a provider's
 * URL with an API key in its path: POST /v2/SECRETKEY123 is forwarded to anvil; anything else
 * is 404, so a service that dropped the path would not reach the chain.
 */
async function startPathProxy(target: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== `/${SECRET_PATH}`) return void res.writeHead(404).end();
      proxied += 1;
      fetch(target, { method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.concat(chunks) })
        .then(async (upstream) => {
          const body = Buffer.from(await upstream.arrayBuffer());
          res.writeHead(upstream.status, { 'content-type': 'application/json' }).end(body);
        })
        .catch(() => res.writeHead(502).end());
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** "pid name" of every live child process of this test worker, one a line. */
function pgrepChildren(): string {
  try {
    return execFileSync('pgrep', ['-l', '-P', String(process.pid)], { encoding: 'utf8' }).trim();
  } catch {
    return ''; // pgrep exits 1 when nothing matches
  }
}
