// Tests of the wallet's key material (src/wallet/keys.ts): the published BIP-44 vectors, the
// watch-only xpub, every refusal of WALLET_SEED / WALLET_XPUB with messages that quote nothing
// secret, the seed file's generation, permissions and symlink checks on real files in a temp
// dir, a real race of child processes generating the same file, and a canary proving that the
// returned object holds no mnemonic word, private key or xprv. The canary's mnemonic is random:
// its entropy is printed, and WALLET_CANARY_ENTROPY=<hex> replays it.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inspect } from 'node:util';
import * as bip39 from 'bip39';
import { decodeBase58, getBytes, HDNodeWallet, sha256, toBeArray, encodeBase58 } from 'ethers';
import { afterAll, describe, expect, it } from 'vitest';
import {
  accountNodeFromMnemonic,
  accountNodeFromXpub,
  loadWalletKeys,
  SEED_FILE,
  WalletKeyError,
  type WalletKeys,
} from '../../src/wallet/keys.js';

const TEST_MNEMONIC = 'abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about';
/** The valid 24-word mnemonic of all-zero entropy. */
const ZERO_24 = `${'abandon '.repeat(23)}art`;
const ACCOUNT_PATH = "m/44'/60'/0'/0";
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const KEYS_MODULE = new URL('../../src/wallet/keys.ts', import.meta.url).href;

const root = mkdtempSync(join(tmpdir(), 'wallet-keys-'));
let dirs = 0;
/** A fresh, empty data directory under the test's temp dir. */
function dataDir(): string {
  const dir = join(root, `data-${++dirs}`);
  mkdirSync(dir);
  return dir;
}
afterAll(() => rmSync(root, { recursive: true, force: true }));

function mode(path: string): number {
  return lstatSync(path).mode & 0o7777;
}

/** The WalletKeyError that fn throws (fails if it throws nothing or something else). */
function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(WalletKeyError);
    return (error as Error).message;
  }
  throw new Error('expected a WalletKeyError, nothing was thrown');
}

function writeSeedFile(dir: string, content: string, fileMode = 0o600, dirMode = 0o700): string {
  mkdirSync(join(dir, 'wallet'), { mode: dirMode });
  chmodSync(join(dir, 'wallet'), dirMode);
  const file = join(dir, SEED_FILE);
  writeFileSync(file, content, { mode: fileMode });
  chmodSync(file, fileMode);
  return file;
}

/** The 78-byte payload of a base58check extended key. */
function xpubPayload(key: string): Uint8Array {
  return toBeArray(decodeBase58(key)).subarray(0, 78);
}

function encodeBase58Check(payload: Uint8Array): string {
  const checksum = getBytes(sha256(sha256(payload))).subarray(0, 4);
  return encodeBase58(Uint8Array.of(...payload, ...checksum));
}

function addresses(keys: WalletKeys, indexes: readonly number[]): string[] {
  return indexes.map((i) => keys.addressAt(i));
}

describe('derivation', () => {
  it('gives the published BIP-44 vectors of the standard test mnemonic', () => {
    const keys = accountNodeFromMnemonic(TEST_MNEMONIC);
    expect(keys.source).toBe('seed');
    expect(addresses(keys, [0, 1, 2])).toEqual([
      '0x9858EfFD232B4033E47d90003D41EC34EcaEda94',
      '0x6Fac4D18c912343BF86fa7049364Dd4E424Ab9C0',
      '0xb6716976A3ebe8D39aCEB04372f22Ff8e6802D7A',
    ]);
    expect(keys.accountXpub.startsWith('xpub')).toBe(true);
  });

  it('normalises case and whitespace of a mnemonic', () => {
    const messy = `  ${TEST_MNEMONIC.toUpperCase().split(' ').join(' \n\t ')}  `;
    expect(accountNodeFromMnemonic(messy).addressAt(0)).toBe('0x9858EfFD232B4033E47d90003D41EC34EcaEda94');
  });

  it('derives the same addresses watch-only from the account xpub', () => {
    const seeded = accountNodeFromMnemonic(TEST_MNEMONIC);
    const watch = accountNodeFromXpub(seeded.accountXpub);
    expect(watch.source).toBe('xpub');
    expect(watch.accountXpub).toBe(seeded.accountXpub);
    const indexes = [...Array.from({ length: 21 }, (_, i) => i), 2 ** 31 - 1];
    expect(addresses(watch, indexes)).toEqual(addresses(seeded, indexes));
    expect(new Set(addresses(watch, indexes)).size).toBe(indexes.length);
  });

  it('refuses an index outside 0 .. 2^31-1', () => {
    const keys = accountNodeFromMnemonic(TEST_MNEMONIC);
    for (const bad of [-1, 2 ** 31, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => keys.addressAt(bad)).toThrow(RangeError);
    }
  });

  it('refuses a mnemonic of an invalid length, naming the valid ones', () => {
    expect(refusal(() => accountNodeFromMnemonic(`${TEST_MNEMONIC} abandon`)))
      .toBe('mnemonic: has 13 words; a BIP-39 mnemonic has 12, 15, 18, 21 or 24');
  });
});

describe('WALLET_SEED and WALLET_XPUB', () => {
  const memory = { dataDir: 'memory://keys-test', generate: true };

  it('accepts a valid 24-word WALLET_SEED', () => {
    const keys = loadWalletKeys({ ...memory, seed: ZERO_24 });
    expect(keys?.source).toBe('seed');
    expect(keys?.addressAt(5)).toBe(accountNodeFromMnemonic(ZERO_24).addressAt(5));
  });

  it('refuses a 12-word WALLET_SEED: 24 are required', () => {
    expect(refusal(() => loadWalletKeys({ ...memory, seed: TEST_MNEMONIC })))
      .toBe('WALLET_SEED: has 12 words; 24 are required');
  });

  it('refuses a word not in the list, naming its position and no word', () => {
    const words = ZERO_24.split(' ');
    words[6] = 'zzzbogus';
    expect(refusal(() => loadWalletKeys({ ...memory, seed: words.join(' ') })))
      .toBe('WALLET_SEED: word 7 is not in the BIP-39 English word list');
  });

  it('refuses a bad checksum', () => {
    const wrong = 'abandon '.repeat(24).trim();
    expect(bip39.validateMnemonic(wrong)).toBe(false);
    expect(refusal(() => loadWalletKeys({ ...memory, seed: wrong })))
      .toBe('WALLET_SEED: the checksum does not match (a word is wrong or out of order)');
  });

  it('refuses both variables set', () => {
    const xpub = accountNodeFromMnemonic(ZERO_24).accountXpub;
    const message = refusal(() => loadWalletKeys({ ...memory, seed: ZERO_24, xpub }));
    expect(message).toMatch(/WALLET_XPUB and WALLET_SEED.*set one/);
    expect(message).not.toContain('abandon');
    expect(message).not.toContain(xpub.slice(4, 12));
  });

  it('accepts an account xpub as watch-only', () => {
    const xpub = accountNodeFromMnemonic(TEST_MNEMONIC).accountXpub;
    const keys = loadWalletKeys({ ...memory, xpub: ` ${xpub}\n` });
    expect(keys?.source).toBe('xpub');
    expect(keys?.addressAt(0)).toBe('0x9858EfFD232B4033E47d90003D41EC34EcaEda94');
  });

  it('refuses an xprv, quoting none of it', () => {
    const xprv = HDNodeWallet.fromPhrase(TEST_MNEMONIC, undefined, ACCOUNT_PATH).extendedKey;
    expect(xprv.startsWith('xprv')).toBe(true);
    expect(refusal(() => loadWalletKeys({ ...memory, xpub: xprv })))
      .toBe('WALLET_XPUB holds a private key; give the public (xpub) form');
    expect(refusal(() => accountNodeFromXpub(xprv))).toBe('xpub holds a private key; give the public (xpub) form');
  });

  it('refuses an xpub at the wrong depth', () => {
    for (const [path, depth] of [["m/44'/60'/0'", 3], ["m/44'/60'/0'/0/0", 5]] as const) {
      const xpub = HDNodeWallet.fromPhrase(TEST_MNEMONIC, undefined, path).neuter().extendedKey;
      const message = refusal(() => loadWalletKeys({ ...memory, xpub }));
      expect(message).toBe(`WALLET_XPUB is a node at depth ${depth}; it must be the account node ${ACCOUNT_PATH} (depth 4)`);
    }
    // Depth 4 but the change chain m/44'/60'/0'/1: its addresses are not the ones users get.
    const change = HDNodeWallet.fromPhrase(TEST_MNEMONIC, undefined, "m/44'/60'/0'/1").neuter().extendedKey;
    expect(refusal(() => loadWalletKeys({ ...memory, xpub: change }))).toBe(
      `WALLET_XPUB is child 1 of its parent; the account node ${ACCOUNT_PATH} is child 0`,
    );
  });

  it('refuses a malformed xpub, quoting none of it', () => {
    const xpub = accountNodeFromMnemonic(TEST_MNEMONIC).accountXpub;
    const invalid = `WALLET_XPUB is not a valid extended public key (xpub) of the account node ${ACCOUNT_PATH}`;
    for (const broken of [' ', 'xpub', 'not base58 0OIl', `${xpub}1`, xpub.slice(0, -1)]) {
      expect(refusal(() => loadWalletKeys({ ...memory, xpub: broken }))).toBe(invalid);
    }
    // A testnet tpub of the same node: not an xpub.
    const tpub = encodeBase58Check(Uint8Array.of(0x04, 0x35, 0x87, 0xcf, ...xpubPayload(xpub).subarray(4)));
    expect(refusal(() => loadWalletKeys({ ...memory, xpub: tpub }))).toBe(invalid);
  });

  it('refuses every one-character typo of an xpub, though ethers accepts many of them', () => {
    // ethers 6.17.0 skips the checksum of an 82-byte key: keys.ts checks it itself.
    const xpub = accountNodeFromMnemonic(TEST_MNEMONIC).accountXpub;
    const right = accountNodeFromXpub(xpub).addressAt(0);
    let ethersFooled = 0;
    for (let i = 4; i < xpub.length; i++) {
      const typo = `${xpub.slice(0, i)}${xpub[i] === 'a' ? 'b' : 'a'}${xpub.slice(i + 1)}`;
      try {
        if (HDNodeWallet.fromExtendedKey(typo).deriveChild(0).address !== right) ethersFooled++;
      } catch {
        // ethers refused this one too.
      }
      expect(refusal(() => accountNodeFromXpub(typo))).toMatch(/^xpub is not a valid extended public key/);
    }
    expect(ethersFooled).toBeGreaterThan(0);
  });

  it('keeps no file in memory:// mode: undefined without a variable, even with generate', () => {
    expect(loadWalletKeys(memory)).toBeUndefined();
  });
});

describe('seed file', () => {
  it('is generated on first use 0600 in a 0700 directory and read back the same', () => {
    const dir = dataDir();
    const created: string[] = [];
    const onSeedFileCreated = (path: string) => created.push(path);
    const first = loadWalletKeys({ dataDir: dir, generate: true, onSeedFileCreated });
    expect(first?.source).toBe('seed-file');
    const file = join(dir, SEED_FILE);
    expect(created).toEqual([file]);
    expect(mode(file)).toBe(0o600);
    expect(mode(join(dir, 'wallet'))).toBe(0o700);
    expect(readdirSync(join(dir, 'wallet'))).toEqual(['seed']);
    const content = readFileSync(file, 'utf8');
    expect(content).toMatch(/^[a-z]+( [a-z]+){23}\n$/);
    expect(bip39.validateMnemonic(content.trim())).toBe(true);

    const second = loadWalletKeys({ dataDir: dir, generate: true, onSeedFileCreated });
    expect(created).toEqual([file]);
    const third = loadWalletKeys({ dataDir: dir, generate: false });
    expect(second?.accountXpub).toBe(first?.accountXpub);
    expect(addresses(third!, [0, 1, 7])).toEqual(addresses(first!, [0, 1, 7]));
    expect(first?.addressAt(0)).toBe(accountNodeFromMnemonic(content).addressAt(0));
  });

  it('creates the data directory when it does not exist yet', () => {
    const dir = join(dataDir(), 'not', 'yet');
    expect(loadWalletKeys({ dataDir: dir, generate: true })?.source).toBe('seed-file');
    expect(mode(join(dir, 'wallet'))).toBe(0o700);
  });

  it('gives undefined when generate is false and there is no file', () => {
    const dir = dataDir();
    expect(loadWalletKeys({ dataDir: dir, generate: false })).toBeUndefined();
    expect(readdirSync(dir)).toEqual([]);
  });

  it('prefers WALLET_SEED to the seed file', () => {
    const dir = dataDir();
    writeSeedFile(dir, `${TEST_MNEMONIC}\n`);
    expect(loadWalletKeys({ dataDir: dir, generate: true, seed: ZERO_24 })?.source).toBe('seed');
  });

  it('refuses a 0644 file, naming the path and the mode', () => {
    const dir = dataDir();
    const file = writeSeedFile(dir, `${ZERO_24}\n`, 0o644);
    expect(refusal(() => loadWalletKeys({ dataDir: dir, generate: true })))
      .toBe(`wallet seed file ${file} has mode 0644; it must be 0600 (chmod 600 it)`);
  });

  it('refuses a 0755 directory, also before generating into it', () => {
    const dir = dataDir();
    writeSeedFile(dir, `${ZERO_24}\n`, 0o600, 0o755);
    const expected = `wallet seed directory ${join(dir, 'wallet')} has mode 0755; it must be 0700 (chmod 700 it)`;
    expect(refusal(() => loadWalletKeys({ dataDir: dir, generate: false }))).toBe(expected);

    const empty = dataDir();
    mkdirSync(join(empty, 'wallet'), { mode: 0o755 });
    chmodSync(join(empty, 'wallet'), 0o755);
    expect(refusal(() => loadWalletKeys({ dataDir: empty, generate: true })))
      .toBe(`wallet seed directory ${join(empty, 'wallet')} has mode 0755; it must be 0700 (chmod 700 it)`);
    expect(readdirSync(join(empty, 'wallet'))).toEqual([]);
  });

  it('refuses a symlinked file', () => {
    const dir = dataDir();
    const real = join(dataDir(), 'real-seed');
    writeFileSync(real, `${ZERO_24}\n`, { mode: 0o600 });
    mkdirSync(join(dir, 'wallet'), { mode: 0o700 });
    symlinkSync(real, join(dir, SEED_FILE));
    expect(refusal(() => loadWalletKeys({ dataDir: dir, generate: true })))
      .toBe(`wallet seed file ${join(dir, SEED_FILE)} is a symbolic link; it must be a real file`);
  });

  it('refuses a symlinked directory', () => {
    const elsewhere = dataDir();
    writeSeedFile(elsewhere, `${ZERO_24}\n`);
    const dir = dataDir();
    symlinkSync(join(elsewhere, 'wallet'), join(dir, 'wallet'));
    expect(refusal(() => loadWalletKeys({ dataDir: dir, generate: true })))
      .toBe(`wallet seed directory ${join(dir, 'wallet')} is a symbolic link; it must be a real directory`);
  });

  it.skipIf(process.getuid?.() !== 0)('refuses a file owned by another uid (run as root)', () => {
    const dir = dataDir();
    const file = writeSeedFile(dir, `${ZERO_24}\n`);
    chownSync(file, 65534, 65534);
    expect(refusal(() => loadWalletKeys({ dataDir: dir, generate: true })))
      .toBe(`wallet seed file ${file} is owned by uid 65534, not by this process's uid 0 (chown it)`);
  });

  it('validates the file like WALLET_SEED, naming the file and no word', () => {
    const dir = dataDir();
    const file = writeSeedFile(dir, `${TEST_MNEMONIC}\n`);
    expect(refusal(() => loadWalletKeys({ dataDir: dir, generate: true })))
      .toBe(`wallet seed file ${file}: has 12 words; 24 are required`);
    writeFileSync(file, `${ZERO_24.replace(/art$/, 'abandon')}\n`);
    expect(refusal(() => loadWalletKeys({ dataDir: dir, generate: true })))
      .toBe(`wallet seed file ${file}: the checksum does not match (a word is wrong or out of order)`);
    writeFileSync(file, 'x'.repeat(5000));
    expect(refusal(() => loadWalletKeys({ dataDir: dir, generate: true })))
      .toBe(`wallet seed file ${file} is over 4096 bytes; it must hold one 24-word mnemonic`);
  });

  it('is generated once when processes race for it', async () => {
    const dir = dataDir();
    const script = `
      import { loadWalletKeys } from ${JSON.stringify(KEYS_MODULE)};
      process.stdout.write('ready\\n');
      process.stdin.once('data', () => {
        let reply;
        try { reply = { xpub: loadWalletKeys({ dataDir: process.env.RACE_DIR, generate: true }).accountXpub }; }
        catch (error) { reply = { error: String(error && error.message) }; }
        process.stdout.write(JSON.stringify(reply) + '\\n');
        process.exit(0);
      });`;
    const children = Array.from({ length: 4 }, () => {
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
        cwd: REPO,
        env: { ...process.env, RACE_DIR: dir },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
      const ready = new Promise<void>((resolve, reject) => {
        const check = (): void => {
          if (out.includes('ready\n')) resolve();
        };
        child.stdout.on('data', check);
        child.on('exit', (code) => reject(new Error(`child exited ${code} before it was ready: ${err}`)));
      });
      const done = new Promise<string>((resolve, reject) => {
        child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`child exited ${code}: ${err}`))));
      });
      return { child, ready, done };
    });
    await Promise.all(children.map((c) => c.ready));
    for (const c of children) c.child.stdin.write('go\n');
    const outputs = await Promise.all(children.map((c) => c.done));
    const replies = outputs.map((o) => JSON.parse(o.split('\n')[1]!) as { xpub?: string; error?: string });
    expect(replies.map((r) => r.error)).toEqual([undefined, undefined, undefined, undefined]);
    const xpubs = new Set(replies.map((r) => r.xpub));
    expect(xpubs.size).toBe(1);
    expect(readdirSync(join(dir, 'wallet'))).toEqual(['seed']);
    expect(mode(join(dir, SEED_FILE))).toBe(0o600);
    const fromFile = accountNodeFromMnemonic(readFileSync(join(dir, SEED_FILE), 'utf8'));
    expect([...xpubs][0]).toBe(fromFile.accountXpub);
  });
});

/** Every primitive reachable from value through own and inherited properties (getters read). */
function leaves(value: unknown, seen = new Set<object>()): string[] {
  if (typeof value === 'string') return [value];
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return [String(value)];
  if (value instanceof Uint8Array) return [Buffer.from(value).toString('hex')];
  if (typeof value !== 'object' || value === null || seen.has(value)) return [];
  seen.add(value);
  const found: string[] = [];
  for (let o: object | null = value; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) {
    for (const key of Reflect.ownKeys(o)) {
      if (key === 'constructor') continue;
      const descriptor = Object.getOwnPropertyDescriptor(o, key)!;
      const v: unknown = descriptor.get ? descriptor.get.call(value) : descriptor.value;
      if (typeof v !== 'function') found.push(...leaves(v, seen));
    }
  }
  return found;
}

describe('canary', () => {
  const entropy = process.env.WALLET_CANARY_ENTROPY ?? randomBytes(32).toString('hex');
  console.log(`wallet-keys canary: WALLET_CANARY_ENTROPY=${entropy} (set it to replay this mnemonic)`);

  it('keeps no mnemonic word, private key or xprv in the returned object', () => {
    const mnemonic = bip39.entropyToMnemonic(entropy);
    const words = mnemonic.split(' ');
    expect(words).toHaveLength(24);
    const privateNode = HDNodeWallet.fromPhrase(mnemonic, undefined, ACCOUNT_PATH);
    const secrets = [
      mnemonic,
      privateNode.privateKey.slice(2),
      privateNode.deriveChild(0).privateKey.slice(2),
      privateNode.extendedKey,
      HDNodeWallet.fromPhrase(mnemonic, undefined, 'm').extendedKey,
      bip39.mnemonicToSeedSync(mnemonic).toString('hex'),
      entropy,
    ];
    const publicXpub = privateNode.neuter().extendedKey;

    const keys = loadWalletKeys({ dataDir: 'memory://canary', generate: true, seed: mnemonic })!;
    expect(keys.addressAt(0)).toBe(privateNode.deriveChild(0).address);

    // What it renders as: the source only.
    expect(String(keys)).toBe('[WalletKeys seed]');
    expect(`${keys}`).toBe('[WalletKeys seed]');
    expect(JSON.stringify(keys)).toBe('"[WalletKeys seed]"');
    expect(JSON.stringify({ keys })).toBe('{"keys":"[WalletKeys seed]"}');
    expect(inspect(keys)).toBe('[WalletKeys seed]');

    // What it holds, walked property by property: the source and the public xpub, nothing else.
    expect(leaves(keys).sort()).toEqual([publicXpub, 'seed'].sort());

    // The deepest rendering Node offers, custom inspect off.
    const deep = inspect(keys, { customInspect: false, showHidden: true, getters: true, depth: Infinity });
    const rendered = [String(keys), JSON.stringify(keys), inspect(keys), deep, ...leaves(keys)];
    for (const text of rendered) {
      for (const secret of secrets) expect(text.toLowerCase()).not.toContain(secret.toLowerCase());
      expect(text).not.toContain('xprv');
      // "seed" and "source" are BIP-39 words themselves: the source label and the public
      // xpub (checked above) are taken out before looking for the mnemonic's words.
      const rest = text.replaceAll(publicXpub, ' ').replace(/\bsource\b/g, ' ').replace(/\bseed\b/g, ' ');
      const tokens = new Set(rest.toLowerCase().match(/[a-z]+/g) ?? []);
      expect(words.filter((w) => tokens.has(w))).toEqual([]);
    }
  });
});
