// The user addresses every chain watcher looks for: lower-case address → user id, loaded
// once and then only the addresses allocated since (indexes only grow).
import type { Database } from '../storage/database.js';
import { addressesAfter } from './sql.js';
import { bloomBits } from './rpc.js';

/** An address as a Transfer topic: 32 bytes, left-padded. */
export function addressTopic(address: string): string {
  return `0x${address.slice(2).padStart(64, '0')}`;
}

export class AddressBook {
  private readonly byAddress = new Map<string, string>();
  /** Each address's bloom bits as a Transfer's `to` topic, computed once. */
  private readonly bits = new Map<string, readonly number[]>();
  private lastIndex = 0;

  constructor(private readonly db: Database) {}

  async refresh(): Promise<ReadonlyMap<string, string>> {
    for (const row of await addressesAfter(this.db, this.lastIndex)) {
      this.byAddress.set(row.address, row.userId);
      this.bits.set(row.address, bloomBits(addressTopic(row.address)));
      this.lastIndex = Math.max(this.lastIndex, row.derivationIndex);
    }
    return this.byAddress;
  }

  topicBits(address: string): readonly number[] {
    return this.bits.get(address) ?? [];
  }
}
