// billing.v1.AdminService handlers: translate requests to operations and results back.
// Every privileged change passes who is calling (and the request id) down to the audit
// trail explicitly; the reads (GetPromoCode, ListPromoCodes) are not audited.
import type { ServiceImpl } from '@connectrpc/connect';
import type { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { type JobRecorder, UNRECORDED } from '../jobs/recorder.js';
import type { Ledger } from '../ledger/ledger.js';
import { checkTopUpDate } from '../ledger/top-up/top-up.js';
import { auditOf, noteReplay } from './call-facts.js';
import { balanceToProto, jobProgressToProto, ledgerReportToProto, planFromProto, promoCodeToProto, timestampMsFromProto, topUpDayToProto } from './convert.js';

/** `jobs` records RunDailyTopUp as a run of the daily_top_up job, triggered over the API. */
export function adminService({ plans, promos, topUps, verify, progress }: Ledger, jobs: JobRecorder = UNRECORDED): Partial<ServiceImpl<typeof AdminService>> {
  return {
    async setPlan(req, context) {
      return { balance: balanceToProto(await plans.setPlan(req.userId, planFromProto(req.plan), auditOf(context.values))) };
    },
    async setEntitlement(req, context) {
      return { balance: balanceToProto(await plans.setEntitlement(req.userId, req.entitlement, req.active, auditOf(context.values))) };
    },
    async createPromoCode(req, context) {
      const expiresAtMs = timestampMsFromProto(req.expiresAt);
      const input = {
        code: req.code,
        amountMillicredits: req.amountMillicredits,
        maxRedemptions: req.maxRedemptions,
        ...(expiresAtMs === undefined ? {} : { expiresAtMs }),
      };
      const created = noteReplay(context.values, await promos.create(input, auditOf(context.values)));
      return { promoCode: promoCodeToProto(created) };
    },
    async getPromoCode(req) {
      return { promoCode: promoCodeToProto(await promos.get(req.code)) };
    },
    async listPromoCodes(req) {
      const page = await promos.list({ pageSize: req.pageSize, pageToken: req.pageToken });
      return { promoCodes: page.promoCodes.map(promoCodeToProto), nextPageToken: page.nextPageToken };
    },
    async disablePromoCode(req, context) {
      return { promoCode: promoCodeToProto(await promos.disable(req.code, auditOf(context.values))) };
    },
    async runDailyTopUp(req, context) {
      // A refused date is a refused call, not a failed run of the job.
      checkTopUpDate(req.date);
      return await jobs.run('daily_top_up', 'rpc', () => topUps.run(req.date, auditOf(context.values)));
    },
    async verifyLedger(_req, context) {
      return ledgerReportToProto(await verify(auditOf(context.values)));
    },
    async getJobProgress() {
      const dailyTopUp = jobProgressToProto(progress.latest('daily_top_up'));
      const verifyLedger = jobProgressToProto(progress.latest('verify_ledger'));
      const lastDailyTopUp = topUpDayToProto(await topUps.lastDay());
      return { ...(dailyTopUp ? { dailyTopUp } : {}), ...(verifyLedger ? { verifyLedger } : {}), ...(lastDailyTopUp ? { lastDailyTopUp } : {}) };
    },
  };
}
