// Translation between generated messages and ledger views. Generated types stop here.
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { type Timestamp, timestampFromMs } from '@bufbuild/protobuf/wkt';
import {
  type DailyTopUpDaySchema,
  type JobProgressSchema,
  type PromoCodeSchema,
  type VerifyLedgerResponseSchema,
} from '../../gen/billing/v1/admin_service_pb.js';
import type { TopUpDayRow } from '../ledger/top-up/sql.js';
import type { ProgressSnapshot } from '../jobs/progress.js';
import {
  type BalanceSchema,
  type OperationUsage,
  Plan as ProtoPlan,
  ReservationSchema,
  ReservationStatus as ProtoReservationStatus,
  type PriceSchema,
  type TokenUsage,
  TransactionSchema,
  TransactionType as ProtoTransactionType,
  WaivedReason as ProtoWaived,
} from '../../gen/billing/v1/types_pb.js';
import type { Plan } from '../domain/catalogue.js';
import { unchecked } from '../domain/request.js';
import type { PriceBreakdown, Usage, WaivedReason } from '../ledger/charge/pricing.js';
import type { ReservationView } from '../ledger/holds/holds.js';
import type { TransactionType } from '../ledger/kernel/names.js';
import type { BalanceView, TransactionView } from '../ledger/kernel/views.js';
import type { PromoCodeView } from '../ledger/promo/promo.js';
import type { LedgerReport } from '../ledger/verify/verify.js';

const PLAN_TO_PROTO: Readonly<Record<Plan, ProtoPlan>> = {
  FREE: ProtoPlan.FREE,
  PRO: ProtoPlan.PRO,
  ADMIN: ProtoPlan.ADMIN,
};

const TYPE_TO_PROTO: Readonly<Record<TransactionType, ProtoTransactionType>> = {
  CHARGE: ProtoTransactionType.CHARGE,
  REFUND: ProtoTransactionType.REFUND,
  GRANT: ProtoTransactionType.GRANT,
  PROMO: ProtoTransactionType.PROMO,
  DAILY_TOP_UP: ProtoTransactionType.DAILY_TOP_UP,
  DEPOSIT: ProtoTransactionType.DEPOSIT,
};

const WAIVED_TO_PROTO: Readonly<Record<WaivedReason, ProtoWaived>> = {
  FINISH_TOOL_CALLS: ProtoWaived.FINISH_TOOL_CALLS,
  FINISH_ERROR: ProtoWaived.FINISH_ERROR,
  ADMIN_PLAN: ProtoWaived.ADMIN_PLAN,
  ENTITLEMENT: ProtoWaived.ENTITLEMENT,
  FREE_DAILY_OPERATION: ProtoWaived.FREE_DAILY_OPERATION,
  ZERO_PRICE: ProtoWaived.ZERO_PRICE,
};

export function planFromProto(plan: ProtoPlan, field = 'plan'): Plan {
  const found = (Object.entries(PLAN_TO_PROTO) as [Plan, ProtoPlan][]).find(([, p]) => p === plan);
  if (!found) throw unchecked(`${field} ${plan}`);
  return found[0];
}

export function typesFromProto(types: readonly ProtoTransactionType[], field = 'types'): TransactionType[] {
  return types.map((t) => {
    const found = (Object.entries(TYPE_TO_PROTO) as [TransactionType, ProtoTransactionType][]).find(([, p]) => p === t);
    if (!found) throw unchecked(`${field} ${t}`);
    return found[0];
  });
}

export function waivedToProto(reason: WaivedReason | undefined): ProtoWaived {
  return reason ? WAIVED_TO_PROTO[reason] : ProtoWaived.UNSPECIFIED;
}

export function balanceToProto(b: BalanceView): MessageInitShape<typeof BalanceSchema> {
  return { ...b, plan: PLAN_TO_PROTO[b.plan] };
}

export function transactionToProto(t: TransactionView) {
  return create(TransactionSchema, {
    id: t.id,
    userId: t.userId,
    type: TYPE_TO_PROTO[t.type],
    amountMillicredits: t.amountMillicredits,
    balanceAfterMillicredits: t.balanceAfterMillicredits,
    product: t.product,
    operation: t.operation,
    reference: t.reference,
    reason: t.reason,
    idempotencyKey: t.idempotencyKey,
    metadata: t.metadata,
    createdAt: timestampFromMs(t.createdAtMs),
    waivedReason: waivedToProto(t.waivedReason as WaivedReason | undefined),
    refundedTransactionId: t.refundedTransactionId ?? '',
    reservationId: t.reservationId ?? '',
    ...(t.price ? { price: priceToProto(t.price) } : {}),
  });
}

export function priceToProto(p: PriceBreakdown): MessageInitShape<typeof PriceSchema> {
  return { ...p };
}

type UsageOneof =
  | { case: 'amountMillicredits'; value: bigint }
  | { case: 'tokenUsage'; value: TokenUsage }
  | { case: 'operation'; value: OperationUsage }
  | { case: undefined; value?: undefined };

export function usageFromProto(usage: UsageOneof): Usage | undefined {
  switch (usage.case) {
    case 'amountMillicredits':
      return { kind: 'amount', amountMillicredits: usage.value };
    case 'tokenUsage':
      return {
        kind: 'tokens',
        model: usage.value.model,
        tokensIn: usage.value.tokensIn,
        tokensOut: usage.value.tokensOut,
        finishReason: usage.value.finishReason,
      };
    case 'operation':
      return { kind: 'operation', name: usage.value.name, quantity: usage.value.quantity };
    default:
      return undefined;
  }
}

const STATUS_TO_PROTO: Readonly<Record<ReservationView['status'], ProtoReservationStatus>> = {
  ACTIVE: ProtoReservationStatus.ACTIVE,
  CAPTURED: ProtoReservationStatus.CAPTURED,
  RELEASED: ProtoReservationStatus.RELEASED,
  EXPIRED: ProtoReservationStatus.EXPIRED,
};

export function reservationToProto(r: ReservationView) {
  return create(ReservationSchema, {
    id: r.id,
    userId: r.userId,
    amountMillicredits: r.amountMillicredits,
    status: STATUS_TO_PROTO[r.status],
    expiresAt: timestampFromMs(r.expiresAtMs),
    product: r.product,
    createdAt: timestampFromMs(r.createdAtMs),
  });
}

/** An optional Timestamp as epoch milliseconds (sub-millisecond part dropped); its range is the contract's. */
export function timestampMsFromProto(ts: Timestamp | undefined): number | undefined {
  return ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1_000_000) : undefined;
}

export function promoCodeToProto(p: PromoCodeView): MessageInitShape<typeof PromoCodeSchema> {
  return {
    code: p.code,
    amountMillicredits: p.amountMillicredits,
    maxRedemptions: p.maxRedemptions,
    redemptions: p.redemptions,
    ...(p.expiresAtMs === undefined ? {} : { expiresAt: timestampFromMs(p.expiresAtMs) }),
    disabled: p.disabled,
    createdAt: timestampFromMs(p.createdAtMs),
  };
}

/** A job run's progress; undefined (the field unset) for a job not run since the process started. */
export function jobProgressToProto(p: ProgressSnapshot | undefined): MessageInitShape<typeof JobProgressSchema> | undefined {
  if (!p) return undefined;
  return {
    run: BigInt(p.run),
    unit: p.unit,
    done: BigInt(p.done),
    total: BigInt(p.total),
    startedAt: timestampFromMs(p.startedAtMs),
    ...(p.finishedAtMs === undefined ? {} : { finishedAt: timestampFromMs(p.finishedAtMs) }),
    failed: p.failed,
  };
}

export function topUpDayToProto(d: TopUpDayRow | undefined): MessageInitShape<typeof DailyTopUpDaySchema> | undefined {
  if (!d) return undefined;
  return {
    day: d.day,
    accountsToppedUp: d.accountsToppedUp,
    totalMillicredits: d.totalMillicredits,
    runs: BigInt(d.runs),
    failedRuns: BigInt(d.failedRuns),
    lastStartedAt: timestampFromMs(d.lastStartedAtMs),
    lastFinishedAt: timestampFromMs(d.lastFinishedAtMs),
    lastFailed: d.lastFailed,
  };
}

export function ledgerReportToProto(r: LedgerReport): MessageInitShape<typeof VerifyLedgerResponseSchema> {
  return {
    ok: r.ok,
    violations: r.violations.map((v) => ({ ...v })),
    accountsChecked: r.accountsChecked,
    transactionsChecked: r.transactionsChecked,
  };
}
