// Timestamps as the console shows them: UTC, to the second.
import { timestampDate, type Timestamp } from '@bufbuild/protobuf/wkt';

/** "2026-12-02 15:43:53 UTC"; "—" when unset. */
export function utc(ts: Timestamp | undefined): string {
  return ts ? timestampDate(ts).toISOString().replace('T', ' ').slice(0, 19) + ' UTC' : '—';
}
