// billing.v1.AdminService handlers: translate requests to operations and results back.
import type { ServiceImpl } from '@connectrpc/connect';
import type { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import type { Accounts } from '../ledger/accounts.js';
import type { Promos } from '../ledger/promo.js';
import type { Database } from '../storage/database.js';
import { balanceToProto, planFromProto } from './convert.js';

export interface AdminDeps {
  readonly accounts: Accounts;
  readonly promos: Promos;
  readonly db: Database;
}

export function adminService(deps: AdminDeps): Partial<ServiceImpl<typeof AdminService>> {
  return {
    async setPlan(req) {
      return { balance: balanceToProto(await deps.accounts.setPlan(req.userId, planFromProto(req.plan))) };
    },
    async setEntitlement(req) {
      return { balance: balanceToProto(await deps.accounts.setEntitlement(req.userId, req.entitlement, req.active)) };
    },
  };
}
