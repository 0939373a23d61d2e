// A small in-memory model of the billing spec (shared/SPEC.md and the README's decisions):
// balances, holds, charges, refunds, grants, promo codes, plans, entitlements, daily free
// operations and the daily top-up. It does no I/O and shares no logic with src/ except the
// token formula (see price()). Every reply the real server gives is compared with what
// this model says it must be; server-assigned values (ids, timestamps) are taken from the
// real reply through an Assigner and then held to the model's rules (fresh, increasing).
import { readFileSync } from 'node:fs';
import type { Catalogue } from '../../src/domain/catalogue.js';
import { priceTokens } from '../../src/ledger/charge/pricing.js';

export type Plan = 'FREE' | 'PRO' | 'ADMIN';
export type TxType = 'CHARGE' | 'REFUND' | 'GRANT' | 'PROMO' | 'DAILY_TOP_UP' | 'DEPOSIT';
export type Waived =
  | 'UNSPECIFIED'
  | 'FINISH_TOOL_CALLS'
  | 'FINISH_ERROR'
  | 'ADMIN_PLAN'
  | 'ENTITLEMENT'
  | 'FREE_DAILY_OPERATION'
  | 'ZERO_PRICE';
export type HoldStatus = 'ACTIVE' | 'CAPTURED' | 'RELEASED' | 'EXPIRED';

export interface BalanceV {
  userId: string;
  balanceMillicredits: bigint;
  reservedMillicredits: bigint;
  availableMillicredits: bigint;
  lowBalance: boolean;
  canStart: boolean;
  plan: Plan;
  entitlements: string[];
  freeOperationsRemaining: bigint;
}

export interface TxV {
  id: string;
  userId: string;
  type: TxType;
  amountMillicredits: bigint;
  balanceAfterMillicredits: bigint;
  product: string;
  operation: string;
  reference: string;
  reason: string;
  idempotencyKey: string;
  metadata: Record<string, string>;
  waivedReason: Waived;
  refundedTransactionId: string;
  reservationId: string;
  createdAtMs: number;
}

export interface HoldV {
  id: string;
  userId: string;
  amountMillicredits: bigint;
  status: HoldStatus;
  product: string;
  expiresAtMs: number;
  createdAtMs: number;
}

export interface PriceV {
  costMillicredits: bigint;
  effectiveTokens: bigint;
  modelMultiplier: string;
  tokensPerUnit: bigint;
  outputWeight: bigint;
  unroundedCostMillicredits: string;
  minimumApplied: boolean;
  unitPriceMillicredits: bigint;
  quantity: bigint;
}

export interface PromoV {
  code: string;
  amountMillicredits: bigint;
  maxRedemptions: bigint;
  redemptions: bigint;
  expiresAtMs: number | undefined;
  disabled: boolean;
  createdAtMs: number;
}

/** A refused call: the Connect code and the ErrorDetail, by name, so diffs read well. */
export interface ErrV {
  code: string;
  reason: string;
  field: string;
  required: bigint;
  available: bigint;
  subject: string;
}

export type Outcome<T = unknown> = { ok: T } | { error: ErrV };

export interface ChargeReply {
  transaction: TxV;
  chargedMillicredits: bigint;
  shortfallMillicredits: bigint;
  waivedReason: Waived;
  price: PriceV;
  balance: BalanceV;
}
export interface TxReply {
  transaction: TxV;
  balance: BalanceV;
}
export interface HoldReply {
  reservation: HoldV;
  balance: BalanceV;
}
export interface QuoteReply {
  costMillicredits: bigint;
  price: PriceV;
  waivedReason: Waived;
}
export interface TopUpReply {
  accountsToppedUp: bigint;
  totalMillicredits: bigint;
}

export type UsageReq =
  | { kind: 'amount'; amount: bigint }
  | { kind: 'tokens'; model: string; tokensIn: bigint; tokensOut: bigint; finish: string }
  | { kind: 'operation'; name: string; quantity: bigint };

interface KeyedBase {
  userId: string;
  key: string;
}
export type GrantReq = KeyedBase & {
  method: 'Grant';
  grant: { sku: string } | { amount: bigint };
  reason: string;
  reference: string;
  metadata: Record<string, string>;
};
export type ChargeReq = KeyedBase & {
  method: 'Charge';
  product: string;
  usage: UsageReq;
  reservationId: string;
  allowPartial: boolean;
  reference: string;
  metadata: Record<string, string>;
};
export type ReserveReq = KeyedBase & { method: 'Reserve'; product: string; usage: UsageReq; ttlSeconds: number };
export type ReleaseReq = KeyedBase & { method: 'Release'; reservationId: string };
export type RefundReq = KeyedBase & { method: 'Refund'; transactionId: string; amount: bigint; reason: string };
export type RedeemReq = KeyedBase & { method: 'Redeem'; code: string };
export type KeyedReq = GrantReq | ChargeReq | ReserveReq | ReleaseReq | RefundReq | RedeemReq;

/** Server-assigned identity of a new row, read from the real reply. */
export interface Assigner {
  transaction(): { id: string; createdAtMs: number };
  reservation(): { id: string; createdAtMs: number };
}

/** The catalogue as the model reads it: straight from the shipped JSON file. */
export interface ModelCatalogue {
  readonly name: string;
  readonly operations: ReadonlyMap<string, { price: bigint; freeWith?: string }>;
  readonly models: ReadonlyMap<string, { proOnly: boolean }>;
  readonly dailyFreePerDay: bigint;
  readonly dailyFreeOperations: ReadonlySet<string>;
  readonly skus: ReadonlyMap<string, bigint>;
  readonly lowBalance: bigint;
  readonly minimumStart: bigint;
  readonly topUpTarget: bigint;
  readonly defaultTtlSeconds: number;
  /** The project's parsed catalogue, used only for the token formula. */
  readonly pricing: Catalogue;
}

interface CatalogueFile {
  name: string;
  models: { name: string; proOnly: boolean }[];
  operations: { name: string; priceMillicredits: number; freeWithEntitlement?: string }[];
  dailyFreeOperations: { perDay: number; operations: string[] };
  skus: { name: string; amountMillicredits: number }[];
  balance: { lowBalanceMillicredits: number; minimumStartMillicredits: number };
  dailyTopUp: { targetMillicredits: number };
  holds: { defaultTtlSeconds: number };
}

export function readCatalogue(name: 'muse' | 'mu', pricing: Catalogue): ModelCatalogue {
  const file = JSON.parse(readFileSync(new URL(`../../config/${name}.json`, import.meta.url), 'utf8')) as CatalogueFile;
  return {
    name: file.name,
    operations: new Map(
      file.operations.map((o) => [
        o.name,
        { price: BigInt(o.priceMillicredits), ...(o.freeWithEntitlement ? { freeWith: o.freeWithEntitlement } : {}) },
      ]),
    ),
    models: new Map(file.models.map((m) => [m.name, { proOnly: m.proOnly }])),
    dailyFreePerDay: BigInt(file.dailyFreeOperations.perDay),
    dailyFreeOperations: new Set(file.dailyFreeOperations.operations),
    skus: new Map(file.skus.map((s) => [s.name, BigInt(s.amountMillicredits)])),
    lowBalance: BigInt(file.balance.lowBalanceMillicredits),
    minimumStart: BigInt(file.balance.minimumStartMillicredits),
    topUpTarget: BigInt(file.dailyTopUp.targetMillicredits),
    defaultTtlSeconds: file.holds.defaultTtlSeconds,
    pricing,
  };
}

const AMOUNT_MAX = 1_000_000_000_000n;
const QUANTITY_MAX = 10_000n;
const TOP_UP_DAYS_BACK_MAX = 7;
const DAY_MS = 86_400_000;
const CHARGED_FINISH = new Set(['stop', 'length']);
const WAIVED_FINISH: ReadonlyMap<string, Waived> = new Map([
  ['tool_calls', 'FINISH_TOOL_CALLS'],
  ['error', 'FINISH_ERROR'],
]);

export function err(code: string, reason: string, facts: Partial<Omit<ErrV, 'code' | 'reason'>> = {}): { error: ErrV } {
  return { error: { code, reason, field: '', required: 0n, available: 0n, subject: '', ...facts } };
}

function invalid(field: string, reason = 'INVALID_FIELD'): { error: ErrV } {
  return err('InvalidArgument', reason, { field });
}

function zeroPrice(): PriceV {
  return {
    costMillicredits: 0n,
    effectiveTokens: 0n,
    modelMultiplier: '',
    tokensPerUnit: 0n,
    outputWeight: 0n,
    unroundedCostMillicredits: '',
    minimumApplied: false,
    unitPriceMillicredits: 0n,
    quantity: 0n,
  };
}

interface Account {
  /** Created by the first successful mutation or plan/entitlement change. */
  exists: boolean;
  balance: bigint;
  plan: Plan;
  entitlements: Set<string>;
  /** Daily free operations used today (the sequence's UTC day). */
  freeUsed: bigint;
}

interface Promo extends PromoV {
  expired: boolean;
  redeemedBy: Set<string>;
}

interface Priced {
  /** What a charge debits (0 when waived). */
  charge: bigint;
  price: PriceV;
  waived: Waived;
  freeUsed: bigint;
  operation: string;
}

/** Canonical text of a request: two requests are "the same" for idempotency iff equal. */
export function canonical(req: KeyedReq, defaultTtl: number): string {
  const usage = (u: UsageReq, estimate: boolean) => {
    if (u.kind === 'operation') return { ...u, quantity: u.quantity === 0n ? 1n : u.quantity };
    if (u.kind === 'tokens' && estimate && u.finish === '') return { ...u, finish: 'stop' };
    return u;
  };
  const sorted = (m: Record<string, string>) => Object.entries(m).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const body = (() => {
    switch (req.method) {
      case 'Grant':
        return [req.grant, req.reason, req.reference, sorted(req.metadata)];
      case 'Charge':
        return [req.product, usage(req.usage, false), req.reservationId, req.allowPartial, req.reference, sorted(req.metadata)];
      case 'Reserve':
        return [req.product, usage(req.usage, true), req.ttlSeconds === 0 ? defaultTtl : req.ttlSeconds];
      case 'Release':
        return [req.reservationId];
      case 'Refund':
        return [req.transactionId, req.amount, req.reason];
      case 'Redeem':
        return [req.code.toUpperCase()];
    }
  })();
  return JSON.stringify([req.method, body], (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v));
}

export class SpecModel {
  private readonly accounts = new Map<string, Account>();
  /** Every transaction of the model's users, in commit order (= id order). */
  readonly txs: TxV[] = [];
  readonly holds: HoldV[] = [];
  readonly promos = new Map<string, Promo>();
  private readonly keys = new Map<string, { canonical: string; reply: unknown }>();
  private readonly toppedUp = new Set<string>();

  constructor(
    readonly cat: ModelCatalogue,
    /** The sequence's UTC day, "YYYY-MM-DD", read from the database's clock. */
    readonly today: string,
  ) {}

  // ---- reads ----

  balance(userId: string): BalanceV {
    const a = this.account(userId);
    const reserved = this.holds
      .filter((h) => h.userId === userId && h.status === 'ACTIVE')
      .reduce((sum, h) => sum + h.amountMillicredits, 0n);
    const available = a.balance - reserved;
    const remaining = this.cat.dailyFreePerDay - a.freeUsed;
    return {
      userId,
      balanceMillicredits: a.balance,
      reservedMillicredits: reserved,
      availableMillicredits: available,
      lowBalance: available <= this.cat.lowBalance,
      canStart: a.plan === 'ADMIN' || available >= this.cat.minimumStart,
      plan: a.plan,
      entitlements: [...a.entitlements].sort(),
      freeOperationsRemaining: remaining > 0n ? remaining : 0n,
    };
  }

  /** The user's history, newest first, filtered by type (empty = all). */
  history(userId: string, types: readonly TxType[]): TxV[] {
    return this.txs.filter((t) => t.userId === userId && (types.length === 0 || types.includes(t.type))).reverse();
  }

  quote(userId: string, usage: UsageReq): Outcome<QuoteReply> {
    const bad = this.checkUsage(usage, true);
    if (bad) return bad;
    const priced = this.price(this.estimate(usage), this.account(userId));
    if ('error' in priced) return priced;
    return { ok: { costMillicredits: priced.charge, price: priced.price, waivedReason: priced.waived } };
  }

  promo(code: string): Outcome<PromoV> {
    const p = this.promos.get(code.toUpperCase());
    if (!p) return err('NotFound', 'PROMO_CODE_NOT_FOUND', { field: 'code', subject: code.toUpperCase() });
    return { ok: promoView(p) };
  }

  refundedSoFar(chargeId: string): bigint {
    return this.txs.filter((t) => t.refundedTransactionId === chargeId).reduce((s, t) => s + t.amountMillicredits, 0n);
  }

  // ---- state-setting admin calls ----

  setPlan(userId: string, plan: Plan | 'UNSPECIFIED'): Outcome<BalanceV> {
    if (plan === 'UNSPECIFIED') return invalid('plan');
    const a = this.account(userId);
    a.exists = true;
    a.plan = plan;
    return { ok: this.balance(userId) };
  }

  setEntitlement(userId: string, entitlement: string, active: boolean): Outcome<BalanceV> {
    const a = this.account(userId);
    a.exists = true;
    if (active) a.entitlements.add(entitlement);
    else a.entitlements.delete(entitlement);
    return { ok: this.balance(userId) };
  }

  createPromo(p: Omit<PromoV, 'redemptions' | 'disabled'>): PromoV {
    const promo: Promo = { ...p, redemptions: 0n, disabled: false, expired: false, redeemedBy: new Set() };
    this.promos.set(p.code, promo);
    return promoView(promo);
  }

  disablePromo(code: string): Outcome<PromoV> {
    const p = this.promos.get(code.toUpperCase());
    if (!p) return err('NotFound', 'PROMO_CODE_NOT_FOUND', { field: 'code', subject: code.toUpperCase() });
    p.disabled = true;
    return { ok: promoView(p) };
  }

  /** The code's expiry was moved into the past: the clock passed it. */
  expirePromo(code: string, expiresAtMs: number): void {
    const p = this.promos.get(code);
    if (!p) throw new Error(`model has no promo ${code}`);
    p.expired = true;
    p.expiresAtMs = expiresAtMs;
  }

  /** The hold's expiry was moved into the past: from now on it no longer counts. */
  expireHold(id: string, expiresAtMs: number): void {
    const h = this.holds.find((x) => x.id === id);
    if (!h) throw new Error(`model has no hold ${id}`);
    h.expiresAtMs = expiresAtMs;
    if (h.status === 'ACTIVE') h.status = 'EXPIRED';
  }

  /**
   * The daily top-up for `date` ("" = today): which of the model's users it raises, and
   * the reply. `commit` applies it once the real run's transaction ids are known.
   */
  topUp(date: string): Outcome<TopUpReply> & { raised?: { userId: string; amount: bigint }[]; day?: string } {
    const day = date === '' ? this.today : date;
    if (date !== '') {
      const parsed = /^\d{4}-\d{2}-\d{2}$/.test(date) ? Date.parse(`${date}T00:00:00Z`) : Number.NaN;
      const today = Date.parse(`${this.today}T00:00:00Z`);
      if (Number.isNaN(parsed) || parsed > today || parsed < today - TOP_UP_DAYS_BACK_MAX * DAY_MS) return invalid('date');
    }
    const raised = [...this.accounts.entries()]
      .filter(([userId, a]) => a.exists && a.plan === 'FREE' && a.balance < this.cat.topUpTarget && !this.toppedUp.has(`${userId}|${day}`))
      .map(([userId, a]) => ({ userId, amount: this.cat.topUpTarget - a.balance }));
    return {
      ok: { accountsToppedUp: BigInt(raised.length), totalMillicredits: raised.reduce((s, r) => s + r.amount, 0n) },
      raised,
      day,
    };
  }

  commitTopUp(day: string, raised: readonly { userId: string; amount: bigint }[], ids: ReadonlyMap<string, { id: string; createdAtMs: number }>): void {
    for (const r of raised) {
      const assigned = ids.get(r.userId);
      if (!assigned) throw new Error(`no top-up transaction found for ${r.userId} on ${day}`);
      const a = this.account(r.userId);
      a.balance += r.amount;
      this.toppedUp.add(`${r.userId}|${day}`);
      this.txs.push(
        tx(assigned, {
          userId: r.userId,
          type: 'DAILY_TOP_UP',
          amountMillicredits: r.amount,
          balanceAfterMillicredits: a.balance,
          reference: day,
          reason: 'daily free top-up',
          idempotencyKey: `daily-top-up:${day}`,
        }),
      );
    }
  }

  // ---- keyed mutations ----

  /**
   * One keyed mutation. Bad input is refused first (it never reaches the key); then a
   * recorded key replays its original reply, or is refused when the request differs;
   * otherwise the operation runs. Only successes are recorded under their key.
   */
  keyed(req: KeyedReq, assign: Assigner): Outcome {
    const bad = this.validate(req);
    if (bad) return bad;
    const slot = `${req.userId}\u0000${req.key}`;
    const text = canonical(req, this.cat.defaultTtlSeconds);
    const recorded = this.keys.get(slot);
    if (recorded) {
      if (recorded.canonical === text) return { ok: recorded.reply };
      return err('AlreadyExists', 'IDEMPOTENCY_KEY_REUSED', { field: 'idempotency_key' });
    }
    const out = this.run(req, assign);
    if ('ok' in out) {
      this.account(req.userId).exists = true;
      this.keys.set(slot, { canonical: text, reply: out.ok });
    }
    return out;
  }

  private run(req: KeyedReq, assign: Assigner): Outcome {
    switch (req.method) {
      case 'Grant':
        return this.grant(req, assign);
      case 'Charge':
        return this.charge(req, assign);
      case 'Reserve':
        return this.reserve(req, assign);
      case 'Release':
        return this.release(req);
      case 'Refund':
        return this.refund(req, assign);
      case 'Redeem':
        return this.redeem(req, assign);
    }
  }

  /** Input checks that depend on nothing stored: the request alone is wrong. */
  private validate(req: KeyedReq): { error: ErrV } | undefined {
    switch (req.method) {
      case 'Grant':
        if ('sku' in req.grant) return this.cat.skus.has(req.grant.sku) ? undefined : invalid('sku', 'UNKNOWN_SKU');
        if (req.grant.amount < 1n || req.grant.amount > AMOUNT_MAX) return invalid('amount_millicredits');
        return req.reason === '' ? invalid('reason') : undefined;
      case 'Charge':
        return this.checkUsage(req.usage, false);
      case 'Reserve':
        return this.checkUsage(req.usage, true);
      case 'Refund':
        if (req.amount < 0n || req.amount > AMOUNT_MAX) return invalid('amount_millicredits');
        return req.reason === '' ? invalid('reason') : undefined;
      case 'Release':
      case 'Redeem':
        return undefined;
    }
  }

  /**
   * The usage's own validity. Charges need a real finish reason and a known model or
   * operation; estimates (Quote, Reserve) may leave finish_reason empty (a planned run).
   * This test never sends Reserve an unknown name (see commands.ts), so the server's
   * choice to price a hold under the account lock does not matter here.
   */
  private checkUsage(u: UsageReq, estimate: boolean): { error: ErrV } | undefined {
    switch (u.kind) {
      case 'amount':
        return u.amount < 1n || u.amount > AMOUNT_MAX ? invalid('amount_millicredits') : undefined;
      case 'tokens': {
        const finish = estimate && u.finish === '' ? 'stop' : u.finish;
        if (!CHARGED_FINISH.has(finish) && !WAIVED_FINISH.has(finish)) return invalid('token_usage.finish_reason');
        return this.cat.models.has(u.model) ? undefined : invalid('token_usage.model', 'UNKNOWN_MODEL');
      }
      case 'operation':
        if (u.quantity < 0n || u.quantity > QUANTITY_MAX) return invalid('operation.quantity');
        return this.cat.operations.has(u.name) ? undefined : invalid('operation.name', 'UNKNOWN_OPERATION');
    }
  }

  private estimate(u: UsageReq): UsageReq {
    return u.kind === 'tokens' && u.finish === '' ? { ...u, finish: 'stop' } : u;
  }

  /**
   * What a usage costs this user now and why it may be waived. The token formula is the
   * project's own priceTokens (src/ledger/charge/pricing.ts), which has its own exhaustive tests
   * against SPEC §3; everything else here (finish reasons, plans, entitlements, zero
   * prices, the daily free operations, partly free quantities) is this model's own.
   * Where the spec is silent on which waiver wins, the model takes: finish reason, then
   * entitlement, then zero price, then ADMIN, then free daily operations (an ADMIN uses
   * none of them: it pays nothing anyway).
   */
  private price(u: UsageReq, a: Account): Priced | { error: ErrV } {
    const waive = (price: PriceV, operation: string, waived: Waived, freeUsed = 0n): Priced => ({
      charge: 0n,
      price,
      waived,
      freeUsed,
      operation,
    });
    const pay = (price: PriceV, operation: string, charge: bigint, freeUsed = 0n): Priced => ({
      charge,
      price,
      waived: 'UNSPECIFIED',
      freeUsed,
      operation,
    });
    switch (u.kind) {
      case 'amount': {
        const price = { ...zeroPrice(), costMillicredits: u.amount };
        return a.plan === 'ADMIN' ? waive(price, '', 'ADMIN_PLAN') : pay(price, '', u.amount);
      }
      case 'tokens': {
        const p = priceTokens(this.cat.pricing, u.model, u.tokensIn, u.tokensOut);
        const price: PriceV = { ...zeroPrice(), ...p };
        if (this.cat.models.get(u.model)?.proOnly && a.plan === 'FREE') {
          return err('PermissionDenied', 'PLAN_REQUIRED', { field: 'token_usage.model' });
        }
        const byFinish = WAIVED_FINISH.get(u.finish);
        if (byFinish) return waive(price, u.model, byFinish);
        return a.plan === 'ADMIN' ? waive(price, u.model, 'ADMIN_PLAN') : pay(price, u.model, p.costMillicredits);
      }
      case 'operation': {
        const op = this.cat.operations.get(u.name);
        if (!op) throw new Error(`unvalidated operation ${u.name}`);
        const quantity = u.quantity === 0n ? 1n : u.quantity;
        const cost = op.price * quantity;
        const price: PriceV = { ...zeroPrice(), costMillicredits: cost, unitPriceMillicredits: op.price, quantity };
        if (op.freeWith && a.entitlements.has(op.freeWith)) return waive(price, u.name, 'ENTITLEMENT');
        if (op.price === 0n) return waive(price, u.name, 'ZERO_PRICE');
        if (a.plan === 'ADMIN') return waive(price, u.name, 'ADMIN_PLAN');
        if (!this.cat.dailyFreeOperations.has(u.name)) return pay(price, u.name, cost);
        const left = this.cat.dailyFreePerDay - a.freeUsed;
        const free = quantity < left ? quantity : left > 0n ? left : 0n;
        if (free === quantity) return waive(price, u.name, 'FREE_DAILY_OPERATION', free);
        return pay(price, u.name, (quantity - free) * op.price, free);
      }
    }
  }

  private grant(req: GrantReq, assign: Assigner): Outcome<TxReply> {
    const sku = 'sku' in req.grant ? req.grant.sku : '';
    const amount = 'sku' in req.grant ? (this.cat.skus.get(req.grant.sku) ?? 0n) : req.grant.amount;
    return this.credit(req.userId, assign, {
      type: 'GRANT',
      amountMillicredits: amount,
      operation: sku,
      reference: req.reference,
      reason: req.reason,
      idempotencyKey: req.key,
      metadata: { ...req.metadata },
    });
  }

  private charge(req: ChargeReq, assign: Assigner): Outcome<ChargeReply> {
    const a = this.account(req.userId);
    let hold: HoldV | undefined;
    if (req.reservationId !== '') {
      const found = this.holdOf(req.userId, req.reservationId);
      if ('error' in found) return found;
      const facts = { field: 'reservation_id', subject: req.reservationId };
      if (found.status === 'CAPTURED') return err('FailedPrecondition', 'RESERVATION_CAPTURED', facts);
      if (found.status === 'RELEASED') return err('FailedPrecondition', 'RESERVATION_RELEASED', facts);
      if (found.status === 'EXPIRED') return err('FailedPrecondition', 'RESERVATION_EXPIRED', facts);
      hold = found;
    }
    const priced = this.price(req.usage, a);
    if ('error' in priced) return priced;
    // Capturing a hold releases it first, so what it held is available to this charge;
    // the actual cost is then debited, and any excess over the hold comes from available.
    const held = hold?.amountMillicredits ?? 0n;
    const available = this.balance(req.userId).availableMillicredits + held;
    const cost = priced.charge;
    if (cost > available && !req.allowPartial) {
      return err('FailedPrecondition', 'INSUFFICIENT_BALANCE', { required: cost, available });
    }
    const charged = cost < available ? cost : available;
    if (hold) hold.status = 'CAPTURED';
    a.balance -= charged;
    a.freeUsed += priced.freeUsed;
    const transaction = tx(assign.transaction(), {
      userId: req.userId,
      type: 'CHARGE',
      amountMillicredits: -charged,
      balanceAfterMillicredits: a.balance,
      product: req.product,
      operation: priced.operation,
      reference: req.reference,
      idempotencyKey: req.key,
      metadata: { ...req.metadata },
      waivedReason: priced.waived,
      reservationId: hold?.id ?? '',
    });
    this.txs.push(transaction);
    return {
      ok: {
        transaction,
        chargedMillicredits: charged,
        shortfallMillicredits: cost - charged,
        waivedReason: priced.waived,
        price: priced.price,
        balance: this.balance(req.userId),
      },
    };
  }

  private reserve(req: ReserveReq, assign: Assigner): Outcome<HoldReply> {
    const priced = this.price(this.estimate(req.usage), this.account(req.userId));
    if ('error' in priced) return priced;
    const amount = priced.charge;
    const available = this.balance(req.userId).availableMillicredits;
    if (amount > available) return err('FailedPrecondition', 'INSUFFICIENT_BALANCE', { required: amount, available });
    const { id, createdAtMs } = assign.reservation();
    const ttl = req.ttlSeconds === 0 ? this.cat.defaultTtlSeconds : req.ttlSeconds;
    const hold: HoldV = {
      id,
      userId: req.userId,
      amountMillicredits: amount,
      status: 'ACTIVE',
      product: req.product,
      expiresAtMs: createdAtMs + ttl * 1000,
      createdAtMs,
    };
    this.holds.push(hold);
    return { ok: { reservation: { ...hold }, balance: this.balance(req.userId) } };
  }

  private release(req: ReleaseReq): Outcome<HoldReply> {
    const hold = this.holdOf(req.userId, req.reservationId);
    if ('error' in hold) return hold;
    if (hold.status === 'CAPTURED') {
      return err('FailedPrecondition', 'RESERVATION_CAPTURED', { field: 'reservation_id', subject: req.reservationId });
    }
    // Releasing a released or expired hold succeeds and returns it as it is.
    if (hold.status === 'ACTIVE') hold.status = 'RELEASED';
    return { ok: { reservation: { ...hold }, balance: this.balance(req.userId) } };
  }

  private refund(req: RefundReq, assign: Assigner): Outcome<TxReply> {
    const facts = { field: 'transaction_id', subject: req.transactionId };
    const charge = this.txs.find((t) => t.id === req.transactionId && t.userId === req.userId);
    if (!charge) return err('NotFound', 'TRANSACTION_NOT_FOUND', facts);
    if (charge.type !== 'CHARGE') return err('FailedPrecondition', 'NOT_A_CHARGE', facts);
    // Never more than was debited in total; 0 asks for all that remains.
    const remaining = -charge.amountMillicredits - this.refundedSoFar(charge.id);
    const amount = req.amount === 0n ? remaining : req.amount;
    if (amount > remaining || amount === 0n) {
      return err('FailedPrecondition', 'REFUND_EXCEEDS_CHARGE', {
        field: 'amount_millicredits',
        required: amount,
        available: remaining,
        subject: charge.id,
      });
    }
    return this.credit(req.userId, assign, {
      type: 'REFUND',
      amountMillicredits: amount,
      product: charge.product,
      operation: charge.operation,
      reference: charge.reference,
      reason: req.reason,
      idempotencyKey: req.key,
      refundedTransactionId: charge.id,
    });
  }

  private redeem(req: RedeemReq, assign: Assigner): Outcome<TxReply> {
    const code = req.code.toUpperCase();
    const facts = { field: 'code', subject: code };
    const p = this.promos.get(code);
    if (p?.redeemedBy.has(req.userId)) return err('AlreadyExists', 'PROMO_CODE_ALREADY_REDEEMED', facts);
    if (!p) return err('NotFound', 'PROMO_CODE_NOT_FOUND', facts);
    if (p.disabled) return err('FailedPrecondition', 'PROMO_CODE_DISABLED', facts);
    if (p.expired) return err('FailedPrecondition', 'PROMO_CODE_EXPIRED', facts);
    if (p.maxRedemptions > 0n && p.redemptions >= p.maxRedemptions) return err('ResourceExhausted', 'PROMO_CODE_EXHAUSTED', facts);
    const out = this.credit(req.userId, assign, {
      type: 'PROMO',
      amountMillicredits: p.amountMillicredits,
      operation: code,
      reason: 'promo code',
      idempotencyKey: req.key,
    });
    p.redemptions += 1n;
    p.redeemedBy.add(req.userId);
    return out;
  }

  /** A credit from a system account: the balance rises by the amount. */
  private credit(userId: string, assign: Assigner, fields: Partial<TxV> & Pick<TxV, 'type' | 'amountMillicredits'>): Outcome<TxReply> {
    const a = this.account(userId);
    a.balance += fields.amountMillicredits;
    const transaction = tx(assign.transaction(), { ...fields, userId, balanceAfterMillicredits: a.balance });
    this.txs.push(transaction);
    return { ok: { transaction, balance: this.balance(userId) } };
  }

  private holdOf(userId: string, id: string): HoldV | { error: ErrV } {
    const hold = this.holds.find((h) => h.id === id && h.userId === userId);
    return hold ?? err('NotFound', 'RESERVATION_NOT_FOUND', { field: 'reservation_id', subject: id });
  }

  private account(userId: string): Account {
    let a = this.accounts.get(userId);
    if (!a) {
      a = { exists: false, balance: 0n, plan: 'FREE', entitlements: new Set(), freeUsed: 0n };
      this.accounts.set(userId, a);
    }
    return a;
  }
}

function promoView(p: Promo): PromoV {
  return {
    code: p.code,
    amountMillicredits: p.amountMillicredits,
    maxRedemptions: p.maxRedemptions,
    redemptions: p.redemptions,
    expiresAtMs: p.expiresAtMs,
    disabled: p.disabled,
    createdAtMs: p.createdAtMs,
  };
}

function tx(
  assigned: { id: string; createdAtMs: number },
  fields: Partial<TxV> & Pick<TxV, 'userId' | 'type' | 'amountMillicredits' | 'balanceAfterMillicredits'>,
): TxV {
  return {
    id: assigned.id,
    product: '',
    operation: '',
    reference: '',
    reason: '',
    idempotencyKey: '',
    metadata: {},
    waivedReason: 'UNSPECIFIED',
    refundedTransactionId: '',
    reservationId: '',
    createdAtMs: assigned.createdAtMs,
    ...fields,
  };
}
