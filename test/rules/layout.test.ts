// The layout the READMEs describe, checked: every rule folder under src/ledger/ has a
// README and is in the ledger's table; every source file a README names exists; the
// kernel imports no rule; rpc/ never reaches the database.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = new URL('../..', import.meta.url).pathname;
const LEDGER = join(ROOT, 'src/ledger');
const folders = readdirSync(LEDGER).filter((f) => statSync(join(LEDGER, f)).isDirectory());

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Relative imports of a file, resolved to paths under src/ and read as values or types. */
function imports(file: string): string[] {
  return [...readFileSync(file, 'utf8').matchAll(/from '(\.[^']+)'/g)].map((m) => relative(join(ROOT, 'src'), normalize(join(dirname(file), m[1]!))));
}

describe('layout', () => {
  it('gives every rule folder a README, listed in the ledger README', () => {
    const table = readFileSync(join(LEDGER, 'README.md'), 'utf8');
    for (const folder of folders) {
      expect(existsSync(join(LEDGER, folder, 'README.md')), folder).toBe(true);
      expect(table, folder).toContain(`(${folder}/README.md)`);
    }
  });

  it('names in the READMEs only source files that exist', () => {
    for (const folder of ['.', ...folders]) {
      const dir = join(LEDGER, folder);
      const text = readFileSync(join(dir, 'README.md'), 'utf8');
      for (const [, name] of text.matchAll(/`([\w./-]+\.ts)`/g)) {
        const candidates = [join(dir, name!), join(LEDGER, name!), join(ROOT, 'src', name!), join(ROOT, name!)];
        expect(candidates.some((c) => existsSync(c)), `${folder}/README.md names ${name}`).toBe(true);
      }
    }
  });

  it('keeps the kernel free of rules, and rpc/ away from the database', () => {
    for (const file of sources(join(LEDGER, 'kernel'))) {
      for (const target of imports(file)) {
        expect(/^(ledger\/kernel|domain|storage)\//.test(target), `${relative(ROOT, file)} imports ${target}`).toBe(true);
      }
    }
    for (const file of sources(join(ROOT, 'src/rpc'))) {
      for (const target of imports(file)) expect(target.startsWith('storage/'), `${relative(ROOT, file)} imports ${target}`).toBe(false);
    }
  });
});
