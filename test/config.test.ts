// Configuration is validated once, at start-up, with every problem reported together.
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseCatalogue } from '../src/config.js';
import { readFileSync } from 'node:fs';

const muse = JSON.parse(readFileSync(new URL('../config/muse.json', import.meta.url), 'utf8')) as Record<string, unknown>;

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
