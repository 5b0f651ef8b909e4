// A private redis-server for one test: a free loopback port, no persistence, stopped by
// the test. Restartable on the same port to simulate an outage; pause/resume to simulate a
// stall.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';

export const REDIS_SERVER = process.env.REDIS_SERVER || 'redis-server';

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function ping(port, tlsOpts) {
  return new Promise((resolve) => {
    const sock = tlsOpts
      ? tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(tlsOpts.ca),
        cert: tlsOpts.clientCert && readFileSync(tlsOpts.clientCert),
        key: tlsOpts.clientKey && readFileSync(tlsOpts.clientKey),
        checkServerIdentity: () => undefined /* readiness only: the names are the test's */ }, () => sock.write('PING\r\n'))
      : net.connect({ host: '127.0.0.1', port }, () => sock.write('PING\r\n'));
    sock.on('data', (d) => { sock.destroy(); resolve(d.toString().startsWith('+PONG')); });
    sock.on('error', () => resolve(false));
    setTimeout(() => { sock.destroy(); resolve(false); }, 500);
  });
}

/**
 * opts.tls { cert, key, ca, authClients ('yes' | 'no' | 'optional'), clientCert, clientKey }:
 * the port is Redis's TLS port (no plaintext port), `url` is rediss://localhost:PORT.
 */
export async function startRedis(port, opts = {}) {
  port = port || (await freePort());
  const t = opts.tls;
  const args = t
    ? ['--port', '0', '--tls-port', String(port), '--tls-cert-file', t.cert, '--tls-key-file', t.key,
      '--tls-ca-cert-file', t.ca, '--tls-auth-clients', t.authClients || 'no']
    : ['--port', String(port)];
  const proc = spawn(REDIS_SERVER, [...args, '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--protected-mode', 'no'], { stdio: 'ignore' });
  const exited = new Promise((r) => proc.on('exit', r));
  for (let i = 0; i < 100; i++) {
    if (await ping(port, t)) break;
    if (proc.exitCode !== null) throw new Error(`redis-server exited (${proc.exitCode})`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    proc,
    url: t ? `rediss://localhost:${port}` : `redis://127.0.0.1:${port}`,
    /** Stall the server (SIGSTOP): connections stay open, nothing is answered. */
    pause() {
      proc.kill('SIGSTOP');
    },
    resume() {
      proc.kill('SIGCONT');
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGCONT');
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      await exited;
    },
  };
}
