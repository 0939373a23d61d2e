// Configuration is validated once, at start-up, with every problem reported together.
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseCatalogue } from '../../src/config.js';
import { readFileSync } from 'node:fs';

const muse = JSON.parse(readFileSync(new URL('../../config/muse.json', import.meta.url), 'utf8')) as Record<string, unknown>;

function problemsOf(fn: () => unknown): readonly string[] {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error.problems;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration', () => {
  it('loads both shipped catalogues', () => {
    expect(loadConfig({ BILLING_CONFIG: 'config/muse.json' }).catalogue.name).toBe('muse');
    const mu = loadConfig({ BILLING_CONFIG: 'config/mu.json' }).catalogue;
    expect(mu.dailyFreePerDay).toBe(10n);
    expect([...mu.dailyFreeOperations].sort()).toEqual(['chat.query', 'news.search', 'video.search']);
  });

  it('reports every catalogue problem at once', () => {
    const broken = {
      ...muse,
      pricing: { tokensPerUnit: 60_000, outputWeight: 2 },
      models: [{ name: 'm', tier: 'FAST', multiplier: '2.2.2', proOnly: false }],
    };
    const problems = problemsOf(() => parseCatalogue(JSON.stringify(broken), 'broken.json'));
    expect(problems.some((p) => p.includes('pricing.tokensPerUnit'))).toBe(true);
    expect(problems.some((p) => p.includes('pricing.outputWeight'))).toBe(true);
    expect(problems.some((p) => p.includes('models.0.multiplier'))).toBe(true);
  });

  it('refuses schedules that are not cron expressions and operations that do not exist', () => {
    const broken = {
      ...muse,
      dailyTopUp: { targetMillicredits: 5000, schedule: 'every midnight' },
      dailyFreeOperations: { perDay: 3, operations: ['nope.op'] },
    };
    const problems = problemsOf(() => parseCatalogue(JSON.stringify(broken), 'broken.json'));
    expect(problems.some((p) => p.includes('dailyTopUp.schedule'))).toBe(true);
    expect(problems.some((p) => p.includes('nope.op'))).toBe(true);
  });

  it('refuses an open service on a public interface and bad tokens, together with env errors', () => {
    const problems = problemsOf(() => loadConfig({ HOST: '0.0.0.0', PORT: '99999', BILLING_TOKENS: 'short=spend' }));
    expect(problems.some((p) => p.includes('PORT'))).toBe(true);
    expect(problems.some((p) => p.includes('BILLING_TOKENS'))).toBe(true);
    const open = problemsOf(() => loadConfig({ HOST: '0.0.0.0' }));
    expect(open.some((p) => p.startsWith('HOST'))).toBe(true);
    const scopes = problemsOf(() => loadConfig({ BILLING_TOKENS: 'a-token-of-enough-length=spend+root' }));
    expect(scopes.some((p) => p.includes('root'))).toBe(true);
  });
});

describe('data directory', () => {
  it('keeps "memory://" as an in-memory database instead of resolving it to a path', () => {
    expect(loadConfig({ BILLING_DATA_DIR: 'memory://' }).dataDir).toBe('memory://');
    expect(loadConfig({ BILLING_DATA_DIR: 'data' }).dataDir).toMatch(/^\/.*\/data$/);
  });
});

describe('production on the embedded database', () => {
  const production = { NODE_ENV: 'production', BILLING_TOKENS: 'a-token-of-enough-length=spend', BILLING_DATA_DIR: 'memory://' };

  it('is refused without DATABASE_URL unless BILLING_ALLOW_EMBEDDED=1, naming both variables', () => {
    const problems = problemsOf(() => loadConfig(production));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^DATABASE_URL: required when NODE_ENV=production; .*BILLING_ALLOW_EMBEDDED=1/);
    expect(problemsOf(() => loadConfig({ ...production, BILLING_ALLOW_EMBEDDED: '0' }))).toEqual(problems);
    expect(loadConfig({ ...production, BILLING_ALLOW_EMBEDDED: '1' }).databaseUrl).toBeUndefined();
  });

  it('runs on PostgreSQL, and outside production on the embedded database, without the permission', () => {
    expect(loadConfig({ ...production, DATABASE_URL: 'postgres://db/billing' }).databaseUrl).toBe('postgres://db/billing');
    expect(loadConfig({ BILLING_DATA_DIR: 'memory://' }).production).toBe(false);
  });

  it('refuses a BILLING_ALLOW_EMBEDDED that is neither 0 nor 1', () => {
    const problems = problemsOf(() => loadConfig({ ...production, BILLING_ALLOW_EMBEDDED: 'yes' }));
    expect(problems.some((p) => p.startsWith('env BILLING_ALLOW_EMBEDDED: must be 1 (allow) or 0'))).toBe(true);
  });
});

describe('wallet configuration', () => {
  const mu = JSON.parse(readFileSync(new URL('../../config/mu.json', import.meta.url), 'utf8')) as Record<string, unknown>;
  const SEED = `${'abandon '.repeat(23)}art`;

  it('turns the seed into a public node and the mu deposit terms into exact prices', () => {
    const config = loadConfig({ BILLING_CONFIG: 'config/mu.json', BILLING_DATA_DIR: 'memory://', WALLET_SEED: SEED, BASE_RPC_URL: 'http://127.0.0.1:1/' });
    expect(config.wallet.disabledReason).toBeUndefined();
    expect(config.wallet.keys?.source).toBe('seed');
    expect(config.wallet.chains.map((c) => [c.spec.name, c.confirmations])).toEqual([['base', undefined]]);
    expect(config.wallet.terms?.creditPriceUsdCents).toEqual({ units: 127n, scale: 2 });
    expect(config.wallet.terms?.minimumUsdCents).toBe(100n);
    expect(config.wallet.terms?.prices.get('ETH')?.kind).toBe('chainlink');
    expect(JSON.stringify(config, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))).not.toContain('abandon');
  });

  it('is off, saying why, without chains, without deposit terms, or without keys', () => {
    expect(loadConfig({ BILLING_CONFIG: 'config/mu.json', BILLING_DATA_DIR: 'memory://', WALLET_SEED: SEED }).wallet.disabledReason).toContain(
      'no chain RPC URL',
    );
    expect(
      loadConfig({ BILLING_CONFIG: 'config/muse.json', BILLING_DATA_DIR: 'memory://', WALLET_SEED: SEED, BASE_RPC_URL: 'http://x/' }).wallet
        .disabledReason,
    ).toContain('no "deposits" section');
    const noKeys = loadConfig({ BILLING_CONFIG: 'config/mu.json', BILLING_DATA_DIR: 'memory://', BASE_RPC_URL: 'http://x/' }).wallet;
    expect(noKeys.disabledReason).toContain('no key material');
    expect(noKeys.keys).toBeUndefined();
  });

  it('refuses bad chain settings without quoting the URL', () => {
    const problems = problemsOf(() =>
      loadConfig({ BILLING_CONFIG: 'config/mu.json', BILLING_DATA_DIR: 'memory://', BASE_RPC_URL: 'ftp://host/SECRETKEY', BASE_CONFIRMATIONS: '0' }),
    );
    expect(problems.some((p) => p.startsWith('env BASE_RPC_URL'))).toBe(true);
    expect(problems.some((p) => p.startsWith('env BASE_CONFIRMATIONS'))).toBe(true);
    expect(problems.join('\n')).not.toContain('SECRETKEY');
  });

  it('refuses a bad seed word by position, never quoting the words', () => {
    const bad = SEED.replace('art', 'zzzz');
    const problems = problemsOf(() => loadConfig({ BILLING_CONFIG: 'config/mu.json', BILLING_DATA_DIR: 'memory://', WALLET_SEED: bad }));
    expect(problems.join('\n')).toContain('word 24');
    expect(problems.join('\n')).not.toMatch(/abandon|zzzz/);
  });

  it('refuses bad deposit terms in the catalogue', () => {
    const deposits = mu.deposits as Record<string, unknown>;
    const broken = {
      ...mu,
      deposits: {
        ...deposits,
        creditPriceUsdCents: '1.2.7',
        tokens: [{ chain: 'base', symbol: 'USDC', contract: '0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913', decimals: 6 }],
        prices: { DOGE: { staticUsdCents: '10' } },
      },
    };
    const problems = problemsOf(() => parseCatalogue(JSON.stringify(broken), 'broken.json'));
    expect(problems.some((p) => p.includes('deposits.creditPriceUsdCents'))).toBe(true);
    const zero = { ...mu, deposits: { ...deposits, creditPriceUsdCents: '0' } };
    expect(problemsOf(() => parseCatalogue(JSON.stringify(zero), 'zero.json')).some((p) => p.includes('must be positive'))).toBe(true);
    const dup = { ...mu, deposits: { ...deposits, tokens: broken.deposits.tokens, prices: { DOGE: { staticUsdCents: '10' } } } };
    const dupProblems = problemsOf(() => parseCatalogue(JSON.stringify(dup), 'dup.json'));
    expect(dupProblems.some((p) => p.includes('already accepts USDC'))).toBe(true);
    expect(dupProblems.some((p) => p.includes('"DOGE" is not an accepted token'))).toBe(true);
  });
});
