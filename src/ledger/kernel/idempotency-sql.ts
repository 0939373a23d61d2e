// The idempotency store: one row per (user, key) holding the request's fingerprint and the
// replay record of its result (replay.ts). The row is written in the same transaction as
// the change it records — by appendTransaction for ledger writes, here for changes that
// move no money (holds placed or released).
import { createHash } from 'node:crypto';
import type { SqlSession } from '../../storage/database.js';
import { bigintReplacer } from './replay.js';

/** What is stored under a key: the request's fingerprint and its result, still unchecked. */
export interface StoredReplay {
  requestHash: string;
  result: unknown;
}

/**
 * A stable fingerprint of a validated request: same request, same hash. Its encoding
 * (bigints as {"$bigint": …}) must never change, or retries of keys used before the change
 * would be refused as reused.
 */
export function requestHash(operation: string, fields: readonly unknown[]): string {
  return createHash('sha256').update(JSON.stringify([operation, ...fields], bigintReplacer)).digest('hex');
}

/** Reads the record under an idempotency key, outside any lock. */
export async function findIdempotent(
  s: Pick<SqlSession, 'query'>,
  userId: string,
  idempotencyKey: string,
): Promise<StoredReplay | undefined> {
  const rows = await s.query(
    'select request_hash, result from idempotency_keys where user_id = $1 and idempotency_key = $2',
    [userId, idempotencyKey],
  );
  const row = rows[0];
  return row ? { requestHash: String(row.request_hash), result: row.result } : undefined;
}

/** Records results under keys outside a ledger write, in one statement. */
export async function insertIdempotencies(
  s: SqlSession,
  records: readonly { userId: string; idempotencyKey: string; requestHash: string; resultJson: string }[],
): Promise<void> {
  if (records.length === 0) return;
  await s.query(
    `insert into idempotency_keys (user_id, idempotency_key, request_hash, result)
     select user_id, idempotency_key, request_hash, result::jsonb
       from unnest($1::text[], $2::text[], $3::text[], $4::text[]) as r (user_id, idempotency_key, request_hash, result)`,
    [records.map((r) => r.userId), records.map((r) => r.idempotencyKey), records.map((r) => r.requestHash), records.map((r) => r.resultJson)],
  );
}
