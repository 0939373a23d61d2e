// Balance reads that arrive together are answered by one statement: while a read is in the
// database, the reads that arrive wait and then go as one `user_id = any(…)` query. An idle
// service reads at once; a read never waits for a write (no lock is taken).
import { DeadlineExceededError, deadlineAt, deadlinePassed, earliestDeadline, withDeadlineAt } from '../../domain/deadline.js';
import type { Database } from '../../storage/database.js';
import type { AccountRow, AccountStore } from './account-sql.js';

interface WaitingRead {
  userId: string;
  deadlineAt: number | undefined;
  resolve(account: AccountRow): void;
  reject(error: unknown): void;
}

/** Reads in the database at once; more wait for one of them to finish. */
const READS_IN_FLIGHT_MAX = 2;
/** Users in one read statement at most. */
const USERS_PER_READ_MAX = 256;

export class Reads {
  private queue: WaitingRead[] = [];
  private inFlight = 0;
  /** Counts since start: read statements run, reads they answered. */
  readonly stats = { statements: 0, reads: 0 };

  constructor(
    private readonly db: Database,
    private readonly accounts: AccountStore,
  ) {}

  /** The account as things stand (unlocked); a user never seen reads as empty. */
  read(userId: string): Promise<AccountRow> {
    return new Promise((resolve, reject) => {
      this.queue.push({ userId, deadlineAt: deadlineAt(), resolve, reject });
      if (this.inFlight < READS_IN_FLIGHT_MAX) void this.next();
    });
  }

  private async next(): Promise<void> {
    this.inFlight += 1;
    try {
      while (this.queue.length > 0) {
        const now = performance.now();
        const batch = this.queue.splice(0, USERS_PER_READ_MAX).filter((w) => {
          if (!deadlinePassed(w.deadlineAt, now)) return true;
          w.reject(new DeadlineExceededError());
          return false;
        });
        if (batch.length === 0) continue;
        const earliest = earliestDeadline(batch.map((w) => w.deadlineAt));
        this.stats.statements += 1;
        this.stats.reads += batch.length;
        try {
          const found = await withDeadlineAt(earliest, () => this.accounts.readMany(this.db, batch.map((w) => w.userId)));
          for (const w of batch) w.resolve(found.get(w.userId)!);
        } catch (error) {
          // One read's deadline must not fail the others: past a batch fault, each reads alone.
          if (batch.length === 1) batch[0]!.reject(error);
          else
            for (const w of batch)
              await withDeadlineAt(w.deadlineAt, () => this.accounts.read(this.db, w.userId)).then(w.resolve, w.reject);
        }
      }
    } finally {
      this.inFlight -= 1;
    }
  }
}
