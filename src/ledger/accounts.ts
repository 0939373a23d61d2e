// Plans and entitlements: state-setting admin operations, idempotent by nature. They move
// no money, so they write no ledger transaction; the change is logged by the caller.
import type { Catalogue, Plan } from '../domain/catalogue.js';
import { checkName, checkUserId } from '../domain/validation.js';
import type { Database } from '../storage/database.js';
import { readAccount, setEntitlement, setPlan } from '../storage/ledger-sql.js';
import { balanceView, type BalanceView } from './views.js';

export class Accounts {
  constructor(
    private readonly db: Database,
    private readonly catalogue: Catalogue,
  ) {}

  async setPlan(userId: string, plan: Plan): Promise<BalanceView> {
    checkUserId(userId);
    await setPlan(this.db, userId, plan);
    return this.balance(userId);
  }

  async setEntitlement(userId: string, entitlement: string, active: boolean): Promise<BalanceView> {
    checkUserId(userId);
    checkName(entitlement, 'entitlement');
    await setEntitlement(this.db, userId, entitlement, active);
    return this.balance(userId);
  }

  private async balance(userId: string): Promise<BalanceView> {
    const account = await readAccount(this.db, userId);
    if (!account) throw new Error(`account ${userId} missing right after it was written`);
    return balanceView(this.catalogue, account);
  }
}
