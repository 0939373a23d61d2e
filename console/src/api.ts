// The console's Connect clients, generated from proto/ (gen/), on the same origin. The
// operator's token lives in sessionStorage only and goes out as the bearer token, so
// scopes apply exactly as for any other caller; with no token the call goes without one
// (a service with no tokens configured is open).
import { createClient, type Client, type Interceptor, ConnectError, Code } from '@connectrpc/connect';
import { createConnectTransport } from '@connectrpc/connect-web';
import { AdminService } from '../../gen/billing/v1/admin_service_pb.js';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { ErrorDetailSchema, ErrorReason } from '../../gen/billing/v1/errors_pb.js';
import { WalletService } from '../../gen/billing/v1/wallet_service_pb.js';

const TOKEN_KEY = 'billing-console-token';

export function token(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

export function setToken(value: string): void {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

const bearer: Interceptor = (next) => (req) => {
  const value = token();
  if (value) req.header.set('authorization', `Bearer ${value}`);
  return next(req);
};

const transport = createConnectTransport({ baseUrl: location.origin, interceptors: [bearer] });
export const billing: Client<typeof BillingService> = createClient(BillingService, transport);
export const admin: Client<typeof AdminService> = createClient(AdminService, transport);
export const wallet: Client<typeof WalletService> = createClient(WalletService, transport);

/** True when the service has crypto deposits off (no chain or no key material). */
export function walletDisabled(error: unknown): boolean {
  return ConnectError.from(error).findDetails(ErrorDetailSchema).some((d) => d.reason === ErrorReason.WALLET_DISABLED);
}

/** A fresh idempotency key for one action; kept by the caller until the action succeeds. */
export function newKey(action: string): string {
  return `console:${action}:${crypto.randomUUID()}`;
}

/** What each scope allows, to explain a refusal (README, "Configuration"). */
const SCOPE_USES: Readonly<Record<string, string>> = {
  spend: 'looking a user up (balance, history)',
  grant: 'grants and refunds',
  admin: 'plans, entitlements, promo codes and the ledger check',
  wallet: 'deposits and deposit addresses',
};

/** What went wrong, for a person: the server's message plus what to do about it. */
export function explain(error: unknown): string {
  const e = ConnectError.from(error);
  switch (e.code) {
    case Code.PermissionDenied: {
      const scope = /lacks the "(\w+)" scope/.exec(e.rawMessage)?.[1];
      const what = scope ? SCOPE_USES[scope] : undefined;
      return `Refused: ${e.rawMessage}.${what ? ` The "${scope}" scope is what ${what} need.` : ''} Paste a token with that scope and try again.`;
    }
    case Code.Unauthenticated:
      return `Refused: ${e.rawMessage}. Paste a valid token above.`;
    case Code.Unavailable:
    case Code.DeadlineExceeded:
      return `The service did not answer (${e.rawMessage}).`;
    case Code.Unknown:
      // connect-web reports a fetch that got no answer (network error, connection reset) as Unknown.
      return `No answer from the service (${e.rawMessage}); it may or may not have been done.`;
    default:
      return `${Code[e.code]}: ${e.rawMessage}`;
  }
}
