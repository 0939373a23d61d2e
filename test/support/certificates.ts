// Certificates generated at test time with the openssl CLI: a CA, server certificates for
// 127.0.0.1 and localhost, and client certificates whose subject CN names a caller.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const OPENSSL = '/usr/bin/openssl';

export interface Pair {
  readonly cert: Buffer;
  readonly key: Buffer;
}

export class CertificateAuthority {
  readonly dir = mkdtempSync(join(tmpdir(), 'billing-ca-'));
  readonly cert: Buffer;
  private readonly keyFile = join(this.dir, 'ca.key');
  private readonly certFile = join(this.dir, 'ca.crt');
  private serial = 0;

  constructor(readonly name: string) {
    openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', `/CN=${name}`, '-keyout', this.keyFile, '-out', this.certFile]);
    this.cert = readFileSync(this.certFile);
  }

  /** A server certificate for 127.0.0.1 and localhost. */
  server(cn = 'billing-server'): Pair {
    return this.issue(cn, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth');
  }

  /** A client certificate whose subject CN is `cn`. */
  client(cn: string): Pair {
    return this.issue(cn, 'extendedKeyUsage=clientAuth');
  }

  private issue(cn: string, extensions: string): Pair {
    this.serial += 1;
    const base = join(this.dir, `${this.serial}`);
    writeFileSync(`${base}.ext`, `${extensions}\n`);
    openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${cn}`, '-keyout', `${base}.key`, '-out', `${base}.csr`]);
    openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', this.certFile, '-CAkey', this.keyFile, '-set_serial', String(1000 + this.serial), '-days', '2', '-extfile', `${base}.ext`, '-out', `${base}.crt`]);
    return { cert: readFileSync(`${base}.crt`), key: readFileSync(`${base}.key`) };
  }
}

function openssl(args: string[]): void {
  execFileSync(OPENSSL, args, { stdio: ['ignore', 'ignore', 'pipe'] });
}
