// The ledger core over real sockets against real PostgreSQL: charges, grants, refunds,
// idempotency, history, and the invariants after concurrent load.
import { Code } from '@connectrpc/connect';
import { describe, expect, it } from 'vitest';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { TransactionType } from '../../gen/billing/v1/types_pb.js';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { sqlState } from '../../src/storage/database.js';
import { failure, fund, key, outcome, refusal, refused, useTestApp } from '../support/app.js';

// Races of up to 128 calls at once: past the default admission bound (32), which would
// refuse some as OVERLOADED; the bound is test/server/db-faults.test.ts's subject.
const t = useTestApp({ env: { DATABASE_WORK_MAX: '256' } });

function chargeAmount(userId: string, amount: bigint, idempotencyKey = key('charge')) {
  return t.billing.charge({
    userId,
    idempotencyKey,
    product: 'muse',
    usage: { case: 'amountMillicredits', value: amount },
  });
}

describe('balances', () => {
  it('reads an unknown user as 0 on the FREE plan without creating it', async () => {
    const { balance } = await t.billing.getBalance({ userId: 'nobody-yet' });
    expect(balance?.balanceMillicredits).toBe(0n);
    expect(balance?.availableMillicredits).toBe(0n);
    expect(balance?.plan).toBe(1); // PLAN_FREE
    expect(balance?.canStart).toBe(false);
    expect(balance?.lowBalance).toBe(true);
    const rows = await t.app.db.query("select 1 from user_accounts where user_id = 'nobody-yet'");
    expect(rows).toHaveLength(0);
  });

  it('grants by SKU and explicit amount, and charges operations at catalogue prices', async () => {
    const user = 'sku-user';
    const boost = await t.billing.grant({ userId: user, idempotencyKey: key(), grant: { case: 'sku', value: 'boost_50' } });
    expect(boost.transaction?.amountMillicredits).toBe(50_000n);
    expect(boost.transaction?.operation).toBe('boost_50');
    expect(boost.transaction?.type).toBe(TransactionType.GRANT);
    const charged = await t.billing.charge({
      userId: user,
      idempotencyKey: key(),
      product: 'muse',
      usage: { case: 'operation', value: { name: 'sample.generate', quantity: 3n } },
    });
    expect(charged.chargedMillicredits).toBe(6_000n);
    expect(charged.price?.unitPriceMillicredits).toBe(2_000n);
    expect(charged.balance?.balanceMillicredits).toBe(44_000n);
    expect(charged.transaction?.balanceAfterMillicredits).toBe(44_000n);
    expect(charged.transaction?.amountMillicredits).toBe(-6_000n);
  });

  it('refuses an unaffordable charge and changes nothing; the same key works once funds arrive', async () => {
    const user = 'short-user';
    await fund(t, user, 1_000n);
    const k = key('retry');
    const { error, detail } = await failure(chargeAmount(user, 1_500n, k));
    expect(error.code).toBe(Code.FailedPrecondition);
    expect(detail?.reason).toBe(ErrorReason.INSUFFICIENT_BALANCE);
    expect(detail?.requiredMillicredits).toBe(1_500n);
    expect(detail?.availableMillicredits).toBe(1_000n);
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(1_000n);
    await fund(t, user, 1_000n);
    const ok = await chargeAmount(user, 1_500n, k);
    expect(ok.chargedMillicredits).toBe(1_500n);
    expect(ok.balance?.balanceMillicredits).toBe(500n);
  });

  it('with allow_partial debits what is available and reports the shortfall', async () => {
    const user = 'partial-user';
    await fund(t, user, 700n);
    const res = await t.billing.charge({
      userId: user,
      idempotencyKey: key(),
      product: 'muse',
      usage: { case: 'amountMillicredits', value: 1_000n },
      allowPartial: true,
    });
    expect(res.chargedMillicredits).toBe(700n);
    expect(res.shortfallMillicredits).toBe(300n);
    expect(res.balance?.balanceMillicredits).toBe(0n);
  });
});

describe('refunds', () => {
  it('returns part, then the rest, and never more than was charged', async () => {
    const user = 'refund-user';
    await fund(t, user, 10_000n);
    const charge = await chargeAmount(user, 4_000n);
    const transactionId = charge.transaction!.id;
    const part = await t.billing.refund({ userId: user, idempotencyKey: key(), transactionId, amountMillicredits: 1_000n, reason: 'bad output' });
    expect(part.transaction?.amountMillicredits).toBe(1_000n);
    expect(part.transaction?.refundedTransactionId).toBe(transactionId);
    expect(part.balance?.balanceMillicredits).toBe(7_000n);
    const tooMuch = await failure(
      t.billing.refund({ userId: user, idempotencyKey: key(), transactionId, amountMillicredits: 3_001n, reason: 'x' }),
    );
    expect(tooMuch.detail?.reason).toBe(ErrorReason.REFUND_EXCEEDS_CHARGE);
    expect(tooMuch.detail?.availableMillicredits).toBe(3_000n);
    const rest = await t.billing.refund({ userId: user, idempotencyKey: key(), transactionId, amountMillicredits: 0n, reason: 'rest' });
    expect(rest.transaction?.amountMillicredits).toBe(3_000n);
    expect(rest.balance?.balanceMillicredits).toBe(10_000n);
    const none = await failure(t.billing.refund({ userId: user, idempotencyKey: key(), transactionId, reason: 'again' }));
    expect(none.detail?.reason).toBe(ErrorReason.REFUND_EXCEEDS_CHARGE);
  });

  it('refuses refunds of another user\'s charge, of non-charges and of unknown ids', async () => {
    await fund(t, 'refund-a', 5_000n);
    const charge = await chargeAmount('refund-a', 1_000n);
    const other = await failure(
      t.billing.refund({ userId: 'refund-b', idempotencyKey: key(), transactionId: charge.transaction!.id, reason: 'x' }),
    );
    expect(other.error.code).toBe(Code.NotFound);
    expect(other.detail?.reason).toBe(ErrorReason.TRANSACTION_NOT_FOUND);
    const g = await fund(t, 'refund-a', 1n);
    const notCharge = await failure(
      t.billing.refund({ userId: 'refund-a', idempotencyKey: key(), transactionId: g.transaction!.id, reason: 'x' }),
    );
    expect(notCharge.detail?.reason).toBe(ErrorReason.NOT_A_CHARGE);
  });

  it('keeps refunds within the charge under concurrency; every loser is REFUND_EXCEEDS_CHARGE', async () => {
    const user = 'refund-race';
    await fund(t, user, 10_000n);
    const charge = await chargeAmount(user, 5_000n);
    const outcomes = await Promise.all(
      Array.from({ length: 20 }, () =>
        outcome(
          t.billing.refund({
            userId: user,
            idempotencyKey: key('rr'),
            transactionId: charge.transaction!.id,
            amountMillicredits: 1_000n,
            reason: 'race',
          }),
        ),
      ),
    );
    const won = outcomes.filter((o) => o.ok);
    expect(won).toHaveLength(5);
    for (const o of won) expect(o.value.transaction?.amountMillicredits).toBe(1_000n);
    const lost = outcomes.filter((o) => !o.ok);
    expect(lost).toHaveLength(15);
    for (const o of lost) {
      expect(refusal(o)).toBe(refused(Code.FailedPrecondition, ErrorReason.REFUND_EXCEEDS_CHARGE));
      expect(o.detail?.availableMillicredits).toBe(0n); // the winners took all 5,000
      expect(o.detail?.requiredMillicredits).toBe(1_000n);
    }
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(10_000n);
  });
});

describe('postings', () => {
  /** The postings of one transaction, by account. */
  async function postingsOf(transactionId: string): Promise<Record<string, string>> {
    const rows = await t.app.db.query<{ account: string; amount: string }>(
      'select account, amount_millicredits::text as amount from postings where transaction_id = $1::bigint',
      [transactionId],
    );
    return Object.fromEntries(rows.map((r) => [r.account, r.amount]));
  }

  it('a grant moves credits from system:grants, a charge to its product\'s revenue, a refund back from that revenue', async () => {
    const user = 'posting-user';
    const granted = await fund(t, user, 9_000n);
    expect(await postingsOf(granted.transaction!.id)).toEqual({ 'system:grants': '-9000', 'user:posting-user': '9000' });
    // Two products, so a refund that posted from the wrong revenue account would show.
    const studio = await t.billing.charge({
      userId: user,
      idempotencyKey: key(),
      product: 'studio',
      usage: { case: 'amountMillicredits', value: 3_000n },
    });
    const muse = await chargeAmount(user, 2_000n);
    expect(await postingsOf(studio.transaction!.id)).toEqual({ 'user:posting-user': '-3000', 'system:revenue:studio': '3000' });
    expect(await postingsOf(muse.transaction!.id)).toEqual({ 'user:posting-user': '-2000', 'system:revenue:muse': '2000' });
    const refund = await t.billing.refund({
      userId: user,
      idempotencyKey: key(),
      transactionId: studio.transaction!.id,
      amountMillicredits: 1_200n,
      reason: 'bad output',
    });
    expect(refund.transaction?.product).toBe('studio');
    expect(await postingsOf(refund.transaction!.id)).toEqual({ 'user:posting-user': '1200', 'system:revenue:studio': '-1200' });
    // A charge of nothing (allow_partial on an empty balance) moves nothing: no postings at all.
    const drained = await chargeAmount(user, 5_200n); // 9,000 − 3,000 − 2,000 + 1,200
    expect(drained.balance?.balanceMillicredits).toBe(0n);
    const empty = await t.billing.charge({
      userId: user,
      idempotencyKey: key(),
      product: 'muse',
      usage: { case: 'amountMillicredits', value: 500n },
      allowPartial: true,
    });
    expect([empty.chargedMillicredits, empty.shortfallMillicredits]).toEqual([0n, 500n]);
    expect(await postingsOf(empty.transaction!.id)).toEqual({});
  });
});

describe('the ledger drift check', () => {
  it('refuses a write whose stored balance is not the one computed under the lock, and writes nothing', async () => {
    const user = 'drift-user';
    await fund(t, user, 5_000n);
    // A trigger stands in for any writer that moves the balance behind the account lock
    // (a lost lock, a stray UPDATE): the stored result then differs from the computed one.
    await t.app.db.query(`create function test_drift() returns trigger language plpgsql as $$
      begin new.balance_millicredits := new.balance_millicredits + 1; return new; end $$`);
    await t.app.db.query(`create trigger test_drift before update on user_accounts for each row
      when (new.user_id = 'drift-user') execute function test_drift()`);
    try {
      const { error } = await failure(chargeAmount(user, 1_000n));
      expect(error.code).toBe(Code.Internal);
    } finally {
      await t.app.db.query('drop trigger test_drift on user_accounts');
      await t.app.db.query('drop function test_drift()');
    }
    const [row] = await t.app.db.query<{ balance: string; transactions: number; postings: number }>(
      `select a.balance_millicredits::text as balance,
              (select count(*)::int from transactions where user_id = a.user_id) as transactions,
              (select count(*)::int from postings where account = 'user:' || a.user_id) as postings
         from user_accounts a where a.user_id = $1`,
      [user],
    );
    expect(row).toEqual({ balance: '5000', transactions: 1, postings: 1 });
    expect((await chargeAmount(user, 1_000n)).balance?.balanceMillicredits).toBe(4_000n);
  });
});

describe('idempotency', () => {
  it('32 concurrent identical Grants take effect once and return the same transaction', async () => {
    const user = 'idem-grant';
    const k = key('same');
    const request = {
      userId: user,
      idempotencyKey: k,
      grant: { case: 'amountMillicredits' as const, value: 7_000n },
      reason: 'once',
      reference: 'inv-1',
    };
    const results = await Promise.all(Array.from({ length: 32 }, () => t.billing.grant(request)));
    const ids = new Set(results.map((r) => r.transaction?.id));
    expect(ids.size).toBe(1);
    expect(results.every((r) => r.balance?.balanceMillicredits === 7_000n)).toBe(true);
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(7_000n);
    const rows = await t.app.db.query('select count(*)::int as n from transactions where user_id = $1', [user]);
    expect(rows[0]?.n).toBe(1);
    const reused = await failure(t.billing.grant({ ...request, grant: { case: 'amountMillicredits', value: 7_001n } }));
    expect(reused.error.code).toBe(Code.AlreadyExists);
    expect(reused.detail?.reason).toBe(ErrorReason.IDEMPOTENCY_KEY_REUSED);
  });

  it('replays a Charge with its original result, also over HTTP/1.1 Connect JSON', async () => {
    const user = 'idem-charge';
    await fund(t, user, 5_000n);
    const k = key();
    const first = await chargeAmount(user, 1_000n, k);
    await chargeAmount(user, 1_000n); // the balance moves on
    const replay = await t.billingHttp1.charge({
      userId: user,
      idempotencyKey: k,
      product: 'muse',
      usage: { case: 'amountMillicredits', value: 1_000n },
    });
    expect(replay.transaction?.id).toBe(first.transaction?.id);
    expect(replay.balance?.balanceMillicredits).toBe(4_000n);
    expect(replay.transaction?.createdAt).toEqual(first.transaction?.createdAt);
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(3_000n);
    const other = await failure(chargeAmount(user, 999n, k));
    expect(other.detail?.reason).toBe(ErrorReason.IDEMPOTENCY_KEY_REUSED);
  });

  it('scopes keys to the user', async () => {
    const k = key('shared');
    await fund(t, 'scope-a', 1n);
    const a = await t.billing.grant({ userId: 'scope-a', idempotencyKey: k, grant: { case: 'amountMillicredits', value: 5n }, reason: 'r' });
    const b = await t.billing.grant({ userId: 'scope-b', idempotencyKey: k, grant: { case: 'amountMillicredits', value: 5n }, reason: 'r' });
    expect(a.transaction?.id).not.toBe(b.transaction?.id);
  });
});

describe('history', () => {
  it('lists newest first with cursor pages and a type filter', async () => {
    const user = 'history-user';
    await fund(t, user, 100_000n);
    for (let i = 0; i < 7; i += 1) await chargeAmount(user, 10n + BigInt(i));
    const seen: string[] = [];
    let pageToken = '';
    do {
      const page = await t.billing.listTransactions({ userId: user, pageSize: 3, pageToken });
      expect(page.transactions.length).toBeLessThanOrEqual(3);
      seen.push(...page.transactions.map((tx) => tx.id));
      pageToken = page.nextPageToken;
    } while (pageToken !== '');
    expect(seen).toHaveLength(8);
    const numeric = seen.map(BigInt);
    expect([...numeric].sort((a, b) => (a > b ? -1 : 1))).toEqual(numeric);
    const grants = await t.billing.listTransactions({ userId: user, types: [TransactionType.GRANT] });
    expect(grants.transactions.map((tx) => tx.type)).toEqual([TransactionType.GRANT]);
    const bad = await failure(t.billing.listTransactions({ userId: user, pageToken: 'garbage' }));
    expect(bad.detail?.field).toBe('page_token');
  });
});

describe('concurrency', () => {
  it('96 concurrent Charges on one account never overdraw; every loser is INSUFFICIENT_BALANCE', async () => {
    const user = 'hot-user';
    await fund(t, user, 40_000n); // affords exactly 40 charges of 1,000
    const outcomes = await Promise.all(Array.from({ length: 96 }, () => outcome(chargeAmount(user, 1_000n))));
    const won = outcomes.filter((o) => o.ok);
    expect(won).toHaveLength(40);
    for (const o of won) expect(o.value.chargedMillicredits).toBe(1_000n);
    const lost = outcomes.filter((o) => !o.ok);
    expect(lost).toHaveLength(56);
    for (const o of lost) {
      expect(refusal(o)).toBe(refused(Code.FailedPrecondition, ErrorReason.INSUFFICIENT_BALANCE));
      expect(o.detail?.requiredMillicredits).toBe(1_000n);
      expect(o.detail?.availableMillicredits).toBeLessThan(1_000n);
    }
    expect((await t.billing.getBalance({ userId: user })).balance?.balanceMillicredits).toBe(0n);
    const report = await verifyLedger(t.app.db);
    expect(report.violations).toEqual([]);
    const zero = await t.app.db.query('select coalesce(sum(amount_millicredits), 0)::text as total from postings');
    expect(zero[0]?.total).toBe('0');
  });

  it('concurrent Charges spread over accounts: each is charged in full or refused, and balances add up', async () => {
    const seed = Number(process.env.TEST_SEED ?? Math.floor(Math.random() * 2 ** 31));
    console.log(`concurrency spread seed: ${seed} (set TEST_SEED=${seed} to repeat)`);
    const random = prng(seed);
    const users = Array.from({ length: 8 }, (_, i) => `spread-${seed}-${i}`);
    // Funds well below the ~7 credits of charges each account draws, so both outcomes occur.
    const funds = users.map(() => BigInt(1_000 + random(3_000)));
    await Promise.all(users.map((u, i) => fund(t, u, funds[i]!)));
    const draws = Array.from({ length: 128 }, () => ({
      user: random(users.length),
      amount: BigInt(1 + random(900)),
      allowPartial: random(4) === 0,
    }));
    expect(new Set(draws.map((d) => d.user)).size, `seed ${seed}: every account is drawn`).toBe(users.length);
    const outcomes = await Promise.all(
      draws.map((d) =>
        outcome(
          t.billing.charge({
            userId: users[d.user]!,
            idempotencyKey: key('spread'),
            product: 'muse',
            usage: { case: 'amountMillicredits', value: d.amount },
            allowPartial: d.allowPartial,
          }),
        ),
      ),
    );
    const charged = users.map(() => 0n);
    const acknowledged = users.map(() => 0);
    outcomes.forEach((o, i) => {
      const d = draws[i]!;
      const what = `seed ${seed}, draw ${i}: ${d.amount} from ${users[d.user]}${d.allowPartial ? ' (partial)' : ''}`;
      if (o.ok) {
        expect(o.value.chargedMillicredits + o.value.shortfallMillicredits, what).toBe(d.amount);
        if (!d.allowPartial) expect(o.value.chargedMillicredits, what).toBe(d.amount);
        charged[d.user]! += o.value.chargedMillicredits;
        acknowledged[d.user]! += 1;
      } else {
        // Only a charge that may not go partial can be refused, and only for want of funds.
        expect(refusal(o), what).toBe(refused(Code.FailedPrecondition, ErrorReason.INSUFFICIENT_BALANCE));
        expect(d.allowPartial, what).toBe(false);
        expect(o.detail?.requiredMillicredits, what).toBe(d.amount);
        expect(o.detail?.availableMillicredits, what).toBeLessThan(d.amount);
      }
    });
    expect(outcomes.some((o) => o.ok) && outcomes.some((o) => !o.ok), `seed ${seed}: both outcomes occur`).toBe(true);
    for (const [i, u] of users.entries()) {
      const b = (await t.billing.getBalance({ userId: u })).balance!;
      expect(b.balanceMillicredits, `seed ${seed}: ${u}`).toBe(funds[i]! - charged[i]!);
      const [row] = await t.app.db.query<{ n: number }>(
        "select count(*)::int as n from transactions where user_id = $1 and type = 'CHARGE'",
        [u],
      );
      expect(row?.n, `seed ${seed}: ${u} has one CHARGE per acknowledged call`).toBe(acknowledged[i]);
    }
    expect((await verifyLedger(t.app.db)).violations).toEqual([]);
  });
});

/** mulberry32: a seeded PRNG whose every step stays within 32-bit integers; random(n) is in [0, n). */
function prng(seed: number): (n: number) => number {
  let state = seed >>> 0;
  return (n) => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return Math.floor((((x ^ (x >>> 14)) >>> 0) / 4_294_967_296) * n);
  };
}

describe('the schema\'s CHECK constraints', () => {
  // Each constraint with writes it must accept (its boundary) and writes it must refuse.
  // Every statement runs after FIXTURE in its own transaction, which is rolled back.
  const FIXTURE = [
    "insert into user_accounts (user_id, balance_millicredits) values ('ck-user', 100)",
    `insert into transactions (id, user_id, type, amount_millicredits, balance_after_millicredits)
       values (9000000000000000000, 'ck-user', 'GRANT', 100, 100)`,
    "insert into promo_codes (code, amount_millicredits, max_redemptions, redemptions) values ('CK', 1, 2, 1)",
    `insert into reservations (id, user_id, amount_millicredits, status, expires_at)
       values (9000000000000000000, 'ck-user', 1, 'CAPTURED', now())`,
    "insert into deposit_addresses (user_id, derivation_index, address) values ('ck-user', 2147483000, '0x' || repeat('a', 40))",
  ];
  const account = (set: string) => `update user_accounts set ${set} where user_id = 'ck-user'`;
  const transaction = (type: string, amount: number, more: { balanceAfter?: number; refunded?: string; reservation?: string; price?: string } = {}) =>
    `insert into transactions (user_id, type, amount_millicredits, balance_after_millicredits, refunded_transaction_id,
                               reservation_id, price)
       values ('ck-user', '${type}', ${amount}, ${more.balanceAfter ?? 0}, ${more.refunded ?? 'null'}, ${more.reservation ?? 'null'},
               ${more.price ?? 'null'})`;
  const refund = (amount: number) => transaction('REFUND', amount, { refunded: '9000000000000000000' });
  const posting = (amount: number) =>
    `insert into postings (transaction_id, account, amount_millicredits) values (9000000000000000000, 'system:ck', ${amount})`;
  const idempotency = (length: number) =>
    `insert into idempotency_keys (user_id, idempotency_key, request_hash, result) values ('ck-user', repeat('k', ${length}), 'h', '{}')`;
  const reservation = (amount: number, status = 'ACTIVE') =>
    `insert into reservations (user_id, amount_millicredits, status, expires_at) values ('ck-user', ${amount}, '${status}', now())`;
  const promo = (amount: number, max: number, redemptions: number) =>
    `insert into promo_codes (code, amount_millicredits, max_redemptions, redemptions) values ('CK2', ${amount}, ${max}, ${redemptions})`;
  const address = (index: number, text = "'0x' || repeat('b', 40)") =>
    `insert into deposit_addresses (user_id, derivation_index, address) values ('ck-user2', ${index}, ${text})`;
  const deposit = (more: { txHash?: string; logIndex?: number; raw?: string; status?: string; symbol?: string; credits?: number; txn?: string } = {}) =>
    `insert into deposits (chain_id, tx_hash, log_index, user_id, from_address, token_symbol, token_contract, raw_amount,
                           block_number, block_hash, status, credits_millicredits, transaction_id)
       values (8453, ${more.txHash ?? "'0x' || repeat('c', 64)"}, ${more.logIndex ?? -1}, 'ck-user', '', '${more.symbol ?? 'ETH'}', '',
               ${more.raw ?? '1'}, 1, 'h', '${more.status ?? 'PENDING'}', ${more.credits ?? 0}, ${more.txn ?? 'null'})`;
  const auditEvent = (action: string) => `insert into audit_events (actor, action, subject) values ('ck', '${action}', 'user:ck-user')`;
  const CHECKS: { name: string; accepts: string[]; refuses: string[] }[] = [
    {
      name: 'deposit_address_counter_single_row',
      accepts: ['update deposit_address_counter set last_index = last_index where id'],
      refuses: ['insert into deposit_address_counter (id, last_index) values (false, 0)'],
    },
    {
      name: 'deposit_address_counter_last_index_nonnegative',
      accepts: ['update deposit_address_counter set last_index = 0'],
      refuses: ['update deposit_address_counter set last_index = -1'],
    },
    { name: 'deposit_addresses_index_range', accepts: [address(1), address(2147483647)], refuses: [address(0), address(2147483648)] },
    {
      name: 'deposit_addresses_address_lower_hex',
      accepts: [address(5)],
      refuses: [address(5, "'0x' || repeat('B', 40)"), address(5, "'0x' || repeat('b', 39)"), address(5, "repeat('b', 42)")],
    },
    {
      name: 'wallet_chains_cursor_nonnegative',
      accepts: ["insert into wallet_chains (chain_id, cursor_number, cursor_hash, head_number, finalized_number) values (1, 0, 'h', 0, 0)"],
      refuses: ["insert into wallet_chains (chain_id, cursor_number, cursor_hash, head_number, finalized_number) values (1, -1, 'h', 0, 0)"],
    },
    { name: 'deposits_tx_hash_hex', accepts: [deposit()], refuses: [deposit({ txHash: "'0x' || repeat('C', 64)" }), deposit({ txHash: "'0x12'" })] },
    { name: 'deposits_log_index_range', accepts: [deposit({ logIndex: -1 }), deposit({ logIndex: 0 })], refuses: [deposit({ logIndex: -2 })] },
    { name: 'deposits_raw_amount_positive', accepts: [deposit({ raw: '1' })], refuses: [deposit({ raw: '0' }), deposit({ raw: '-1' })] },
    {
      name: 'deposits_status_known',
      accepts: ['PENDING', 'BELOW_MINIMUM', 'UNPRICED', 'REORGED'].map((status) => deposit({ status })),
      refuses: [deposit({ status: 'LOST' }), deposit({ status: 'pending' })],
    },
    { name: 'deposits_credits_nonnegative', accepts: [deposit({ credits: 0 })], refuses: [deposit({ credits: -1 })] },
    {
      name: 'audit_events_action_known',
      accepts: ['SetPlan', 'SetEntitlement', 'CreatePromoCode', 'DisablePromoCode', 'Grant', 'Refund', 'RunDailyTopUp'].map(auditEvent),
      // VerifyLedger changes nothing and is only logged; an action's spelling is exact.
      refuses: [auditEvent('VerifyLedger'), auditEvent('setplan'), auditEvent('')],
    },
    {
      name: 'deposits_credited_has_transaction',
      accepts: [deposit({ status: 'CREDITED', txn: '9000000000000000000' })],
      refuses: [deposit({ status: 'CREDITED' }), deposit({ status: 'PENDING', txn: '9000000000000000000' })],
    },
    {
      name: 'deposits_unsupported_has_no_symbol',
      accepts: [deposit({ status: 'UNSUPPORTED', symbol: '' })],
      refuses: [deposit({ status: 'UNSUPPORTED', symbol: 'ETH' }), deposit({ status: 'PENDING', symbol: '' })],
    },
    {
      name: 'user_accounts_user_id_length',
      accepts: ["insert into user_accounts (user_id) values (repeat('u', 128))"],
      refuses: ["insert into user_accounts (user_id) values ('')", "insert into user_accounts (user_id) values (repeat('u', 129))"],
    },
    { name: 'user_accounts_balance_nonnegative', accepts: [account('balance_millicredits = 0')], refuses: [account('balance_millicredits = -1')] },
    { name: 'user_accounts_reserved_nonnegative', accepts: [account('reserved_millicredits = 0')], refuses: [account('reserved_millicredits = -1')] },
    {
      name: 'user_accounts_reserved_within_balance',
      accepts: [account('reserved_millicredits = 100')],
      refuses: [account('reserved_millicredits = 101')],
    },
    {
      name: 'user_accounts_balance_max',
      accepts: [account('balance_millicredits = 1000000000000000')],
      refuses: [account('balance_millicredits = 1000000000000001')],
    },
    {
      name: 'user_accounts_plan_known',
      accepts: ['FREE', 'PRO', 'ADMIN'].map((plan) => account(`plan = '${plan}'`)),
      refuses: [account("plan = 'GOLD'"), account("plan = 'free'")],
    },
    {
      name: 'transactions_type_known',
      accepts: [transaction('CHARGE', -1), refund(1), ...['GRANT', 'PROMO', 'DAILY_TOP_UP', 'DEPOSIT'].map((type) => transaction(type, 1))],
      refuses: [transaction('BONUS', 1), transaction('grant', 1)],
    },
    {
      name: 'transactions_balance_after_nonnegative',
      accepts: [transaction('GRANT', 1, { balanceAfter: 0 })],
      refuses: [transaction('GRANT', 1, { balanceAfter: -1 })],
    },
    {
      name: 'transactions_refund_is_credit',
      accepts: [refund(1)],
      refuses: [refund(0), refund(-1), transaction('REFUND', 1)],
    },
    {
      name: 'transactions_price_charge_only',
      accepts: [transaction('CHARGE', -1, { price: `'{}'` }), transaction('GRANT', 1)],
      refuses: [transaction('GRANT', 1, { price: `'{}'` }), transaction('REFUND', 1, { refunded: '9000000000000000000', price: `'{}'` })],
    },
    { name: 'transactions_charge_is_debit', accepts: [transaction('CHARGE', 0), transaction('CHARGE', -1)], refuses: [transaction('CHARGE', 1)] },
    {
      name: 'transactions_reservation_on_charge',
      accepts: [transaction('CHARGE', -1, { reservation: '9000000000000000000' })],
      refuses: [
        transaction('GRANT', 1, { reservation: '9000000000000000000' }),
        transaction('REFUND', 1, { refunded: '9000000000000000000', reservation: '9000000000000000000' }),
      ],
    },
    { name: 'postings_amount_nonzero', accepts: [posting(1), posting(-1)], refuses: [posting(0)] },
    { name: 'idempotency_keys_key_length', accepts: [idempotency(1), idempotency(255)], refuses: [idempotency(0), idempotency(256)] },
    { name: 'reservations_amount_nonnegative', accepts: [reservation(0)], refuses: [reservation(-1)] },
    {
      name: 'reservations_status_known',
      accepts: ['ACTIVE', 'CAPTURED', 'RELEASED', 'EXPIRED'].map((status) => reservation(1, status)),
      refuses: [reservation(1, 'PENDING'), reservation(1, 'active')],
    },
    {
      name: 'daily_free_usage_used_nonnegative',
      accepts: ["insert into daily_free_usage (user_id, day, used) values ('ck-user', current_date, 0)"],
      refuses: ["insert into daily_free_usage (user_id, day, used) values ('ck-user', current_date, -1)"],
    },
    { name: 'promo_codes_amount_positive', accepts: [promo(1, 0, 0)], refuses: [promo(0, 0, 0), promo(-1, 0, 0)] },
    { name: 'promo_codes_max_nonnegative', accepts: [promo(1, 0, 0)], refuses: [promo(1, -1, 0)] },
    {
      name: 'promo_codes_within_cap',
      accepts: [promo(1, 2, 2), promo(1, 0, 5), "update promo_codes set redemptions = 2 where code = 'CK'"],
      refuses: [promo(1, 2, 3), "update promo_codes set redemptions = 3 where code = 'CK'"],
    },
  ];

  const ROLLBACK = new Error('rolled back on purpose');

  /** Runs FIXTURE and one statement in a transaction that never commits; the SQL error, if any. */
  async function attempt(sql: string): Promise<{ code?: string; constraint?: string }> {
    try {
      await t.app.db.transaction(async (s) => {
        for (const statement of [...FIXTURE, sql]) await s.query(statement);
        throw ROLLBACK;
      });
    } catch (error) {
      if (error === ROLLBACK) return {};
      return sqlState(error);
    }
    throw new Error('the transaction committed');
  }

  it('are exactly the ones tested here (a new CHECK constraint needs a row in this table)', async () => {
    const rows = await t.app.db.query<{ name: string }>(
      "select conname as name from pg_constraint where contype = 'c' and connamespace = 'public'::regnamespace order by conname",
    );
    expect(rows.map((r) => r.name)).toEqual(CHECKS.map((c) => c.name).sort());
  });

  it('each accepts its boundary and refuses a violating write with SQLSTATE 23514 and its own name', async () => {
    for (const check of CHECKS) {
      for (const sql of check.accepts) expect(await attempt(sql), `${check.name} accepts: ${sql}`).toEqual({});
      for (const sql of check.refuses) {
        expect(await attempt(sql), `${check.name} refuses: ${sql}`).toEqual({ code: '23514', constraint: check.name });
      }
    }
    const [left] = await t.app.db.query<{ n: number }>("select count(*)::int as n from user_accounts where user_id = 'ck-user'");
    expect(left?.n).toBe(0);
  });
});
