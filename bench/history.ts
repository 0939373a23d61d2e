// History for `BENCH_HISTORY=<n> npm run bench`: n past charges of the bench's spread users,
// written straight into the database with COPY (through psql's stdin), not through RPCs.
//
// Each seeded transaction is a CHARGE of 1–100 milli-credits of product "bench" by a random
// user of 1..users, with its two postings (user −amount, system:revenue:bench +amount). Ids
// are taken after the current largest one and the id sequence is moved past them, so each
// user's history still chains in id order (balance_after = previous + amount) from the
// balance the user has now, and the user's stored balance is lowered by the same total in the
// same database transaction: VerifyLedger passes over the result. No idempotency rows are
// written (each would carry a JSON result as large as the transaction; the service looks keys
// up by primary key, so their count does not change a charge's plan).
//
// Run it only while nothing else writes to the database (the bench's server is idle then).
import { spawn } from 'node:child_process';
import pg from 'pg';

export interface HistoryOptions {
  databaseUrl: string;
  transactions: number;
  users: number;
  userPrefix: string;
  /** Seed of the user and amount choice (printed by the caller). */
  seed: number;
  /** "random" (default): each transaction's user is drawn; "even": users take turns, so each gets n / users. */
  spread?: 'random' | 'even';
}

export interface HistoryResult {
  transactions: number;
  postings: number;
  seed: number;
  /** COPY of both tables, the balance update and the commit. */
  copySeconds: number;
  analyzeSeconds: number;
  totalSeconds: number;
}

/** mulberry32: a small seeded PRNG, so a seed replays the same history. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ROWS_PER_CHUNK = 20_000;
const AMOUNT_MAX = 100;

function psqlArgs(databaseUrl: string): { args: string[]; env: NodeJS.ProcessEnv } {
  const url = new URL(databaseUrl);
  return {
    args: [
      '-X', '-q', '-v', 'ON_ERROR_STOP=1',
      '-h', url.hostname,
      '-p', url.port || '5432',
      '-U', decodeURIComponent(url.username || 'postgres'),
      '-d', decodeURIComponent(url.pathname.slice(1)),
      '-f', '-',
    ],
    env: { ...process.env, ...(url.password ? { PGPASSWORD: decodeURIComponent(url.password) } : {}) },
  };
}

/** Runs one psql session fed by `produce` on its stdin; resolves to its seconds. */
async function psql(databaseUrl: string, produce: (stdin: NodeJS.WritableStream) => Promise<void>): Promise<number> {
  const started = performance.now();
  const { args, env } = psqlArgs(databaseUrl);
  const child = spawn('psql', args, { env, stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.stdin.on('error', () => undefined); // psql's exit code and stderr tell what went wrong
  await Promise.race([produce(child.stdin), exited]);
  child.stdin.end();
  const code = await exited;
  if (code !== 0) throw new Error(`history: psql failed (exit ${code}): ${stderr.slice(0, 2000)}`);
  return Math.round((performance.now() - started) / 100) / 10;
}

/** Writes `text` to the stream, waiting when its buffer is full. */
function write(stream: NodeJS.WritableStream, text: string): Promise<void> {
  return stream.write(text) ? Promise.resolve() : new Promise((r) => stream.once('drain', () => r()));
}

export async function seedHistory(options: HistoryOptions): Promise<HistoryResult> {
  const started = performance.now();
  const { transactions: n, users } = options;
  const client = new pg.Client({ connectionString: options.databaseUrl });
  await client.connect();
  // Numbers, not bigints: ids and balances (at most 10^15, a CHECK) are exact below 2^53.
  let balances: number[];
  let firstId: number;
  try {
    const rows = await client.query<{ user_id: string; balance: string }>(
      `select user_id, balance_millicredits::text as balance from user_accounts
        where user_id like $1 || '%'`,
      [options.userPrefix],
    );
    const byUser = new Map(rows.rows.map((r) => [r.user_id, Number(r.balance)]));
    balances = Array.from({ length: users + 1 }, (_, i) => (i === 0 ? 0 : byUser.get(`${options.userPrefix}${i}`) ?? -1));
    if (balances.slice(1).some((b) => b < 0)) throw new Error('history: not every bench user exists');
    const max = await client.query<{ id: string }>(`select coalesce(max(id), 0)::text as id from transactions`);
    firstId = Number(max.rows[0]!.id) + 1;
  } finally {
    await client.end();
  }
  // Who pays what: drawn once, used by both COPYs.
  const random = prng(options.seed);
  const userOf = new Uint32Array(n);
  const amountOf = new Uint8Array(n);
  const spent = new Float64Array(users + 1);
  for (let i = 0; i < n; i += 1) {
    const u = options.spread === 'even' ? 1 + (i % users) : 1 + Math.floor(random() * users);
    userOf[i] = u;
    amountOf[i] = 1 + Math.floor(random() * AMOUNT_MAX);
    spent[u]! += amountOf[i]!;
  }
  const short = balances.findIndex((b, u) => u > 0 && b < spent[u]!);
  if (short > 0) throw new Error(`history: ${options.userPrefix}${short} has ${balances[short]} milli-credits, less than its ${spent[short]} of history`);
  const balanceAfter = balances.slice();
  const copy = await psql(options.databaseUrl, async (stdin) => {
    const prefix = options.userPrefix;
    await write(stdin, 'begin;\nset local statement_timeout = 0;\n');
    await write(stdin, 'copy transactions (id, user_id, type, amount_millicredits, balance_after_millicredits, product) from stdin;\n');
    for (let start = 0; start < n; start += ROWS_PER_CHUNK) {
      let chunk = '';
      for (let i = start; i < Math.min(n, start + ROWS_PER_CHUNK); i += 1) {
        const u = userOf[i]!;
        const after = (balanceAfter[u]! -= amountOf[i]!);
        chunk += `${firstId + i}\t${prefix}${u}\tCHARGE\t-${amountOf[i]}\t${after}\tbench\n`;
      }
      await write(stdin, chunk);
    }
    await write(stdin, '\\.\ncopy postings (transaction_id, account, amount_millicredits) from stdin;\n');
    for (let start = 0; start < n; start += ROWS_PER_CHUNK) {
      let chunk = '';
      for (let i = start; i < Math.min(n, start + ROWS_PER_CHUNK); i += 1) {
        const id = firstId + i;
        chunk += `${id}\tuser:${prefix}${userOf[i]}\t-${amountOf[i]}\n${id}\tsystem:revenue:bench\t${amountOf[i]}\n`;
      }
      await write(stdin, chunk);
    }
    await write(stdin, '\\.\n');
    const values = balanceAfter
      .map((b, u) => (u === 0 || b === balances[u] ? '' : `('${prefix}${u}', ${b}::bigint)`))
      .filter((v) => v !== '')
      .join(',\n');
    if (values !== '') {
      await write(stdin, `update user_accounts a set balance_millicredits = v.balance, updated_at = now()
        from (values ${values}) as v (user_id, balance) where a.user_id = v.user_id;\n`);
    }
    const lastId = firstId + n - 1;
    await write(stdin, `select setval(pg_get_serial_sequence('transactions', 'id'), ${Math.max(lastId, 1)});\ncommit;\n`);
  });
  const analyze = await psql(options.databaseUrl, (stdin) => write(stdin, 'analyze transactions;\nanalyze postings;\nanalyze user_accounts;\n'));
  return {
    transactions: n,
    postings: 2 * n,
    seed: options.seed,
    copySeconds: copy,
    analyzeSeconds: analyze,
    totalSeconds: Math.round((performance.now() - started) / 100) / 10,
  };
}
