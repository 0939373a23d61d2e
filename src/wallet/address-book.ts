// The user addresses every chain watcher looks for: lower-case address → user id, loaded
// once and then only the addresses allocated since (indexes only grow).
import type { Database } from '../storage/database.js';
import { addressesAfter } from '../storage/wallet-sql.js';

export class AddressBook {
  private readonly byAddress = new Map<string, string>();
  private lastIndex = 0;

  constructor(private readonly db: Database) {}

  async refresh(): Promise<ReadonlyMap<string, string>> {
    for (const row of await addressesAfter(this.db, this.lastIndex)) {
      this.byAddress.set(row.address, row.userId);
      this.lastIndex = Math.max(this.lastIndex, row.derivationIndex);
    }
    return this.byAddress;
  }
}
