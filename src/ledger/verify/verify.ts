// VerifyLedger: re-derives every invariant of SPEC §1 from the postings and reports the
// accounts and transactions that break one. Read-only; set-based SQL, one pass per check.
import type { JobProgress } from '../../jobs/progress.js';
import type { Database } from '../../storage/database.js';
import { USER_ACCOUNT_PREFIX, userAccount } from '../kernel/names.js';

export interface LedgerViolation {
  account: string;
  transactionId: string;
  invariant: string;
  description: string;
}

export interface LedgerReport {
  ok: boolean;
  violations: LedgerViolation[];
  accountsChecked: bigint;
  transactionsChecked: bigint;
}

/** At most this many violations are reported; the check stops listing past it. */
export const VIOLATIONS_MAX = 1000;

interface Check {
  invariant: string;
  sql: string;
  describe: (row: Record<string, unknown>) => Omit<LedgerViolation, 'invariant'>;
}

const CHECKS: readonly Check[] = [
  {
    invariant: 'balance_matches_postings',
    sql: `select a.user_id, a.balance_millicredits::text as stored, coalesce(p.total, 0)::text as derived
            from user_accounts a
            left join (select account, sum(amount_millicredits) as total from postings
                        where account like '${USER_ACCOUNT_PREFIX}%' group by account) p on p.account = '${USER_ACCOUNT_PREFIX}' || a.user_id
           where a.balance_millicredits <> coalesce(p.total, 0)`,
    describe: (r) => ({
      account: userAccount(String(r.user_id)),
      transactionId: '',
      description: `stored balance ${String(r.stored)} but postings sum to ${String(r.derived)}`,
    }),
  },
  {
    invariant: 'postings_without_account',
    sql: `select p.account, sum(p.amount_millicredits)::text as total from postings p
           where p.account like '${USER_ACCOUNT_PREFIX}%'
             and not exists (select 1 from user_accounts a where '${USER_ACCOUNT_PREFIX}' || a.user_id = p.account)
           group by p.account`,
    describe: (r) => ({ account: String(r.account), transactionId: '', description: `postings of ${String(r.total)} to no account` }),
  },
  {
    invariant: 'transaction_sums_to_zero',
    sql: `select transaction_id::text as id, sum(amount_millicredits)::text as total from postings
           group by transaction_id having sum(amount_millicredits) <> 0`,
    describe: (r) => ({ account: '', transactionId: String(r.id), description: `postings sum to ${String(r.total)}` }),
  },
  {
    invariant: 'transaction_matches_user_posting',
    sql: `select t.id::text as id, t.user_id, t.amount_millicredits::text as amount, coalesce(p.amount_millicredits, 0)::text as posted
            from transactions t
            left join postings p on p.transaction_id = t.id and p.account = '${USER_ACCOUNT_PREFIX}' || t.user_id
           where t.amount_millicredits <> coalesce(p.amount_millicredits, 0)`,
    describe: (r) => ({
      account: userAccount(String(r.user_id)),
      transactionId: String(r.id),
      description: `transaction amount ${String(r.amount)} but the user's posting is ${String(r.posted)}`,
    }),
  },
  {
    invariant: 'balance_nonnegative',
    sql: `select user_id, balance_millicredits::text as balance, reserved_millicredits::text as reserved
            from user_accounts
           where balance_millicredits < 0 or reserved_millicredits < 0 or reserved_millicredits > balance_millicredits`,
    describe: (r) => ({
      account: userAccount(String(r.user_id)),
      transactionId: '',
      description: `balance ${String(r.balance)}, reserved ${String(r.reserved)}`,
    }),
  },
  {
    invariant: 'reserved_matches_holds',
    sql: `select a.user_id, a.reserved_millicredits::text as stored, coalesce(h.total, 0)::text as derived
            from user_accounts a
            left join (select user_id, sum(amount_millicredits) as total from reservations
                        where status = 'ACTIVE' group by user_id) h on h.user_id = a.user_id
           where a.reserved_millicredits <> coalesce(h.total, 0)`,
    describe: (r) => ({
      account: userAccount(String(r.user_id)),
      transactionId: '',
      description: `stored reserved ${String(r.stored)} but active holds sum to ${String(r.derived)}`,
    }),
  },
  {
    invariant: 'history_chains',
    // Each user's transactions are written under the account lock, so in id order every
    // balance_after is the previous one plus the amount.
    sql: `select user_id, id::text as id, balance_after::text as stored, expected::text as expected from (
            select user_id, id, balance_after_millicredits as balance_after,
                   coalesce(lag(balance_after_millicredits) over (partition by user_id order by id), 0)
                     + amount_millicredits as expected
              from transactions) h
           where balance_after <> expected`,
    describe: (r) => ({
      account: userAccount(String(r.user_id)),
      transactionId: String(r.id),
      description: `balance_after ${String(r.stored)} but the previous balance plus the amount is ${String(r.expected)}`,
    }),
  },
  {
    invariant: 'refunds_within_charge',
    // A refund names a charge of the same user, and the refunds of a charge never add up
    // to more than it debited.
    sql: `select c.id::text as id, c.user_id, (-c.amount_millicredits)::text as charged,
                 sum(r.amount_millicredits)::text as refunded, bool_and(c.type = 'CHARGE' and c.user_id = r.user_id) as linked
            from transactions r join transactions c on c.id = r.refunded_transaction_id
           where r.type = 'REFUND'
           group by c.id, c.user_id, c.amount_millicredits, c.type
          having sum(r.amount_millicredits) > -c.amount_millicredits or not bool_and(c.type = 'CHARGE' and c.user_id = r.user_id)`,
    describe: (r) => ({
      account: userAccount(String(r.user_id)),
      transactionId: String(r.id),
      description: r.linked
        ? `refunds of ${String(r.refunded)} exceed the ${String(r.charged)} charged`
        : 'refunded by a refund of another user, or not a charge',
    }),
  },
  {
    invariant: 'capture_matches_hold',
    // A charge that names a hold captured it: the hold is the same user's and CAPTURED.
    sql: `select t.id::text as id, t.user_id, t.reservation_id::text as hold, r.status, r.user_id as hold_user
            from transactions t left join reservations r on r.id = t.reservation_id
           where t.reservation_id is not null
             and (r.id is null or r.status <> 'CAPTURED' or r.user_id <> t.user_id)`,
    describe: (r) => ({
      account: userAccount(String(r.user_id)),
      transactionId: String(r.id),
      description: `captures hold ${String(r.hold)}, which is ${String(r.status ?? 'missing')} for ${String(r.hold_user ?? 'nobody')}`,
    }),
  },
  {
    invariant: 'deposit_matches_transaction',
    // Credited deposits and DEPOSIT transactions match one to one: same user, same amount.
    sql: `select coalesce(t.id::text, d.transaction_id::text, '') as id, coalesce(t.user_id, d.user_id) as user_id,
                 d.id::text as deposit, d.credits_millicredits::text as credits, t.amount_millicredits::text as amount, t.type
            from (select * from deposits where status = 'CREDITED') d
            full join (select * from transactions where type = 'DEPOSIT') t on t.id = d.transaction_id
           where d.id is null or t.id is null or t.user_id <> d.user_id or t.amount_millicredits <> d.credits_millicredits`,
    describe: (r) => ({
      account: userAccount(String(r.user_id)),
      transactionId: String(r.id),
      description: r.deposit === null
        ? 'a DEPOSIT transaction that no credited deposit names'
        : r.amount === null
          ? `credited deposit ${String(r.deposit)} has no DEPOSIT transaction`
          : `deposit ${String(r.deposit)} credited ${String(r.credits)} but its transaction moved ${String(r.amount)}`,
    }),
  },
  {
    invariant: 'promo_redemptions_counted',
    sql: `select c.code, c.redemptions::text as stored, count(r.user_id)::text as derived
            from promo_codes c left join promo_redemptions r on r.code = c.code
           group by c.code, c.redemptions having c.redemptions <> count(r.user_id)`,
    describe: (r) => ({
      account: '',
      transactionId: '',
      description: `promo code ${String(r.code)} counts ${String(r.stored)} redemptions but has ${String(r.derived)}`,
    }),
  },
];

/** VerifyLedger reads every posting: allow it longer than the service's statement limit. */
export const VERIFY_STATEMENT_TIMEOUT_MS = 300_000;

/**
 * Runs every check in one read-only snapshot. With `progress`, the run reports its checks
 * done of the total (each check is one set-based statement over every account, so checks
 * are the unit progress can count).
 */
export async function verifyLedger(db: Database, progress?: JobProgress): Promise<LedgerReport> {
  // The checks and the closing count of what was checked.
  const run = progress?.start('verify_ledger', CHECKS.length + 1, 'checks');
  try {
    const report = await db.transaction(async (s) => {
      await s.query(`set local statement_timeout = ${VERIFY_STATEMENT_TIMEOUT_MS}`);
      const violations: LedgerViolation[] = [];
      for (const check of CHECKS) {
        if (violations.length >= VIOLATIONS_MAX) break;
        const rows = await s.query(`${check.sql} limit ${VIOLATIONS_MAX - violations.length}`);
        for (const row of rows) violations.push({ invariant: check.invariant, ...check.describe(row) });
        run?.advance(1);
      }
      const counts = await s.query<{ accounts: string; transactions: string }>(
        'select (select count(*) from user_accounts)::text as accounts, (select count(*) from transactions)::text as transactions',
      );
      return {
        ok: violations.length === 0,
        violations,
        accountsChecked: BigInt(counts[0]?.accounts ?? '0'),
        transactionsChecked: BigInt(counts[0]?.transactions ?? '0'),
      };
    });
    run?.advance(1);
    run?.finish({
      ok: report.ok,
      violations: report.violations.length,
      accountsChecked: report.accountsChecked.toString(),
      transactionsChecked: report.transactionsChecked.toString(),
    });
    return report;
  } catch (error) {
    run?.fail();
    throw error;
  }
}
