// Promo codes: create, read, list, disable, and redeem once per user within the code's
// cap and expiry. A redemption is one ledger transaction (kernel/unit-of-work.ts) that also counts
// the redemption on the code's row and records it in promo_redemptions. Creating and
// disabling a code are audited (audit/audit.ts) in the transaction that writes the code.
import { BillingError, invalidField } from '../../domain/errors.js';
import { cutPage, pageCodec } from '../../domain/paging.js';
import { pageSize as pageSizeOf } from '../../domain/request.js';
import { sqlState, type SqlSession } from '../../storage/database.js';
import { type Audit, auditEvent, type AuditEvent, type AuditState, AuditTrail } from '../audit/audit.js';
import { creditDecision, TRANSACTION_RESULT } from '../kernel/credit.js';
import { requestHash } from '../kernel/idempotency-sql.js';
import { SYSTEM_PROMO } from '../kernel/names.js';
import { markReplayed } from '../kernel/replay.js';
import type { Kernel } from '../kernel/unit-of-work.js';
import type { TransactionResult } from '../kernel/views.js';
import {
  claimRedemption,
  disablePromoCode,
  findPromoCode,
  hasRedeemed,
  insertPromoCode,
  insertRedemption,
  listPromoCodes,
  lockPromoCode,
  type PromoCodeRow,
} from './sql.js';

// A page token carries the last code of its page; one that could not be a stored code
// (upper-case, the contract's PROMO_CODE characters) is not a token this service issued.
const STORED_CODE = /^[A-Z0-9_-]{1,64}$/;
const PROMO_PAGES = pageCodec('c1.', (key) => STORED_CODE.test(key));

/** A promo code as callers see it. */
export interface PromoCodeView {
  code: string;
  amountMillicredits: bigint;
  /** 0 means unlimited. */
  maxRedemptions: bigint;
  redemptions: bigint;
  expiresAtMs?: number;
  disabled: boolean;
  createdAtMs: number;
}

function promoCodeView(row: PromoCodeRow): PromoCodeView {
  const view: PromoCodeView = {
    code: row.code,
    amountMillicredits: row.amountMillicredits,
    maxRedemptions: row.maxRedemptions,
    redemptions: row.redemptions,
    disabled: row.disabled,
    createdAtMs: row.createdAtMs,
  };
  if (row.expiresAtMs !== undefined) view.expiresAtMs = row.expiresAtMs;
  return view;
}

export interface RedeemInput {
  userId: string;
  idempotencyKey: string;
  code: string;
}

export interface CreatePromoInput {
  code: string;
  amountMillicredits: bigint;
  maxRedemptions: bigint;
  /** Unset means never. */
  expiresAtMs?: number;
}

export interface ListPromoInput {
  pageSize: number;
  pageToken: string;
}

/** Codes are case-insensitive: stored and compared upper-case. */
function normalCode(value: string): string {
  return value.toUpperCase();
}

/** The code and terms of a new code; its expiry must be in the future. */
function newPromo(input: CreatePromoInput, nowMs: number): CreatePromoInput {
  const wanted: CreatePromoInput = { code: normalCode(input.code), amountMillicredits: input.amountMillicredits, maxRedemptions: input.maxRedemptions };
  if (input.expiresAtMs === undefined) return wanted;
  if (input.expiresAtMs <= nowMs) throw invalidField('expires_at', 'must be in the future');
  return { ...wanted, expiresAtMs: input.expiresAtMs };
}

function notFound(code: string): BillingError {
  return new BillingError('PROMO_CODE_NOT_FOUND', `promo code ${code} does not exist`, { field: 'code', subject: code });
}

/** Why a code that could not be claimed is not redeemable, read under the same clock. */
async function refusal(s: SqlSession, code: string): Promise<BillingError> {
  const found = await findPromoCode(s, code);
  const facts = { field: 'code', subject: code };
  if (!found) return notFound(code);
  if (found.disabled) return new BillingError('PROMO_CODE_DISABLED', `promo code ${code} has been disabled`, facts);
  if (found.expired) return new BillingError('PROMO_CODE_EXPIRED', `promo code ${code} has expired`, facts);
  return new BillingError('PROMO_CODE_EXHAUSTED', `promo code ${code} has reached its ${found.maxRedemptions} redemptions`, facts);
}

function alreadyRedeemed(code: string): BillingError {
  return new BillingError('PROMO_CODE_ALREADY_REDEEMED', `promo code ${code} was already redeemed by this user`, {
    field: 'code',
    subject: code,
  });
}

/** A code's terms as audited. */
function promoState(row: PromoCodeRow): AuditState {
  return {
    code: row.code,
    amountMillicredits: row.amountMillicredits.toString(),
    maxRedemptions: row.maxRedemptions.toString(),
    expiresAt: row.expiresAtMs === undefined ? null : new Date(row.expiresAtMs).toISOString(),
    disabled: row.disabled,
  };
}

export class Promos {
  constructor(
    private readonly kernel: Kernel,
    private readonly trail: AuditTrail = new AuditTrail(),
  ) {}

  /**
   * Creates a code. Creating an identical code again returns it (a retried call
   * succeeds, as a replay: not audited again); a different code under the same name is
   * PROMO_CODE_EXISTS.
   */
  async create(input: CreatePromoInput, audit?: Audit, nowMs: number = Date.now()): Promise<PromoCodeView> {
    const wanted = newPromo(input, nowMs);
    const created = await this.kernel.db.transaction(async (s) => {
      const row = await insertPromoCode(s, wanted);
      if (!row) return undefined;
      if (!audit) return { row, event: undefined };
      const event = auditEvent(audit, 'CreatePromoCode', { kind: 'promo', code: row.code }, null, promoState(row));
      await this.trail.record(s, event);
      return { row, event };
    });
    if (created) {
      if (created.event) this.trail.published(created.event);
      return promoCodeView(created.row);
    }
    const existing = await findPromoCode(this.kernel.db, wanted.code);
    if (existing && sameTerms(existing, wanted)) return markReplayed(promoCodeView(existing));
    throw new BillingError('PROMO_CODE_EXISTS', `promo code ${wanted.code} already exists with other terms`, {
      field: 'code',
      subject: wanted.code,
    });
  }

  async get(code: string): Promise<PromoCodeView> {
    const normalised = normalCode(code);
    const found = await findPromoCode(this.kernel.db, normalised);
    if (!found) throw notFound(normalised);
    return promoCodeView(found);
  }

  async list(input: ListPromoInput): Promise<{ promoCodes: PromoCodeView[]; nextPageToken: string }> {
    const pageSize = pageSizeOf(input.pageSize);
    const afterCode = PROMO_PAGES.decode(input.pageToken);
    const rows = await listPromoCodes(this.kernel.db, { ...(afterCode ? { afterCode } : {}), limit: pageSize + 1 });
    const { page, nextPageToken } = cutPage(rows, pageSize, PROMO_PAGES, (row) => row.code);
    return { promoCodes: page.map(promoCodeView), nextPageToken };
  }

  /**
   * Disables a code; disabling it again changes nothing (audited all the same, before equal
   * to after: someone asked). Past redemptions stand.
   */
  async disable(code: string, audit?: Audit): Promise<PromoCodeView> {
    const normalised = normalCode(code);
    let event: AuditEvent | undefined;
    const disabled = await this.kernel.db.transaction(async (s) => {
      const before = await lockPromoCode(s, normalised);
      if (!before) return undefined;
      const after = await disablePromoCode(s, normalised);
      if (after && audit) {
        event = auditEvent(audit, 'DisablePromoCode', { kind: 'promo', code: normalised }, promoState(before), promoState(after));
        await this.trail.record(s, event);
      }
      return after;
    });
    if (!disabled) throw notFound(normalised);
    if (event) this.trail.published(event);
    return promoCodeView(disabled);
  }

  /**
   * Redeems a code for a user. Under the user's account lock (so one user's attempts
   * queue and the already-redeemed check is exact), the code's row is claimed with a
   * conditional UPDATE (so the total cap is exact across users), then the PROMO
   * transaction and the promo_redemptions row are written in the same transaction.
   */
  async redeem(input: RedeemInput): Promise<TransactionResult> {
    const { userId, idempotencyKey } = input;
    const code = normalCode(input.code);
    const key = { userId, idempotencyKey, requestHash: requestHash('Redeem', [code]), operation: 'Redeem' };
    try {
      return await this.kernel.post(TRANSACTION_RESULT, key, async (s, account) => {
        if (await hasRedeemed(s, code, userId)) throw alreadyRedeemed(code);
        const amount = await claimRedemption(s, code);
        if (amount === undefined) throw await refusal(s, code);
        return {
          ...creditDecision(this.kernel.catalogue, account, 'PROMO', SYSTEM_PROMO, amount, {
            userId,
            product: '',
            operation: code,
            reference: '',
            reason: 'promo code',
            idempotencyKey,
            metadata: {},
          }),
          afterWrite: (session, transactionId) => insertRedemption(session, code, userId, transactionId),
        };
      });
    } catch (error) {
      // The account lock makes this unreachable; the primary key is the last line of defence.
      if (sqlState(error).constraint === 'promo_redemptions_pkey') throw alreadyRedeemed(code);
      throw error;
    }
  }
}

function sameTerms(existing: PromoCodeRow, wanted: CreatePromoInput): boolean {
  return (
    existing.amountMillicredits === wanted.amountMillicredits &&
    existing.maxRedemptions === wanted.maxRedemptions &&
    existing.expiresAtMs === wanted.expiresAtMs &&
    !existing.disabled
  );
}
