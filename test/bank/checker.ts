// The bank test's checker: reads every recorded attempt and the database afterwards, and
// lists every way the run broke the contract. Nothing here trusts the server's own
// bookkeeping: the expected state is rebuilt from the replies the clients got.
import { timestampMs } from '@bufbuild/protobuf/wkt';
import { type Client, Code } from '@connectrpc/connect';
import type { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import type { BillingService, ChargeResponse } from '../../gen/billing/v1/billing_service_pb.js';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { ReservationStatus, TransactionType, WaivedReason } from '../../gen/billing/v1/types_pb.js';
import { verifyLedger } from '../../src/ledger/verify/verify.js';
import { type Reply, sameReply, showReply, transactionOf } from './calls.js';
import { CODE_OF, describeOutcome } from './outcome.js';
import type { Rng } from './rng.js';
import type { Attempt, BankHistory, BankWorld, Group, Meta } from './workload.js';

export interface Problem {
  readonly check: string;
  readonly detail: string;
}

export class Problems {
  readonly list: Problem[] = [];

  add(check: string, detail: string): void {
    this.list.push({ check, detail });
  }

  /** The first few problems of every check, so one noisy check does not hide the others. */
  sample(perCheck: number): Problem[] {
    const taken = new Map<string, number>();
    return this.list.filter((p) => {
      const n = taken.get(p.check) ?? 0;
      taken.set(p.check, n + 1);
      return n < perCheck;
    });
  }

  /** How many problems each check found, e.g. "dup_copy_refused: 3". */
  summary(): string[] {
    const counts = new Map<string, number>();
    for (const p of this.list) counts.set(p.check, (counts.get(p.check) ?? 0) + 1);
    return [...counts].map(([check, n]) => `${check}: ${n}`);
  }
}

type Query = (sql: string, params?: readonly unknown[]) => Promise<Record<string, unknown>[]>;

export interface CheckInput {
  readonly history: BankHistory;
  readonly world: BankWorld;
  readonly query: Query;
  readonly db: Parameters<typeof verifyLedger>[0];
  readonly admin: Client<typeof AdminService>;
  readonly billing: Client<typeof BillingService>;
  readonly rng: Rng;
}

function who(a: Attempt): string {
  return `${a.meta.kind} key ${a.key} of ${a.userId} (${a.mode} via ${a.client})`;
}

// ---- each attempt on its own ------------------------------------------------------------

/** The refusals each kind of request may legitimately get in this workload. */
function allowedRefusals(meta: Meta): readonly ErrorReason[] {
  const short = meta.allowPartial ? [] : [ErrorReason.INSUFFICIENT_BALANCE];
  switch (meta.kind) {
    case 'grant':
      return [];
    case 'charge':
      return short;
    case 'capture':
      return [...short, ErrorReason.RESERVATION_CAPTURED, ErrorReason.RESERVATION_RELEASED, ErrorReason.RESERVATION_EXPIRED];
    case 'reserve':
      return [ErrorReason.INSUFFICIENT_BALANCE];
    case 'release':
      return [ErrorReason.RESERVATION_CAPTURED];
    case 'refund':
      return [ErrorReason.REFUND_EXCEEDS_CHARGE];
    case 'redeem':
      return [ErrorReason.PROMO_CODE_ALREADY_REDEEMED, ErrorReason.PROMO_CODE_EXHAUSTED];
  }
}

function checkAttempt(a: Attempt, world: BankWorld, problems: Problems): void {
  const o = a.outcome;
  if (!o.ok) {
    const allowed = a.mode === 'reuse' ? [ErrorReason.IDEMPOTENCY_KEY_REUSED] : allowedRefusals(a.meta);
    if (!allowed.includes(o.reason) || CODE_OF[o.reason] !== o.code) {
      problems.add('unexpected_error', `${who(a)}: ${describeOutcome(o)}`);
    } else if (a.expect && 'replay' in a.expect) {
      problems.add('retry_not_replayed', `${who(a)} was sent after the key succeeded but got ${describeOutcome(o)}`);
    } else if (a.expect && 'refuse' in a.expect && a.expect.refuse !== o.reason) {
      problems.add('wrong_refusal', `${who(a)}: expected ${ErrorReason[a.expect.refuse]}, got ${describeOutcome(o)}`);
    }
    return;
  }
  if (a.expect && 'refuse' in a.expect) {
    problems.add('should_be_refused', `${who(a)}: expected ${ErrorReason[a.expect.refuse]}, got ${showReply(o.reply)}`);
  } else if (a.expect && 'replay' in a.expect) {
    const first = a.expect.replay.outcome;
    if (first.ok && !sameReply(a.call.rpc, first.reply, o.reply)) {
      problems.add('replay_differs', `${who(a)}: first reply ${showReply(first.reply)}, retry got ${showReply(o.reply)}`);
    }
  }
  checkReply(a, o.reply, world, problems);
}

function checkReply(a: Attempt, reply: Reply, world: BankWorld, problems: Problems): void {
  const bal = reply.balance;
  const tx = transactionOf(reply);
  const bad = (what: string) => problems.add('reply_inconsistent', `${who(a)}: ${what} in ${showReply(reply)}`);
  if (!bal) return bad('no balance');
  if (bal.userId !== a.userId) bad(`balance of ${bal.userId}`);
  if (bal.balanceMillicredits < 0n || bal.reservedMillicredits < 0n || bal.availableMillicredits < 0n) {
    problems.add('negative_balance', `${who(a)}: ${showReply(reply)}`);
  }
  if (bal.availableMillicredits !== bal.balanceMillicredits - bal.reservedMillicredits) bad('available != balance - reserved');
  if (tx) {
    if (tx.userId !== a.userId || tx.idempotencyKey !== a.key) bad(`transaction of ${tx.userId} under key ${tx.idempotencyKey}`);
    if (tx.balanceAfterMillicredits !== bal.balanceMillicredits) bad('balance_after != balance');
    if (tx.balanceAfterMillicredits < 0n) problems.add('negative_balance', `${who(a)}: balance_after ${tx.balanceAfterMillicredits}`);
  }
  checkReplyKind(a, reply, world, bad);
}

function checkReplyKind(a: Attempt, reply: Reply, world: BankWorld, bad: (what: string) => void): void {
  const tx = transactionOf(reply);
  const m = a.meta;
  if (m.kind === 'grant' && (tx?.type !== TransactionType.GRANT || tx.amountMillicredits !== m.grantAmount)) bad(`grant of ${m.grantAmount}`);
  if ((m.kind === 'charge' || m.kind === 'capture') && 'chargedMillicredits' in reply) checkCharge(a, reply, bad);
  if (m.kind === 'reserve' && 'reservation' in reply) {
    const r = reply.reservation;
    const usage = a.call.rpc === 'reserve' ? a.call.req.amount : undefined;
    if (r?.status !== ReservationStatus.ACTIVE || r.userId !== a.userId) bad('reservation not ACTIVE');
    if (usage?.case === 'amountMillicredits' && r?.amountMillicredits !== usage.value) bad(`hold of ${usage.value}`);
  }
  if (m.kind === 'release' && 'reservation' in reply) {
    const r = reply.reservation;
    if (!r || r.id !== m.reservationId || (r.status !== ReservationStatus.RELEASED && r.status !== ReservationStatus.EXPIRED)) bad('released hold');
  }
  if (m.kind === 'refund') {
    const ok = tx?.type === TransactionType.REFUND && tx.amountMillicredits > 0n && tx.refundedTransactionId === m.chargeId;
    if (!ok || (m.refundAmount !== 0n && tx.amountMillicredits !== m.refundAmount)) bad(`refund of ${m.refundAmount} from ${m.chargeId}`);
  }
  if (m.kind === 'redeem') {
    const promo = world.codes.find((c) => c.code === m.code);
    if (tx?.type !== TransactionType.PROMO || tx.amountMillicredits !== promo?.amountMillicredits || tx.operation !== m.code) bad(`redemption of ${m.code}`);
  }
}

function checkCharge(a: Attempt, reply: ChargeResponse, bad: (what: string) => void): void {
  const tx = reply.transaction;
  const charged = reply.chargedMillicredits;
  const short = reply.shortfallMillicredits;
  if (tx?.type !== TransactionType.CHARGE || tx.amountMillicredits !== -charged) bad('charge transaction != -charged');
  if (charged < 0n || short < 0n || (!a.meta.allowPartial && short !== 0n)) bad(`charged ${charged}, shortfall ${short}`);
  if (reply.waivedReason !== WaivedReason.UNSPECIFIED && (charged !== 0n || short !== 0n)) bad('waived but debited');
  if (tx && tx.waivedReason !== reply.waivedReason) bad('transaction waived_reason differs');
  const usage = a.call.rpc === 'charge' ? a.call.req.usage : undefined;
  if (usage?.case === 'amountMillicredits' && charged + short !== usage.value) bad(`charged + shortfall != ${usage.value}`);
  if (a.meta.kind === 'capture' && tx?.reservationId !== a.meta.reservationId) bad(`capture of ${a.meta.reservationId} records hold "${tx?.reservationId}"`);
  if (a.meta.kind === 'charge' && tx?.reservationId !== '') bad(`plain charge records hold "${tx?.reservationId}"`);
}

// ---- keys, retries and concurrent copies ------------------------------------------------

function byKey(attempts: readonly Attempt[]): Map<string, Attempt[]> {
  const keys = new Map<string, Attempt[]>();
  for (const a of attempts) {
    if (a.mode === 'reuse') continue;
    const id = `${a.userId}\u0000${a.key}`;
    const list = keys.get(id);
    if (list) list.push(a);
    else keys.set(id, [a]);
  }
  return keys;
}

/** One key, however many times it was sent: at most one result, and every later copy gets it. */
function checkKey(attempts: readonly Attempt[], problems: Problems): Attempt | undefined {
  const successes = attempts.filter((a) => a.outcome.ok);
  const first = successes.reduce<Attempt | undefined>((min, a) => (!min || a.endTick < min.endTick ? a : min), undefined);
  if (!first || !first.outcome.ok) return undefined;
  for (const a of successes) {
    if (a.outcome.ok && !sameReply(a.call.rpc, first.outcome.reply, a.outcome.reply)) {
      problems.add('two_results_for_one_key', `${who(a)}: ${showReply(a.outcome.reply)} but ${first.client} got ${showReply(first.outcome.reply)}`);
    }
  }
  for (const a of attempts) {
    if (!a.outcome.ok && a.startTick > first.endTick) {
      problems.add('refused_after_ack', `${who(a)} was sent after ${first.client} got ${showReply(first.outcome.reply)}, yet got ${describeOutcome(a.outcome)}`);
    }
  }
  return first;
}

/**
 * Copies of one request sent at the same moment. Whoever executes first decides: if it
 * succeeds every copy must replay its reply; if it is refused and nothing else can change
 * the user's state (an exclusive group), every copy must be refused the same way. A
 * refusal can only be overtaken by a success when its cause can go away meanwhile:
 * INSUFFICIENT_BALANCE, in an exclusive group only by a hold of the user expiring.
 */
function checkGroup(group: Group, expiries: ReadonlyMap<string, number[]>, problems: Problems): void {
  const [first] = group.attempts;
  if (!first) return;
  const winners = group.attempts.filter((a) => a.outcome.ok);
  const refused = group.attempts.filter((a) => !a.outcome.ok);
  const label = `dup group ${group.id} (${group.exclusive ? 'exclusive' : 'shared'}, ${group.attempts.length} copies, ${first.meta.kind} key ${first.key} of ${first.userId})`;
  const reasons = new Set(refused.map((a) => (a.outcome.ok ? '' : `${Code[a.outcome.code]}/${ErrorReason[a.outcome.reason]}`)));
  if (group.exclusive && reasons.size > 1) problems.add('dup_refusals_differ', `${label}: ${[...reasons].join(' vs ')}`);
  const winner = winners[0];
  if (!winner || !winner.outcome.ok || refused.length === 0) return;
  const expired = (expiries.get(first.userId) ?? []).some((ms) => ms >= group.startMs - 1_000 && ms <= group.endMs + 1_000);
  for (const a of refused) {
    if (a.outcome.ok) continue;
    const canVanish = a.outcome.reason === ErrorReason.INSUFFICIENT_BALANCE && (!group.exclusive || expired);
    if (!canVanish) {
      problems.add('dup_copy_refused', `${label}: ${winner.client} got ${showReply(winner.outcome.reply)} but ${a.client} got ${describeOutcome(a.outcome)}`);
    }
  }
}

function shortHoldExpiries(attempts: readonly Attempt[]): Map<string, number[]> {
  const expiries = new Map<string, number[]>();
  for (const a of attempts) {
    if (a.meta.kind !== 'reserve' || !a.meta.shortHold || !a.outcome.ok || !('reservation' in a.outcome.reply)) continue;
    const at = a.outcome.reply.reservation?.expiresAt;
    if (!at) continue;
    expiries.set(a.userId, [...(expiries.get(a.userId) ?? []), timestampMs(at)]);
  }
  return expiries;
}

// ---- what the acknowledged replies add up to ---------------------------------------------

interface HoldExpected {
  readonly userId: string;
  readonly amount: bigint;
  readonly short: boolean;
  status: 'ACTIVE' | 'CAPTURED' | 'RELEASED' | 'EXPIRED';
}

export interface Expected {
  /** One acknowledged result per key: user + key -> the first successful attempt. */
  readonly results: Map<string, Attempt>;
  readonly balances: Map<string, bigint>;
  readonly transactions: Map<string, Attempt>;
  readonly holds: Map<string, HoldExpected>;
  readonly refunded: Map<string, bigint>;
  readonly charged: Map<string, bigint>;
  readonly redemptions: Map<string, Set<string>>;
  /** user + UTC day -> free operations used. */
  readonly freeUsed: Map<string, bigint>;
  /** Every key any request was sent with. */
  readonly sentKeys: Set<string>;
}

function freeOperationsUsed(a: Attempt, reply: ChargeResponse, world: BankWorld): bigint {
  const usage = a.call.rpc === 'charge' ? a.call.req.usage : undefined;
  if (usage?.case !== 'operation' || !world.catalogue.dailyFreeOperations.has(usage.value.name ?? '')) return 0n;
  if (reply.waivedReason === WaivedReason.FREE_DAILY_OPERATION) return reply.price?.quantity ?? 0n;
  if (reply.waivedReason !== WaivedReason.UNSPECIFIED) return 0n;
  const unit = reply.price?.unitPriceMillicredits ?? 0n;
  const due = reply.chargedMillicredits + reply.shortfallMillicredits;
  return unit > 0n ? ((reply.price?.costMillicredits ?? 0n) - due) / unit : 0n;
}

function rebuild(attempts: readonly Attempt[], world: BankWorld, problems: Problems): Expected {
  const e: Expected = {
    results: new Map(), balances: new Map(world.users.map((u) => [u, 0n])), transactions: new Map(), holds: new Map(),
    refunded: new Map(), charged: new Map(), redemptions: new Map(), freeUsed: new Map(), sentKeys: new Set(),
  };
  for (const a of attempts) if (a.mode !== 'reuse') e.sentKeys.add(`${a.userId}\u0000${a.key}`);
  for (const [id, list] of byKey(attempts)) {
    const first = checkKey(list, problems);
    if (first) e.results.set(id, first);
  }
  const ordered = [...e.results.values()].sort((x, y) => x.endTick - y.endTick);
  for (const a of ordered) if (a.outcome.ok) addResult(e, a, a.outcome.reply, world, problems);
  return e;
}

function addResult(e: Expected, a: Attempt, reply: Reply, world: BankWorld, problems: Problems): void {
  const tx = transactionOf(reply);
  if (tx) {
    if (e.transactions.has(tx.id)) problems.add('transaction_id_twice', `${who(a)}: id ${tx.id} was also returned for another key`);
    e.transactions.set(tx.id, a);
    e.balances.set(a.userId, (e.balances.get(a.userId) ?? 0n) + tx.amountMillicredits);
  }
  const m = a.meta;
  if ('chargedMillicredits' in reply && tx) {
    e.charged.set(tx.id, reply.chargedMillicredits);
    const day = tx.createdAt ? new Date(timestampMs(tx.createdAt)).toISOString().slice(0, 10) : '';
    const used = freeOperationsUsed(a, reply, world);
    if (used > 0n) e.freeUsed.set(`${a.userId} ${day}`, (e.freeUsed.get(`${a.userId} ${day}`) ?? 0n) + used);
    const hold = m.kind === 'capture' ? e.holds.get(m.reservationId ?? '') : undefined;
    if (hold) hold.status = 'CAPTURED';
  }
  if ('reservation' in reply && reply.reservation) {
    const r = reply.reservation;
    if (m.kind === 'reserve') e.holds.set(r.id, { userId: a.userId, amount: r.amountMillicredits, short: m.shortHold === true, status: 'ACTIVE' });
    const hold = m.kind === 'release' ? e.holds.get(r.id) : undefined;
    if (hold && hold.status === 'ACTIVE') hold.status = r.status === ReservationStatus.RELEASED ? 'RELEASED' : 'EXPIRED';
  }
  if (m.kind === 'refund' && tx) e.refunded.set(m.chargeId ?? '', (e.refunded.get(m.chargeId ?? '') ?? 0n) + tx.amountMillicredits);
  if (m.kind === 'redeem' && m.code) e.redemptions.set(m.code, new Set([...(e.redemptions.get(m.code) ?? []), a.userId]));
}

// ---- the database afterwards -------------------------------------------------------------

async function checkTransactions(input: CheckInput, e: Expected, problems: Problems): Promise<void> {
  const rows = await input.query(
    `select id::text as id, user_id, idempotency_key, type, amount_millicredits::text as amount,
            balance_after_millicredits::text as after from transactions where user_id = any($1::text[])`,
    [input.world.users],
  );
  const perKey = new Map<string, number>();
  const seen = new Set<string>();
  for (const row of rows) {
    const id = String(row.id);
    seen.add(id);
    const k = `${String(row.user_id)}\u0000${String(row.idempotency_key)}`;
    perKey.set(k, (perKey.get(k) ?? 0) + 1);
    const a = e.transactions.get(id);
    const tx = a?.outcome.ok ? transactionOf(a.outcome.reply) : undefined;
    if (!a?.outcome.ok || !tx) {
      problems.add('unacknowledged_transaction', `transaction ${id} (${String(row.type)} ${String(row.amount)}) of ${String(row.user_id)} under key ${String(row.idempotency_key)} was never acknowledged`);
    } else if (String(row.user_id) !== a.userId || String(row.idempotency_key) !== a.key || BigInt(String(row.amount)) !== tx.amountMillicredits || BigInt(String(row.after)) !== tx.balanceAfterMillicredits) {
      problems.add('transaction_differs', `transaction ${id}: stored ${String(row.amount)} after ${String(row.after)} key ${String(row.idempotency_key)}, replied ${showReply(a.outcome.reply)}`);
    }
  }
  for (const [id, a] of e.transactions) if (!seen.has(id)) problems.add('acknowledged_transaction_missing', `${who(a)}: transaction ${id} is not stored`);
  for (const [k, n] of perKey) if (n !== 1) problems.add('key_recorded_twice', `key ${k.replace('\u0000', ' / ')} has ${n} transactions`);
}

async function checkIdempotencyRecords(input: CheckInput, e: Expected, problems: Problems): Promise<void> {
  const rows = await input.query('select user_id, idempotency_key from idempotency_keys where user_id = any($1::text[])', [input.world.users]);
  const stored = new Set(rows.map((r) => `${String(r.user_id)}\u0000${String(r.idempotency_key)}`));
  for (const k of stored) {
    if (!e.results.has(k)) problems.add(e.sentKeys.has(k) ? 'refused_key_recorded' : 'unknown_key_recorded', `key ${k.replace('\u0000', ' / ')} has a record but no request under it succeeded`);
  }
  for (const [k, a] of e.results) if (!stored.has(k)) problems.add('acknowledged_key_missing', `${who(a)} succeeded but its key has no record`);
}

async function checkHolds(input: CheckInput, e: Expected, problems: Problems): Promise<void> {
  const rows = await input.query('select id::text as id, user_id, amount_millicredits::text as amount, status from reservations where user_id = any($1::text[])', [input.world.users]);
  const reserved = new Map(input.world.users.map((u) => [u, 0n]));
  for (const hold of e.holds.values()) {
    const status = hold.status === 'ACTIVE' && hold.short ? 'EXPIRED' : hold.status;
    if (status === 'ACTIVE') reserved.set(hold.userId, (reserved.get(hold.userId) ?? 0n) + hold.amount);
  }
  const seen = new Set<string>();
  for (const row of rows) {
    const id = String(row.id);
    seen.add(id);
    const hold = e.holds.get(id);
    const want = hold && hold.status === 'ACTIVE' && hold.short ? 'EXPIRED' : hold?.status;
    if (!hold) problems.add('unacknowledged_hold', `reservation ${id} of ${String(row.user_id)} (${String(row.status)}) was never acknowledged`);
    else if (String(row.status) !== want || BigInt(String(row.amount)) !== hold.amount) {
      problems.add('hold_state_differs', `reservation ${id} of ${hold.userId}: stored ${String(row.status)} ${String(row.amount)}, acknowledged replies say ${want} ${hold.amount}`);
    }
  }
  for (const id of e.holds.keys()) if (!seen.has(id)) problems.add('acknowledged_hold_missing', `reservation ${id} is not stored`);
  await checkAccounts(input, e, reserved, problems);
}

async function checkAccounts(input: CheckInput, e: Expected, reserved: Map<string, bigint>, problems: Problems): Promise<void> {
  const rows = await input.query('select user_id, balance_millicredits::text as b, reserved_millicredits::text as r from user_accounts where user_id = any($1::text[])', [input.world.users]);
  for (const userId of input.world.users) {
    const row = rows.find((r) => r.user_id === userId);
    const { balance } = await input.billing.getBalance({ userId });
    const want = e.balances.get(userId) ?? 0n;
    const wantReserved = reserved.get(userId) ?? 0n;
    const stored = `stored ${String(row?.b)}/${String(row?.r)}, GetBalance ${balance?.balanceMillicredits}/${balance?.reservedMillicredits}`;
    if (BigInt(String(row?.b ?? -1)) !== want || balance?.balanceMillicredits !== want) {
      problems.add('final_balance', `${userId}: acknowledged operations sum to ${want}; ${stored}`);
    }
    if (BigInt(String(row?.r ?? -1)) !== wantReserved || balance?.reservedMillicredits !== wantReserved) {
      problems.add('final_reserved', `${userId}: acknowledged active holds sum to ${wantReserved}; ${stored}`);
    }
  }
}

async function checkCounters(input: CheckInput, e: Expected, problems: Problems): Promise<void> {
  const free = await input.query(`select user_id, day::text as day, used from daily_free_usage where user_id = any($1::text[])`, [input.world.users]);
  const perDay = input.world.catalogue.dailyFreePerDay;
  const stored = new Map(free.map((r) => [`${String(r.user_id)} ${String(r.day)}`, BigInt(String(r.used))]));
  for (const k of new Set([...stored.keys(), ...e.freeUsed.keys()])) {
    const replied = e.freeUsed.get(k) ?? 0n;
    if (replied > perDay) problems.add('free_operations_over_cap', `${k}: replies waived ${replied} free operations, the cap is ${perDay}`);
    if ((stored.get(k) ?? 0n) !== replied) problems.add('free_operations_count', `${k}: replies used ${replied}, daily_free_usage says ${stored.get(k) ?? 0n}`);
  }
  const codes = await input.query('select code, redemptions::text as n from promo_codes where code = any($1::text[])', [input.world.codes.map((c) => c.code)]);
  for (const spec of input.world.codes) {
    const acked = BigInt(e.redemptions.get(spec.code)?.size ?? 0);
    const row = codes.find((r) => r.code === spec.code);
    if (spec.maxRedemptions > 0n && acked > spec.maxRedemptions) problems.add('promo_over_cap', `${spec.code}: ${acked} acknowledged, cap ${spec.maxRedemptions}`);
    if (BigInt(String(row?.n ?? -1)) !== acked) problems.add('promo_count', `${spec.code}: ${acked} acknowledged, stored ${String(row?.n)}`);
  }
  for (const [chargeId, total] of e.refunded) {
    const charged = e.charged.get(chargeId);
    if (charged === undefined || total > charged) problems.add('refund_over_charge', `charge ${chargeId}: refunds ${total} of ${charged}`);
  }
}

async function checkLedger(input: CheckInput, problems: Problems): Promise<void> {
  const rpc = await input.admin.verifyLedger({});
  for (const v of rpc.violations) problems.add(`verify_ledger:${v.invariant}`, `${v.account} ${v.transactionId}: ${v.description}`);
  if (!rpc.ok && rpc.violations.length === 0) problems.add('verify_ledger', 'not ok, with no violations listed');
  const direct = await verifyLedger(input.db);
  if (direct.ok !== rpc.ok) problems.add('verify_ledger', `verify.ts says ok=${direct.ok}, the RPC ok=${rpc.ok}`);
  const [sums] = await input.query(`select coalesce(sum(amount_millicredits), 0)::text as total,
      (select count(*) from transactions where balance_after_millicredits < 0)::int as negative,
      (select count(*) from user_accounts where balance_millicredits < 0 or reserved_millicredits < 0
         or reserved_millicredits > balance_millicredits)::int as overdrawn from postings`);
  if (sums?.total !== '0') problems.add('postings_sum', `all postings sum to ${String(sums?.total)}`);
  if (sums?.negative !== 0 || sums.overdrawn !== 0) problems.add('negative_balance', `stored: ${String(sums?.negative)} negative balance_after, ${String(sums?.overdrawn)} accounts overdrawn`);
}

/** Each user's history, paged with random page sizes, is every stored transaction once, newest first. */
async function checkHistory(input: CheckInput, problems: Problems): Promise<void> {
  for (const userId of input.world.users) {
    // Ordered by the bigint column, not the text alias ("94" > "502" as text).
    const rows = await input.query('select t.id::text as id from transactions t where t.user_id = $1 order by t.id desc', [userId]);
    const want = rows.map((r) => String(r.id));
    const got: string[] = [];
    let pageToken = '';
    for (let page = 0; page < want.length + 2; page += 1) {
      const res = await input.billing.listTransactions({ userId, pageSize: input.rng.int(1, 100), pageToken });
      got.push(...res.transactions.map((t) => t.id));
      pageToken = res.nextPageToken;
      if (pageToken === '') break;
    }
    if (got.join(',') !== want.join(',')) {
      const index = got.findIndex((id, i) => id !== want[i]);
      problems.add('history', `${userId}: ListTransactions gave ${got.length} rows, stored ${want.length}; first difference at ${index}: ${got[index]} vs ${want[index]}`);
    }
  }
}

export async function checkBank(input: CheckInput): Promise<Problems> {
  const problems = new Problems();
  const { attempts, groups } = input.history;
  for (const a of attempts) checkAttempt(a, input.world, problems);
  const expiries = shortHoldExpiries(attempts);
  for (const g of groups) checkGroup(g, expiries, problems);
  const expected = rebuild(attempts, input.world, problems);
  await checkTransactions(input, expected, problems);
  await checkIdempotencyRecords(input, expected, problems);
  await checkHolds(input, expected, problems);
  await checkCounters(input, expected, problems);
  await checkLedger(input, problems);
  await checkHistory(input, problems);
  return problems;
}

/** The latest expiry of any short hold a reply acknowledged, so the test can wait it out. */
export function lastShortExpiry(history: BankHistory): number {
  let last = 0;
  for (const list of shortHoldExpiries(history.attempts).values()) for (const ms of list) last = Math.max(last, ms);
  return last;
}
