// The wallet's key material: the BIP-44 account node m/44'/60'/0'/0 whose children /{index}
// are the deposit addresses. It comes from, in this order, WALLET_XPUB (watch-only), WALLET_SEED
// (a 24-word BIP-39 English mnemonic) or the seed file <dataDir>/wallet/seed, which is generated
// on first use when asked to. Whatever the source, only the neutered (public) node is kept: the
// returned WalletKeys holds no mnemonic and no private key, and renders as "[WalletKeys <source>]"
// only. Error messages (WalletKeyError) are safe to log: they name positions, counts, paths and
// modes, never a word of a mnemonic nor any part of an extended key.
//
// A dataDir of "memory://..." (the embedded in-memory database) keeps no files: there no seed file
// is read or generated, and without WALLET_SEED or WALLET_XPUB the wallet is off (undefined).
//
// The seed file is trusted only when it and its directory are real (not symlinks), owned by this
// process's uid and without group or other permission bits. It is created atomically: a temp file
// opened with 'wx' and mode 0600 is written and fsynced, then hard-linked to the final name, which
// fails if another process got there first (then the winner's file is read), and the directory is
// fsynced. JavaScript strings cannot be wiped: the mnemonic's text lives until it is collected, but
// no reference to it or to a private node outlives loadWalletKeys; the binary seed is zeroed.
import {
  closeSync,
  fchmodSync,
  fstatSync,
  fsyncSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readSync,
  chmodSync,
  constants as fsConstants,
  type Stats,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { join } from 'node:path';
import * as bip39 from 'bip39';
import { decodeBase58, getBytes, HDNodeVoidWallet, HDNodeWallet, hexlify, sha256, toBeArray } from 'ethers';

export type KeySource = 'xpub' | 'seed' | 'seed-file';

export interface WalletKeys {
  readonly source: KeySource;
  /** The account node m/44'/60'/0'/0 as an xpub. Public, but treat it as sensitive: never log it. */
  readonly accountXpub: string;
  /** EIP-55 checksummed address of m/44'/60'/0'/0/{index}; index a non-negative integer < 2^31. */
  addressAt(index: number): string;
}

/** Bad or unsafe key material. The message is safe to log. */
export class WalletKeyError extends Error {
  override readonly name = 'WalletKeyError';
}

export interface KeyOptions {
  readonly seed?: string;
  readonly xpub?: string;
  readonly dataDir: string;
  readonly generate: boolean;
  /** Told the path when this call created the seed file (so the operator can back it up). */
  readonly onSeedFileCreated?: (path: string) => void;
}

/** The seed file, relative to the data directory. */
export const SEED_FILE = 'wallet/seed';

const ACCOUNT_PATH = "m/44'/60'/0'/0";
const ACCOUNT_DEPTH = 4;
/** The version bytes of a mainnet extended public key ("xpub..."). */
const XPUB_VERSION = '0x0488b21e';
const INDEX_LIMIT = 2 ** 31;
const SEED_WORDS = 24;
const VALID_LENGTHS: readonly number[] = [12, 15, 18, 21, 24];
/** A 24-word English mnemonic is at most 24 × 8 + 23 bytes; anything far larger is not one. */
const SEED_FILE_BYTES_MAX = 4096;
const ENGLISH = bip39.wordlists.english;
if (!ENGLISH || ENGLISH.length !== 2048) throw new Error('bip39: the English word list is missing');
const ENGLISH_WORDS: ReadonlySet<string> = new Set(ENGLISH);

class AccountKeys implements WalletKeys {
  readonly #node: HDNodeVoidWallet;
  readonly #xpub: string;
  readonly source: KeySource;

  constructor(node: HDNodeVoidWallet, source: KeySource) {
    this.#node = node;
    this.#xpub = node.extendedKey;
    this.source = source;
    Object.freeze(this);
  }

  get accountXpub(): string {
    return this.#xpub;
  }

  addressAt(index: number): string {
    if (!Number.isInteger(index) || index < 0 || index >= INDEX_LIMIT) {
      throw new RangeError(`address index must be an integer from 0 to 2^31-1, got ${String(index)}`);
    }
    return this.#node.deriveChild(index).address;
  }

  toString(): string {
    return `[WalletKeys ${this.source}]`;
  }

  toJSON(): string {
    return this.toString();
  }

  [inspect.custom](): string {
    return this.toString();
  }
}

/**
 * Normalises a mnemonic (trim, collapse whitespace, lower-case) and checks its length, each
 * word and the checksum. Messages start with label and never quote a word.
 */
function checkedMnemonic(text: string, label: string, lengths: readonly number[]): string {
  const trimmed = text.normalize('NFKD').trim().toLowerCase();
  const words = trimmed === '' ? [] : trimmed.split(/\s+/);
  if (!lengths.includes(words.length)) {
    const required = lengths.length === 1
      ? `${lengths[0]} are required`
      : `a BIP-39 mnemonic has ${lengths.slice(0, -1).join(', ')} or ${lengths.at(-1)}`;
    throw new WalletKeyError(`${label}: has ${words.length} word${words.length === 1 ? '' : 's'}; ${required}`);
  }
  const bad = words.findIndex((word) => !ENGLISH_WORDS.has(word));
  if (bad >= 0) throw new WalletKeyError(`${label}: word ${bad + 1} is not in the BIP-39 English word list`);
  const phrase = words.join(' ');
  if (!bip39.validateMnemonic(phrase, ENGLISH)) {
    throw new WalletKeyError(`${label}: the checksum does not match (a word is wrong or out of order)`);
  }
  return phrase;
}

/** The public account node of a checked phrase; the binary seed is zeroed before returning. */
function accountOfPhrase(phrase: string, source: KeySource): WalletKeys {
  const seed = bip39.mnemonicToSeedSync(phrase);
  try {
    return new AccountKeys(HDNodeWallet.fromSeed(seed).derivePath(ACCOUNT_PATH).neuter(), source);
  } finally {
    seed.fill(0);
  }
}

/** Pure: the account node of a mnemonic of any valid BIP-39 length (used by tests and by loadWalletKeys). */
export function accountNodeFromMnemonic(mnemonic: string): WalletKeys {
  return accountOfPhrase(checkedMnemonic(mnemonic, 'mnemonic', VALID_LENGTHS), 'seed');
}

function accountOfXpub(text: string, label: string): WalletKeys {
  const key = text.trim();
  if (/^[a-z]prv/i.test(key)) throw new WalletKeyError(`${label} holds a private key; give the public (xpub) form`);
  const invalid = `${label} is not a valid extended public key (xpub) of the account node ${ACCOUNT_PATH}`;
  // ethers 6.17.0 skips the base58check checksum of any 82-byte key (its test is `length === 82
  // || checksum`), so a typo in the key or the chain code would give other, unspendable
  // addresses: the checksum and the mainnet xpub version are checked here first.
  if (!hasXpubChecksum(key)) throw new WalletKeyError(invalid);
  let node: HDNodeWallet | HDNodeVoidWallet;
  try {
    node = HDNodeWallet.fromExtendedKey(key);
  } catch {
    // ethers' message is not quoted: it is not needed, and it must not carry the key.
    throw new WalletKeyError(invalid);
  }
  if (!(node instanceof HDNodeVoidWallet)) {
    throw new WalletKeyError(`${label} holds a private key; give the public (xpub) form`);
  }
  if (node.depth !== ACCOUNT_DEPTH) {
    throw new WalletKeyError(
      `${label} is a node at depth ${node.depth}; it must be the account node ${ACCOUNT_PATH} (depth ${ACCOUNT_DEPTH})`,
    );
  }
  // The last step of m/44'/60'/0'/0 is the external chain, 0; 1 is the change chain.
  if (node.index !== 0) {
    throw new WalletKeyError(`${label} is child ${node.index} of its parent; the account node ${ACCOUNT_PATH} is child 0`);
  }
  return new AccountKeys(node, 'xpub');
}

/** Whether key is base58check of 78 bytes with the mainnet public version 0x0488b21e. */
function hasXpubChecksum(key: string): boolean {
  let bytes: Uint8Array;
  try {
    bytes = toBeArray(decodeBase58(key));
  } catch {
    return false;
  }
  if (bytes.length !== 82 || hexlify(bytes.subarray(0, 4)) !== XPUB_VERSION) return false;
  const checksum = getBytes(sha256(sha256(bytes.subarray(0, 78)))).subarray(0, 4);
  return checksum.every((byte, i) => byte === bytes[78 + i]);
}

export function accountNodeFromXpub(xpub: string): WalletKeys {
  return accountOfXpub(xpub, 'xpub');
}

/** undefined = no key material (wallet off). Throws WalletKeyError on bad or unsafe material. */
export function loadWalletKeys(options: KeyOptions): WalletKeys | undefined {
  const xpub = options.xpub === '' ? undefined : options.xpub;
  const seed = options.seed === '' ? undefined : options.seed;
  if (xpub !== undefined && seed !== undefined) {
    throw new WalletKeyError('both WALLET_XPUB and WALLET_SEED are set: set one (WALLET_XPUB for a watch-only service)');
  }
  if (xpub !== undefined) return accountOfXpub(xpub, 'WALLET_XPUB');
  if (seed !== undefined) return accountOfPhrase(checkedMnemonic(seed, 'WALLET_SEED', [SEED_WORDS]), 'seed');
  if (options.dataDir.startsWith('memory://')) return undefined;

  const dir = join(options.dataDir, 'wallet');
  const file = join(options.dataDir, SEED_FILE);
  if (exists(file)) return readSeedFile(dir, file);
  if (!options.generate) return undefined;
  if (generateSeedFile(options.dataDir, dir, file)) options.onSeedFileCreated?.(file);
  return readSeedFile(dir, file);
}

function code(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? 'an unknown error';
}

/** Whether path exists (a dangling symlink counts: it is refused when read). */
function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch (error) {
    if (code(error) === 'ENOENT') return false;
    throw new WalletKeyError(`wallet seed file ${path} cannot be examined: ${code(error)}`);
  }
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/** Refuses a symlink, the wrong kind of file, another owner or any group/other permission bit. */
function checkSafe(stats: Stats, what: 'directory' | 'file', path: string): void {
  const name = `wallet seed ${what} ${path}`;
  if (stats.isSymbolicLink()) throw new WalletKeyError(`${name} is a symbolic link; it must be a real ${what}`);
  if (what === 'directory' ? !stats.isDirectory() : !stats.isFile()) {
    throw new WalletKeyError(`${name} is not a ${what === 'directory' ? 'directory' : 'regular file'}`);
  }
  const uid = process.getuid?.();
  if (uid !== undefined && stats.uid !== uid) {
    throw new WalletKeyError(`${name} is owned by uid ${stats.uid}, not by this process's uid ${uid} (chown it)`);
  }
  if ((stats.mode & 0o077) !== 0) {
    const [want, chmod] = what === 'directory' ? ['0700', '700'] : ['0600', '600'];
    throw new WalletKeyError(`${name} has mode ${octal(stats.mode)}; it must be ${want} (chmod ${chmod} it)`);
  }
}

function lstatChecked(path: string, what: 'directory' | 'file'): Stats {
  let stats: Stats;
  try {
    stats = lstatSync(path);
  } catch (error) {
    throw new WalletKeyError(`wallet seed ${what} ${path} cannot be examined: ${code(error)}`);
  }
  checkSafe(stats, what, path);
  return stats;
}

function readSeedFile(dir: string, file: string): WalletKeys {
  lstatChecked(dir, 'directory');
  const before = lstatChecked(file, 'file');
  let fd: number;
  try {
    fd = openSync(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  } catch (error) {
    throw new WalletKeyError(`wallet seed file ${file} cannot be opened: ${code(error)}`);
  }
  const buffer = Buffer.alloc(SEED_FILE_BYTES_MAX + 1);
  try {
    const opened = fstatSync(fd);
    // The file examined must be the file opened (no swap in between).
    if (opened.ino !== before.ino || opened.dev !== before.dev) {
      throw new WalletKeyError(`wallet seed file ${file} changed while it was being opened; try again`);
    }
    checkSafe(opened, 'file', file);
    let length = 0;
    for (;;) {
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
      if (length > SEED_FILE_BYTES_MAX) {
        throw new WalletKeyError(`wallet seed file ${file} is over ${SEED_FILE_BYTES_MAX} bytes; it must hold one 24-word mnemonic`);
      }
    }
    const phrase = checkedMnemonic(buffer.subarray(0, length).toString('utf8'), `wallet seed file ${file}`, [SEED_WORDS]);
    return accountOfPhrase(phrase, 'seed-file');
  } finally {
    buffer.fill(0);
    closeSync(fd);
  }
}

/**
 * Writes a new 24-word mnemonic to file unless another process has already: temp file ('wx',
 * 0600), fsync, link to the final name (EEXIST: another process won), unlink the temp, fsync
 * the directory. The caller then reads the file, whoever wrote it.
 */
function generateSeedFile(dataDir: string, dir: string, file: string): boolean {
  let created = false;
  try {
    mkdirSync(dataDir, { recursive: true });
  } catch (error) {
    throw new WalletKeyError(`data directory ${dataDir} cannot be created: ${code(error)}`);
  }
  try {
    mkdirSync(dir, { mode: 0o700 });
    chmodSync(dir, 0o700); // the umask may have taken bits we need
  } catch (error) {
    if (code(error) !== 'EEXIST') throw new WalletKeyError(`wallet seed directory ${dir} cannot be created: ${code(error)}`);
  }
  lstatChecked(dir, 'directory');

  const temp = join(dir, `.seed.${process.pid}.${randomBytes(8).toString('hex')}.tmp`);
  let fd: number;
  try {
    fd = openSync(temp, 'wx', 0o600);
  } catch (error) {
    throw new WalletKeyError(`wallet seed file ${temp} cannot be created: ${code(error)}`);
  }
  try {
    try {
      fchmodSync(fd, 0o600);
      const content = Buffer.from(`${bip39.generateMnemonic(256)}\n`, 'utf8');
      try {
        let written = 0;
        while (written < content.length) written += writeSync(fd, content, written);
      } finally {
        content.fill(0);
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    try {
      linkSync(temp, file);
      created = true;
    } catch (error) {
      if (code(error) !== 'EEXIST') throw new WalletKeyError(`wallet seed file ${file} cannot be created: ${code(error)}`);
      // Another process won the race: its file is read by the caller.
    }
  } catch (error) {
    if (error instanceof WalletKeyError) throw error;
    throw new WalletKeyError(`wallet seed file ${temp} cannot be written: ${code(error)}`);
  } finally {
    try {
      unlinkSync(temp);
    } catch {
      // Already gone; nothing else to do.
    }
  }
  try {
    const dirFd = openSync(dir, 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  } catch (error) {
    throw new WalletKeyError(`wallet seed directory ${dir} cannot be synced: ${code(error)}`);
  }
  return created;
}
