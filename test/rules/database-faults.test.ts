// Which errors are database faults (rpc/errors.ts databaseFault): the driver's and the
// socket's, that the server-tier restart test meets only when the timing falls that way.
import { describe, expect, it } from 'vitest';
import { databaseFault } from '../../src/rpc/errors.js';

const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code });

describe('databaseFault', () => {
  it.each([
    ['connection refused', withCode('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:5432')],
    ['connection reset', withCode('ECONNRESET')],
    ['broken pipe', withCode('EPIPE')],
    ['refused on every address', new AggregateError([withCode('ECONNREFUSED'), withCode('ECONNREFUSED')], '')],
    ['terminated by the server', new Error('Connection terminated unexpectedly')],
    ['terminated on a connect timeout', new Error('Connection terminated due to connection timeout', { cause: new Error('timeout expired') })],
    ['no pooled connection in time', new Error('timeout exceeded when trying to connect')],
    ['a client broken by an earlier error', new Error('Client has encountered a connection error and is not queryable')],
    ['a pool closed at shutdown', new Error('Cannot use a pool after calling end on the pool')],
    ['a fault as the cause of a wrapper', new Error('wrapped', { cause: withCode('57P01') })],
    ['class 08', withCode('08001')],
    ['class 53', withCode('53300')],
    ['read-only', withCode('25006')],
    ['cancelled by the statement timeout cap', withCode('57014')],
    ['a lock not available in time', withCode('55P03')],
  ])('%s is DATABASE_UNAVAILABLE', (_, error) => {
    expect(databaseFault(error)).toBe('DATABASE_UNAVAILABLE');
  });

  it.each([['40001'], ['40P01']])('%s is DATABASE_CONFLICT', (code) => {
    expect(databaseFault(withCode(code))).toBe('DATABASE_CONFLICT');
  });

  it.each([
    ['a unique violation', withCode('23505')],
    ['a raised exception', withCode('P0001')],
    ['a syntax error', withCode('42601')],
    ['a plain Error', new Error('unbalanced postings')],
    ['a message that only mentions a connection', new Error('bug: Connection terminated unexpectedly')],
    ['a string', 'ECONNREFUSED'],
    ['undefined', undefined],
  ])('%s is not a database fault', (_, error) => {
    expect(databaseFault(error)).toBeUndefined();
  });

  it('does not loop on a cause that points back at itself', () => {
    const error = new Error('loop') as Error & { cause?: unknown };
    error.cause = error;
    expect(databaseFault(error)).toBeUndefined();
  });
});
