// The commands of the model test: how one generated command (generate.ts) is resolved
// against the sequence's state, sent to the real server and to the model, and compared;
// and how a sequence starts and ends.
import { timestampFromMs } from '@bufbuild/protobuf/wkt';
import type fc from 'fast-check';
import { Plan as ProtoPlan, TransactionType } from '../../gen/billing/v1/types_pb.js';
import { type CodeRef, type HoldRef, type KeyedOp, type Op, type SequenceSetup, type TxRef, USERS_PER_SEQUENCE, type Via } from './generate.js';
import { type AdminClient, type BillingClient, normBalance, normPromo, normTx, outcome, quote, sendKeyed } from './real.js';
import {
  type Assigner,
  type KeyedReq,
  type ModelCatalogue,
  type Outcome,
  SpecModel,
  type TxType,
  type TxV,
} from './spec.js';

// ---- the systems under test ----

export interface Real {
  readonly grpc: BillingClient;
  /** The same service over Connect JSON on HTTP/1.1. */
  readonly connect: BillingClient;
  readonly admin: AdminClient;
  readonly db: { query<R extends Record<string, unknown>>(sql: string, params?: readonly unknown[]): Promise<R[]> };
  /** The highest ids seen so far in this database: new ones must be above them. */
  readonly lastIds: { tx: bigint; hold: bigint };
}

/** One sequence's model and its bookkeeping (fast-check's "model"). */
export interface World {
  readonly model: SpecModel;
  readonly users: readonly string[];
  readonly codes: readonly string[];
  /** Every keyed request sent so far, for retries and key reuse. */
  readonly sent: KeyedReq[];
  readonly prefix: string;
  keys: number;
}

/** How often each outcome was seen, to prove the generators reach every path. */
export const coverage = new Map<string, number>();
function note(label: string): void {
  coverage.set(label, (coverage.get(label) ?? 0) + 1);
}

/** Ids no row of this test ever reaches (sequences are kept below 10^18), within int64. */
const UNKNOWN_ID = '9000000000000000000';
const UNKNOWN_CODE = 'NO-SUCH-CODE';

// ---- running a command ----

export class Step implements fc.AsyncCommand<World, Real> {
  constructor(readonly op: Op) {}
  check(): boolean {
    return true;
  }
  async run(w: World, r: Real): Promise<void> {
    await execute(w, r, this.op);
  }
  toString(): string {
    return show(this.op);
  }
}

export function show(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));
}

function client(r: Real, via: Via): BillingClient {
  return via === 'grpc' ? r.grpc : r.connect;
}

/**
 * Compares a reply with the model's. Throws with every differing path listed, since
 * fast-check's report shows the message, not a rich diff.
 */
export function same(actual: unknown, expected: unknown, label: string): void {
  const diffs: string[] = [];
  const walk = (a: unknown, b: unknown, path: string) => {
    if (diffs.length >= 12) return;
    if (a !== null && b !== null && typeof a === 'object' && typeof b === 'object') {
      const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
      for (const k of keys) walk((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${path}.${k}`);
      return;
    }
    if (a !== b) diffs.push(`  ${path || '.'}: server ${show(a)}, model ${show(b)}`);
  };
  walk(actual, expected, '');
  if (diffs.length > 0) {
    throw new Error(`${label}\n${diffs.join('\n')}\n  server: ${show(actual)}\n  model:  ${show(expected)}`);
  }
}

async function execute(w: World, r: Real, op: Op): Promise<void> {
  switch (op.op) {
    case 'grant':
    case 'charge':
    case 'reserve':
    case 'release':
    case 'refund':
    case 'redeem':
      return keyed(w, r, resolve(w, op), op.via);
    case 'burst':
      return burst(w, r, op);
    case 'retry': {
      // The same request again, same key: the original reply if it succeeded, otherwise
      // it runs afresh (a refused request leaves no trace under its key).
      const original = w.sent[op.k % Math.max(1, w.sent.length)];
      if (original) await keyed(w, r, original, op.via, 'retry ');
      return;
    }
    case 'setPlan': {
      const userId = w.users[op.user]!;
      const plan = op.plan === 'UNSPECIFIED' ? ProtoPlan.UNSPECIFIED : ProtoPlan[op.plan];
      const actual = await outcome(r.admin.setPlan({ userId, plan }), (x) => normBalance(x.balance));
      return check(actual, w.model.setPlan(userId, op.plan), op);
    }
    case 'setEntitlement': {
      const userId = w.users[op.user]!;
      const actual = await outcome(r.admin.setEntitlement({ userId, entitlement: op.name, active: op.active }), (x) => normBalance(x.balance));
      return check(actual, w.model.setEntitlement(userId, op.name, op.active), op);
    }
    case 'topUp':
      return topUp(w, r, op.daysBack);
    case 'list':
      return walkHistory(w, client(r, op.via), w.users[op.user]!, op.pageSize, op.types);
    case 'balance': {
      const userId = w.users[op.user]!;
      const actual = await client(r, op.via).getBalance({ userId });
      return same(normBalance(actual.balance), w.model.balance(userId), show(op));
    }
    case 'quote': {
      const userId = w.users[op.user]!;
      const actual = await quote(client(r, op.via), userId, 'muse', op.usage);
      return check(actual, w.model.quote(userId, op.usage), op);
    }
    case 'expireHold':
      return expireHold(w, r, op.hold);
    case 'expirePromo':
      return expirePromo(w, r, op.code);
    case 'disablePromo': {
      const code = codeOf(w, op.code);
      return check(await outcome(r.admin.disablePromoCode({ code }), (x) => normPromo(x.promoCode)), w.model.disablePromo(code), op);
    }
    case 'getPromo': {
      const code = codeOf(w, op.code);
      return check(await outcome(r.admin.getPromoCode({ code }), (x) => normPromo(x.promoCode)), w.model.promo(code), op);
    }
  }
}

function check(actual: Outcome, expected: Outcome, what: unknown): void {
  note(`${(what as { op?: string }).op ?? 'call'}:${'ok' in expected ? 'ok' : expected.error.reason}`);
  same(actual, expected, show(what));
}

/** Sends one keyed request to the server and to the model, and compares. */
async function keyed(w: World, r: Real, req: KeyedReq, via: Via, tag = ''): Promise<void> {
  w.sent.push(req);
  const actual = await sendKeyed(client(r, via), req);
  const expected = w.model.keyed(req, assigner(r, actual));
  noteKeyed(req, expected);
  same(actual, expected, `${tag}${req.method} via ${via}: ${show(req)}`);
}

function noteKeyed(req: KeyedReq, expected: Outcome): void {
  if ('error' in expected) return note(`${req.method}:${expected.error.reason}`);
  note(`${req.method}:ok`);
  const reply = expected.ok as { shortfallMillicredits?: bigint; waivedReason?: string; reservation?: { amountMillicredits: bigint } };
  if (req.method === 'Charge' && req.reservationId) note('Charge:capture');
  if ((reply.shortfallMillicredits ?? 0n) > 0n) note('Charge:shortfall');
  if (reply.waivedReason && reply.waivedReason !== 'UNSPECIFIED') note(`waived:${reply.waivedReason}`);
  if (req.method === 'Reserve' && reply.reservation?.amountMillicredits === 0n) note('Reserve:zero hold');
  if (req.method === 'Release' && (reply.reservation as { status?: string } | undefined)?.status === 'EXPIRED') note('Release:expired hold');
}

/** New rows' ids come from the real reply; each must be above every id seen before. */
function assigner(r: Real, actual: Outcome): Assigner {
  const ok = 'ok' in actual ? (actual.ok as { transaction?: TxV; reservation?: { id: string; createdAtMs: number } }) : {};
  const fresh = (id: string | undefined, kind: 'tx' | 'hold') => {
    if (id === undefined) return '(the server gave no row)';
    if (!/^[1-9]\d*$/.test(id) || BigInt(id) <= r.lastIds[kind]) {
      throw new Error(`new ${kind} id ${id} is not above the last one seen (${r.lastIds[kind]})`);
    }
    r.lastIds[kind] = BigInt(id);
    return id;
  };
  return {
    transaction: () => ({ id: fresh(ok.transaction?.id, 'tx'), createdAtMs: ok.transaction?.createdAtMs ?? -1 }),
    reservation: () => ({ id: fresh(ok.reservation?.id, 'hold'), createdAtMs: ok.reservation?.createdAtMs ?? -1 }),
  };
}

/** Turns generated data into a concrete request against this sequence's state. */
function resolve(w: World, op: KeyedOp): KeyedReq {
  let userId = w.users[op.user]!;
  let key: string;
  const source = 'reuse' in op.keyRef ? w.sent[op.keyRef.reuse % Math.max(1, w.sent.length)] : undefined;
  // A reused key with sameUser pins the user; otherwise a call about an active or settled
  // hold, or a refundable charge, goes to whichever user owns it.
  const pinned = source !== undefined && 'reuse' in op.keyRef && op.keyRef.sameUser;
  if (source && 'reuse' in op.keyRef) {
    key = source.key;
    if (pinned) userId = source.userId;
  } else {
    w.keys += 1;
    key = `${w.prefix}-k${w.keys}`;
  }
  const as = (target: Target) => ({ userId: target.owner ?? userId, key });
  switch (op.op) {
    case 'grant':
      return { userId, key, method: 'Grant', grant: op.grant, reason: op.reason, reference: op.reference, metadata: op.metadata };
    case 'charge': {
      // With no hold to capture yet, a capture becomes a plain charge.
      const target = op.capture === null ? { id: '' } : holdTarget(w, userId, op.capture, pinned, '');
      return {
        ...as(target),
        method: 'Charge',
        product: 'muse',
        usage: op.usage,
        reservationId: target.id,
        allowPartial: op.allowPartial,
        reference: op.reference,
        metadata: op.metadata,
      };
    }
    case 'reserve':
      return { userId, key, method: 'Reserve', product: 'muse', usage: op.usage, ttlSeconds: op.ttl };
    case 'release': {
      const target = holdTarget(w, userId, op.hold, pinned);
      return { ...as(target), method: 'Release', reservationId: target.id };
    }
    case 'refund': {
      const target = txTarget(w, userId, op.tx, pinned);
      const remaining = remainingOf(w, target.id);
      const amount = op.amount === 'all' ? 0n : op.amount === 'half' ? (remaining > 1n ? remaining / 2n : 1n) : op.amount;
      return { ...as(target), method: 'Refund', transactionId: target.id, amount, reason: op.reason };
    }
    case 'redeem': {
      const code = codeOf(w, op.code);
      return { userId, key, method: 'Redeem', code: op.lower ? code.toLowerCase() : code };
    }
  }
}

/** What a reference resolved to, and the user to send the call as (when it follows the owner). */
interface Target {
  id: string;
  owner?: string;
}

function pick<T>(items: readonly T[], index: number): T | undefined {
  return items.length === 0 ? undefined : items[index % items.length];
}

/** `none` is sent when the sequence has no hold to refer to yet. */
function holdTarget(w: World, userId: string, ref: HoldRef, pinned: boolean, none = UNKNOWN_ID): Target {
  if (ref === 'unknown') return { id: UNKNOWN_ID };
  const all = w.model.holds;
  const mine = all.filter((h) => h.userId === userId);
  const owned = (hold: { id: string; userId: string } | undefined): Target | undefined =>
    hold && { id: hold.id, ...(pinned ? {} : { owner: hold.userId }) };
  const among = pinned ? mine : all;
  if ('active' in ref) return owned(pick(among.filter((h) => h.status === 'ACTIVE'), ref.active)) ?? { id: pick(mine, ref.active)?.id ?? none };
  if ('settled' in ref) return owned(pick(among.filter((h) => h.status !== 'ACTIVE'), ref.settled)) ?? { id: pick(mine, ref.settled)?.id ?? none };
  const hold = 'mine' in ref ? (pick(mine, ref.mine) ?? pick(all, ref.mine)) : pick(all, ref.any);
  return { id: hold?.id ?? none };
}

function txTarget(w: World, userId: string, ref: TxRef, pinned: boolean): Target {
  if (ref === 'unknown') return { id: UNKNOWN_ID };
  const all = w.model.txs;
  const mine = all.filter((t) => t.userId === userId);
  if ('refundable' in ref) {
    const refundable = (pinned ? mine : all).filter((t) => t.type === 'CHARGE' && remainingOf(w, t.id) > 0n);
    const found = pick(refundable, ref.refundable);
    if (found) return { id: found.id, ...(pinned ? {} : { owner: found.userId }) };
    return { id: pick(mine, ref.refundable)?.id ?? UNKNOWN_ID };
  }
  const found = 'mine' in ref ? pick(mine, ref.mine) : pick(all, ref.any);
  return { id: found?.id ?? UNKNOWN_ID };
}

/**
 * Several small grants and charges of one user in a row, so that histories grow past a
 * page and past 10 rows (and across digit boundaries) within a sequence of ~30 commands.
 */
async function burst(w: World, r: Real, op: Extract<Op, { op: 'burst' }>): Promise<void> {
  for (let i = 0; i < op.count; i += 1) {
    const base = { user: op.user, keyRef: { fresh: true as const }, via: op.via, reference: '', metadata: {} };
    const step: KeyedOp = i % 3 === 2
      ? { ...base, op: 'charge', usage: { kind: 'amount', amount: 300n }, capture: null, allowPartial: true }
      : { ...base, op: 'grant', grant: { amount: 200n + BigInt(i) }, reason: 'burst' };
    await keyed(w, r, resolve(w, step), op.via);
  }
}

function remainingOf(w: World, id: string): bigint {
  const charge = w.model.txs.find((t) => t.id === id);
  return charge ? -charge.amountMillicredits - w.model.refundedSoFar(id) : 0n;
}

function codeOf(w: World, ref: CodeRef): string {
  return ref === 'unknown' ? UNKNOWN_CODE : (pick(w.codes, ref) ?? UNKNOWN_CODE);
}

/** Walks every page of a history and compares each with the model's page. */
export async function walkHistory(w: World, c: BillingClient, userId: string, pageSize: number, types: readonly TxType[]): Promise<void> {
  const expected = w.model.history(userId, types);
  const size = pageSize === 0 ? 50 : pageSize;
  let pageToken = '';
  for (let page = 0, offset = 0; ; page += 1, offset += size) {
    const reply = await c.listTransactions({ userId, pageSize, pageToken, types: types.map((t) => TransactionType[t]) });
    same(
      { transactions: reply.transactions.map(normTx), more: reply.nextPageToken !== '' },
      { transactions: expected.slice(offset, offset + size), more: offset + size < expected.length },
      `ListTransactions ${show({ userId, pageSize, types })} page ${page} (rows ${offset}..)`,
    );
    note('list:page');
    if (reply.nextPageToken === '') return;
    pageToken = reply.nextPageToken;
  }
}

function utcDayBefore(day: string, daysBack: number): string {
  return new Date(Date.parse(`${day}T00:00:00Z`) - daysBack * 86_400_000).toISOString().slice(0, 10);
}

/**
 * The daily top-up. It touches every FREE account of the database, but accounts of
 * earlier sequences were moved off FREE when this one started, so the counts it reports
 * are the model's users' alone. The new transactions' ids are read from the database
 * (the reply carries only counts) and then checked through the history like any other.
 */
async function topUp(w: World, r: Real, daysBack: number | 'empty'): Promise<void> {
  const date = daysBack === 'empty' ? '' : utcDayBefore(w.model.today, daysBack);
  const actual = await outcome(r.admin.runDailyTopUp({ date }), (x) => ({
    accountsToppedUp: x.accountsToppedUp,
    totalMillicredits: x.totalMillicredits,
  }));
  const { raised, day, ...expected } = w.model.topUp(date);
  note(`topUp:${'ok' in expected ? (raised?.length ? 'raised' : 'none') : expected.error.reason}`);
  same(actual, expected, `RunDailyTopUp ${show({ date })}`);
  if (!raised?.length || !day) return;
  const rows = await r.db.query<{ id: string; user_id: string; ms: string }>(
    `select id::text as id, user_id, floor(extract(epoch from created_at) * 1000)::text as ms from transactions
      where type = 'DAILY_TOP_UP' and reference = $1 and user_id = any($2::text[]) order by id`,
    [day, raised.map((x) => x.userId)],
  );
  const ids = new Map(rows.map((row) => [row.user_id, { id: row.id, createdAtMs: Number(row.ms) }]));
  same(rows.length, raised.length, `top-up transactions written for ${day}`);
  for (const row of rows) {
    if (BigInt(row.id) <= r.lastIds.tx) throw new Error(`top-up id ${row.id} is not above the last one seen (${r.lastIds.tx})`);
  }
  r.lastIds.tx = rows.reduce((max, row) => (BigInt(row.id) > max ? BigInt(row.id) : max), r.lastIds.tx);
  w.model.commitTopUp(day, raised, ids);
}

/**
 * A hold's time running out. Moving its expires_at into the past is what the clock
 * passing it would do: every read and every mutation compares expires_at with now().
 * (One real 1-second TTL is checked separately in model.test.ts.)
 */
async function expireHold(w: World, r: Real, index: number): Promise<void> {
  const hold = pick(w.model.holds.filter((h) => h.status === 'ACTIVE'), index);
  if (!hold) return;
  const rows = await r.db.query<{ ms: string }>(
    `update reservations set expires_at = now() - interval '1 second' where id = $1::bigint
     returning floor(extract(epoch from expires_at) * 1000)::text as ms`,
    [hold.id],
  );
  w.model.expireHold(hold.id, Number(rows[0]!.ms));
  note('hold:expired');
}

/** A promo code's expiry passing, the same way: judged by the database's clock. */
async function expirePromo(w: World, r: Real, index: number): Promise<void> {
  const code = pick(w.codes, index);
  if (!code) return;
  const rows = await r.db.query<{ ms: string }>(
    `update promo_codes set expires_at = now() - interval '1 second' where code = $1
     returning floor(extract(epoch from expires_at) * 1000)::text as ms`,
    [code],
  );
  w.model.expirePromo(code, Number(rows[0]!.ms));
}

// ---- a sequence's start and end ----

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The database's UTC day. Free operations and "today" of the top-up follow the UTC day,
 * so a sequence never starts in the last 20 s before midnight (a sequence takes about a
 * second): it waits for the new day instead.
 */
async function today(r: Real): Promise<string> {
  for (;;) {
    const [row] = await r.db.query<{ s: string; day: string }>(
      `select extract(epoch from now())::text as s, to_char((now() at time zone 'utc')::date, 'YYYY-MM-DD') as day`,
    );
    const intoDay = Number(row!.s) % 86_400;
    if (intoDay < 86_400 - 20) return row!.day;
    await sleep((86_400 - intoDay + 1) * 1000);
  }
}

/**
 * Moves the next transaction and reservation ids to just below the next power of ten,
 * so that this sequence's histories cross a digit boundary (9 → 10, 999 → 1000, …) and
 * ids grow past 2^53. Sequences only move forward; boundaries stop at 10^18.
 */
async function moveIdsBelowBoundary(r: Real, below: number): Promise<void> {
  for (const table of ['transactions', 'reservations']) {
    const [row] = await r.db.query<{ v: string }>(`select nextval(pg_get_serial_sequence('${table}', 'id'))::text as v`);
    const current = BigInt(row!.v);
    const boundary = 10n ** BigInt(row!.v.length);
    if (boundary > 10n ** 18n || boundary - BigInt(below) <= current) continue;
    await r.db.query(`select setval(pg_get_serial_sequence('${table}', 'id'), $1::bigint)`, [(boundary - BigInt(below)).toString()]);
  }
}

export async function startSequence(r: Real, cat: ModelCatalogue, setup: SequenceSetup, run: number): Promise<World> {
  const day = await today(r);
  // Users of earlier sequences leave the FREE plan, so the top-up reports only this one's.
  await r.db.query(`update user_accounts set plan = 'PRO' where plan = 'FREE'`);
  if (setup.idsBelowBoundary !== null) await moveIdsBelowBoundary(r, setup.idsBelowBoundary);
  const prefix = `${cat.name}-${run}`;
  const w: World = {
    model: new SpecModel(cat, day),
    users: Array.from({ length: USERS_PER_SEQUENCE }, (_, i) => `${prefix}-u${i}`),
    codes: setup.promos.map((_, i) => `P_${cat.name}_${run}_${i}`.toUpperCase()),
    sent: [],
    prefix,
    keys: 0,
  };
  for (const [i, p] of setup.promos.entries()) {
    const expiresAtMs = p.expires ? Date.now() + 86_400_000 : undefined;
    const created = await r.admin.createPromoCode({
      code: w.codes[i]!.toLowerCase(),
      amountMillicredits: p.amount,
      maxRedemptions: p.max,
      ...(expiresAtMs === undefined ? {} : { expiresAt: timestampFromMs(expiresAtMs) }),
    });
    const actual = normPromo(created.promoCode);
    const expected = w.model.createPromo({
      code: w.codes[i]!,
      amountMillicredits: p.amount,
      maxRedemptions: p.max,
      expiresAtMs,
      createdAtMs: actual.createdAtMs,
    });
    same(actual, expected, `CreatePromoCode ${w.codes[i]}`);
  }
  for (const [user, amount] of setup.funds.entries()) {
    if (amount === null) continue;
    const op: KeyedOp = { op: 'grant', user, keyRef: { fresh: true }, via: 'grpc', grant: { amount }, reason: 'opening funds', reference: '', metadata: {} };
    await keyed(w, r, resolve(w, op), 'grpc');
  }
  return w;
}

/** After the last command: every balance and whole history, and the ledger's own check. */
export async function finishSequence(w: World, r: Real): Promise<void> {
  for (const userId of w.users) {
    same(normBalance((await r.grpc.getBalance({ userId })).balance), w.model.balance(userId), `final GetBalance ${userId}`);
    await walkHistory(w, r.grpc, userId, 100, []);
    const ids = w.model.history(userId, []).map((t) => t.id);
    if (ids.length > 10) note('history:>10 rows');
    if (new Set(ids.map((id) => id.length)).size > 1) note('history:crosses a digit boundary');
  }
  const verdict = await r.admin.verifyLedger({});
  same({ ok: verdict.ok, violations: verdict.violations.map((v) => `${v.invariant} ${v.account} ${v.transactionId}`) }, { ok: true, violations: [] }, 'VerifyLedger');
}
