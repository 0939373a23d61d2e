// billing.v1.AdminService handlers: translate requests to operations and results back.
import type { ServiceImpl } from '@connectrpc/connect';
import type { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { type JobRecorder, UNRECORDED } from '../jobs/recorder.js';
import type { Ledger } from '../ledger/ledger.js';
import { checkTopUpDate } from '../ledger/top-up/top-up.js';
import { balanceToProto, ledgerReportToProto, planFromProto, promoCodeToProto, timestampMsFromProto } from './convert.js';

/** `jobs` records RunDailyTopUp as a run of the daily_top_up job, triggered over the API. */
export function adminService({ plans, promos, topUps, verify }: Ledger, jobs: JobRecorder = UNRECORDED): Partial<ServiceImpl<typeof AdminService>> {
  return {
    async setPlan(req) {
      return { balance: balanceToProto(await plans.setPlan(req.userId, planFromProto(req.plan))) };
    },
    async setEntitlement(req) {
      return { balance: balanceToProto(await plans.setEntitlement(req.userId, req.entitlement, req.active)) };
    },
    async createPromoCode(req) {
      const expiresAtMs = timestampMsFromProto(req.expiresAt);
      const created = await promos.create({
        code: req.code,
        amountMillicredits: req.amountMillicredits,
        maxRedemptions: req.maxRedemptions,
        ...(expiresAtMs === undefined ? {} : { expiresAtMs }),
      });
      return { promoCode: promoCodeToProto(created) };
    },
    async getPromoCode(req) {
      return { promoCode: promoCodeToProto(await promos.get(req.code)) };
    },
    async listPromoCodes(req) {
      const page = await promos.list({ pageSize: req.pageSize, pageToken: req.pageToken });
      return { promoCodes: page.promoCodes.map(promoCodeToProto), nextPageToken: page.nextPageToken };
    },
    async disablePromoCode(req) {
      return { promoCode: promoCodeToProto(await promos.disable(req.code)) };
    },
    async runDailyTopUp(req) {
      // A refused date is a refused call, not a failed run of the job.
      checkTopUpDate(req.date);
      return await jobs.run('daily_top_up', 'rpc', () => topUps.run(req.date));
    },
    async verifyLedger() {
      return ledgerReportToProto(await verify());
    },
  };
}
