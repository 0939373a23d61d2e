// Runs test files with every database they create reached through a PgBouncer of their own
// in transaction mode: `npm run test:pooler` (CI runs it after `npm test`). The idempotency
// and concurrency tests then exercise the service exactly as it runs behind a pooler.
import { spawn } from 'node:child_process';
import { startPgBouncer } from './pgbouncer.js';

const files = process.argv.slice(2);
const bouncer = await startPgBouncer({ max_client_conn: 2000, default_pool_size: 40 });
const url = bouncer.url('postgres');
console.log(`through PgBouncer (transaction mode): TEST_DATABASE_URL=${url}`);
const child = spawn(process.execPath, ['node_modules/vitest/vitest.mjs', 'run', ...files], {
  stdio: 'inherit',
  env: { ...process.env, TEST_DATABASE_URL: url },
});
const code = await new Promise<number>((resolve) => child.once('exit', (c) => resolve(c ?? 1)));
await bouncer.close();
process.exit(code);
