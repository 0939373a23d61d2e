// billing.v1.BillingService handlers: translate requests to ledger calls and results back.
// Each mutation tells the access log whether it was a replay (call-facts.ts); Grant and
// Refund pass who is calling down to the audit trail.
import type { ServiceImpl } from '@connectrpc/connect';
import type { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import type { ChargeResult } from '../ledger/charge/charge.js';
import type { HoldResult } from '../ledger/holds/holds.js';
import type { TransactionResult } from '../ledger/kernel/views.js';
import type { Ledger } from '../ledger/ledger.js';
import { auditOf, noteReplay } from './call-facts.js';
import {
  balanceToProto,
  priceToProto,
  reservationToProto,
  transactionToProto,
  typesFromProto,
  usageFromProto,
  waivedToProto,
} from './convert.js';

function transactionResult(r: TransactionResult) {
  return { transaction: transactionToProto(r.transaction), balance: balanceToProto(r.balance) };
}

function holdResult(r: HoldResult) {
  return { reservation: reservationToProto(r.reservation), balance: balanceToProto(r.balance) };
}

function chargeResult(r: ChargeResult) {
  return {
    ...transactionResult(r),
    chargedMillicredits: r.chargedMillicredits,
    shortfallMillicredits: r.shortfallMillicredits,
    waivedReason: waivedToProto(r.waivedReason),
    price: priceToProto(r.price),
  };
}

export function billingService({ charges, holds, promos, credits, history }: Ledger): ServiceImpl<typeof BillingService> {
  return {
    async quote(req) {
      const q = await charges.quote({ userId: req.userId, product: req.product, usage: usageFromProto(req.usage) });
      return { costMillicredits: q.costMillicredits, price: priceToProto(q.price), waivedReason: waivedToProto(q.waivedReason) };
    },
    async reserve(req, context) {
      const result = noteReplay(context.values, await holds.reserve({
        userId: req.userId,
        idempotencyKey: req.idempotencyKey,
        product: req.product,
        usage: usageFromProto(req.amount),
        ttlSeconds: req.ttlSeconds,
      }));
      return holdResult(result);
    },
    async release(req, context) {
      const result = noteReplay(context.values, await holds.release({ userId: req.userId, idempotencyKey: req.idempotencyKey, reservationId: req.reservationId }));
      return holdResult(result);
    },
    async redeem(req, context) {
      const result = noteReplay(context.values, await promos.redeem({ userId: req.userId, idempotencyKey: req.idempotencyKey, code: req.code }));
      return transactionResult(result);
    },
    async getBalance(req) {
      return { balance: balanceToProto(await history.balance(req.userId)) };
    },
    async listTransactions(req) {
      const page = await history.transactions({
        userId: req.userId,
        pageSize: req.pageSize,
        pageToken: req.pageToken,
        types: typesFromProto(req.types),
        includePrice: req.includePrice,
      });
      return { transactions: page.transactions.map(transactionToProto), nextPageToken: page.nextPageToken };
    },
    async listHolds(req) {
      const page = await holds.active({ userId: req.userId, pageSize: req.pageSize, pageToken: req.pageToken });
      return { holds: page.holds.map(reservationToProto), nextPageToken: page.nextPageToken };
    },
    async charge(req, context) {
      const result = noteReplay(context.values, await charges.charge({
        userId: req.userId,
        idempotencyKey: req.idempotencyKey,
        product: req.product,
        usage: usageFromProto(req.usage),
        ...(req.reservationId ? { reservationId: req.reservationId } : {}),
        allowPartial: req.allowPartial,
        reference: req.reference,
        metadata: req.metadata,
      }));
      return chargeResult(result);
    },
    async grant(req, context) {
      const grant = req.grant.case === 'sku'
        ? { kind: 'sku' as const, sku: req.grant.value }
        : req.grant.case === 'amountMillicredits'
          ? { kind: 'amount' as const, amountMillicredits: req.grant.value }
          : undefined;
      const input = { userId: req.userId, idempotencyKey: req.idempotencyKey, grant, reason: req.reason, reference: req.reference, metadata: req.metadata };
      const result = noteReplay(context.values, await credits.grant(input, auditOf(context.values)));
      return transactionResult(result);
    },
    async refund(req, context) {
      const input = {
        userId: req.userId,
        idempotencyKey: req.idempotencyKey,
        transactionId: req.transactionId,
        amountMillicredits: req.amountMillicredits,
        reason: req.reason,
      };
      const result = noteReplay(context.values, await credits.refund(input, auditOf(context.values)));
      return transactionResult(result);
    },
  };
}
