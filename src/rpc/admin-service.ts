// billing.v1.AdminService handlers: translate requests to operations and results back.
import type { ServiceImpl } from '@connectrpc/connect';
import type { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import type { Accounts } from '../ledger/accounts.js';
import type { Promos } from '../ledger/promo.js';
import type { DailyTopUps } from '../ledger/top-up.js';
import { verifyLedger } from '../ledger/verify.js';
import type { Database } from '../storage/database.js';
import { balanceToProto, ledgerReportToProto, planFromProto, promoCodeToProto, timestampMsFromProto } from './convert.js';

export interface AdminDeps {
  readonly accounts: Accounts;
  readonly promos: Promos;
  readonly db: Database;
  /** The same top-up runner the scheduled job uses. */
  readonly topUps: DailyTopUps;
}

export function adminService(deps: AdminDeps): Partial<ServiceImpl<typeof AdminService>> {
  const { topUps } = deps;
  return {
    async setPlan(req) {
      return { balance: balanceToProto(await deps.accounts.setPlan(req.userId, planFromProto(req.plan))) };
    },
    async setEntitlement(req) {
      return { balance: balanceToProto(await deps.accounts.setEntitlement(req.userId, req.entitlement, req.active)) };
    },
    async createPromoCode(req) {
      const expiresAtMs = timestampMsFromProto(req.expiresAt, 'expires_at');
      const created = await deps.promos.create({
        code: req.code,
        amountMillicredits: req.amountMillicredits,
        maxRedemptions: req.maxRedemptions,
        ...(expiresAtMs === undefined ? {} : { expiresAtMs }),
      });
      return { promoCode: promoCodeToProto(created) };
    },
    async getPromoCode(req) {
      return { promoCode: promoCodeToProto(await deps.promos.get(req.code)) };
    },
    async listPromoCodes(req) {
      const page = await deps.promos.list({ pageSize: req.pageSize, pageToken: req.pageToken });
      return { promoCodes: page.promoCodes.map(promoCodeToProto), nextPageToken: page.nextPageToken };
    },
    async disablePromoCode(req) {
      return { promoCode: promoCodeToProto(await deps.promos.disable(req.code)) };
    },
    async runDailyTopUp(req) {
      return await topUps.run(req.date);
    },
    async verifyLedger() {
      return ledgerReportToProto(await verifyLedger(deps.db));
    },
  };
}
