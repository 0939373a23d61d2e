// The bank workload: 64 concurrent clients move credits among a few hot users with every
// mutation, retry keys they already used, reuse keys for other requests, and send the
// same request several times at once. Every attempt is recorded with its outcome and an
// event order (ticks), so the checker can tell which replies a request was sent after.
import type { Catalogue } from '../../src/domain/catalogue.js';
import { ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { ReservationStatus } from '../../gen/billing/v1/types_pb.js';
import { type Call, type Reply, send, transactionOf } from './calls.js';
import type { BankClient } from './clients.js';
import { type Outcome, settle } from './outcome.js';
import type { Rng } from './rng.js';

export interface PromoSpec {
  readonly code: string;
  readonly amountMillicredits: bigint;
  /** 0 means unlimited. */
  readonly maxRedemptions: bigint;
}

export interface BankWorld {
  readonly tag: string;
  readonly users: readonly string[];
  /** A PRO user may run premium models. */
  readonly proUser: string;
  readonly catalogue: Catalogue;
  readonly products: readonly string[];
  readonly codes: readonly PromoSpec[];
}

export type OpKind = 'grant' | 'charge' | 'capture' | 'reserve' | 'release' | 'refund' | 'redeem';
export type Mode = 'setup' | 'fresh' | 'retry' | 'reuse' | 'dup';

/** What the request was meant to do, for the checks that read its reply. */
export interface Meta {
  readonly kind: OpKind;
  readonly grantAmount?: bigint;
  readonly reservationId?: string;
  readonly chargeId?: string;
  readonly refundAmount?: bigint;
  readonly code?: string;
  readonly shortHold?: boolean;
  readonly allowPartial?: boolean;
}

export interface Group {
  readonly id: number;
  readonly exclusive: boolean;
  readonly startMs: number;
  endMs: number;
  readonly attempts: Attempt[];
}

export type Expectation = { readonly replay: Attempt } | { readonly refuse: ErrorReason };

export interface Attempt {
  readonly userId: string;
  readonly key: string;
  readonly call: Call;
  readonly meta: Meta;
  readonly mode: Mode;
  readonly client: string;
  readonly group?: Group;
  readonly expect?: Expectation;
  readonly startTick: number;
  readonly startMs: number;
  endTick: number;
  endMs: number;
  outcome: Outcome<Reply>;
}

interface HoldKnown {
  readonly id: string;
  readonly amount: bigint;
  readonly short: boolean;
  state: 'active' | 'captured' | 'released' | 'expired';
}

interface ChargeKnown {
  readonly id: string;
  readonly charged: bigint;
  refunded: bigint;
}

interface KeyKnown {
  readonly userId: string;
  readonly key: string;
  readonly call: Call;
  readonly meta: Meta;
  success?: Attempt;
}

/** Readers-writer gate per user: an exclusive group runs with nothing else on its user. */
class Gate {
  private readers = 0;
  private writer = false;
  private writersWaiting = 0;
  private waiters: Array<() => void> = [];

  async shared(): Promise<() => void> {
    while (this.writer || this.writersWaiting > 0) await this.wait();
    this.readers += 1;
    return () => {
      this.readers -= 1;
      this.wake();
    };
  }

  async exclusive(): Promise<() => void> {
    this.writersWaiting += 1;
    while (this.writer || this.readers > 0) await this.wait();
    this.writersWaiting -= 1;
    this.writer = true;
    return () => {
      this.writer = false;
      this.wake();
    };
  }

  private wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }
}

interface UserKnown {
  readonly holds: HoldKnown[];
  readonly holdsById: Map<string, HoldKnown>;
  readonly charges: ChargeKnown[];
  readonly redeemed: Set<string>;
  readonly gate: Gate;
  /** The available balance of the latest reply seen, to keep balances near zero. */
  available: { tick: number; millicredits: bigint };
}

/** What the clients have learnt from acknowledged replies; it only steers choices and expectations. */
class Knowledge {
  readonly users = new Map<string, UserKnown>();
  readonly keys = new Map<string, KeyKnown>();
  readonly usedKeys: KeyKnown[] = [];
  readonly successKeys: KeyKnown[] = [];

  constructor(users: readonly string[]) {
    for (const u of users) {
      this.users.set(u, { holds: [], holdsById: new Map(), charges: [], redeemed: new Set(), gate: new Gate(), available: { tick: 0, millicredits: 0n } });
    }
  }

  user(userId: string): UserKnown {
    const known = this.users.get(userId);
    if (!known) throw new Error(`unknown bank user ${userId}`);
    return known;
  }

  register(userId: string, key: string, call: Call, meta: Meta): KeyKnown {
    const known: KeyKnown = { userId, key, call, meta };
    this.keys.set(`${userId}\u0000${key}`, known);
    this.usedKeys.push(known);
    return known;
  }

  learn(known: KeyKnown, attempt: Attempt): void {
    const user = this.user(known.userId);
    const hold = (id: string | undefined) => (id === undefined ? undefined : user.holdsById.get(id));
    if (!attempt.outcome.ok) {
      const state = REFUSED_HOLD_STATE[attempt.outcome.reason];
      const found = hold(known.meta.reservationId);
      if (state && found) found.state = state;
      return;
    }
    const bal = attempt.outcome.reply.balance;
    if (bal && attempt.endTick > user.available.tick) user.available = { tick: attempt.endTick, millicredits: bal.availableMillicredits };
    if (known.success) return;
    known.success = attempt;
    this.successKeys.push(known);
    this.learnSuccess(user, known.meta, attempt.outcome.reply, hold);
  }

  private learnSuccess(user: UserKnown, meta: Meta, reply: Reply, hold: (id: string | undefined) => HoldKnown | undefined): void {
    const tx = transactionOf(reply);
    if ((meta.kind === 'charge' || meta.kind === 'capture') && 'chargedMillicredits' in reply && tx) {
      if (reply.chargedMillicredits > 0n) user.charges.push({ id: tx.id, charged: reply.chargedMillicredits, refunded: 0n });
      const captured = hold(meta.reservationId);
      if (captured) captured.state = 'captured';
    } else if (meta.kind === 'reserve' && 'reservation' in reply && reply.reservation) {
      const placed: HoldKnown = { id: reply.reservation.id, amount: reply.reservation.amountMillicredits, short: meta.shortHold === true, state: 'active' };
      user.holds.push(placed);
      user.holdsById.set(placed.id, placed);
    } else if (meta.kind === 'release' && 'reservation' in reply && reply.reservation) {
      const released = hold(meta.reservationId);
      if (released) released.state = reply.reservation.status === ReservationStatus.RELEASED ? 'released' : 'expired';
    } else if (meta.kind === 'refund' && tx) {
      const charge = user.charges.find((c) => c.id === meta.chargeId);
      if (charge) charge.refunded += tx.amountMillicredits;
    } else if (meta.kind === 'redeem' && meta.code) {
      user.redeemed.add(meta.code);
    }
  }
}

const REFUSED_HOLD_STATE: Partial<Record<ErrorReason, HoldKnown['state']>> = {
  [ErrorReason.RESERVATION_CAPTURED]: 'captured',
  [ErrorReason.RESERVATION_RELEASED]: 'released',
  [ErrorReason.RESERVATION_EXPIRED]: 'expired',
};

/** Builds fresh requests from what is known, with the outcome they must have when it is already determined. */
class Planner {
  private keyCounter = 0;

  constructor(
    private readonly world: BankWorld,
    private readonly know: Knowledge,
  ) {}

  newKey(prefix: string): string {
    this.keyCounter += 1;
    return `${this.world.tag}-${prefix}-${this.keyCounter}`;
  }

  fresh(rng: Rng, userId: string, kind: OpKind): { call: Call; meta: Meta; expect?: Expectation } {
    const user = this.know.user(userId);
    const key = this.newKey(kind);
    switch (kind) {
      case 'grant':
        // Money mostly flows in; past 25 credits a grant becomes a charge, so that balances
        // stay near zero where refusals and partial charges happen, however long the run.
        return user.available.millicredits > 25_000n ? this.charge(rng, userId, key) : this.grant(rng, userId, key);
      case 'charge':
        return this.charge(rng, userId, key);
      case 'reserve':
        return this.reserve(rng, userId, key);
      case 'capture':
      case 'release': {
        const hold = this.pickHold(rng, user);
        if (!hold) return this.charge(rng, userId, key);
        return kind === 'capture' ? this.capture(rng, userId, key, hold) : this.release(userId, key, hold);
      }
      case 'refund': {
        const charge = user.charges.length > 0 ? rng.pick(user.charges) : undefined;
        return charge ? this.refund(rng, userId, key, charge) : this.grant(rng, userId, key);
      }
      case 'redeem':
        return this.redeem(rng, userId, key, user);
    }
  }

  private grant(rng: Rng, userId: string, key: string) {
    if (rng.chance(0.05)) {
      // A boost pack or a PRO invoice: large next to the other amounts, so rare.
      const sku = rng.chance(0.8) ? 'boost_50' : 'pro_monthly';
      const amount = this.world.catalogue.skus.get(sku) ?? 0n;
      return {
        call: { rpc: 'grant', req: { userId, idempotencyKey: key, grant: { case: 'sku', value: sku }, reference: `inv-${key}` } },
        meta: { kind: 'grant', grantAmount: amount },
      } as const;
    }
    const amount = rng.big(1_000, 6_000);
    return {
      call: { rpc: 'grant', req: { userId, idempotencyKey: key, grant: { case: 'amountMillicredits', value: amount }, reason: 'bank grant' } },
      meta: { kind: 'grant', grantAmount: amount },
    } as const;
  }

  private usage(rng: Rng, userId: string, estimate: boolean) {
    const roll = rng.next();
    if (roll < 0.4) return { case: 'amountMillicredits' as const, value: rng.big(100, 3_000) };
    if (roll < 0.75) {
      const names = [...this.world.catalogue.operations.keys()];
      return { case: 'operation' as const, value: { name: rng.pick(names), quantity: rng.big(1, 3) } };
    }
    const models = [...this.world.catalogue.models.values()].filter((m) => !m.proOnly || userId === this.world.proUser);
    const finishes = estimate ? [''] : ['stop', 'stop', 'stop', 'stop', 'length', 'tool_calls', 'error'];
    return {
      case: 'tokenUsage' as const,
      value: { model: rng.pick(models).name, tokensIn: rng.big(0, 40_000), tokensOut: rng.big(0, 4_000), finishReason: rng.pick(finishes) },
    };
  }

  private charge(rng: Rng, userId: string, key: string) {
    const allowPartial = rng.chance(0.25);
    const req = {
      userId,
      idempotencyKey: key,
      product: rng.pick(this.world.products),
      usage: this.usage(rng, userId, false),
      allowPartial,
      reference: `run-${key}`,
      ...(rng.chance(0.3) ? { metadata: { bank: this.world.tag } } : {}),
    };
    return { call: { rpc: 'charge', req }, meta: { kind: 'charge', allowPartial } } as const;
  }

  private reserve(rng: Rng, userId: string, key: string) {
    const short = rng.chance(0.25);
    const req = { userId, idempotencyKey: key, product: rng.pick(this.world.products), amount: this.usage(rng, userId, true), ttlSeconds: short ? 1 : 0 };
    return { call: { rpc: 'reserve', req }, meta: { kind: 'reserve', shortHold: short } } as const;
  }

  private pickHold(rng: Rng, user: UserKnown): HoldKnown | undefined {
    const active = user.holds.filter((h) => h.state === 'active');
    if (active.length > 0 && rng.chance(0.8)) return rng.pick(active);
    return user.holds.length > 0 ? rng.pick(user.holds) : undefined;
  }

  private capture(rng: Rng, userId: string, key: string, hold: HoldKnown) {
    const allowPartial = rng.chance(0.3);
    const amount = hold.amount + rng.big(-500, 800);
    const usage = amount > 0n && rng.chance(0.7)
      ? { case: 'amountMillicredits' as const, value: amount }
      : this.usage(rng, userId, false);
    const req = { userId, idempotencyKey: key, product: rng.pick(this.world.products), usage, reservationId: hold.id, allowPartial };
    const refuse = { captured: ErrorReason.RESERVATION_CAPTURED, released: ErrorReason.RESERVATION_RELEASED, expired: ErrorReason.RESERVATION_EXPIRED, active: undefined }[hold.state];
    return {
      call: { rpc: 'charge', req },
      meta: { kind: 'capture', reservationId: hold.id, allowPartial, shortHold: hold.short },
      ...(refuse !== undefined ? { expect: { refuse } } : {}),
    } as const;
  }

  private release(userId: string, key: string, hold: HoldKnown) {
    return {
      call: { rpc: 'release', req: { userId, idempotencyKey: key, reservationId: hold.id } },
      meta: { kind: 'release', reservationId: hold.id, shortHold: hold.short },
      ...(hold.state === 'captured' ? { expect: { refuse: ErrorReason.RESERVATION_CAPTURED } } : {}),
    } as const;
  }

  private refund(rng: Rng, userId: string, key: string, charge: ChargeKnown) {
    const amount = rng.chance(0.4) ? 0n : rng.big(1, Number(charge.charged));
    const exhausted = charge.refunded >= charge.charged;
    return {
      call: { rpc: 'refund', req: { userId, idempotencyKey: key, transactionId: charge.id, amountMillicredits: amount, reason: 'bank refund' } },
      meta: { kind: 'refund', chargeId: charge.id, refundAmount: amount },
      ...(exhausted ? { expect: { refuse: ErrorReason.REFUND_EXCEEDS_CHARGE } } : {}),
    } as const;
  }

  private redeem(rng: Rng, userId: string, key: string, user: UserKnown) {
    const promo = rng.pick(this.world.codes);
    // Codes are matched case-insensitively; send some in lower case.
    const code = rng.chance(0.3) ? promo.code.toLowerCase() : promo.code;
    return {
      call: { rpc: 'redeem', req: { userId, idempotencyKey: key, code } },
      meta: { kind: 'redeem', code: promo.code },
      ...(user.redeemed.has(promo.code) ? { expect: { refuse: ErrorReason.PROMO_CODE_ALREADY_REDEEMED } } : {}),
    } as const;
  }
}

const KINDS: ReadonlyArray<readonly [OpKind, number]> = [
  ['grant', 13],
  ['charge', 30],
  ['reserve', 14],
  ['release', 7],
  ['capture', 12],
  ['refund', 10],
  ['redeem', 6],
];

function pickKind(rng: Rng): OpKind {
  const total = KINDS.reduce((sum, [, w]) => sum + w, 0);
  let roll = rng.next() * total;
  for (const [kind, weight] of KINDS) {
    roll -= weight;
    if (roll < 0) return kind;
  }
  return 'charge';
}

export interface BankRunOptions {
  readonly world: BankWorld;
  readonly clients: readonly BankClient[];
  readonly rng: Rng;
  /** Requests to send in total (each copy of a duplicate counts). */
  readonly ops: number;
  readonly concurrency: number;
  /** Ends the run early: each client stops once it says true. */
  readonly stop?: () => boolean;
}

export interface BankHistory {
  readonly attempts: Attempt[];
  readonly groups: Group[];
  readonly elapsedMs: number;
}

/** Runs the workload and returns every attempt; it never throws for a refused call. */
export class BankRun {
  private readonly know: Knowledge;
  private readonly planner: Planner;
  private readonly attempts: Attempt[] = [];
  private readonly groups: Group[] = [];
  private tick = 0;
  private sent = 0;

  constructor(private readonly options: BankRunOptions) {
    this.know = new Knowledge(options.world.users);
    this.planner = new Planner(options.world, this.know);
  }

  /** Funds every user once, recorded like any other acknowledged operation. */
  async seed(amount: bigint): Promise<void> {
    const client = this.options.clients[0];
    if (!client) throw new Error('no clients');
    for (const userId of this.options.world.users) {
      const key = this.planner.newKey('seed');
      const call: Call = { rpc: 'grant', req: { userId, idempotencyKey: key, grant: { case: 'amountMillicredits', value: amount }, reason: 'bank seed' } };
      await this.attempt(client, this.know.register(userId, key, call, { kind: 'grant', grantAmount: amount }), 'setup');
    }
  }

  async run(): Promise<BankHistory> {
    const started = Date.now();
    const { concurrency, rng } = this.options;
    await Promise.all(Array.from({ length: concurrency }, (_, i) => this.worker(rng.fork(i), i)));
    return { attempts: this.attempts, groups: this.groups, elapsedMs: Date.now() - started };
  }

  private async worker(rng: Rng, index: number): Promise<void> {
    const clients = this.options.clients;
    const home = clients[index % clients.length] as BankClient;
    while (this.sent < this.options.ops && !this.options.stop?.()) {
      const roll = rng.next();
      if (roll < 0.1 && this.know.usedKeys.length > 0) await this.retry(rng, rng.chance(0.5) ? home : rng.pick(clients));
      else if (roll < 0.13 && this.know.successKeys.length > 0) await this.reuse(rng, home);
      else if (roll < 0.25) await this.duplicate(rng);
      else await this.freshOp(rng, home);
    }
  }

  private async freshOp(rng: Rng, client: BankClient): Promise<void> {
    const userId = rng.pick(this.options.world.users);
    const release = await this.know.user(userId).gate.shared();
    try {
      const planned = this.planner.fresh(rng, userId, pickKind(rng));
      const known = this.know.register(userId, planned.call.req.idempotencyKey ?? '', planned.call, planned.meta);
      await this.attempt(client, known, 'fresh', planned.expect);
    } finally {
      release();
    }
  }

  /** The same key and request again, later, maybe over another connection. */
  private async retry(rng: Rng, client: BankClient): Promise<void> {
    const known = rng.pick(this.know.usedKeys);
    const release = await this.know.user(known.userId).gate.shared();
    try {
      await this.attempt(client, known, 'retry', known.success ? { replay: known.success } : undefined);
    } finally {
      release();
    }
  }

  /** A key that already succeeded, sent with a different request: IDEMPOTENCY_KEY_REUSED. */
  private async reuse(rng: Rng, client: BankClient): Promise<void> {
    const known = rng.pick(this.know.successKeys);
    const call: Call = {
      rpc: 'grant',
      req: { userId: known.userId, idempotencyKey: known.key, grant: { case: 'amountMillicredits', value: 1n }, reason: 'key reuse' },
    };
    const release = await this.know.user(known.userId).gate.shared();
    try {
      const reused: KeyKnown = { userId: known.userId, key: known.key, call, meta: { kind: 'grant', grantAmount: 1n } };
      await this.attempt(client, reused, 'reuse', { refuse: ErrorReason.IDEMPOTENCY_KEY_REUSED });
    } finally {
      release();
    }
  }

  /**
   * One new request sent 2–5 times at the same moment over different connections. Half
   * the groups run alone on their user, so that nothing but the copies can change the
   * user's state between them and every copy must get the same outcome.
   */
  private async duplicate(rng: Rng): Promise<void> {
    const userId = rng.pick(this.options.world.users);
    const exclusive = rng.chance(0.5);
    const gate = this.know.user(userId).gate;
    const release = exclusive ? await gate.exclusive() : await gate.shared();
    try {
      const planned = this.planner.fresh(rng, userId, pickKind(rng));
      const known = this.know.register(userId, planned.call.req.idempotencyKey ?? '', planned.call, planned.meta);
      const copies = rng.int(2, 5);
      const order = [...this.options.clients].sort(() => rng.next() - 0.5).slice(0, copies);
      // Some groups send every copy at once; others stagger them by a few milliseconds, a
      // client retrying while its first try is still in flight.
      const delays = order.map((_, i) => (i > 0 && rng.chance(0.5) ? rng.int(0, 8) : 0));
      const group: Group = { id: this.groups.length, exclusive, startMs: Date.now(), endMs: 0, attempts: [] };
      this.groups.push(group);
      await Promise.all(order.map(async (client, i) => {
        if (delays[i]) await new Promise((resolve) => setTimeout(resolve, delays[i]));
        await this.attempt(client, known, 'dup', planned.expect, group);
      }));
      group.endMs = Date.now();
    } finally {
      release();
    }
  }

  /**
   * The request first sent under this user's key, sent again with it; a retry like the
   * clients' own. The attempt is recorded and returned.
   */
  resend(client: BankClient, userId: string, key: string): Promise<Attempt> {
    const known = this.know.keys.get(`${userId}\u0000${key}`);
    if (!known) throw new Error(`no request was sent under key ${key} of ${userId}`);
    return this.attempt(client, known, 'retry', known.success ? { replay: known.success } : undefined);
  }

  private async attempt(client: BankClient, known: KeyKnown, mode: Mode, expect?: Expectation, group?: Group): Promise<Attempt> {
    this.sent += 1;
    const base = {
      userId: known.userId,
      key: known.key,
      call: known.call,
      meta: known.meta,
      mode,
      client: client.name,
      ...(group ? { group } : {}),
      ...(expect ? { expect } : {}),
      startTick: ++this.tick,
      startMs: Date.now(),
    };
    const outcome = await settle(send(client, known.call));
    const attempt: Attempt = { ...base, endTick: ++this.tick, endMs: Date.now(), outcome };
    this.attempts.push(attempt);
    group?.attempts.push(attempt);
    if (mode !== 'reuse') this.know.learn(known, attempt);
    return attempt;
  }
}
