// The container, without a Docker engine (this machine has none). Two claims:
// 1. The Dockerfile passes a linter (dockerfile-utils, the checker behind the Docker
//    language server) and says what the image must: two stages, HEALTHCHECK on the health
//    service, a VOLUME for the data directory, not root; .dockerignore keeps installed,
//    built and local-data trees out of the build; compose.yaml is a stack on PostgreSQL.
// 2. The image's own steps work: the test reads the Dockerfile's instructions (dockerfile-ast)
//    and carries them out in a temporary folder, one folder per stage (WORKDIR and absolute
//    paths map into it): COPY from the build context filtered by .dockerignore or from an
//    earlier stage, RUN under the stage's ENV. The final folder then holds only compiled
//    JavaScript and production dependencies; its CMD, run as the image would, refuses the
//    embedded database in production, serves on PostgreSQL, answers its HEALTHCHECK command,
//    runs the CLIs the README documents for the image, and stops on SIGTERM with exit 0.
// A RUN step the test does not know (anything but npm) fails it: teach it below, so that no
// step of the image goes untried. npm steps get a cache of their own (a copy of this
// machine's, for speed; `npm cache clean` in the image must not empty the user's cache).
import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { promisify } from 'node:util';
import dockerignoreFactory from '@balena/dockerignore';
import { createClient } from '@connectrpc/connect';
import { createGrpcTransport } from '@connectrpc/connect-node';
import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { validate } from 'dockerfile-utils';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { BillingService } from '../../gen/billing/v1/billing_service_pb.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const run = promisify(execFile);
const DOCKERFILE = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const DOCKERIGNORE = readFileSync(join(ROOT, '.dockerignore'), 'utf8');
const instructions = DockerfileParser.parse(DOCKERFILE).getInstructions();

/** The instructions of each stage, in order (a stage starts at its FROM). */
function stages(): Instruction[][] {
  const out: Instruction[][] = [];
  for (const instruction of instructions) {
    if (instruction.getKeyword() === 'FROM') out.push([]);
    out.at(-1)!.push(instruction);
  }
  return out;
}

function withoutNpmVariables(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined && !/^npm_/i.test(e[0])));
}

/** The exec-form argument list after `CMD` (of a CMD or a HEALTHCHECK … CMD instruction). */
function execForm(instruction: Instruction): string[] {
  const text = instruction.getArgumentsContent() ?? '';
  const json = instruction.getKeyword() === 'CMD' ? text : text.slice(text.indexOf('CMD') + 3);
  const args = JSON.parse(json.trim()) as unknown;
  expect(Array.isArray(args) && args.every((a) => typeof a === 'string'), `${instruction.getKeyword()} is in exec form`).toBe(true);
  return args as string[];
}

// The package is CommonJS (`module.exports = factory`) with a declaration that says `export
// default`: under NodeNext the default import is the factory itself.
const ignore = dockerignoreFactory as unknown as typeof dockerignoreFactory.default;

function dockerignore() {
  return ignore().add(DOCKERIGNORE.split('\n'));
}

/** An instruction's arguments with their flags (`--from=build …`), as written. */
function argumentsOf(instruction: Instruction): string {
  return instruction.getTextContent().slice(instruction.getKeyword().length).trim().replace(/\s*\\\n\s*/g, ' ');
}

describe('the Dockerfile, .dockerignore and compose.yaml', () => {
  it('pass the linter and say what the image needs', () => {
    const problems = validate(DOCKERFILE).map((d) => `line ${d.range.start.line + 1}: ${d.message}`);
    expect(problems).toEqual([]);

    const [build, final] = stages();
    expect(stages()).toHaveLength(2);
    expect(build![0]!.getArgumentsContent()).toMatch(/^node:24[-\w.]* AS build$/);
    expect(final![0]!.getArgumentsContent()).toMatch(/^node:24[-\w.]*$/);
    const keyword = (stage: Instruction[], k: string) => stage.filter((i) => i.getKeyword() === k);
    // The final stage takes nothing from the build context but the package files and config/:
    // the compiled tree comes from the build stage.
    expect(keyword(final!, 'COPY').map(argumentsOf)).toEqual([
      'package.json package-lock.json ./',
      '--from=build /app/dist ./dist',
      'config ./config',
    ]);
    expect(keyword(final!, 'VOLUME').map((i) => i.getArgumentsContent())).toEqual(['/data']);
    const env = Object.fromEntries(keyword(final!, 'ENV').flatMap((i) => (i.getArguments().map((a) => a.getValue().split('=')))));
    expect(env).toMatchObject({ NODE_ENV: 'production', BILLING_DATA_DIR: '/data' });
    expect(keyword(final!, 'USER').map((i) => i.getArgumentsContent())).toEqual(['node']);
    expect(execForm(keyword(final!, 'HEALTHCHECK')[0]!)).toEqual(['node', 'dist/src/cli/healthcheck.js']);
    // The CMD is `npm start`'s node command without npm (which would sit between the
    // container's signals and the server).
    const start = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: { start: string } }).scripts.start;
    expect(execForm(keyword(final!, 'CMD')[0]!).join(' ')).toBe(start.replace(/^exec /, ''));

    const ig = dockerignore();
    for (const path of ['node_modules/pino/package.json', 'dist/src/main.js', 'data/pglite/PG_VERSION', 'data/wallet.seed', '.git/HEAD', '.env', '.env.local', '.bench/last.json', 'debug.log']) {
      expect([path, ig.ignores(path)]).toEqual([path, true]);
    }
    for (const path of ['package.json', 'package-lock.json', 'src/main.ts', 'gen/billing/v1/types_pb.ts', 'config/muse.json', 'console/src/main.tsx', 'tsconfig.build.json', 'proto/billing/v1/types.proto']) {
      expect([path, ig.ignores(path)]).toEqual([path, false]);
    }

    const compose = parseYaml(readFileSync(join(ROOT, 'compose.yaml'), 'utf8')) as {
      services: Record<string, { build?: string; image?: string; environment?: Record<string, string>; volumes?: string[]; healthcheck?: unknown; depends_on?: Record<string, { condition: string }> }>;
    };
    expect(Object.keys(compose.services).sort()).toEqual(['billing', 'postgres']);
    const billing = compose.services.billing!;
    expect(billing.build).toBe('.');
    expect(billing.environment!.DATABASE_URL).toMatch(/^postgres:\/\/\w+:\w+@postgres:5432\/\w+$/);
    expect(billing.volumes!.some((v) => v.endsWith(':/data'))).toBe(true);
    expect(billing.depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
    expect(compose.services.postgres!.image).toMatch(/^postgres:15/);
    expect(compose.services.postgres!.healthcheck).toBeDefined();
    // No secret in the file: the tokens come from the environment.
    expect(billing.environment!.BILLING_TOKENS).toMatch(/^\$\{BILLING_TOKENS:\?/);
  });
});

describe("the image's build steps, in a temporary folder", () => {
  const work = mkdtempSync(join(tmpdir(), 'billing-image-'));
  const cache = join(work, 'npm-cache');
  /** Each stage's root folder and ENV, by stage name (or index). */
  const built = new Map<string, { root: string; workdir: string; env: Record<string, string> }>();
  let final: { root: string; workdir: string; env: Record<string, string>; cmd: string[]; healthcheck: string[] };
  let database: TestDatabase | undefined;
  const children: ReturnType<typeof spawn>[] = [];

  afterAll(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await database?.drop();
    rmSync(work, { recursive: true, force: true });
  });

  /** The build context as `docker build .` sends it: every file not matched by .dockerignore. */
  function copyContext(from: string, to: string, ig = dockerignore(), rel = ''): void {
    for (const entry of readdirSync(join(from, rel), { withFileTypes: true })) {
      const path = rel === '' ? entry.name : `${rel}/${entry.name}`;
      if (ig.ignores(path)) continue; // .dockerignore has no `!` exceptions, so a directory can be skipped whole
      if (entry.isDirectory()) copyContext(from, to, ig, path);
      else cpSync(join(from, path), join(to, path));
    }
  }

  /** RUN steps that are not npm: what each does in the folder instead. */
  const SYSTEM_STEPS: Record<string, (map: (p: string) => string) => void> = {
    // The volume's mount point, owned by the image's user: a folder (there is no `node` user here).
    'mkdir -p /data && chown node:node /data': (map) => mkdirSync(map('/data'), { recursive: true }),
  };

  beforeAll(async () => {
    mkdirSync(cache, { recursive: true });
    // Hard links: as fast as a move, and what npm writes or deletes in it stays in the copy.
    await run('cp', ['-al', join(homedir(), '.npm', '_cacache'), join(cache, '_cacache')]).catch(() => undefined);
    for (const [index, stage] of stages().entries()) {
      const from = stage[0]!;
      const name = /\bAS (\w+)$/i.exec(from.getArgumentsContent() ?? '')?.[1] ?? String(index);
      const root = join(work, `stage-${name}`);
      const state = { root, workdir: '/', env: {} as Record<string, string> };
      const map = (p: string) => join(root, posix.resolve(state.workdir, p));
      built.set(name, state);
      let cmd: string[] = [];
      let healthcheck: string[] = [];
      for (const instruction of stage.slice(1)) {
        const args = argumentsOf(instruction);
        switch (instruction.getKeyword()) {
          case 'WORKDIR':
            state.workdir = posix.resolve(state.workdir, args);
            mkdirSync(map('.'), { recursive: true });
            break;
          case 'ENV':
            for (const a of instruction.getArguments()) {
              const [k, v] = a.getValue().split('=') as [string, string];
              state.env[k] = v;
            }
            break;
          case 'COPY': {
            const words = args.split(/\s+/);
            const fromStage = /^--from=(\w+)$/.exec(words[0]!)?.[1];
            const paths = fromStage ? words.slice(1) : words;
            const dest = paths.pop()!;
            for (const src of paths) {
              if (fromStage) {
                const source = built.get(fromStage)!;
                cpSync(join(source.root, posix.resolve(source.workdir, src)), map(dest), { recursive: true });
              } else if (src === '.') {
                copyContext(ROOT, map(dest));
              } else {
                const target = dest.endsWith('/') ? join(map(dest), posix.basename(src)) : map(dest);
                mkdirSync(dirname(target), { recursive: true });
                cpSync(join(ROOT, src), target, { recursive: true });
              }
            }
            break;
          }
          case 'RUN':
            if (args.startsWith('npm ')) {
              await run('sh', ['-c', args], {
                cwd: map('.'),
                // This machine's environment (its registry and CA settings) without the npm_*
                // variables of the `npm test` that runs this file, then the stage's ENV.
                env: { ...withoutNpmVariables(process.env), npm_config_cache: cache, ...state.env },
                maxBuffer: 64 << 20,
              });
            } else {
              const step = SYSTEM_STEPS[args];
              if (!step) throw new Error(`RUN ${args}: a step this test does not know; add it to SYSTEM_STEPS`);
              step(map);
            }
            break;
          case 'CMD':
            cmd = execForm(instruction);
            break;
          case 'HEALTHCHECK':
            healthcheck = execForm(instruction);
            break;
          case 'VOLUME':
          case 'USER':
          case 'EXPOSE':
            break; // run-time settings, checked by the lint test
          default:
            throw new Error(`${instruction.getKeyword()}: an instruction this test does not carry out`);
        }
      }
      final = { ...state, cmd, healthcheck };
    }
    database = await createTestDatabase();
  }, 600_000);

  /** Runs a command of the image (exec form, `node` is this Node 24) in the final stage's WORKDIR. */
  function inImage(args: string[], env: Record<string, string>) {
    expect(args[0]).toBe('node');
    // As in the image: its ENV, with the volume's path mapped into the stage folder.
    const imageEnv = { ...final.env, BILLING_DATA_DIR: join(final.root, final.env.BILLING_DATA_DIR!) };
    const child = spawn(process.execPath, args.slice(1), {
      cwd: join(final.root, final.workdir),
      env: { PATH: '/usr/bin:/bin', ...imageEnv, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.push(child);
    let output = '';
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    return { child, output: () => output, exit };
  }

  it('leave only compiled JavaScript and production dependencies in the final stage', () => {
    const app = join(final.root, final.workdir);
    expect(readdirSync(app).sort()).toEqual(['config', 'dist', 'node_modules', 'package-lock.json', 'package.json']);
    expect(existsSync(join(app, 'dist/src/main.js'))).toBe(true);
    expect(existsSync(join(app, 'dist/src/cli/healthcheck.js'))).toBe(true);
    expect(existsSync(join(app, 'dist/console/index.html'))).toBe(true); // the ops console
    const installed = (name: string) => existsSync(join(app, 'node_modules', name, 'package.json'));
    const dev = ['tsx', 'esbuild', 'typescript', 'vitest', '@bufbuild/buf', '@bufbuild/protoc-gen-es', 'playwright-core', 'solc', 'node', '@foundry-rs/anvil-linux-amd64', 'preact'];
    expect(dev.filter(installed)).toEqual([]);
    const production = ['pino', '@connectrpc/connect-node', '@mikro-orm/postgresql', '@bufbuild/protobuf', 'pg', 'ethers'];
    expect(production.filter(installed)).toEqual(production);
    // No TypeScript anywhere but declaration files inside dependencies.
    const ts = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
        e.isDirectory() ? ts(join(dir, e.name)) : /\.tsx?$/.test(e.name) && !e.name.endsWith('.d.ts') ? [join(dir, e.name)] : [],
      );
    expect(ts(join(app, 'dist'))).toEqual([]);
  });

  it('give an image whose CMD refuses the embedded database in production, serves on PostgreSQL, answers its HEALTHCHECK and stops on SIGTERM', async () => {
    const refused = inImage(final.cmd, { BILLING_TOKENS: 'ops:image-test-token-0123456789=admin', PORT: '0', METRICS_PORT: '0' });
    expect(await refused.exit).toBe(1);
    expect(refused.output()).toContain('DATABASE_URL: required when NODE_ENV=production');
    expect(refused.output()).toContain('BILLING_ALLOW_EMBEDDED=1');

    const token = 'image-test-token-0123456789';
    const env = { DATABASE_URL: database!.url, BILLING_TOKENS: `ops:${token}=spend+grant+admin`, PORT: '0', METRICS_PORT: '0', HOST: '127.0.0.1' };
    // The CLIs the README documents for the image.
    const migrate = inImage(['node', 'dist/src/cli/migrate.js'], env);
    expect([await migrate.exit, migrate.output()]).toEqual([0, expect.any(String)]);
    const server = inImage(final.cmd, env);
    let port: number | undefined;
    const deadline = Date.now() + 90_000;
    while (port === undefined) {
      const match = /"port":(\d+).*"billing service listening"/.exec(server.output());
      if (match) port = Number(match[1]);
      else if (server.child.exitCode !== null) throw new Error(`exited before listening:\n${server.output()}`);
      else if (Date.now() > deadline) throw new Error(`did not start:\n${server.output()}`);
      else await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const health = inImage(final.healthcheck, { PORT: String(port) });
    expect([await health.exit, health.output().trim()]).toEqual([0, 'SERVING']);

    const billing = createClient(BillingService, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
    await billing.grant(
      { userId: 'image', idempotencyKey: 'image-1', grant: { case: 'amountMillicredits', value: 2500n }, reason: 'image test' },
      { headers: { authorization: `Bearer ${token}` } },
    );
    const cliEnv = { BILLING_URL: `http://127.0.0.1:${port}`, BILLING_TOKEN: token };
    const balance = inImage(['node', 'dist/src/cli/billing.js', '--json', 'balance', 'image'], cliEnv);
    expect(await balance.exit).toBe(0);
    expect(JSON.parse(balance.output())).toMatchObject({ balance: { balanceMillicredits: '2500' } });
    const verify = inImage(['node', 'dist/src/cli/verify-ledger.js'], env);
    expect([await verify.exit, verify.output()]).toEqual([0, expect.stringContaining('ok')]);

    server.child.kill('SIGTERM');
    expect(await server.exit).toBe(0);
    const after = inImage(final.healthcheck, { PORT: String(port) });
    expect(await after.exit).toBe(1);
    expect(after.output()).toContain('unhealthy');
  }, 180_000);
});
