#!/usr/bin/env node
// The `billing` command (package.json "bin"; `npx billing …` in the project folder): runs the
// compiled ops CLI, dist/src/cli/billing.js. Kept as plain JavaScript so it works before and
// without a build, and says what to do when dist/ is missing. The CLI itself runs on Node 20
// as well as the project's Node 24 (see README, "The ops CLI").
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const cli = fileURLToPath(new URL('../dist/src/cli/billing.js', import.meta.url));
if (!existsSync(cli)) {
  process.stderr.write('billing: the CLI is not built (dist/src/cli/billing.js is missing): run npm run build\n');
  process.exit(2);
}
await import(pathToFileURL(cli).href);
