// The service process: read configuration, open the database (migrating it), serve, and
// shut down gracefully on SIGTERM or SIGINT.
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './log.js';
import { DataDirLockedError } from './storage/datadir-lock.js';
import { startTracing } from './telemetry.js';

async function main(): Promise<void> {
  const config = loadConfig();
  // The seed is now only a public node inside config.wallet: drop the text from the
  // environment, where child processes and diagnostics could otherwise read it.
  delete process.env.WALLET_SEED;
  const log = createLogger(config.logLevel);
  if (config.tokens.size === 0) {
    log.warn('no BILLING_TOKENS configured: running OPEN for local development, bound to loopback only');
  }
  if (config.wallet.createdSeedFile) {
    log.warn(
      { file: config.wallet.createdSeedFile },
      'generated a new wallet seed: back this file up now (offline); it is the only key to the funds users deposit',
    );
  }
  // Tracing starts before the app is imported: the pg instrumentation patches pg as it is
  // loaded, and the app's import loads it (through MikroORM). A static import would load it first.
  const tracing = config.tracing ? await startTracing(config.tracing) : undefined;
  const { build } = await import('./app.js');
  const app = await build(config, { log });
  log.info(
    {
      port: app.server.port,
      host: config.host,
      metricsPort: config.metricsPort,
      database: app.db.kind,
      tracing: config.tracing ? config.tracing.serviceName : 'off',
      catalogue: config.catalogue.name,
      wallet: app.wallet.enabled
        ? { keys: config.wallet.keys?.source, chains: app.wallet.watchers.map((w) => w.name) }
        : 'off',
    },
    'billing service listening',
  );
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    app
      .close()
      .then(() => tracing?.shutdown())
      .then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError || error instanceof DataDirLockedError) {
    process.stderr.write(`${error.message}\n`);
  } else {
    process.stderr.write(`failed to start: ${(error as Error).stack ?? String(error)}\n`);
  }
  process.exit(1);
});
