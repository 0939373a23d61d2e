// Serves the built ops console (console/, bundled by console/build.mjs into dist/console)
// at /console/ on the main port. The directory is flat: a name is served only when it is
// one path segment of [A-Za-z0-9._-] not starting with a dot, so no request can reach a
// file outside it. GET and HEAD only. index.html is revalidated on every load; the bundles
// carry a content hash in their names and are cached for a year. The CSP allows scripts,
// styles and calls from this origin only (and data: images, the deposit QR codes).
import { promises as fs } from 'node:fs';
import type http from 'node:http';
import type http2 from 'node:http2';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

export const CONSOLE_PREFIX = '/console';

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};
const SAFE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;
const HASHED = /-[A-Z0-9]{8}\.(?:js|css)$/;
const HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
};

/**
 * Where the built console is: dist/console beside dist/src when running compiled
 * (`npm start`), the repository's dist/console when running from source (`npm run dev`).
 */
export function consoleDirectory(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const root = path.resolve(here, '../..');
  return path.basename(root) === 'dist' ? path.join(root, 'console') : path.join(root, 'dist', 'console');
}

/** True when the path is the console's (answered by serveConsole). */
export function isConsolePath(url: string | undefined): boolean {
  const pathname = (url ?? '').split('?', 1)[0] ?? '';
  return pathname === CONSOLE_PREFIX || pathname.startsWith(`${CONSOLE_PREFIX}/`);
}

export async function serveConsole(req: NodeRequest, res: NodeResponse, directory = consoleDirectory()): Promise<void> {
  const out = res as http.ServerResponse;
  const pathname = (req.url ?? '').split('?', 1)[0] ?? '';
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    out.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }).end('only GET and HEAD\n');
    return;
  }
  if (pathname === CONSOLE_PREFIX) {
    out.writeHead(308, { location: `${CONSOLE_PREFIX}/` }).end();
    return;
  }
  const name = pathname.slice(CONSOLE_PREFIX.length + 1) || 'index.html';
  const type = CONTENT_TYPES[path.extname(name)];
  if (!SAFE_NAME.test(name) || type === undefined) return notFound(out, req.method);
  let body: Buffer;
  try {
    body = await fs.readFile(path.join(directory, name));
  } catch {
    if (name === 'index.html') {
      out.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
      out.end(req.method === 'HEAD' ? undefined : 'the console is not built: run npm run build\n');
      return;
    }
    return notFound(out, req.method);
  }
  out.writeHead(200, {
    ...HEADERS,
    'content-type': type,
    'content-length': body.byteLength,
    'cache-control': HASHED.test(name) ? 'public, max-age=31536000, immutable' : 'no-cache',
  });
  out.end(req.method === 'HEAD' ? undefined : body);
}

function notFound(out: http.ServerResponse, method: string | undefined): void {
  out.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
  out.end(method === 'HEAD' ? undefined : 'not found\n');
}
