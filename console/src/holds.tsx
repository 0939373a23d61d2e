// The user page's active holds (ListHolds): what is reserved right now, hold by hold, with
// when each was placed and when it expires. Read-only, "spend" scope like the balance.
// Reloads when `version` changes (after an action on the page) and offers the next page
// when the user has more holds than one page shows.
import { useEffect, useState } from 'preact/hooks';
import { timestampDate, type Timestamp } from '@bufbuild/protobuf/wkt';
import type { Reservation } from '../../gen/billing/v1/types_pb.js';
import { billing, explain } from './api.js';
import { credits } from './money.js';
import { utc } from './time.js';

const HOLDS_PAGE_SIZE = 50;

/** "in 9 min", "in 42 s", or "now" for an expiry about to pass. */
function left(ts: Timestamp | undefined, now: number): string {
  if (!ts) return '';
  const seconds = Math.round((timestampDate(ts).getTime() - now) / 1000);
  if (seconds <= 0) return 'now';
  if (seconds < 120) return `in ${seconds} s`;
  if (seconds < 7200) return `in ${Math.round(seconds / 60)} min`;
  return `in ${Math.round(seconds / 3600)} h`;
}

export function Holds({ userId, version }: { userId: string; version: number }) {
  const [holds, setHolds] = useState<Reservation[] | undefined>();
  const [next, setNext] = useState('');
  const [error, setError] = useState('');
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    let live = true;
    billing
      .listHolds({ userId, pageSize: HOLDS_PAGE_SIZE })
      .then((r) => live && (setHolds(r.holds), setNext(r.nextPageToken), setNow(Date.now()), setError('')))
      .catch((e: unknown) => live && (setHolds(undefined), setError(explain(e))));
    return () => {
      live = false;
    };
  }, [userId, version]);
  const more = () =>
    billing
      .listHolds({ userId, pageSize: HOLDS_PAGE_SIZE, pageToken: next })
      .then((r) => (setHolds([...(holds ?? []), ...r.holds]), setNext(r.nextPageToken), setError('')))
      .catch((e: unknown) => setError(explain(e)));
  return (
    <section aria-labelledby="holds-title" class="card">
      <h2 id="holds-title">Holds</h2>
      {error && <p role="alert" class="error">{error}</p>}
      <div class="scroll">
        <table>
          <caption>Active holds, oldest first (credits)</caption>
          <thead>
            <tr>
              <th scope="col">Hold id</th>
              <th scope="col" class="num">Amount</th>
              <th scope="col">Product</th>
              <th scope="col">Created</th>
              <th scope="col">Expires</th>
            </tr>
          </thead>
          <tbody>
            {holds?.map((h) => (
              <tr key={h.id} data-testid="hold-row" data-id={h.id}>
                <td>{h.id}</td>
                <td class="num">{credits(h.amountMillicredits)}</td>
                <td>{h.product}</td>
                <td>{utc(h.createdAt)}</td>
                <td>
                  {utc(h.expiresAt)} ({left(h.expiresAt, now)})
                </td>
              </tr>
            ))}
            {holds && holds.length === 0 && (
              <tr>
                <td colSpan={5}>No active holds.</td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      {next && (
        <div class="buttons">
          <button type="button" onClick={more}>
            More holds
          </button>
        </div>
      )}
    </section>
  );
}
