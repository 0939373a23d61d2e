// Rules tier: the kernel's unit of work called directly on PostgreSQL, no server. What the
// API cannot show: a decision with unbalanced postings is refused and leaves nothing; a
// replayed key never runs its decision again; a refusal leaves no trace under its key; and
// the facets of the account read are applied on every read and once per lock.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { BillingError } from '../../src/domain/errors.js';
import { type AccountFacet } from '../../src/ledger/kernel/account-sql.js';
import { creditDecision, TRANSACTION_RESULT } from '../../src/ledger/kernel/credit.js';
import { requestHash } from '../../src/ledger/kernel/idempotency-sql.js';
import { SYSTEM_GRANTS } from '../../src/ledger/kernel/names.js';
import { Kernel } from '../../src/ledger/kernel/unit-of-work.js';
import { createLedger } from '../../src/ledger/ledger.js';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { type Database, openDatabase } from '../../src/storage/database.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const catalogue = loadConfig({ BILLING_CONFIG: 'config/muse.json', BILLING_DATA_DIR: 'memory://' }).catalogue;
let database: TestDatabase;
let db: Database;

beforeAll(async () => {
  database = await createTestDatabase();
  db = await openDatabase({ databaseUrl: database.url, dataDir: 'memory://', poolSizeMax: 4 });
});
afterAll(async () => {
  await db.close();
  await database.drop();
});

async function written(userId: string): Promise<string> {
  const [row] = await db.query<{ c: string }>(
    `select (select count(*) from transactions where user_id = $1) || '/' || (select count(*) from idempotency_keys where user_id = $1)
       || '/' || (select count(*) from postings p where p.account = 'user:' || $1) as c`,
    [userId],
  );
  return row!.c;
}

function grantOf(kernel: Kernel, amount: bigint) {
  return (idempotencyKey: string, userId: string) =>
    kernel.post(TRANSACTION_RESULT, { userId, idempotencyKey, requestHash: requestHash('Grant', ['', amount]), operation: 'Test' }, async (_s, account) =>
      creditDecision(catalogue, account, 'GRANT', SYSTEM_GRANTS, amount, { userId, product: '', operation: '', reference: '', reason: 'r', idempotencyKey, metadata: {} }),
    );
}

describe('Kernel.post', () => {
  const kernel = () => createLedger(db, catalogue).kernel;

  it('refuses a decision whose postings do not sum to zero, and writes nothing', async () => {
    const k = kernel();
    const attempt = k.post(TRANSACTION_RESULT, { userId: 'k-unbalanced', idempotencyKey: 'a', requestHash: 'h', operation: 'Test' }, async (_s, account) => {
      const decision = creditDecision(catalogue, account, 'GRANT', SYSTEM_GRANTS, 500n, {
        userId: 'k-unbalanced', product: '', operation: '', reference: '', reason: 'r', idempotencyKey: 'a', metadata: {},
      });
      decision.write.postings[0]!.amountMillicredits = -499n;
      return decision;
    });
    await expect(attempt).rejects.toThrow(/unbalanced postings \(sum 1\)/);
    expect(await written('k-unbalanced')).toBe('0/0/0');
  });

  it('replays a used key without running the decision again, and refuses it for another request', async () => {
    const k = kernel();
    let runs = 0;
    const post = (hash: string) =>
      k.post(TRANSACTION_RESULT, { userId: 'k-replay', idempotencyKey: 'same', requestHash: hash, operation: 'Test' }, async (_s, account) => {
        runs += 1;
        return creditDecision(catalogue, account, 'GRANT', SYSTEM_GRANTS, 700n, {
          userId: 'k-replay', product: '', operation: '', reference: '', reason: 'r', idempotencyKey: 'same', metadata: {},
        });
      });
    const first = await post('h1');
    const again = await post('h1');
    expect(again).toEqual(first);
    expect(runs).toBe(1);
    const reused = await post('h2').catch((e: unknown) => e);
    expect(reused).toBeInstanceOf(BillingError);
    expect((reused as BillingError).reason).toBe('IDEMPOTENCY_KEY_REUSED');
    expect(runs).toBe(1);
    expect(await written('k-replay')).toBe('1/1/1');
  });

  it('leaves no trace under a key whose decision refused: the retry decides afresh', async () => {
    const k = kernel();
    let refuse = true;
    const post = () =>
      k.post(TRANSACTION_RESULT, { userId: 'k-refused', idempotencyKey: 'once', requestHash: 'h', operation: 'Test' }, async (_s, account) => {
        if (refuse) throw new BillingError('INSUFFICIENT_BALANCE', 'no');
        return creditDecision(catalogue, account, 'GRANT', SYSTEM_GRANTS, 1n, {
          userId: 'k-refused', product: '', operation: '', reference: '', reason: 'r', idempotencyKey: 'once', metadata: {},
        });
      });
    await expect(post()).rejects.toThrow('no');
    expect(await written('k-refused')).toBe('0/0/0');
    refuse = false;
    expect((await post()).transaction.amountMillicredits).toBe(1n);
  });

  it('runs concurrent duplicates of one key once: one write, every caller the same reply', async () => {
    const grant = grantOf(kernel(), 250n);
    const replies = await Promise.all(Array.from({ length: 16 }, () => grant('dup', 'k-dup')));
    expect(new Set(replies.map((r) => r.transaction.id)).size).toBe(1);
    expect(await written('k-dup')).toBe('1/1/1');
    expect((await verifyLedger(db)).ok).toBe(true);
  });
});

describe('account facets', () => {
  it('fold their columns into every read, and act once per lock', async () => {
    let afterLocks = 0;
    const bonus: AccountFacet = {
      columns: `length(a.user_id)::text as facet_len`,
      read: (row, account) => ({ ...account, reservedMillicredits: account.reservedMillicredits + BigInt(String(row.facet_len)) }),
      afterLock: async () => {
        afterLocks += 1;
      },
    };
    const k = new Kernel(db, catalogue, [bonus]);
    await grantOf(k, 10n)('f1', 'facet-u');
    expect(afterLocks).toBe(1);
    expect((await k.balance('facet-u')).reservedMillicredits).toBe(BigInt('facet-u'.length));
    // A user never seen reads as the empty account: no facet row to fold.
    expect((await k.balance('facet-nobody')).reservedMillicredits).toBe(0n);
  });
});
