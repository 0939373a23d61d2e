// Bundles the ops console (console/src) with esbuild into dist/console: one hashed script,
// one hashed stylesheet and an index.html naming them. Run by `npm run build`; the server
// serves the result at /console/ (src/rpc/console-static.ts).
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(here, '..', 'dist', 'console');

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
const result = await esbuild.build({
  entryPoints: [path.join(here, 'src', 'main.tsx')],
  outdir: out,
  entryNames: '[name]-[hash]',
  bundle: true,
  minify: true,
  sourcemap: true,
  format: 'esm',
  target: 'es2022',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  tsconfig: path.join(here, 'tsconfig.json'),
  metafile: true,
  logLevel: 'warning',
});
const outputs = Object.keys(result.metafile.outputs).map((file) => path.basename(file));
const script = outputs.find((file) => file.endsWith('.js'));
const style = outputs.find((file) => file.endsWith('.css'));
if (!script || !style) throw new Error(`console build: expected a script and a stylesheet, got ${outputs.join(', ')}`);
const html = (await readFile(path.join(here, 'index.html'), 'utf8')).replace('%SCRIPT%', script).replace('%STYLE%', style);
await writeFile(path.join(out, 'index.html'), html);
