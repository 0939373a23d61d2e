// The health page's live panels (issue 14): the last daily top-up, as the database has it
// (GetJobProgress.last_daily_top_up, the same from every replica), and the deposit
// watchers of the answering process (WalletService.GetWatcherStatus). Both need the
// "admin" scope; each loads when the page opens and on "Refresh".
import { useEffect, useState } from 'preact/hooks';
import type { DailyTopUpDay } from '../../gen/billing/v1/admin_service_pb.js';
import { WatcherState, type WatcherStatus } from '../../gen/billing/v1/wallet_service_pb.js';
import { admin, explain, wallet } from './api.js';
import { credits } from './money.js';
import { utc } from './time.js';

/** Loads `read` on mount and on refresh; the error explained for a person. */
function useLoad<T>(read: () => Promise<T>): { value: T | undefined; error: string; busy: boolean; refresh: () => void } {
  const [state, setState] = useState<{ value: T | undefined; error: string; busy: boolean }>({ value: undefined, error: '', busy: true });
  const refresh = () => {
    setState((s) => ({ ...s, busy: true }));
    read().then(
      (value) => setState({ value, error: '', busy: false }),
      (e: unknown) => setState({ value: undefined, error: explain(e), busy: false }),
    );
  };
  useEffect(refresh, []);
  return { ...state, refresh };
}

export function LastTopUp() {
  const { value, error, busy, refresh } = useLoad(async () => ({ day: (await admin.getJobProgress({})).lastDailyTopUp }));
  const day: DailyTopUpDay | undefined = value?.day;
  return (
    <section class="card" aria-labelledby="top-up-title">
      <h2 id="top-up-title">Last daily top-up</h2>
      <button type="button" disabled={busy} onClick={refresh}>
        Refresh
      </button>
      {error && <p role="alert" class="error">{error}</p>}
      {value && !day && <p data-testid="last-top-up">No daily top-up has run yet.</p>}
      {day && (
        <p data-testid="last-top-up">
          Day {day.day}: finished at {utc(day.lastFinishedAt)}
          {day.lastFailed ? ' (failed)' : ''}, {String(day.accountsToppedUp)} accounts, {credits(day.totalMillicredits)} credits
          {' '}over {String(day.runs)} run(s){day.failedRuns > 0n ? `, ${String(day.failedRuns)} failed` : ''}.
        </p>
      )}
    </section>
  );
}

const STATE_LABEL: Readonly<Record<WatcherState, string>> = {
  [WatcherState.UNSPECIFIED]: '?',
  [WatcherState.STARTING]: 'starting',
  [WatcherState.WATCHING]: 'watching',
  [WatcherState.REFUSED]: 'refused',
};

export function WatcherTable() {
  const { value, error, busy, refresh } = useLoad(async () => (await wallet.getWatcherStatus({})).watchers);
  const rows: WatcherStatus[] = value ?? [];
  return (
    <section class="card" aria-labelledby="watchers-title">
      <h2 id="watchers-title">Deposit watchers</h2>
      <button type="button" disabled={busy} onClick={refresh}>
        Refresh
      </button>
      {error && <p role="alert" class="error">{error}</p>}
      {value && rows.length === 0 && <p data-testid="watchers-empty">no chains configured</p>}
      {rows.length > 0 && (
        <table>
          <caption>Deposit watchers</caption>
          <thead>
            <tr>
              <th scope="col">Chain</th>
              <th scope="col">State</th>
              <th scope="col">Head</th>
              <th scope="col">Finalized</th>
              <th scope="col">Scanned</th>
              <th scope="col">Lag (head)</th>
              <th scope="col">Lag (final)</th>
              <th scope="col">Last poll</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((w) => (
              <tr key={String(w.chainId)} data-testid="watcher-row">
                <td>
                  {w.name} ({String(w.chainId)}, {w.finality})
                </td>
                <td>
                  {STATE_LABEL[w.state]}
                  {w.running ? ', polling' : ', not polling'}
                  {w.refusal && `: ${w.refusal}`}
                  {w.lastError && <span class="error"> last poll failed: {w.lastError}</span>}
                </td>
                <td>{String(w.headBlock)}</td>
                <td>{String(w.finalizedBlock)}</td>
                <td>{String(w.cursorBlock)}</td>
                <td>{String(w.lagBlocks)}</td>
                <td>{String(w.finalLagBlocks)}</td>
                <td>{utc(w.lastPollAt)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
