#!/usr/bin/env node
// `npx billing …`: the ops CLI. Every command is one call (or a few) over the service's own
// API with the generated Connect clients, so it needs no database access and runs wherever
// the service is reachable: BILLING_URL (default http://127.0.0.1:8080, the server's default
// PORT) and the bearer token in BILLING_TOKEN (from the environment only: a flag would show
// in ps; it is never printed). Tables for people by default, --json for scripts. Exit codes
// are in format.ts (EXIT) and README ("The ops CLI").
import { randomUUID } from 'node:crypto';
import type { DescMessage, MessageShape } from '@bufbuild/protobuf';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { type Client, createClient, type Interceptor } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-node';
import { Command, CommanderError, Option } from 'commander';
import {
  AdminService,
  CreatePromoCodeResponseSchema,
  DisablePromoCodeResponseSchema,
  ListPromoCodesResponseSchema,
  type PromoCode,
  RunDailyTopUpResponseSchema,
  SetEntitlementResponseSchema,
  SetPlanResponseSchema,
  VerifyLedgerResponseSchema,
} from '../../gen/billing/v1/admin_service_pb.js';
import {
  BillingService,
  GetBalanceResponseSchema,
  GrantResponseSchema,
  ListTransactionsResponseSchema,
  RefundResponseSchema,
} from '../../gen/billing/v1/billing_service_pb.js';
import { type Balance, Plan, type Transaction, TransactionType } from '../../gen/billing/v1/types_pb.js';
import { DepositStatus, ListDepositsResponseSchema, WalletService } from '../../gen/billing/v1/wallet_service_pb.js';
import {
  callFailure,
  EXIT,
  failureText,
  formatCredits,
  formatTime,
  messageJson,
  parseCount,
  parseCredits,
  record,
  table,
  UsageError,
} from './ops/format.js';
import { withProgress } from './ops/watch.js';

export const BILLING_URL_DEFAULT = 'http://127.0.0.1:8080';

interface Clients {
  readonly billing: Client<typeof BillingService>;
  readonly admin: Client<typeof AdminService>;
  readonly wallet: Client<typeof WalletService>;
}

interface GlobalOptions {
  readonly json: boolean;
  readonly progress: boolean;
}

function clients(env: NodeJS.ProcessEnv): Clients {
  const text = env.BILLING_URL?.trim() || BILLING_URL_DEFAULT;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new UsageError('BILLING_URL: not a URL (e.g. http://127.0.0.1:8080)');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UsageError('BILLING_URL: must be an http:// or https:// URL');
  const token = env.BILLING_TOKEN;
  const auth: Interceptor = (next) => async (req) => {
    if (token) req.header.set('authorization', `Bearer ${token}`);
    return next(req);
  };
  // Connect over HTTP/1.1: works through any proxy in front of the one port.
  const transport = createConnectTransport({ baseUrl: url.toString(), httpVersion: '1.1', interceptors: [auth] });
  return {
    billing: createClient(BillingService, transport),
    admin: createClient(AdminService, transport),
    wallet: createClient(WalletService, transport),
  };
}

/** Writes the result: JSON (the proto JSON mapping, plus `extra` such as the idempotency key) or the human text. */
function output<D extends DescMessage>(
  options: GlobalOptions,
  schema: D,
  message: MessageShape<D>,
  human: () => string,
  extra: Record<string, unknown> = {},
): void {
  if (options.json) process.stdout.write(`${JSON.stringify({ ...extra, ...messageJson(schema, message) }, null, 2)}\n`);
  else process.stdout.write(`${human()}\n`);
}

function balanceText(b: Balance | undefined): string {
  if (!b) return '(no balance)';
  return record([
    ['user', b.userId],
    ['plan', Plan[b.plan] ?? String(b.plan)],
    ['balance', formatCredits(b.balanceMillicredits)],
    ['reserved', formatCredits(b.reservedMillicredits)],
    ['available', formatCredits(b.availableMillicredits)],
    ['entitlements', b.entitlements.join(', ') || '-'],
    ['free operations left today', b.freeOperationsRemaining.toString()],
    ['low balance', b.lowBalance ? 'yes' : 'no'],
    ['can start', b.canStart ? 'yes' : 'no'],
  ]);
}

function transactionText(t: Transaction | undefined): string {
  if (!t) return '(no transaction)';
  return record([
    ['transaction', t.id],
    ['type', TransactionType[t.type]],
    ['amount', formatCredits(t.amountMillicredits)],
    ['balance after', formatCredits(t.balanceAfterMillicredits)],
    ['reason', t.reason],
    ['created', formatTime(t.createdAt)],
  ]);
}

function promoRows(codes: readonly PromoCode[]): string {
  return table(
    ['code', 'amount', 'redemptions', 'max', 'expires', 'disabled', 'created'],
    codes.map((p) => [
      p.code,
      formatCredits(p.amountMillicredits),
      p.redemptions.toString(),
      p.maxRedemptions === 0n ? 'unlimited' : p.maxRedemptions.toString(),
      formatTime(p.expiresAt) || 'never',
      p.disabled ? 'yes' : 'no',
      formatTime(p.createdAt),
    ]),
  );
}

function nextPage(token: string): string {
  return token ? `\nnext page: --page-token ${token}` : '';
}

const PLANS: Readonly<Record<string, Plan>> = { free: Plan.FREE, pro: Plan.PRO, admin: Plan.ADMIN };

/** A fresh idempotency key, or the operator's own (to retry a call that may have gone through). */
function idempotencyKey(given: string | undefined): string {
  return given ?? `cli-${randomUUID()}`;
}

const idempotencyOption = () =>
  new Option('--idempotency-key <key>', 'reuse a key to retry a call safely (default: a new one, printed with --json)');
const pageOptions = (cmd: Command, max: number) =>
  cmd.option('--page-size <n>', `rows per page, 1–${max}`).option('--page-token <token>', 'the "next page" token of the previous page');

/** The program; `run` wires in the clients lazily, so `--help` needs no environment. */
export function program(env: NodeJS.ProcessEnv): Command {
  let cached: Clients | undefined;
  const api = (): Clients => (cached ??= clients(env));
  const root = new Command('billing')
    .description('Operate the credits billing service over its API (BILLING_URL, token in BILLING_TOKEN).')
    .option('--json', 'print the result as JSON (proto JSON mapping: int64 as strings)', false)
    .option('--no-progress', 'no progress bar for top-up run and verify')
    .showHelpAfterError()
    // Commander's own refusals (unknown command, missing argument) end in main() with
    // EXIT.usage. Set before the subcommands are added: they copy these settings.
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(`billing: ${text.replace(/^error: /, '')}`) });
  const globals = (): GlobalOptions => {
    const o = root.opts<{ json: boolean; progress: boolean }>();
    return { json: o.json, progress: o.progress };
  };
  const watch = () => ({
    enabled: globals().progress,
    pollMs: Number(env.BILLING_PROGRESS_POLL_MS ?? 500) || 500,
    lineMs: 2000,
    stream: process.stderr,
  });

  root
    .command('balance')
    .description('show a user\'s balance, plan and entitlements')
    .argument('<user>', 'user id')
    .action(async (userId: string) => {
      const r = await api().billing.getBalance({ userId });
      output(globals(), GetBalanceResponseSchema, r, () => balanceText(r.balance));
    });

  pageOptions(
    root
      .command('history')
      .description('list a user\'s transactions, newest first')
      .argument('<user>', 'user id'),
    100,
  ).action(async (userId: string, o: { pageSize?: string; pageToken?: string }) => {
    const r = await api().billing.listTransactions({
      userId,
      pageSize: o.pageSize === undefined ? 0 : parseCount(o.pageSize, '--page-size', 100),
      pageToken: o.pageToken ?? '',
    });
    output(globals(), ListTransactionsResponseSchema, r, () =>
      table(
        ['id', 'created', 'type', 'amount', 'balance after', 'product', 'operation', 'reference', 'reason'],
        r.transactions.map((t) => [
          t.id,
          formatTime(t.createdAt),
          TransactionType[t.type] ?? String(t.type),
          formatCredits(t.amountMillicredits),
          formatCredits(t.balanceAfterMillicredits),
          t.product,
          t.operation,
          t.reference,
          t.reason,
        ]),
      ) + nextPage(r.nextPageToken),
    );
  });

  root
    .command('grant')
    .description('grant credits to a user (amount in credits, e.g. 1.5)')
    .argument('<user>', 'user id')
    .argument('<amount>', 'credits, an exact decimal with at most 3 places')
    .requiredOption('--reason <text>', 'why (kept on the transaction)')
    .option('--reference <text>', 'an invoice or ticket id')
    .addOption(idempotencyOption())
    .action(async (userId: string, amount: string, o: { reason: string; reference?: string; idempotencyKey?: string }) => {
      const amountMillicredits = parseCredits(amount, 'amount');
      const key = idempotencyKey(o.idempotencyKey);
      const r = await api().billing.grant({
        userId,
        idempotencyKey: key,
        grant: { case: 'amountMillicredits', value: amountMillicredits },
        reason: o.reason,
        reference: o.reference ?? '',
      });
      output(globals(), GrantResponseSchema, r, () => `${transactionText(r.transaction)}\n${balanceText(r.balance)}`, { idempotencyKey: key });
    });

  root
    .command('refund')
    .description('refund a charge, in full or in part')
    .argument('<transaction>', 'the id of the CHARGE transaction')
    .requiredOption('--user <user>', 'the user the charge belongs to')
    .requiredOption('--reason <text>', 'why (kept on the refund)')
    .option('--amount <credits>', 'refund only this much (default: all that remains unrefunded)')
    .addOption(idempotencyOption())
    .action(async (transactionId: string, o: { user: string; reason: string; amount?: string; idempotencyKey?: string }) => {
      const amountMillicredits = o.amount === undefined ? 0n : parseCredits(o.amount, '--amount');
      const key = idempotencyKey(o.idempotencyKey);
      const r = await api().billing.refund({ userId: o.user, idempotencyKey: key, transactionId, amountMillicredits, reason: o.reason });
      output(globals(), RefundResponseSchema, r, () => `${transactionText(r.transaction)}\n${balanceText(r.balance)}`, { idempotencyKey: key });
    });

  root
    .command('set-plan')
    .description('set a user\'s plan: free, pro or admin')
    .argument('<user>', 'user id')
    .argument('<plan>', 'free, pro or admin')
    .action(async (userId: string, planText: string) => {
      const plan = PLANS[planText.toLowerCase()];
      if (plan === undefined) throw new UsageError(`plan: "${planText}" is not one of free, pro, admin`);
      const r = await api().admin.setPlan({ userId, plan });
      output(globals(), SetPlanResponseSchema, r, () => balanceText(r.balance));
    });

  root
    .command('entitlement')
    .description('grant (--on) or revoke (--off) an entitlement such as m4l')
    .argument('<user>', 'user id')
    .argument('<name>', 'the entitlement')
    .addOption(new Option('--on', 'grant it').conflicts('off'))
    .addOption(new Option('--off', 'revoke it').conflicts('on'))
    .action(async (userId: string, entitlement: string, o: { on?: boolean; off?: boolean }) => {
      if (!o.on && !o.off) throw new UsageError('entitlement: say --on or --off');
      const r = await api().admin.setEntitlement({ userId, entitlement, active: Boolean(o.on) });
      output(globals(), SetEntitlementResponseSchema, r, () => balanceText(r.balance));
    });

  const promo = root.command('promo').description('promo codes: create, list, disable');
  promo
    .command('create')
    .description('create a code worth an amount of credits, redeemable once per user')
    .argument('<code>', '1–64 chars of A-Z a-z 0-9 _ -')
    .argument('<amount>', 'credits per redemption, e.g. 2.5')
    .option('--max-redemptions <n>', 'most redemptions in total (default unlimited)')
    .option('--expires <time>', 'expiry, an ISO 8601 time such as 2027-01-31T00:00:00Z')
    .action(async (code: string, amount: string, o: { maxRedemptions?: string; expires?: string }) => {
      const amountMillicredits = parseCredits(amount, 'amount');
      const maxRedemptions = o.maxRedemptions === undefined ? 0n : BigInt(parseCount(o.maxRedemptions, '--max-redemptions', 1_000_000_000));
      let expiresAt;
      if (o.expires !== undefined) {
        const at = new Date(o.expires);
        if (!/^\d{4}-\d{2}-\d{2}T/.test(o.expires) || Number.isNaN(at.getTime())) {
          throw new UsageError(`--expires: "${o.expires}" is not an ISO 8601 time such as 2027-01-31T00:00:00Z`);
        }
        expiresAt = timestampFromDate(at);
      }
      const r = await api().admin.createPromoCode({ code, amountMillicredits, maxRedemptions, ...(expiresAt ? { expiresAt } : {}) });
      output(globals(), CreatePromoCodeResponseSchema, r, () => promoRows(r.promoCode ? [r.promoCode] : []));
    });
  pageOptions(promo.command('list').description('list codes, newest first'), 100).action(async (o: { pageSize?: string; pageToken?: string }) => {
    const r = await api().admin.listPromoCodes({
      pageSize: o.pageSize === undefined ? 0 : parseCount(o.pageSize, '--page-size', 100),
      pageToken: o.pageToken ?? '',
    });
    output(globals(), ListPromoCodesResponseSchema, r, () => promoRows(r.promoCodes) + nextPage(r.nextPageToken));
  });
  promo
    .command('disable')
    .description('stop a code from being redeemed')
    .argument('<code>', 'the code')
    .action(async (code: string) => {
      const r = await api().admin.disablePromoCode({ code });
      output(globals(), DisablePromoCodeResponseSchema, r, () => promoRows(r.promoCode ? [r.promoCode] : []));
    });

  root
    .command('top-up')
    .description('the daily free top-up')
    .command('run')
    .description('run the daily free top-up now (a re-run for the same date changes nothing)')
    .option('--date <YYYY-MM-DD>', 'the UTC date, today or up to 7 days back (default today)')
    .action(async (o: { date?: string }) => {
      const { admin } = api();
      const r = await withProgress(admin, 'dailyTopUp', watch(), () => admin.runDailyTopUp({ date: o.date ?? '' }));
      output(globals(), RunDailyTopUpResponseSchema, r, () =>
        record([
          ['accounts topped up', r.accountsToppedUp.toString()],
          ['credits added', formatCredits(r.totalMillicredits)],
        ]),
      );
    });

  root
    .command('verify')
    .description('check every ledger invariant; exits 1 when one is broken')
    .action(async () => {
      const { admin } = api();
      const r = await withProgress(admin, 'verifyLedger', watch(), () => admin.verifyLedger({}));
      output(globals(), VerifyLedgerResponseSchema, r, () => {
        const summary = `${r.ok ? 'ok' : 'VIOLATIONS'}: ${r.accountsChecked} accounts, ${r.transactionsChecked} transactions, ${r.violations.length} violations`;
        if (r.violations.length === 0) return summary;
        return `${table(['invariant', 'account', 'transaction', 'description'], r.violations.map((v) => [v.invariant, v.account, v.transactionId, v.description]))}\n${summary}`;
      });
      if (!r.ok) process.exitCode = EXIT.findings;
    });

  pageOptions(
    root
      .command('deposits')
      .description('list a user\'s crypto deposits, newest first')
      .argument('<user>', 'user id'),
    100,
  ).action(async (userId: string, o: { pageSize?: string; pageToken?: string }) => {
    const r = await api().wallet.listDeposits({
      userId,
      pageSize: o.pageSize === undefined ? 0 : parseCount(o.pageSize, '--page-size', 100),
      pageToken: o.pageToken ?? '',
    });
    output(globals(), ListDepositsResponseSchema, r, () =>
      table(
        ['id', 'detected', 'chain', 'token', 'amount (raw)', 'credits', 'status', 'confirmations', 'tx'],
        r.deposits.map((d) => [
          d.id,
          formatTime(d.detectedAt),
          d.chainId.toString(),
          d.tokenSymbol,
          d.rawAmount,
          formatCredits(d.creditsMillicredits),
          DepositStatus[d.status] ?? String(d.status),
          d.confirmations.toString(),
          d.txHash,
        ]),
      ) + nextPage(r.nextPageToken),
    );
  });

  return root;
}

/** Runs the CLI; resolves to the exit code. */
export async function main(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const root = program(env);
  try {
    await root.parseAsync([...argv], { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end here too, with exit code 0.
      return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    const json = root.opts<{ json?: boolean }>().json === true;
    if (error instanceof UsageError) {
      process.stderr.write(json ? `${JSON.stringify({ error: { code: 'usage', message: error.message } })}\n` : `billing: ${error.message}\n`);
      return EXIT.usage;
    }
    const failure = callFailure(error);
    process.stderr.write(json ? `${JSON.stringify({ error: failure })}\n` : failureText(failure));
    return EXIT.call;
  }
}

process.exitCode = await main(process.argv.slice(2));
