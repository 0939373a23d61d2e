// Every service the server exposes, registered in one place and nothing else.
import type { ConnectRouter } from '@connectrpc/connect';
import { AdminService, file_billing_v1_admin_service } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService, file_billing_v1_billing_service } from '../../gen/billing/v1/billing_service_pb.js';
import { file_billing_v1_errors } from '../../gen/billing/v1/errors_pb.js';
import { file_billing_v1_wallet_service, WalletService } from '../../gen/billing/v1/wallet_service_pb.js';
import { file_grpc_reflection_v1_reflection } from '../../gen/grpc/reflection/v1/reflection_pb.js';
import { file_grpc_reflection_v1alpha_reflection } from '../../gen/grpc/reflection/v1alpha/reflection_pb.js';
import { file_health_v1_health } from '../../gen/health/v1/health_pb.js';
import type { JobRecorder } from '../jobs/recorder.js';
import type { Ledger } from '../ledger/ledger.js';
import type { Wallet } from '../wallet/wallet.js';
import { adminService } from './admin-service.js';
import { billingService } from './billing-service.js';
import { registerHealth } from './health.js';
import { registerReflection } from './reflection.js';
import { walletService } from './wallet-service.js';

export interface RouteDeps {
  readonly ledger: Ledger;
  readonly wallet: Wallet;
  /** True while the database answers. */
  readonly probe: () => Promise<boolean>;
  /** Records the jobs an operator runs over the API (RunDailyTopUp). */
  readonly jobs?: JobRecorder;
}

/** The services whose methods need a scope (read from their options, rpc/auth.ts). */
export const SCOPED_SERVICES = [BillingService, AdminService, WalletService] as const;

export function routes(deps: RouteDeps): (router: ConnectRouter) => void {
  return (router) => {
    router.service(BillingService, billingService(deps.ledger));
    router.service(AdminService, adminService(deps.ledger, deps.jobs));
    router.service(WalletService, walletService(deps.wallet));
    registerHealth(router, deps.probe, [BillingService.typeName, AdminService.typeName, WalletService.typeName]);
    registerReflection(router, [
      file_billing_v1_billing_service,
      file_billing_v1_admin_service,
      file_billing_v1_wallet_service,
      file_billing_v1_errors,
      file_health_v1_health,
      file_grpc_reflection_v1_reflection,
      file_grpc_reflection_v1alpha_reflection,
    ]);
  };
}
