// Units of work that arrive together run together: one database transaction, one lock per
// account and one commit for many units, across accounts (TigerBeetle's batching, on
// PostgreSQL). A unit alone is a batch of one: there is one code path.
//
// A batch, in one transaction:
//   1. lock every account it touches, in user-id order (account-sql.ts lockAll),
//   2. read them and the records under the units' idempotency keys, in one statement,
//   3. let each unit decide in arrival order, against the account as the units before it
//      left it: a refusal refuses only that unit; a replayed key replays,
//   4. write every ledger transaction and idempotency record in one statement
//      (posting-sql.ts appendTransactions), commit, then answer each unit.
//
// Most decisions (a charge, a grant) are pure: they read the account and return a write,
// and the next unit of the account sees the balance that write leaves. A unit that runs
// statements of its own (capture a hold, count a free operation, claim a promo code) first
// flushes the writes decided so far, so its statements see them, and runs under a savepoint:
// if it then refuses, its statements roll back and the batch goes on; the accounts are read
// again before the next unit decides. Any other failure of the batch (a database error, a
// deadline) rolls it back, and each of its units runs again alone, so one unit's fault is
// its own. Two units with one key in a batch: the second reads the first's record once it
// is written, and replays it (or is refused as a reused key), as it would have alone.
//
// Batches form from what is already waiting: an idle lane runs a unit at once; while a
// batch is in the database, the units that arrive queue for the next. Accounts map to
// lanes by a hash of the user id, so one account is only ever in one batch at a time, and
// the lanes run their batches in parallel.
//
// Tracing: a lane's loop runs in the async context of whichever call found it idle, so the
// database spans of later batches (other calls' units, maybe after that call has ended)
// would hang under that call's span. Each batch instead gets its own span, `ledger.batch`,
// a child of the span of its first unit's call and linked to the span of every unit's call;
// each other call's span links back to it. A batch of one (the usual case at low load)
// thus sits under its own call. With tracing off these are the API's no-op spans.
//
// The observer (observer.ts) hears of a batch's transactions and replays only after its
// commit, from the run that committed: a batch that rolls back and runs its units again
// alone reports each unit once, from its own commit.
import { context, type Context, type Link, SpanStatusCode, trace } from '@opentelemetry/api';
import { BillingError } from '../../domain/errors.js';
import { DeadlineExceededError, deadlineAt, deadlinePassed, earliestDeadline, withDeadlineAt } from '../../domain/deadline.js';
import { type Database, sqlState, type SqlSession } from '../../storage/database.js';
import type { AccountRow, AccountStore } from './account-sql.js';
import { findIdempotent, insertIdempotencies, type StoredReplay } from './idempotency-sql.js';
import { type LedgerObserver, moneyMoved, tell } from './observer.js';
import { appendTransactions, type LedgerWrite } from './posting-sql.js';

/** What a unit decided: its result and, for a ledger transaction, the write. */
export interface Step {
  result: unknown;
  /** The ledger write, complete but for the replay record's id and time (filled in as it is stored). */
  write?: LedgerWrite;
  /** The replay record of a unit without a write. */
  replayJson?: string;
  /** Rows that must reference the new transaction (e.g. a promo redemption), same transaction. */
  afterWrite?: (s: SqlSession, transactionId: string) => Promise<void>;
  /** Fills the stored transaction's id and time into the result. */
  placed?: (id: string, createdAtMs: number) => void;
}

export interface Unit {
  readonly userId: string;
  readonly idempotencyKey: string;
  readonly requestHash: string;
  /** The operation, as named in requestHash ('Charge', 'Grant', …): how the observer names a replay. */
  readonly operation: string;
  /** Decides under the account's lock; `s` runs statements of the unit's own. */
  decide(s: SqlSession, account: AccountRow): Promise<Step>;
  /** The answer from a record already stored under the key (replays, or refuses a reused key). */
  replay(stored: StoredReplay): unknown;
}

interface Waiting {
  unit: Unit;
  /** The call's deadline (performance.now() instant), if it has one. */
  deadlineAt: number | undefined;
  /** The call's tracing context (its span), where the unit was queued. */
  context: Context;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** What a batch's transaction decided: each unit's outcome, the writes that stay, the units replayed. */
interface Decided {
  outcomes: Outcome[];
  written: LedgerWrite[];
  replayed: Unit[];
}

export interface BatchOptions {
  /** Batches in flight at once, each on its own connection (1 on PGlite). */
  readonly lanes: number;
  /** Units in one batch at most. */
  readonly unitsMax: number;
}

export const BATCH_LANES_DEFAULT = 4;
const tracer = trace.getTracer('billing-ledger');
export const BATCH_UNITS_MAX_DEFAULT = 128;

/** Per-lane queues of units and the loop that runs them as batches. */
export class Batches {
  private readonly lanes: { queue: Waiting[]; running: boolean }[];
  /** Counts since start: batches run, units carried, the largest batch, units run again alone after their batch failed. */
  readonly stats = { batches: 0, units: 0, largest: 0, rerunAlone: 0 };

  constructor(
    private readonly db: Database,
    private readonly accounts: AccountStore,
    private readonly options: BatchOptions,
    private readonly observer: LedgerObserver = {},
  ) {
    const lanes = db.kind === 'pglite' ? 1 : Math.max(1, Math.floor(options.lanes));
    this.lanes = Array.from({ length: lanes }, () => ({ queue: [], running: false }));
  }

  /** Runs the unit in the next batch of its account's lane; settles once that batch has committed. */
  run(unit: Unit): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const lane = this.lanes[laneOf(unit.userId, this.lanes.length)]!;
      lane.queue.push({ unit, deadlineAt: deadlineAt(), context: context.active(), resolve, reject });
      if (!lane.running) void this.drain(lane);
    });
  }

  private async drain(lane: { queue: Waiting[]; running: boolean }): Promise<void> {
    lane.running = true;
    try {
      while (lane.queue.length > 0) {
        const batch = lane.queue.splice(0, this.options.unitsMax);
        // Whatever happens, every unit of the batch is answered (settling twice changes nothing).
        await this.runBatch(batch).catch((error: unknown) => batch.forEach((w) => w.reject(error)));
      }
    } finally {
      lane.running = false;
    }
  }

  private async runBatch(batch: Waiting[]): Promise<void> {
    const now = performance.now();
    const live = batch.filter((w) => {
      if (!deadlinePassed(w.deadlineAt, now)) return true;
      w.reject(new DeadlineExceededError());
      return false;
    });
    if (live.length === 0) return;
    const first = live[0]!;
    const links = live.flatMap((w): Link[] => {
      const linked = trace.getSpanContext(w.context);
      return linked && trace.isSpanContextValid(linked) ? [{ context: linked }] : [];
    });
    const span = tracer.startSpan('ledger.batch', { attributes: { 'billing.batch.units': live.length }, links }, first.context);
    for (const w of live.slice(1)) trace.getSpan(w.context)?.addLink({ context: span.spanContext() });
    try {
      await context.with(trace.setSpan(first.context, span), () => this.runLive(live));
    } finally {
      span.end();
    }
  }

  /** Runs the batch's live units (their deadlines not passed), inside the batch's span. */
  private async runLive(live: Waiting[]): Promise<void> {
    this.stats.batches += 1;
    this.stats.units += live.length;
    this.stats.largest = Math.max(this.stats.largest, live.length);
    // The batch is bounded by the earliest deadline among its units: none is answered late.
    const earliest = earliestDeadline(live.map((w) => w.deadlineAt));
    let decided: Decided;
    try {
      decided = await withDeadlineAt(earliest, () => this.db.transaction((s) => this.decideAll(s, live.map((w) => w.unit))));
    } catch (error) {
      trace.getActiveSpan()?.setStatus({ code: SpanStatusCode.ERROR, message: 'the batch failed' });
      if (live.length > 1) {
        // One unit's fault is its own: each runs again alone, in arrival order.
        this.stats.rerunAlone += live.length;
        for (const waiting of live) await this.runBatch([waiting]);
        return;
      }
      const waiting = live[0]!;
      // A concurrent duplicate (another process) committed the key first: replay its result.
      const { code, constraint } = sqlState(error);
      if (code === '23505' && constraint === 'idempotency_keys_pkey') {
        try {
          const stored = await withDeadlineAt(waiting.deadlineAt, () => findIdempotent(this.db, waiting.unit.userId, waiting.unit.idempotencyKey));
          if (stored) {
            const value = waiting.unit.replay(stored);
            tell(() => this.observer.replayed?.(waiting.unit.operation));
            return waiting.resolve(value);
          }
        } catch (replayError) {
          return waiting.reject(replayError);
        }
      }
      return waiting.reject(error);
    }
    // Committed: now, and only now, it is true.
    const { outcomes, written, replayed } = decided;
    if (written.length > 0) tell(() => this.observer.committed?.(moneyMoved(written)));
    for (const unit of replayed) tell(() => this.observer.replayed?.(unit.operation));
    live.forEach((waiting, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) waiting.resolve(outcome.value);
      else waiting.reject(outcome.error);
    });
  }

  /** Steps 1–4 above, inside the batch's transaction; a thrown error fails the whole batch. */
  private async decideAll(s: SqlSession, units: readonly Unit[]): Promise<Decided> {
    const userIds = units.map((u) => u.userId);
    const { created } = await this.accounts.lockAll(s, userIds);
    const read = await this.accounts.readLocked(s, userIds, units.map((u) => u.idempotencyKey));
    // The account each user's next unit decides against. A unit that ran statements of its
    // own may have changed any account: all are read again before their next unit decides.
    const current = new Map<string, AccountRow>();
    for (const [userId, { account }] of read) current.set(userId, account);
    // Keys a unit of this batch has recorded: a later unit with the same key replays that record.
    const recorded = new Set<string>();
    const pending: { step: Step; unit: Unit }[] = [];
    const flush = async () => {
      if (pending.length === 0) return;
      const taken = pending.splice(0);
      const writes = taken.filter((p) => p.step.write !== undefined);
      const stored = await appendTransactions(s, writes.map((p) => p.step.write!));
      writes.forEach((p, i) => p.step.placed?.(stored[i]!.id, stored[i]!.createdAtMs));
      const records = taken.filter((p) => p.step.write === undefined);
      await insertIdempotencies(
        s,
        records.map(({ unit, step }) => ({ userId: unit.userId, idempotencyKey: unit.idempotencyKey, requestHash: unit.requestHash, resultJson: step.replayJson! })),
      );
      return stored;
    };
    const outcomes: Outcome[] = [];
    const written: LedgerWrite[] = [];
    const replayed: Unit[] = [];
    for (const unit of units) {
      let account = current.get(unit.userId);
      let stored = read.get(unit.userId)!.replays.get(unit.idempotencyKey);
      const keyId = JSON.stringify([unit.userId, unit.idempotencyKey]);
      if (!account || recorded.has(keyId)) {
        await flush();
        const again = (await this.accounts.readLocked(s, [unit.userId], [unit.idempotencyKey])).get(unit.userId)!;
        account = again.account;
        stored = again.replays.get(unit.idempotencyKey);
        current.set(unit.userId, account);
      }
      if (stored) {
        const replay = stored;
        const answered = await attempt(async () => unit.replay(replay));
        if (answered.ok) replayed.push(unit);
        outcomes.push(answered);
        continue;
      }
      // The unit's own statements: the first flushes what was decided before and opens a savepoint.
      let ranStatements = false;
      const open = async () => {
        if (ranStatements) return;
        await flush();
        await s.query('savepoint unit');
        ranStatements = true;
      };
      const own: SqlSession = {
        query: async (sql, params) => {
          await open();
          return s.query(sql, params);
        },
      };
      // Only what the unit's own code throws is the unit's; the kernel's failures fail the batch.
      const refused = await attempt(() => unit.decide(own, account));
      let step = refused.ok ? refused.value : undefined;
      let error = refused.ok ? undefined : refused.error;
      if (step) {
        // Rows that reference the new transaction need it written: under the unit's savepoint.
        if (step.afterWrite) await open();
        pending.push({ step, unit });
        if (step.afterWrite) {
          const placed = (await flush())?.[0];
          if (!placed) throw new Error('afterWrite without a ledger write');
          const after = step.afterWrite;
          const wrote = await attempt(() => after(own, placed.id));
          if (!wrote.ok) {
            step = undefined;
            error = wrote.error;
          }
        }
      }
      if (step) {
        outcomes.push({ ok: true, value: step.result });
        if (step.write) written.push(step.write);
        recorded.add(keyId);
        if (ranStatements) current.clear();
        else if (step.write) current.set(unit.userId, { ...account, balanceMillicredits: step.write.balanceAfterMillicredits });
      } else {
        if (ranStatements) {
          // Nothing of the refused unit stays: what was decided before it was flushed before its savepoint.
          await s.query('rollback to savepoint unit');
          pending.splice(0);
          current.clear();
        }
        outcomes.push({ ok: false, error });
      }
    }
    await flush();
    // A refusal leaves no trace, not even the account its lock created.
    const used = new Set(units.filter((_, i) => outcomes[i]!.ok).map((u) => u.userId));
    await this.accounts.forget(s, created.filter((userId) => !used.has(userId)));
    return { outcomes, written, replayed };
  }
}

/** Runs a unit's own code: its value, or the failure that is the unit's alone (rethrows any other). */
async function attempt<T>(fn: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  try {
    return { ok: true, value: await fn() };
  } catch (error) {
    if (!unitLocal(error)) throw error;
    return { ok: false, error };
  }
}

/**
 * A failure that belongs to the unit alone: a refusal (BillingError) or a rule's own signal
 * (an error that is not the database's). A database error or a deadline fails the batch.
 */
function unitLocal(error: unknown): boolean {
  if (error instanceof BillingError) return true;
  if (error instanceof DeadlineExceededError) return false;
  return error instanceof Error && sqlState(error).code === undefined;
}

/** FNV-1a of the user id, to a lane. */
function laneOf(userId: string, lanes: number): number {
  if (lanes === 1) return 0;
  let hash = 0x811c9dc5;
  for (let i = 0; i < userId.length; i++) hash = Math.imul(hash ^ userId.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % lanes;
}
