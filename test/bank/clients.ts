// Several real client connections to one server, over every protocol it serves: each
// gRPC and Connect-over-HTTP/2 transport owns its own HTTP/2 session, and the HTTP/1.1
// transports (Connect JSON, gRPC-Web) open their own sockets. Concurrent copies of one
// request are sent over different ones, as a retrying client on another connection would.
import { type Client, createClient } from '@connectrpc/connect';
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';

export interface BankClient {
  readonly name: string;
  readonly billing: Client<typeof BillingService>;
}

export function bankClients(baseUrl: string): BankClient[] {
  const clients: BankClient[] = [];
  for (let i = 0; i < 3; i += 1) {
    clients.push({ name: `grpc-${i}`, billing: createClient(BillingService, createGrpcTransport({ baseUrl })) });
  }
  for (let i = 0; i < 3; i += 1) {
    const transport = createConnectTransport({ baseUrl, httpVersion: '1.1' });
    clients.push({ name: `connect-json-http1-${i}`, billing: createClient(BillingService, transport) });
  }
  const binary = createConnectTransport({ baseUrl, httpVersion: '2', useBinaryFormat: true });
  clients.push({ name: 'connect-binary-http2', billing: createClient(BillingService, binary) });
  const web = createGrpcWebTransport({ baseUrl, httpVersion: '1.1' });
  clients.push({ name: 'grpc-web-http1', billing: createClient(BillingService, web) });
  return clients;
}
