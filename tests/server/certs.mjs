// Certificates made at test time with the `openssl` CLI: a CA, and leaf certificates it
// signs (server: localhost and 127.0.0.1; client: clientAuth). Every file is PEM, in a
// fresh temporary directory the caller removes with `rm()`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A directory for certificates; `rm()` removes it. */
export function certDir() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'vx-tls-'));
  return { dir, file: (name) => path.join(dir, name), rm: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A self-signed CA: { cert, key } paths. */
export function makeCa(d, name = 'ca', cn = 'vxevents test CA') {
  const cert = d.file(`${name}.pem`);
  const key = d.file(`${name}.key`);
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${cn}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], d.dir);
  return { cert, key };
}

/**
 * A leaf certificate signed by `ca` (which may itself be an intermediate): { cert, key,
 * fingerprint }. opts.client: a client certificate; opts.cn; opts.ca: true makes it an
 * intermediate CA; opts.names: subjectAltName entries (default localhost, 127.0.0.1).
 */
export function makeCert(d, ca, name, opts = {}) {
  const cert = d.file(`${name}.pem`);
  const key = d.file(`${name}.key`);
  const csr = d.file(`${name}.csr`);
  const ext = d.file(`${name}.ext`);
  openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key,
    '-out', csr, '-subj', `/CN=${opts.cn || name}`], d.dir);
  const lines = [];
  if (opts.ca) lines.push('basicConstraints=critical,CA:TRUE', 'keyUsage=critical,keyCertSign,cRLSign');
  else if (opts.client) lines.push('extendedKeyUsage=clientAuth');
  else lines.push(`subjectAltName=${opts.names || 'DNS:localhost,IP:127.0.0.1'}`, 'extendedKeyUsage=serverAuth');
  writeFileSync(ext, `${lines.join('\n')}\n`);
  openssl(['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial',
    '-out', cert, '-days', '2', '-extfile', ext], d.dir);
  return { cert, key, fingerprint: new X509Certificate(readFileSync(cert)).fingerprint256 };
}

export const pem = (file) => readFileSync(file, 'utf8');
