// The bench's lean gRPC client (bench/grpc-lean.ts) against the real server: the bench
// counts a call as OK or by its error code from what this client reads, so a framing or
// trailer mistake would show up as wrong bench figures rather than as a failure.
import { create, toBinary } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import {
  ChargeRequestSchema,
  GetBalanceRequestSchema,
  ListTransactionsRequestSchema,
} from '../../gen/billing/v1/billing_service_pb.js';
import { LeanGrpcClient, protoStringField } from '../../bench/grpc-lean.js';
import { key, useTestApp } from '../support/app.js';

const t = useTestApp();
const CHARGE = '/billing.v1.BillingService/Charge';
const keyField = ChargeRequestSchema.fields.find((f) => f.localName === 'idempotencyKey')!.number;

function chargeWithoutKey(userId: string): Uint8Array {
  return toBinary(ChargeRequestSchema, create(ChargeRequestSchema, { userId, product: 'bench', usage: { case: 'amountMillicredits', value: 1n } }));
}

describe('protoStringField', () => {
  it('encodes a string field as toBinary does, lengths past one varint byte included', () => {
    // (Not the empty string: proto3 leaves a default value out, and the bench never sends one.)
    for (const value of ['k', 'x'.repeat(127), 'y'.repeat(128), 'é'.repeat(300)]) {
      const expected = toBinary(ChargeRequestSchema, create(ChargeRequestSchema, { idempotencyKey: value }));
      expect(Buffer.from(protoStringField(keyField, value))).toEqual(Buffer.from(expected));
    }
  });
});

describe('LeanGrpcClient', () => {
  it('makes a charge from a pre-encoded body and an appended idempotency key', async () => {
    const lean = new LeanGrpcClient(t.url, 1, 10_000);
    try {
      await t.billing.grant({ userId: 'lean-ok', idempotencyKey: key(), grant: { case: 'amountMillicredits', value: 10n }, reason: 'test' });
      const idempotencyKey = key('lean');
      const body = chargeWithoutKey('lean-ok');
      expect(await lean.call(CHARGE, [body, protoStringField(keyField, idempotencyKey)])).toBeUndefined();
      // The same key again is a replay, not a second charge.
      expect(await lean.call(CHARGE, [body, protoStringField(keyField, idempotencyKey)])).toBeUndefined();
      const { balance } = await t.billing.getBalance({ userId: 'lean-ok' });
      expect(balance?.balanceMillicredits).toBe(9n);
      const { transactions } = await t.billing.listTransactions({ userId: 'lean-ok' });
      expect(transactions.map((x) => x.idempotencyKey)).toContain(idempotencyKey);
      const list = toBinary(ListTransactionsRequestSchema, create(ListTransactionsRequestSchema, { userId: 'lean-ok' }));
      expect(await lean.call('/billing.v1.BillingService/ListTransactions', [list])).toBeUndefined();
    } finally {
      lean.close();
    }
  });

  it('reports a refused call by its gRPC code name', async () => {
    const lean = new LeanGrpcClient(t.url, 2, 10_000);
    try {
      const broke = chargeWithoutKey('lean-broke');
      expect(await lean.call(CHARGE, [broke, protoStringField(keyField, key('lean'))])).toBe('FailedPrecondition');
      const noUser = toBinary(GetBalanceRequestSchema, create(GetBalanceRequestSchema, { userId: '' }));
      expect(await lean.call('/billing.v1.BillingService/GetBalance', [noUser])).toBe('InvalidArgument');
      expect(await lean.call('/billing.v1.BillingService/NoSuchMethod', [noUser])).toBe('Unimplemented');
    } finally {
      lean.close();
    }
  });

  it('reports Unavailable when nothing listens', async () => {
    const lean = new LeanGrpcClient('http://127.0.0.1:1', 1, 2_000);
    try {
      const body = toBinary(GetBalanceRequestSchema, create(GetBalanceRequestSchema, { userId: 'u' }));
      expect(await lean.call('/billing.v1.BillingService/GetBalance', [body])).toBe('Unavailable');
    } finally {
      lean.close();
    }
  });
});
