// The real side of the model test: sends the model's requests to the running server and
// turns its replies into the model's plain shapes (enum names, bigints, epoch ms), so a
// reply and the model's expectation compare with one toEqual and diff readably.
import { timestampMs, type Timestamp } from '@bufbuild/protobuf/wkt';
import { Code, ConnectError, type Client } from '@connectrpc/connect';
import type { AdminService, PromoCode } from '../../gen/billing/v1/admin_service_pb.js';
import type {
  BillingService,
  ChargeResponse,
  GrantResponse,
  QuoteResponse,
  RedeemResponse,
  RefundResponse,
  ReleaseResponse,
  ReserveResponse,
} from '../../gen/billing/v1/billing_service_pb.js';
import { ErrorDetailSchema, ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import {
  type Balance,
  Plan,
  type Price,
  type Reservation,
  ReservationStatus,
  type Transaction,
  TransactionType,
  WaivedReason,
} from '../../gen/billing/v1/types_pb.js';
import type {
  BalanceV,
  ChargeReply,
  HoldReply,
  HoldStatus,
  KeyedReq,
  Outcome,
  PriceV,
  PromoV,
  QuoteReply,
  TxReply,
  TxType,
  TxV,
  UsageReq,
  Waived,
} from './spec.js';

export type BillingClient = Client<typeof BillingService>;
export type AdminClient = Client<typeof AdminService>;

function ms(ts: Timestamp | undefined): number {
  return ts ? timestampMs(ts) : -1;
}

function missing(what: string): never {
  throw new Error(`reply has no ${what}`);
}

export function normBalance(b: Balance | undefined): BalanceV {
  if (!b) return missing('balance');
  return {
    userId: b.userId,
    balanceMillicredits: b.balanceMillicredits,
    reservedMillicredits: b.reservedMillicredits,
    availableMillicredits: b.availableMillicredits,
    lowBalance: b.lowBalance,
    canStart: b.canStart,
    plan: Plan[b.plan] as BalanceV['plan'],
    entitlements: [...b.entitlements],
    freeOperationsRemaining: b.freeOperationsRemaining,
  };
}

export function normTx(t: Transaction | undefined): TxV {
  if (!t) return missing('transaction');
  return {
    id: t.id,
    userId: t.userId,
    type: TransactionType[t.type] as TxType,
    amountMillicredits: t.amountMillicredits,
    balanceAfterMillicredits: t.balanceAfterMillicredits,
    product: t.product,
    operation: t.operation,
    reference: t.reference,
    reason: t.reason,
    idempotencyKey: t.idempotencyKey,
    metadata: { ...t.metadata },
    waivedReason: WaivedReason[t.waivedReason] as Waived,
    refundedTransactionId: t.refundedTransactionId,
    reservationId: t.reservationId,
    createdAtMs: ms(t.createdAt),
  };
}

function normHold(r: Reservation | undefined) {
  if (!r) return missing('reservation');
  return {
    id: r.id,
    userId: r.userId,
    amountMillicredits: r.amountMillicredits,
    status: ReservationStatus[r.status] as HoldStatus,
    product: r.product,
    expiresAtMs: ms(r.expiresAt),
    createdAtMs: ms(r.createdAt),
  };
}

function normPrice(p: Price | undefined): PriceV {
  if (!p) return missing('price');
  return {
    costMillicredits: p.costMillicredits,
    effectiveTokens: p.effectiveTokens,
    modelMultiplier: p.modelMultiplier,
    tokensPerUnit: p.tokensPerUnit,
    outputWeight: p.outputWeight,
    unroundedCostMillicredits: p.unroundedCostMillicredits,
    minimumApplied: p.minimumApplied,
    unitPriceMillicredits: p.unitPriceMillicredits,
    quantity: p.quantity,
  };
}

export function normPromo(p: PromoCode | undefined): PromoV {
  if (!p) return missing('promo code');
  return {
    code: p.code,
    amountMillicredits: p.amountMillicredits,
    maxRedemptions: p.maxRedemptions,
    redemptions: p.redemptions,
    expiresAtMs: p.expiresAt ? timestampMs(p.expiresAt) : undefined,
    disabled: p.disabled,
    createdAtMs: ms(p.createdAt),
  };
}

const txReply = (r: GrantResponse | RefundResponse | RedeemResponse): TxReply => ({
  transaction: normTx(r.transaction),
  balance: normBalance(r.balance),
});

const holdReply = (r: ReserveResponse | ReleaseResponse): HoldReply => ({
  reservation: normHold(r.reservation),
  balance: normBalance(r.balance),
});

const chargeReply = (r: ChargeResponse): ChargeReply => ({
  transaction: normTx(r.transaction),
  chargedMillicredits: r.chargedMillicredits,
  shortfallMillicredits: r.shortfallMillicredits,
  waivedReason: WaivedReason[r.waivedReason] as Waived,
  price: normPrice(r.price),
  balance: normBalance(r.balance),
});

export const quoteReply = (r: QuoteResponse): QuoteReply => ({
  costMillicredits: r.costMillicredits,
  price: normPrice(r.price),
  waivedReason: WaivedReason[r.waivedReason] as Waived,
});

/** Runs a call and gives its normalised reply, or its code and ErrorDetail by name. */
export async function outcome<R, T>(call: Promise<R>, norm: (reply: R) => T): Promise<Outcome<T>> {
  let reply: R;
  try {
    reply = await call;
  } catch (error) {
    const e = ConnectError.from(error);
    const d = e.findDetails(ErrorDetailSchema)[0];
    return {
      error: {
        code: Code[e.code],
        reason: d ? ErrorReason[d.reason] : `no ErrorDetail (${e.rawMessage})`,
        field: d?.field ?? '',
        required: d?.requiredMillicredits ?? 0n,
        available: d?.availableMillicredits ?? 0n,
        subject: d?.subject ?? '',
      },
    };
  }
  return { ok: norm(reply) };
}

type UsageOneof =
  | { case: 'amountMillicredits'; value: bigint }
  | { case: 'tokenUsage'; value: { model: string; tokensIn: bigint; tokensOut: bigint; finishReason: string } }
  | { case: 'operation'; value: { name: string; quantity: bigint } };

function usageOneof(u: UsageReq): UsageOneof {
  switch (u.kind) {
    case 'amount':
      return { case: 'amountMillicredits', value: u.amount };
    case 'tokens':
      return { case: 'tokenUsage', value: { model: u.model, tokensIn: u.tokensIn, tokensOut: u.tokensOut, finishReason: u.finish } };
    case 'operation':
      return { case: 'operation', value: { name: u.name, quantity: u.quantity } };
  }
}

/** Sends one keyed mutation exactly as the model sees it. */
export function sendKeyed(c: BillingClient, req: KeyedReq): Promise<Outcome> {
  const base = { userId: req.userId, idempotencyKey: req.key };
  switch (req.method) {
    case 'Grant': {
      const grant = 'sku' in req.grant
        ? { case: 'sku' as const, value: req.grant.sku }
        : { case: 'amountMillicredits' as const, value: req.grant.amount };
      return outcome(c.grant({ ...base, grant, reason: req.reason, reference: req.reference, metadata: req.metadata }), txReply);
    }
    case 'Charge':
      return outcome(
        c.charge({
          ...base,
          product: req.product,
          usage: usageOneof(req.usage),
          reservationId: req.reservationId,
          allowPartial: req.allowPartial,
          reference: req.reference,
          metadata: req.metadata,
        }),
        chargeReply,
      );
    case 'Reserve':
      return outcome(
        c.reserve({ ...base, product: req.product, amount: usageOneof(req.usage), ttlSeconds: req.ttlSeconds }),
        holdReply,
      );
    case 'Release':
      return outcome(c.release({ ...base, reservationId: req.reservationId }), holdReply);
    case 'Refund':
      return outcome(
        c.refund({ ...base, transactionId: req.transactionId, amountMillicredits: req.amount, reason: req.reason }),
        txReply,
      );
    case 'Redeem':
      return outcome(c.redeem({ ...base, code: req.code }), txReply);
  }
}

export function quote(c: BillingClient, userId: string, product: string, u: UsageReq): Promise<Outcome<QuoteReply>> {
  const usage = usageOneof(u);
  if (usage.case === 'amountMillicredits') throw new Error('Quote takes no explicit amount');
  return outcome(c.quote({ userId, product, usage }), quoteReply);
}
