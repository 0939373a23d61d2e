// Reading a user's money: the balance as things stand and the history of transactions.
// Nothing here locks or writes; an unknown user reads as 0 on the FREE plan.
import { isId, pageSize as pageSizeOf } from '../../domain/request.js';
import { cutPage, pageCodec } from '../../domain/paging.js';
import type { TransactionType } from '../kernel/names.js';
import type { Kernel } from '../kernel/unit-of-work.js';
import { type BalanceView, type TransactionView, transactionView } from '../kernel/views.js';
import { listTransactions } from './sql.js';

export interface ListInput {
  userId: string;
  pageSize: number;
  pageToken: string;
  types: readonly TransactionType[];
  /** Read each charge's price breakdown too. */
  includePrice?: boolean;
}

const TRANSACTION_PAGES = pageCodec('t1.', isId);

export class History {
  constructor(private readonly kernel: Kernel) {}

  /** An unknown user reads as 0 on the FREE plan; nothing is created. */
  async balance(userId: string): Promise<BalanceView> {
    return this.kernel.balance(userId);
  }

  async transactions(input: ListInput): Promise<{ transactions: TransactionView[]; nextPageToken: string }> {
    const pageSize = pageSizeOf(input.pageSize);
    const beforeId = TRANSACTION_PAGES.decode(input.pageToken);
    const rows = await listTransactions(this.kernel.db, input.userId, {
      ...(beforeId ? { beforeId } : {}),
      types: input.types,
      limit: pageSize + 1,
      includePrice: input.includePrice === true,
    });
    const { page, nextPageToken } = cutPage(rows, pageSize, TRANSACTION_PAGES, (row) => row.id);
    return { transactions: page.map(transactionView), nextPageToken };
  }
}
