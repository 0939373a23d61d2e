// The six mutations the bank test sends, as plain data: a call can be sent again, over any
// client, byte for byte the same request, and its reply compared with protobuf equality.
import { equals, type MessageInitShape } from '@bufbuild/protobuf';
import {
  type ChargeRequestSchema,
  type ChargeResponse,
  ChargeResponseSchema,
  type GrantRequestSchema,
  type GrantResponse,
  GrantResponseSchema,
  type RedeemRequestSchema,
  type RedeemResponse,
  RedeemResponseSchema,
  type RefundRequestSchema,
  type RefundResponse,
  RefundResponseSchema,
  type ReleaseRequestSchema,
  type ReleaseResponse,
  ReleaseResponseSchema,
  type ReserveRequestSchema,
  type ReserveResponse,
  ReserveResponseSchema,
} from '../../gen/billing/v1/billing_service_pb.js';
import type { Balance, Transaction } from '../../gen/billing/v1/types_pb.js';
import type { BankClient } from './clients.js';

export type Call =
  | { readonly rpc: 'grant'; readonly req: MessageInitShape<typeof GrantRequestSchema> }
  | { readonly rpc: 'charge'; readonly req: MessageInitShape<typeof ChargeRequestSchema> }
  | { readonly rpc: 'reserve'; readonly req: MessageInitShape<typeof ReserveRequestSchema> }
  | { readonly rpc: 'release'; readonly req: MessageInitShape<typeof ReleaseRequestSchema> }
  | { readonly rpc: 'refund'; readonly req: MessageInitShape<typeof RefundRequestSchema> }
  | { readonly rpc: 'redeem'; readonly req: MessageInitShape<typeof RedeemRequestSchema> };

export type Reply = GrantResponse | ChargeResponse | ReserveResponse | ReleaseResponse | RefundResponse | RedeemResponse;

export function send(client: BankClient, call: Call): Promise<Reply> {
  const b = client.billing;
  switch (call.rpc) {
    case 'grant':
      return b.grant(call.req);
    case 'charge':
      return b.charge(call.req);
    case 'reserve':
      return b.reserve(call.req);
    case 'release':
      return b.release(call.req);
    case 'refund':
      return b.refund(call.req);
    case 'redeem':
      return b.redeem(call.req);
  }
}

/** The whole reply, every field, compared as protobuf messages. */
export function sameReply(rpc: Call['rpc'], a: Reply, b: Reply): boolean {
  switch (rpc) {
    case 'grant':
      return equals(GrantResponseSchema, a as GrantResponse, b as GrantResponse);
    case 'charge':
      return equals(ChargeResponseSchema, a as ChargeResponse, b as ChargeResponse);
    case 'reserve':
      return equals(ReserveResponseSchema, a as ReserveResponse, b as ReserveResponse);
    case 'release':
      return equals(ReleaseResponseSchema, a as ReleaseResponse, b as ReleaseResponse);
    case 'refund':
      return equals(RefundResponseSchema, a as RefundResponse, b as RefundResponse);
    case 'redeem':
      return equals(RedeemResponseSchema, a as RedeemResponse, b as RedeemResponse);
  }
}

export function transactionOf(reply: Reply): Transaction | undefined {
  return 'transaction' in reply ? reply.transaction : undefined;
}

export function balanceOf(reply: Reply): Balance | undefined {
  return reply.balance;
}

/** A short, readable form of a reply for failure messages. */
export function showReply(reply: Reply): string {
  const tx = transactionOf(reply);
  const bal = reply.balance;
  const parts = [
    tx ? `tx ${tx.id} amount ${tx.amountMillicredits} after ${tx.balanceAfterMillicredits}` : '',
    'reservation' in reply && reply.reservation ? `hold ${reply.reservation.id} ${reply.reservation.amountMillicredits} status ${reply.reservation.status}` : '',
    bal ? `balance ${bal.balanceMillicredits}/${bal.reservedMillicredits}/${bal.availableMillicredits}` : '',
  ];
  return parts.filter((p) => p !== '').join(', ');
}
