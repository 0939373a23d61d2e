// Scopes live in the contract: every method of every billing.v1 service carries a
// (billing.v1.scope) option, read from the descriptors at start-up. A method without one
// stops the start-up, naming it; a method the table does not know is refused, never open.
import { create, createFileRegistry, getOption } from '@bufbuild/protobuf';
import { file_google_protobuf_empty, FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import { Code } from '@connectrpc/connect';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { file_billing_v1_options, scope, Scope } from '../../gen/billing/v1/options_pb.js';
import { WalletService } from '../../gen/billing/v1/wallet_service_pb.js';
import { scopeTable } from '../../src/rpc/auth.js';
import { SCOPED_SERVICES } from '../../src/rpc/routes.js';
import { failure, startTestApp, type TestApp } from '../support/app.js';

describe('scopes from the contract', () => {
  it('gives every method of the three services the scope the README documents', () => {
    const table = scopeTable(SCOPED_SERVICES);
    const grant = new Set(['Grant', 'Refund']);
    for (const method of BillingService.methods) {
      expect(table.get(`billing.v1.BillingService/${method.name}`), method.name).toBe(grant.has(method.name) ? 'grant' : 'spend');
    }
    for (const method of AdminService.methods) expect(table.get(`billing.v1.AdminService/${method.name}`)).toBe('admin');
    // GetWatcherStatus is the operators' view of the deposit watchers: admin, like GetJobProgress.
    const adminInWallet = new Set(['GetWatcherStatus']);
    for (const method of WalletService.methods) {
      expect(table.get(`billing.v1.WalletService/${method.name}`), method.name).toBe(adminInWallet.has(method.name) ? 'admin' : 'wallet');
    }
    expect(table.get('billing.v1.WalletService/GetWatcherStatus')).toBe('admin');
    expect(table.size).toBe(BillingService.methods.length + AdminService.methods.length + WalletService.methods.length);
    expect(getOption(BillingService.method.charge, scope)).toBe(Scope.SPEND);
    // The reads GetBalance, ListTransactions and ListHolds share the "spend" scope.
    for (const read of ['GetBalance', 'ListTransactions', 'ListHolds']) expect(table.get(`billing.v1.BillingService/${read}`), read).toBe('spend');
  });

  it('refuses to start with a method that declares no scope, naming it', () => {
    // A service as buf would generate it for a new rpc whose author forgot the option.
    const file = create(FileDescriptorProtoSchema, {
      name: 'billing/v1/forgotten.proto',
      package: 'billing.v1',
      syntax: 'proto3',
      dependency: ['google/protobuf/empty.proto', 'billing/v1/options.proto'],
      service: [
        {
          name: 'NewService',
          method: [
            { name: 'Declared', inputType: '.google.protobuf.Empty', outputType: '.google.protobuf.Empty' },
            { name: 'Forgotten', inputType: '.google.protobuf.Empty', outputType: '.google.protobuf.Empty' },
          ],
        },
      ],
    });
    const registry = createFileRegistry(file, (name) =>
      name === 'google/protobuf/empty.proto' ? file_google_protobuf_empty : name === 'billing/v1/options.proto' ? file_billing_v1_options : undefined,
    );
    const service = registry.getService('billing.v1.NewService')!;
    expect(() => scopeTable([...SCOPED_SERVICES, service])).toThrow(
      'refusing to start: no (billing.v1.scope) option on billing.v1.NewService/Declared, billing.v1.NewService/Forgotten; ' +
        'every method must declare its scope in proto/',
    );
  });

  describe('the server', () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await startTestApp({ embedded: true, env: { BILLING_TOKENS: 'spend-token-0123456789=spend' } });
    });
    afterAll(async () => t?.close());

    it('serves every service it registers with scopes from the table, and nothing else unscoped', async () => {
      // Reflection lists what the router serves: every billing.v1 service is a scoped one.
      const { createGrpcTransport } = await import('@connectrpc/connect-node');
      const { createClient } = await import('@connectrpc/connect');
      const { ServerReflection } = await import('../../gen/grpc/reflection/v1/reflection_pb.js');
      const client = createClient(ServerReflection, createGrpcTransport({ baseUrl: t.url }));
      async function* one() {
        yield { messageRequest: { case: 'listServices' as const, value: '' } };
      }
      const names: string[] = [];
      for await (const res of client.serverReflectionInfo(one())) {
        if (res.messageResponse.case === 'listServicesResponse') names.push(...res.messageResponse.value.service.map((s) => s.name));
      }
      const billing = names.filter((n) => n.startsWith('billing.'));
      expect(billing.sort()).toEqual(SCOPED_SERVICES.map((s) => s.typeName).sort());
      // And the scope is enforced from the table: a spend token cannot call an admin method.
      const { error } = await failure(t.admin.verifyLedger({}, { headers: { authorization: 'Bearer spend-token-0123456789' } }));
      expect(error.code).toBe(Code.PermissionDenied);
      expect(error.rawMessage).toContain('"admin" scope');
      // GetWatcherStatus sits in WalletService but needs the admin scope.
      const watchers = await failure(t.wallet.getWatcherStatus({}, { headers: { authorization: 'Bearer spend-token-0123456789' } }));
      expect(watchers.error.code).toBe(Code.PermissionDenied);
      expect(watchers.error.rawMessage).toContain('"admin" scope');
    });
  });
});
