// npm run ledger:verify (in the image: node dist/src/cli/verify-ledger.js) — checks every
// ledger invariant and exits 1 if any is broken.
import { loadConfig } from '../config.js';
import { verifyLedger } from '../ledger/verify/verify.js';
import { openDatabase } from '../storage/database.js';
import { runCli } from './run.js';

await runCli(async () => {
  const config = loadConfig();
  const db = await openDatabase({ ...(config.databaseUrl ? { databaseUrl: config.databaseUrl } : {}), dataDir: config.dataDir });
  try {
    const report = await verifyLedger(db);
    for (const v of report.violations) {
      process.stdout.write(`${v.invariant}\t${v.account || v.transactionId}\t${v.description}\n`);
    }
    process.stdout.write(
      `${report.ok ? 'ok' : 'VIOLATIONS'}: ${report.accountsChecked} accounts, ${report.transactionsChecked} transactions, ` +
        `${report.violations.length} violations\n`,
    );
    process.exitCode = report.ok ? 0 : 1;
  } finally {
    await db.close();
  }
});
