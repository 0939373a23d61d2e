// npm run migrate (in the image: node dist/src/cli/migrate.js) — applies pending migrations
// to the configured database and exits.
import { loadConfig } from '../config.js';
import { databaseSettings, migrate, openDatabase } from '../storage/database.js';
import { runCli } from './run.js';

await runCli(async () => {
  const config = loadConfig();
  const db = await openDatabase({
    ...(config.databaseUrl ? { databaseUrl: config.databaseUrl } : {}),
    ...databaseSettings(config),
    dataDir: config.dataDir,
    migrate: false,
  });
  try {
    const applied = await migrate(db);
    process.stdout.write(applied.length > 0 ? `applied: ${applied.join(', ')}\n` : 'nothing to apply\n');
  } finally {
    await db.close();
  }
});
