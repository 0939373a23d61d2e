// Promo codes: create, read, list, disable, and redeem once per user within the code's
// cap and expiry. (Being built for issue 4.)
import type { Catalogue } from '../domain/catalogue.js';
import { BillingError } from '../domain/errors.js';
import type { Database } from '../storage/database.js';
import type { TransactionResult } from './views.js';

export interface RedeemInput {
  userId: string;
  idempotencyKey: string;
  code: string;
}

export class Promos {
  constructor(
    private readonly db: Database,
    private readonly catalogue: Catalogue,
  ) {}

  async redeem(_input: RedeemInput): Promise<TransactionResult> {
    void this.db;
    void this.catalogue;
    throw new BillingError('NOT_IMPLEMENTED', 'Redeem is not implemented yet');
  }
}
