// Plans and entitlements: state-setting admin operations, idempotent by nature. They move
// no money, so they write no ledger transaction; the change is logged by the caller.
import type { Plan } from '../../domain/catalogue.js';
import type { Kernel } from '../kernel/unit-of-work.js';
import { balanceView, type BalanceView } from '../kernel/views.js';
import { setEntitlement, setPlan } from './sql.js';

export class Plans {
  constructor(private readonly kernel: Kernel) {}

  async setPlan(userId: string, plan: Plan): Promise<BalanceView> {
    await setPlan(this.kernel.db, userId, plan);
    return this.balance(userId);
  }

  async setEntitlement(userId: string, entitlement: string, active: boolean): Promise<BalanceView> {
    await setEntitlement(this.kernel.db, userId, entitlement, active);
    return this.balance(userId);
  }

  private async balance(userId: string): Promise<BalanceView> {
    return balanceView(this.kernel.catalogue, await this.kernel.accounts.reread(this.kernel.db, userId));
  }
}
