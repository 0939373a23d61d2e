// The ops console: a user's money at a glance (balance, chart, paged history with each
// row's details), the actions support and finance take (grant, refund, set plan, grant or
// revoke an entitlement), promo
// codes and a ledger check. Every action shows exactly what it will do before it is sent,
// and carries an idempotency key that is kept until the action succeeds, so a double click
// or a retry after a network error never pays twice.
import { render, type ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { timestampDate, timestampFromDate } from '@bufbuild/protobuf/wkt';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './style.css';
import type { Balance, Price, Transaction } from '../../gen/billing/v1/types_pb.js';
import { Plan, TransactionType, WaivedReason } from '../../gen/billing/v1/types_pb.js';
import type { PromoCode, VerifyLedgerResponse } from '../../gen/billing/v1/admin_service_pb.js';
import { Code, ConnectError } from '@connectrpc/connect';
import QRCode from 'qrcode';
import type { Deposit, GetDepositAddressResponse } from '../../gen/billing/v1/wallet_service_pb.js';
import { DepositStatus } from '../../gen/billing/v1/wallet_service_pb.js';
import { admin, billing, explain, newKey, setToken, token, wallet, walletDisabled } from './api.js';
import { credits, parseCredits } from './money.js';
import { utc } from './time.js';
import { Holds } from './holds.js';
import { LastTopUp, WatcherTable } from './health.js';

const PAGE_SIZE = 10;
const TYPES = [
  TransactionType.CHARGE,
  TransactionType.REFUND,
  TransactionType.GRANT,
  TransactionType.PROMO,
  TransactionType.DAILY_TOP_UP,
  TransactionType.DEPOSIT,
];
const PLANS = [Plan.FREE, Plan.PRO, Plan.ADMIN];

function typeName(type: TransactionType): string {
  return (TransactionType[type] ?? 'UNKNOWN').replaceAll('_', ' ').toLowerCase();
}

// ---- Actions: confirm, then send with a key kept until success ----

interface Action {
  /** The same action (same request but its key) keeps the same key until it succeeds. */
  readonly identity: string;
  readonly title: string;
  /** Exactly what will happen, one line each. */
  readonly lines: readonly string[];
  readonly run: (idempotencyKey: string) => Promise<unknown>;
  readonly done: () => void;
}

const pendingKeys = new Map<string, string>();

function ConfirmDialog({ action, onClose }: { action: Action; onClose: () => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const busy = useRef(false);
  const [state, setState] = useState<{ busy: boolean; error?: string }>({ busy: false });
  useEffect(() => {
    dialog.current?.showModal();
  }, []);
  const confirm = async () => {
    if (busy.current) return;
    busy.current = true;
    setState({ busy: true });
    let key = pendingKeys.get(action.identity);
    if (!key) pendingKeys.set(action.identity, (key = newKey(action.identity.split(' ', 1)[0] ?? 'action')));
    try {
      await action.run(key);
      pendingKeys.delete(action.identity);
      action.done();
      onClose();
    } catch (error) {
      setState({ busy: false, error: explain(error) });
    } finally {
      busy.current = false;
    }
  };
  return (
    <dialog ref={dialog} aria-labelledby="confirm-title" onClose={onClose}>
      <h2 id="confirm-title">{action.title}</h2>
      <p>This will:</p>
      <ul>
        {action.lines.map((line) => (
          <li key={line}>{line}</li>
        ))}
      </ul>
      {state.error && (
        <p role="alert" class="error">
          {state.error} Retry sends the same idempotency key, so an attempt that did go through cannot pay twice.
        </p>
      )}
      <div class="buttons">
        <button type="button" class="primary" disabled={state.busy} onClick={confirm}>
          {state.busy ? 'Sending…' : state.error ? 'Retry' : 'Confirm'}
        </button>
        <button type="button" onClick={() => dialog.current?.close()}>
          Cancel
        </button>
      </div>
    </dialog>
  );
}

function useConfirm(): [ComponentChildren, (action: Action) => void] {
  const [action, setAction] = useState<Action | undefined>();
  const element = action ? <ConfirmDialog key={action.identity} action={action} onClose={() => setAction(undefined)} /> : null;
  return [element, setAction];
}

// ---- The user page ----

function BalanceCard({ balance }: { balance: Balance }) {
  const rows: [string, ComponentChildren][] = [
    ['Balance', credits(balance.balanceMillicredits)],
    ['Reserved', credits(balance.reservedMillicredits)],
    ['Available', credits(balance.availableMillicredits)],
    ['Plan', Plan[balance.plan] ?? 'UNKNOWN'],
    ['Entitlements', balance.entitlements.length ? balance.entitlements.join(', ') : 'none'],
    ['Free operations left today', String(balance.freeOperationsRemaining)],
    ['Low balance', balance.lowBalance ? 'yes' : 'no'],
    ['Can start', balance.canStart ? 'yes' : 'no'],
  ];
  return (
    <section aria-labelledby="balance-title" class="card">
      <h2 id="balance-title">Balance of {balance.userId} (credits)</h2>
      <dl class="facts" data-testid="balance">
        {rows.map(([term, value]) => (
          <div key={term}>
            <dt>{term}</dt>
            <dd data-field={term}>{value}</dd>
          </div>
        ))}
      </dl>
    </section>
  );
}

function BalanceChart({ transactions }: { transactions: readonly Transaction[] }) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const element = box.current;
    if (!element || transactions.length < 2) return;
    const points = [...transactions].reverse();
    const xs = points.map((t) => (t.createdAt ? timestampDate(t.createdAt).getTime() / 1000 : 0));
    const ys = points.map((t) => Number(t.balanceAfterMillicredits) / 1000);
    const plot = new uPlot(
      {
        width: Math.max(280, element.clientWidth),
        height: 180,
        legend: { show: false },
        series: [{}, { label: 'Balance', stroke: '#1d4ed8', width: 2 }],
      },
      [xs, ys],
      element,
    );
    return () => plot.destroy();
  }, [transactions]);
  return (
    <figure class="card">
      <div ref={box} role="img" aria-label="Balance after each transaction on this page of the history, oldest on the left" />
      <figcaption>Balance over time (this page of the history)</figcaption>
    </figure>
  );
}

/** A charge's price breakdown as definition-list rows (empty for other types and for charges stored before prices were kept). */
function priceFacts(p: Price | undefined): [string, string][] {
  if (!p) return [];
  const rows: [string, string][] = [['Price', `${credits(p.costMillicredits)} credits`]];
  if (p.modelMultiplier !== '') {
    rows.push(
      ['Effective tokens', `${p.effectiveTokens.toLocaleString('en-US')} (tokens in + ${p.outputWeight} × tokens out)`],
      ['Token formula', `${p.effectiveTokens.toLocaleString('en-US')} ÷ ${p.tokensPerUnit.toLocaleString('en-US')} × ${p.modelMultiplier} credits`],
      ['Unrounded cost', `${p.unroundedCostMillicredits} milli-credits, rounded up to a tenth of a credit`],
    );
    if (p.minimumApplied) rows.push(['Minimum applied', 'yes: 0.5 credits, the least a run costs']);
  } else if (p.quantity > 0n) {
    rows.push(['Unit price', `${p.quantity.toLocaleString('en-US')} × ${credits(p.unitPriceMillicredits)} credits`]);
  }
  return rows;
}

function TransactionDetails({ t }: { t: Transaction }) {
  const facts: [string, string][] = [
    ['Transaction id', t.id],
    ['Reference', t.reference],
    ['Reason', t.reason],
    ['Product', t.product],
    ['Operation', t.operation],
    ['Idempotency key', t.idempotencyKey],
    ['Waived', t.waivedReason ? WaivedReason[t.waivedReason] : ''],
    ...priceFacts(t.price),
    ['Refund of', t.refundedTransactionId],
    ['Hold captured', t.reservationId],
    ...Object.entries(t.metadata).map(([k, v]): [string, string] => [`metadata ${k}`, v]),
  ];
  return (
    <dl class="details">
      {facts
        .filter(([, value]) => value !== '')
        .map(([term, value]) => (
          <div key={term}>
            <dt>{term}</dt>
            <dd>{value}</dd>
          </div>
        ))}
    </dl>
  );
}

function RefundForm({ userId, t, confirm, done }: { userId: string; t: Transaction; confirm: (a: Action) => void; done: () => void }) {
  const [amount, setAmount] = useState('');
  const [reason, setReason] = useState('');
  const [problem, setProblem] = useState('');
  const submit = (event: Event) => {
    event.preventDefault();
    const milli = amount.trim() === '' ? 0n : parseCredits(amount);
    if (milli === undefined) return setProblem('Amount: a positive number of credits with at most 3 decimals, or empty for all.');
    if (!reason.trim()) return setProblem('Reason: say why.');
    setProblem('');
    confirm({
      identity: `refund ${userId} ${t.id} ${milli} ${reason}`,
      title: 'Refund a charge',
      lines: [
        `return ${milli === 0n ? 'all that remains unrefunded of' : `${credits(milli)} credits of`} charge ${t.id} (${credits(-t.amountMillicredits)} credits) to ${userId}`,
        `record the reason "${reason.trim()}"`,
      ],
      run: (idempotencyKey) =>
        billing.refund({ userId, idempotencyKey, transactionId: t.id, amountMillicredits: milli, reason: reason.trim() }),
      done,
    });
  };
  return (
    <form class="inline" onSubmit={submit} aria-label={`Refund charge ${t.id}`}>
      <label>
        Refund amount (credits, empty = all)
        <input name="refund-amount" inputMode="decimal" value={amount} onInput={(e) => setAmount(e.currentTarget.value)} />
      </label>
      <label>
        Refund reason
        <input name="refund-reason" value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
      </label>
      <button type="submit">Refund…</button>
      {problem && <p role="alert" class="error">{problem}</p>}
    </form>
  );
}

function History({ userId, version, confirm, changed }: { userId: string; version: number; confirm: (a: Action) => void; changed: () => void }) {
  const [type, setType] = useState<TransactionType | 0>(0);
  const [tokens, setTokens] = useState<string[]>(['']);
  const [page, setPage] = useState<{ transactions: Transaction[]; next: string } | undefined>();
  const [open, setOpen] = useState<string | undefined>();
  const [error, setError] = useState('');
  const pageToken = tokens[tokens.length - 1] ?? '';
  useEffect(() => {
    setTokens(['']);
  }, [userId, type, version]);
  useEffect(() => {
    let live = true;
    billing
      .listTransactions({ userId, pageSize: PAGE_SIZE, pageToken, types: type ? [type] : [], includePrice: true })
      .then((r) => live && (setPage({ transactions: r.transactions, next: r.nextPageToken }), setError('')))
      .catch((e: unknown) => live && setError(explain(e)));
    return () => {
      live = false;
    };
  }, [userId, type, pageToken, version]);
  return (
    <section aria-labelledby="history-title" class="card">
      <h2 id="history-title">History</h2>
      {page && <BalanceChart transactions={page.transactions} />}
      <label>
        Type
        <select name="type" value={type} onChange={(e) => setType(Number(e.currentTarget.value) as TransactionType)}>
          <option value={0}>all</option>
          {TYPES.map((t) => (
            <option key={t} value={t}>
              {typeName(t)}
            </option>
          ))}
        </select>
      </label>
      {error && <p role="alert" class="error">{error}</p>}
      <div class="scroll">
        <table>
          <caption>Newest first, page {tokens.length}</caption>
          <thead>
            <tr>
              <th scope="col">When</th>
              <th scope="col">Type</th>
              <th scope="col" class="num">Amount</th>
              <th scope="col" class="num">Balance after</th>
              <th scope="col">What</th>
              <th scope="col">Details</th>
            </tr>
          </thead>
          <tbody>
            {page?.transactions.map((t) => [
              <tr key={t.id} data-testid="history-row" data-id={t.id}>
                <td>{utc(t.createdAt)}</td>
                <td>{typeName(t.type)}</td>
                <td class="num">{credits(t.amountMillicredits)}</td>
                <td class="num">{credits(t.balanceAfterMillicredits)}</td>
                <td>{t.reason || t.product || t.operation || t.reference}</td>
                <td>
                  <button type="button" aria-expanded={open === t.id} aria-controls={`details-${t.id}`} onClick={() => setOpen(open === t.id ? undefined : t.id)}>
                    {open === t.id ? 'Hide' : 'Show'}
                    <span class="sr-only"> details of transaction {t.id}</span>
                  </button>
                </td>
              </tr>,
              open === t.id && (
                <tr key={`${t.id}-details`} id={`details-${t.id}`} class="expanded">
                  <td colSpan={6}>
                    <TransactionDetails t={t} />
                    {t.type === TransactionType.CHARGE && t.amountMillicredits < 0n && (
                      <RefundForm userId={userId} t={t} confirm={confirm} done={changed} />
                    )}
                  </td>
                </tr>
              ),
            ])}
            {page && page.transactions.length === 0 && (
              <tr>
                <td colSpan={6}>No transactions.</td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
      <div class="buttons">
        <button type="button" disabled={tokens.length <= 1} onClick={() => setTokens(tokens.slice(0, -1))}>
          Newer
        </button>
        <button type="button" disabled={!page?.next} onClick={() => page && setTokens([...tokens, page.next])}>
          Older
        </button>
      </div>
    </section>
  );
}

function GrantForm({ userId, confirm, done }: { userId: string; confirm: (a: Action) => void; done: () => void }) {
  const [amount, setAmount] = useState('');
  const [reason, setReason] = useState('');
  const [problem, setProblem] = useState('');
  const submit = (event: Event) => {
    event.preventDefault();
    const milli = parseCredits(amount);
    if (milli === undefined) return setProblem('Amount: a positive number of credits with at most 3 decimals.');
    if (!reason.trim()) return setProblem('Reason: a grant needs a reason.');
    setProblem('');
    confirm({
      identity: `grant ${userId} ${milli} ${reason.trim()}`,
      title: 'Grant credits',
      lines: [`add ${credits(milli)} credits to ${userId}`, `record the reason "${reason.trim()}"`],
      run: (idempotencyKey) => billing.grant({ userId, idempotencyKey, grant: { case: 'amountMillicredits', value: milli }, reason: reason.trim() }),
      done: () => {
        setAmount('');
        setReason('');
        done();
      },
    });
  };
  return (
    <form onSubmit={submit} aria-labelledby="grant-title" class="card">
      <h2 id="grant-title">Grant credits</h2>
      <label>
        Amount (credits)
        <input name="grant-amount" inputMode="decimal" required value={amount} onInput={(e) => setAmount(e.currentTarget.value)} />
      </label>
      <label>
        Reason
        <input name="grant-reason" required maxLength={255} value={reason} onInput={(e) => setReason(e.currentTarget.value)} />
      </label>
      <button type="submit">Grant…</button>
      {problem && <p role="alert" class="error">{problem}</p>}
    </form>
  );
}

function PlanForm({ balance, confirm, done }: { balance: Balance; confirm: (a: Action) => void; done: () => void }) {
  const [plan, setPlan] = useState<Plan>(balance.plan || Plan.FREE);
  const submit = (event: Event) => {
    event.preventDefault();
    confirm({
      identity: `plan ${balance.userId} ${plan}`,
      title: 'Set the plan',
      lines: [`change the plan of ${balance.userId} from ${Plan[balance.plan]} to ${Plan[plan]}`],
      run: () => admin.setPlan({ userId: balance.userId, plan }),
      done,
    });
  };
  return (
    <form onSubmit={submit} aria-labelledby="plan-title" class="card">
      <h2 id="plan-title">Plan</h2>
      <label>
        New plan
        <select name="plan" value={plan} onChange={(e) => setPlan(Number(e.currentTarget.value) as Plan)}>
          {PLANS.map((p) => (
            <option key={p} value={p}>
              {Plan[p]}
            </option>
          ))}
        </select>
      </label>
      <button type="submit">Set plan…</button>
    </form>
  );
}

function EntitlementForm({ balance, confirm, done }: { balance: Balance; confirm: (a: Action) => void; done: () => void }) {
  const [name, setName] = useState('');
  const [problem, setProblem] = useState('');
  const send = (entitlement: string, active: boolean) =>
    confirm({
      identity: `entitlement ${balance.userId} ${entitlement} ${active}`,
      title: active ? 'Grant an entitlement' : 'Revoke an entitlement',
      lines: [active ? `give ${balance.userId} the entitlement "${entitlement}"` : `take the entitlement "${entitlement}" from ${balance.userId}`],
      run: () => admin.setEntitlement({ userId: balance.userId, entitlement, active }),
      done: () => {
        setName('');
        done();
      },
    });
  const submit = (event: Event) => {
    event.preventDefault();
    const entitlement = name.trim();
    if (!/^[a-z0-9._-]{1,64}$/.test(entitlement)) return setProblem('Entitlement: 1–64 chars of a-z, 0-9, ".", "_" or "-".');
    setProblem('');
    send(entitlement, true);
  };
  return (
    <form onSubmit={submit} aria-labelledby="entitlements-title" class="card">
      <h2 id="entitlements-title">Entitlements</h2>
      <ul class="plain">
        {balance.entitlements.map((e) => (
          <li key={e}>
            {e}{' '}
            <button type="button" onClick={() => send(e, false)}>
              Revoke…<span class="sr-only"> {e}</span>
            </button>
          </li>
        ))}
        {balance.entitlements.length === 0 && <li>none</li>}
      </ul>
      <label>
        Entitlement to grant
        <input name="entitlement" value={name} onInput={(e) => setName(e.currentTarget.value)} />
      </label>
      <button type="submit">Grant entitlement…</button>
      {problem && <p role="alert" class="error">{problem}</p>}
    </form>
  );
}

function QrCode({ text, label }: { text: string; label: string }) {
  const [src, setSrc] = useState('');
  useEffect(() => {
    QRCode.toDataURL(text, { margin: 1, width: 160 }).then(setSrc, () => setSrc(''));
  }, [text]);
  return src ? <img src={src} width={160} height={160} alt={label} /> : null;
}

function Deposits({ userId }: { userId: string }) {
  const [deposits, setDeposits] = useState<Deposit[] | undefined>();
  const [address, setAddress] = useState<GetDepositAddressResponse | undefined>();
  const [off, setOff] = useState(false);
  const [denied, setDenied] = useState('');
  const [error, setError] = useState('');
  useEffect(() => {
    let live = true;
    wallet
      .listDeposits({ userId, pageSize: 20 })
      .then((r) => live && setDeposits(r.deposits))
      .catch((e: unknown) => {
        if (!live) return;
        if (walletDisabled(e)) setOff(true);
        else if (ConnectError.from(e).code === Code.PermissionDenied) setDenied(explain(e));
        else setError(explain(e));
      });
    return () => {
      live = false;
    };
  }, [userId]);
  if (off) return null;
  if (denied)
    return (
      <section class="card" aria-labelledby="deposits-title">
        <h2 id="deposits-title">Deposits</h2>
        <p>{denied}</p>
      </section>
    );
  const show = () =>
    wallet
      .getDepositAddress({ userId })
      .then((r) => (setAddress(r), setError('')))
      .catch((e: unknown) => setError(explain(e)));
  return (
    <section class="card" aria-labelledby="deposits-title">
      <h2 id="deposits-title">Deposits</h2>
      {error && <p role="alert" class="error">{error}</p>}
      {!address && (
        <button type="button" onClick={show}>
          Show deposit address (allocates one if the user has none)
        </button>
      )}
      {address && (
        <div>
          <p>
            Address <code data-testid="deposit-address">{address.address}</code> (the same on every chain)
          </p>
          <div class="qrs">
            {address.chains.map((c) => (
              <figure key={String(c.chainId)}>
                <QrCode text={c.paymentUri} label={`QR code paying ${address.address} on ${c.name}`} />
                <figcaption>
                  {c.name} ({String(c.chainId)}), final at {c.finality}
                </figcaption>
              </figure>
            ))}
          </div>
        </div>
      )}
      <div class="scroll">
        <table>
          <caption>Newest first</caption>
          <thead>
            <tr>
              <th scope="col">Detected</th>
              <th scope="col">Chain</th>
              <th scope="col">Token</th>
              <th scope="col" class="num">Credits</th>
              <th scope="col" class="num">Confirmations</th>
              <th scope="col">Status</th>
              <th scope="col">Transaction</th>
            </tr>
          </thead>
          <tbody>
            {deposits?.map((d) => (
              <tr key={d.id} data-testid="deposit-row">
                <td>{utc(d.detectedAt)}</td>
                <td>{String(d.chainId)}</td>
                <td>{d.tokenSymbol}</td>
                <td class="num">{credits(d.creditsMillicredits)}</td>
                <td class="num">{String(d.confirmations)}</td>
                <td>{(DepositStatus[d.status] ?? 'UNKNOWN').replaceAll('_', ' ').toLowerCase()}</td>
                <td>
                  <code>{d.txHash}</code>
                </td>
              </tr>
            ))}
            {deposits && deposits.length === 0 && (
              <tr>
                <td colSpan={7}>No deposits.</td>
              </tr>
            )}
          </tbody>
        </table>
      </div>
    </section>
  );
}

function UserPage({ userId }: { userId: string }) {
  const [input, setInput] = useState(userId);
  const [balance, setBalance] = useState<Balance | undefined>();
  const [error, setError] = useState('');
  const [version, setVersion] = useState(0);
  const [dialog, confirm] = useConfirm();
  useEffect(() => setInput(userId), [userId]);
  useEffect(() => {
    if (!userId) return;
    let live = true;
    billing
      .getBalance({ userId })
      .then((r) => live && (setBalance(r.balance), setError('')))
      .catch((e: unknown) => live && (setBalance(undefined), setError(explain(e))));
    return () => {
      live = false;
    };
  }, [userId, version]);
  const changed = () => setVersion((v) => v + 1);
  return (
    <main>
      <form
        role="search"
        class="card"
        onSubmit={(e) => {
          e.preventDefault();
          location.hash = `#/user/${encodeURIComponent(input.trim())}`;
        }}
      >
        <label>
          User id
          <input name="user" value={input} autoComplete="off" onInput={(e) => setInput(e.currentTarget.value)} />
        </label>
        <button type="submit">Look up</button>
      </form>
      {error && <p role="alert" class="error">{error}</p>}
      {userId && balance && (
        <>
          <BalanceCard balance={balance} />
          <div class="actions">
            <GrantForm userId={userId} confirm={confirm} done={changed} />
            <PlanForm key={`${userId}-${balance.plan}`} balance={balance} confirm={confirm} done={changed} />
            <EntitlementForm balance={balance} confirm={confirm} done={changed} />
          </div>
          <Holds userId={userId} version={version} />
          <History userId={userId} version={version} confirm={confirm} changed={changed} />
          <Deposits key={`${userId}-${version}`} userId={userId} />
        </>
      )}
      {dialog}
    </main>
  );
}

// ---- Promo codes ----

function PromoPage() {
  const [tokens, setTokens] = useState<string[]>(['']);
  const [page, setPage] = useState<{ codes: PromoCode[]; next: string } | undefined>();
  const [error, setError] = useState('');
  const [version, setVersion] = useState(0);
  const [form, setForm] = useState({ code: '', amount: '', max: '', expires: '' });
  const [problem, setProblem] = useState('');
  const [dialog, confirm] = useConfirm();
  const pageToken = tokens[tokens.length - 1] ?? '';
  useEffect(() => {
    let live = true;
    admin
      .listPromoCodes({ pageSize: 20, pageToken })
      .then((r) => live && (setPage({ codes: r.promoCodes, next: r.nextPageToken }), setError('')))
      .catch((e: unknown) => live && setError(explain(e)));
    return () => {
      live = false;
    };
  }, [pageToken, version]);
  const changed = () => {
    setTokens(['']);
    setVersion((v) => v + 1);
  };
  const create = (event: Event) => {
    event.preventDefault();
    const code = form.code.trim().toUpperCase();
    const milli = parseCredits(form.amount);
    const max = form.max.trim() === '' ? 0 : Number(form.max);
    const expires = form.expires ? new Date(`${form.expires}T23:59:59Z`) : undefined;
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(code)) return setProblem('Code: 1–64 letters, digits, _ or -.');
    if (milli === undefined) return setProblem('Amount: a positive number of credits with at most 3 decimals.');
    if (!Number.isInteger(max) || max < 0) return setProblem('Max redemptions: a whole number, empty or 0 for unlimited.');
    setProblem('');
    confirm({
      identity: `promo ${code}`,
      title: 'Create a promo code',
      lines: [
        `create code ${code}, each redemption granting ${credits(milli)} credits, once per user`,
        max ? `allow at most ${max} redemptions in total` : 'allow unlimited redemptions',
        expires ? `stop redemptions after ${expires.toISOString()}` : 'never expire',
      ],
      run: () =>
        admin.createPromoCode({ code, amountMillicredits: milli, maxRedemptions: BigInt(max), ...(expires ? { expiresAt: timestampFromDate(expires) } : {}) }),
      done: () => {
        setForm({ code: '', amount: '', max: '', expires: '' });
        changed();
      },
    });
  };
  const field = (name: keyof typeof form) => ({
    name: `promo-${name}`,
    value: form[name],
    onInput: (e: { currentTarget: HTMLInputElement }) => setForm({ ...form, [name]: e.currentTarget.value }),
  });
  return (
    <main>
      <form onSubmit={create} class="card" aria-labelledby="create-title">
        <h2 id="create-title">Create a promo code</h2>
        <label>
          Code
          <input {...field('code')} required maxLength={64} />
        </label>
        <label>
          Amount (credits)
          <input {...field('amount')} required inputMode="decimal" />
        </label>
        <label>
          Max redemptions (empty = unlimited)
          <input {...field('max')} inputMode="numeric" />
        </label>
        <label>
          Expires after (UTC date, optional)
          <input {...field('expires')} type="date" />
        </label>
        <button type="submit">Create…</button>
        {problem && <p role="alert" class="error">{problem}</p>}
      </form>
      {error && <p role="alert" class="error">{error}</p>}
      <section class="card" aria-labelledby="codes-title">
        <h2 id="codes-title">Promo codes</h2>
        <div class="scroll">
          <table>
            <caption>Newest first, page {tokens.length}</caption>
            <thead>
              <tr>
                <th scope="col">Code</th>
                <th scope="col" class="num">Credits</th>
                <th scope="col" class="num">Redemptions</th>
                <th scope="col">Expires</th>
                <th scope="col">Status</th>
                <th scope="col">Action</th>
              </tr>
            </thead>
            <tbody>
              {page?.codes.map((p) => (
                <tr key={p.code} data-testid="promo-row">
                  <td>{p.code}</td>
                  <td class="num">{credits(p.amountMillicredits)}</td>
                  <td class="num">
                    {String(p.redemptions)} / {p.maxRedemptions ? String(p.maxRedemptions) : '∞'}
                  </td>
                  <td>{p.expiresAt ? utc(p.expiresAt) : 'never'}</td>
                  <td>{p.disabled ? 'disabled' : 'active'}</td>
                  <td>
                    {!p.disabled && (
                      <button
                        type="button"
                        onClick={() =>
                          confirm({
                            identity: `disable ${p.code}`,
                            title: 'Disable a promo code',
                            lines: [`stop code ${p.code} from being redeemed (${String(p.redemptions)} redemptions so far stay)`],
                            run: () => admin.disablePromoCode({ code: p.code }),
                            done: changed,
                          })
                        }
                      >
                        Disable…<span class="sr-only"> {p.code}</span>
                      </button>
                    )}
                  </td>
                </tr>
              ))}
              {page && page.codes.length === 0 && (
                <tr>
                  <td colSpan={6}>No promo codes.</td>
                </tr>
              )}
            </tbody>
          </table>
        </div>
        <div class="buttons">
          <button type="button" disabled={tokens.length <= 1} onClick={() => setTokens(tokens.slice(0, -1))}>
            Newer
          </button>
          <button type="button" disabled={!page?.next} onClick={() => page && setTokens([...tokens, page.next])}>
            Older
          </button>
        </div>
      </section>
      {dialog}
    </main>
  );
}

// ---- Ledger health ----

function HealthPage() {
  const [result, setResult] = useState<VerifyLedgerResponse | undefined>();
  const [state, setState] = useState({ busy: false, error: '' });
  const verify = async () => {
    setState({ busy: true, error: '' });
    try {
      setResult(await admin.verifyLedger({}));
      setState({ busy: false, error: '' });
    } catch (e) {
      setState({ busy: false, error: explain(e) });
    }
  };
  return (
    <main>
      <section class="card" aria-labelledby="verify-title">
        <h2 id="verify-title">Verify the ledger</h2>
        <p>Checks every ledger invariant over all accounts and transactions (read only).</p>
        <button type="button" class="primary" disabled={state.busy} onClick={verify}>
          {state.busy ? 'Verifying…' : 'Verify now'}
        </button>
        {state.error && <p role="alert" class="error">{state.error}</p>}
        {result && (
          <div role="status">
            <p>
              {result.ok ? 'Clean' : `${result.violations.length} violation(s)`}: {String(result.accountsChecked)} accounts,{' '}
              {String(result.transactionsChecked)} transactions checked.
            </p>
            <ul>
              {result.violations.map((v, i) => (
                <li key={i}>
                  <strong>{v.invariant}</strong> {v.account} {v.transactionId}: {v.description}
                </li>
              ))}
            </ul>
          </div>
        )}
      </section>
      <LastTopUp />
      <WatcherTable />
    </main>
  );
}

// ---- Shell: token, navigation, routes ----

function TokenBox() {
  const [value, setValue] = useState(token());
  const [saved, setSaved] = useState(token() !== '');
  return (
    <form
      class="token"
      onSubmit={(e) => {
        e.preventDefault();
        setToken(value.trim());
        setSaved(value.trim() !== '');
        dispatchEvent(new HashChangeEvent('hashchange'));
      }}
    >
      <label>
        Bearer token (kept in this tab only)
        <input name="token" type="password" autoComplete="off" value={value} onInput={(e) => setValue(e.currentTarget.value)} />
      </label>
      <button type="submit">Use token</button>
      <span role="status">{saved ? 'token in use' : 'no token (open service)'}</span>
    </form>
  );
}

function route(): { page: 'user' | 'promo' | 'health'; userId: string; tick: number } {
  const hash = location.hash.replace(/^#\/?/, '');
  const [page, ...rest] = hash.split('/');
  const tick = Date.now();
  if (page === 'promo') return { page: 'promo', userId: '', tick };
  if (page === 'health') return { page: 'health', userId: '', tick };
  return { page: 'user', userId: decodeURIComponent(rest.join('/')), tick };
}

function App() {
  const [where, setWhere] = useState(route());
  useEffect(() => {
    const onHash = () => setWhere(route());
    addEventListener('hashchange', onHash);
    return () => removeEventListener('hashchange', onHash);
  }, []);
  const link = (page: string, href: string, label: string) => (
    <a href={href} aria-current={where.page === page ? 'page' : undefined}>
      {label}
    </a>
  );
  return (
    <>
      <header>
        <h1>Credits · ops console</h1>
        <nav aria-label="Pages">
          {link('user', '#/user/', 'User')}
          {link('promo', '#/promo', 'Promo codes')}
          {link('health', '#/health', 'Ledger health')}
        </nav>
        <TokenBox />
      </header>
      {where.page === 'user' && <UserPage key={where.tick} userId={where.userId} />}
      {where.page === 'promo' && <PromoPage key={where.tick} />}
      {where.page === 'health' && <HealthPage key={where.tick} />}
    </>
  );
}

render(<App />, document.getElementById('app')!);
