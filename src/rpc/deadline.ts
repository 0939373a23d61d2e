// The caller's deadline, made known to the database (src/domain/deadline.ts): a call whose
// deadline has passed is refused before its handler runs, and src/storage/database.ts
// neither starts nor commits a transaction after it, and lowers the transaction's
// statement timeout to the time left. The framework aborts the call's signal at the
// deadline but lets the handler run on and answer; without this, expired work was done
// and answered OK.
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect';
import { parseTimeout as parseConnectTimeout } from '@connectrpc/connect/protocol-connect';
import { parseTimeout as parseGrpcTimeout } from '@connectrpc/connect/protocol-grpc';
import { DeadlineExceededError, remainingMs, withDeadline } from '../domain/deadline.js';

/** The deadline the caller sent, in milliseconds from now; undefined without one. */
function timeoutMs(header: Headers): number | undefined {
  // gRPC and gRPC-Web send grpc-timeout, Connect sends connect-timeout-ms; the handler has
  // capped both (src/rpc/handler.ts) and the framework refused a malformed one.
  const grpc = (header.get('content-type') ?? '').startsWith('application/grpc');
  const parsed = grpc
    ? parseGrpcTimeout(header.get('grpc-timeout'), Number.MAX_SAFE_INTEGER)
    : parseConnectTimeout(header.get('connect-timeout-ms'), Number.MAX_SAFE_INTEGER);
  return parsed.error ? undefined : parsed.timeoutMs;
}

function deadlineExceeded(cause?: unknown): ConnectError {
  return new ConnectError('the deadline passed before the work was done; nothing was written', Code.DeadlineExceeded, undefined, undefined, cause);
}

/** Runs each call under its deadline; a call that arrives expired is not run. */
export const deadlineInterceptor: Interceptor = (next) => (req) =>
  withDeadline(timeoutMs(req.header), async () => {
    const left = remainingMs();
    if (left !== undefined && left <= 0) throw deadlineExceeded();
    try {
      return await next(req);
    } catch (error) {
      if (error instanceof DeadlineExceededError) throw deadlineExceeded(error);
      throw error;
    }
  });
