// TLS on the standalone server's own port (--tls-cert/--tls-key/--tls-ca): wss:// with the
// `ws` client, https SSE and the publish API (curl), ALPN, certificate reload on SIGHUP,
// client certificates, and what a TLS port does with plaintext, garbage and oversized
// records. Certificates are made for each run with the openssl CLI (certs.mjs).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, writeFileSync, readFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';
import tls from 'node:tls';
import { certDir, makeCa, makeCert } from './certs.mjs';
import { connect, isEvent, ms, nonce, startServer, waitFor, withServer, withTimeout } from './helpers.mjs';

let d;
let ca;
let srv;
before(() => {
  d = certDir();
  ca = makeCa(d);
  srv = makeCert(d, ca, 'srv');
});
after(() => d.rm());

const tlsArgs = (cert = srv) => ['--tls-cert', cert.cert, '--tls-key', cert.key];

/** curl over https with the test CA: { status, body }; `input` goes to its stdin. */
function curl(url, args = [], input = undefined) {
  return new Promise((resolve, reject) => {
    const child = execFile('curl', ['-sS', '--max-time', String(ms(5000) / 1000), '--cacert', ca.cert, '-o', '-',
      '-w', '\n%{http_code}', ...args, url], { maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      if (err) {
        reject(new Error(`curl ${url}: ${stderr || err.message}`));
        return;
      }
      const i = stdout.lastIndexOf('\n');
      resolve({ status: Number(stdout.slice(i + 1)), body: stdout.slice(0, i) });
    });
    child.stdin.end(input);
  });
}

function curlPublish(server, body) {
  return curl(`${server.url}/api/broadcast`, ['-H', `Authorization: Bearer ${server.apiKey}`,
    '-H', 'content-type: application/json', '--data-binary', '@-'], JSON.stringify(body));
}

/** A TLS handshake: resolves with { socket, cert (the server's), alpn }. */
function handshake(port, opts = {}) {
  return withTimeout(new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: readFileSync(ca.cert), ...opts }, () => {
      resolve({ socket, cert: socket.getPeerX509Certificate(), alpn: socket.alpnProtocol });
    });
    socket.once('error', reject);
  }), ms(5000), 'a TLS handshake');
}

/** Resolves when the server closes `sock` (or it errors); rejects after timeoutMs. */
function closedBy(sock, what, timeoutMs = ms(5000)) {
  return withTimeout(new Promise((resolve) => {
    sock.on('error', () => {});
    sock.on('close', resolve);
    sock.resume();
  }), timeoutMs, what);
}

const wsCa = () => ({ wsOptions: { ca: readFileSync(ca.cert) } });

describe('TLS listener', () => {
  test('wss:// with ws (ca option), the publish API over https with curl, ALPN http/1.1', async () => {
    await withServer({ args: tlsArgs() }, async (server) => {
      assert.equal(server.tls, true);
      assert.match(server.wsUrl, /^wss:\/\//);
      const c = await connect(server, wsCa());
      const ch = `tls-${nonce()}`;
      await c.subscribe(ch);
      const res = await curlPublish(server, { channel: ch, event: 'e', data: { n: 1 } });
      assert.equal(res.status, 200, res.body);
      assert.deepEqual(JSON.parse(res.body), { success: true });
      await c.next(isEvent(ch, 'e', { n: 1 }), ms(3000), 'the event over wss');
      // A big broadcast (several TLS records) arrives whole.
      const big = 'x'.repeat(200000);
      assert.equal((await curlPublish(server, { channel: ch, event: 'big', data: big })).status, 200);
      await c.next(isEvent(ch, 'big', big), ms(5000), 'the 200 kB event over wss');
      const h = await curl(`${server.url}/health`);
      assert.equal(h.status, 200);
      assert.equal(JSON.parse(h.body).connections, 1);
      const hs = await handshake(server.port, { ALPNProtocols: ['h2', 'http/1.1'] });
      assert.equal(hs.alpn, 'http/1.1');
      assert.equal(hs.cert.fingerprint256, srv.fingerprint);
      hs.socket.destroy();
    });
  });

  test('https SSE: the stream and a broadcast on it', async () => {
    await withServer({ args: tlsArgs() }, async (server) => {
      const ch = `sse-${nonce()}`;
      let buf = '';
      let waiter = null;
      const req = https.get(`${server.url}/events?channels=${ch}`, { ca: readFileSync(ca.cert) });
      const res = await withTimeout(new Promise((resolve, reject) => {
        req.on('response', resolve);
        req.on('error', reject);
      }), ms(5000), 'the SSE response');
      try {
        assert.equal(res.statusCode, 200);
        assert.match(res.headers['content-type'], /text\/event-stream/);
        res.setEncoding('utf8');
        res.on('data', (chunk) => {
          buf += chunk;
          if (waiter && waiter.re.test(buf)) waiter.resolve();
        });
        const until = (re, what) =>
          withTimeout(new Promise((resolve) => {
            if (re.test(buf)) resolve();
            else waiter = { re, resolve };
          }), ms(5000), what);
        await until(/"event":"connected"/, 'the connected event');
        // Subscribed through ?channels= once the stream is open: publish until it arrives.
        const pub = await curlPublish(server, { channel: ch, event: 'hello', data: { over: 'https' } });
        assert.equal(pub.status, 200, pub.body);
        await until(/"event":"hello".*"over":"https"/, 'the broadcast on the https stream');
      } finally {
        req.destroy();
      }
    });
  });

  test('SIGHUP reloads the certificate: the open connection keeps working, a new one sees the new certificate, bad files keep the old one', async () => {
    const live = { cert: d.file('live.pem'), key: d.file('live.key') };
    copyFileSync(srv.cert, live.cert);
    copyFileSync(srv.key, live.key);
    const next = makeCert(d, ca, 'next', { cn: 'localhost' });
    await withServer({ args: tlsArgs(live) }, async (server) => {
      const c = await connect(server, wsCa());
      const ch = `hup-${nonce()}`;
      await c.subscribe(ch);
      assert.equal((await handshake(server.port)).cert.fingerprint256, srv.fingerprint);

      const reloaded = (n) => waitStderr(server, /TLS certificate reloaded/g, n);
      copyFileSync(next.cert, live.cert);
      copyFileSync(next.key, live.key);
      server.proc.kill('SIGHUP');
      await reloaded(1);
      const hs = await handshake(server.port);
      assert.equal(hs.cert.fingerprint256, next.fingerprint, 'a new connection gets the new certificate');
      hs.socket.destroy();
      // The connection made before the reload is untouched: it still gets and sends.
      assert.equal((await curlPublish(server, { channel: ch, event: 'after', data: 1 })).status, 200);
      await c.next(isEvent(ch, 'after', 1), ms(3000), 'a broadcast after the reload');
      c.send({ type: 'ping' });
      await c.next((m) => m.type === 'pong', ms(3000), 'a pong after the reload');

      // A broken key file: the old certificate stays, the reason is logged.
      writeFileSync(live.key, 'not a key\n');
      server.proc.kill('SIGHUP');
      await waitStderr(server, /TLS files not reloaded, the old ones stay: tls_key: .*live\.key/g, 1);
      const hs2 = await handshake(server.port);
      assert.equal(hs2.cert.fingerprint256, next.fingerprint);
      hs2.socket.destroy();
      assert.equal((await curlPublish(server, { channel: ch, event: 'still', data: 2 })).status, 200);
      await c.next(isEvent(ch, 'still', 2), ms(3000), 'a broadcast after the failed reload');
    });
  });

  test('--tls-ca: a client certificate signed by it is required', async () => {
    const client = makeCert(d, ca, 'client', { client: true });
    const other = makeCa(d, 'other', 'another CA');
    const stranger = makeCert(d, other, 'stranger', { client: true });
    await withServer({ args: [...tlsArgs(), '--tls-ca', ca.cert] }, async (server) => {
      const withCert = { cert: readFileSync(client.cert), key: readFileSync(client.key) };
      const c = await connect(server, { wsOptions: { ca: readFileSync(ca.cert), ...withCert } });
      const ch = `mtls-${nonce()}`;
      await c.subscribe(ch);
      // Without a certificate, and with one from another CA, the handshake fails.
      await assert.rejects(curl(`${server.url}/health`), /curl/);
      await assert.rejects(
        curl(`${server.url}/health`, ['--cert', stranger.cert, '--key', stranger.key]), /curl/);
      await assert.rejects(connect(server, wsCa()));
      const ok = await curl(`${server.url}/health`, ['--cert', client.cert, '--key', client.key]);
      assert.equal(ok.status, 200);
      const pub2 = await curlPublish(server, { channel: ch, event: 'e', data: 2 }).catch((e) => e);
      assert.ok(pub2 instanceof Error, 'the API needs a client certificate too');
      const pub3 = await curl(`${server.url}/api/broadcast`, ['--cert', client.cert, '--key', client.key,
        '-H', `Authorization: Bearer ${server.apiKey}`, '-H', 'content-type: application/json',
        '--data-binary', JSON.stringify({ channel: ch, event: 'e', data: 3 })]);
      assert.equal(pub3.status, 200, pub3.body);
      await c.next(isEvent(ch, 'e', 3), ms(3000), 'the event to the client with a certificate');
    });
  });

  test('plaintext, garbage, an oversized record and a stalled handshake are closed cleanly; the loop goes on', async () => {
    await withServer({ args: [...tlsArgs(), '--log-level', 'info'] }, async (server) => {
      // A stalled handshake (half a record) is left waiting: it must not hold anyone up.
      const stalled = net.connect(server.port, '127.0.0.1');
      await new Promise((r) => stalled.once('connect', r));
      stalled.write(Buffer.from([0x16, 0x03, 0x01, 0x00]));

      const plain = net.connect(server.port, '127.0.0.1');
      plain.write('GET /health HTTP/1.1\r\nHost: x\r\n\r\n');
      let got = '';
      plain.on('data', (b) => { got += b.toString('latin1'); });
      await closedBy(plain, 'the close of a plaintext request');
      assert.doesNotMatch(got, /HTTP\/1\.1 200/);

      const garbage = net.connect(server.port, '127.0.0.1');
      garbage.write(Buffer.alloc(4096, 0xab));
      await closedBy(garbage, 'the close after garbage');

      // A handshake record announcing 64 KiB (the limit is 16 KiB plus overhead).
      const big = net.connect(server.port, '127.0.0.1');
      big.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]), Buffer.alloc(1024)]));
      await closedBy(big, 'the close after an oversized record');

      // Meanwhile TLS clients are served.
      const c = await connect(server, wsCa());
      const ch = `after-${nonce()}`;
      await c.subscribe(ch);
      assert.equal((await curlPublish(server, { channel: ch, event: 'ok', data: 1 })).status, 200);
      await c.next(isEvent(ch, 'ok', 1), ms(3000), 'an event after the bad connections');
      await waitStderr(server, /TLS handshake failed/g, 3);
      // The stalled one is cut at the HTTP deadline like a slow request.
      await closedBy(stalled, 'the close of the stalled handshake', ms(15000));
    });
  });

  test('a TLS client that stops reading is a slow consumer like any other; the others get everything', async () => {
    await withServer({ args: [...tlsArgs(), '--max-send-queue', '65536', '--slow-consumer-ms', '300', '--log-level', 'info'] }, async (server) => {
      const ch = `slow-${nonce()}`;
      // No permessage-deflate: the padding must cost its size on the wire.
      const plainWs = { wsOptions: { ca: readFileSync(ca.cert), perMessageDeflate: false } };
      const slow = await connect(server, plainWs);
      const fast = await connect(server, plainWs);
      await slow.subscribe(ch);
      await fast.subscribe(ch);
      slow.ws.pause(); // the kernel buffers fill, then the server's queue
      const data = 'z'.repeat(60000);
      // Past what the kernel can buffer for the paused socket (its largest receive buffer
      // plus the server's largest send buffer), the rest waits in the server's queue.
      const maxOf = (f) => Number(readFileSync(f, 'utf8').trim().split(/\s+/)[2]);
      const ceiling = maxOf('/proc/sys/net/ipv4/tcp_rmem') + maxOf('/proc/sys/net/ipv4/tcp_wmem');
      for (let i = 0; i < ceiling / 60000 + 100; i++) {
        assert.equal((await curlPublish(server, { channel: ch, event: 'n', data: { i, data } })).status, 200);
        await fast.next(isEvent(ch, 'n', { i, data }), ms(5000), `event ${i} to the reading client`);
        if (/closing slow consumer/.test(server.stderr())) break;
      }
      assert.match(server.stderr(), /closing slow consumer/);
      await waitFor(async () => JSON.parse((await curl(`${server.url}/health`)).body).connections,
        (n) => n === 1, ms(5000), 'the slow consumer to leave');
    });
  });

  test('bad certificate files stop the server with the reason', async () => {
    for (const [args, re] of [
      [['--tls-cert', srv.cert], /tls_cert and tls_key go together \(tls_key is missing\)/],
      [['--tls-cert', d.file('missing.pem'), '--tls-key', srv.key], /tls_cert: cannot read .*missing\.pem/],
      [['--tls-cert', srv.cert, '--tls-key', ca.key], /tls_key: .*does not match the certificate/],
      [['--tls-cert', srv.key, '--tls-key', srv.key], /tls_cert: no usable PEM certificate/],
    ]) {
      await assert.rejects(startServer({ args }), (err) => {
        assert.match(err.message, re);
        return true;
      });
    }
  });

  test('a certificate chain (leaf, then an intermediate) is sent whole', async () => {
    const inter = makeCert(d, ca, 'inter', { ca: true, cn: 'intermediate' });
    const leaf = makeCert(d, inter, 'leaf');
    const chain = d.file('chain.pem');
    writeFileSync(chain, readFileSync(leaf.cert, 'utf8') + readFileSync(inter.cert, 'utf8'));
    await withServer({ args: ['--tls-cert', chain, '--tls-key', leaf.key] }, async (server) => {
      // Only the root is trusted: verification needs the intermediate from the server.
      const c = await connect(server, wsCa());
      const ch = `chain-${nonce()}`;
      await c.subscribe(ch);
      const hs = await handshake(server.port);
      assert.equal(hs.cert.fingerprint256, leaf.fingerprint);
      assert.equal(hs.cert.issuerCertificate?.subject, 'CN=intermediate');
      hs.socket.destroy();
    });
  });
});

/** Resolves once the server's stderr holds `re` (global) at least n times. */
function waitStderr(server, re, n) {
  const count = () => (server.stderr().match(re) || []).length;
  let onData;
  return withTimeout(new Promise((resolve) => {
    // helpers.mjs appends each chunk before this listener (added later) runs.
    onData = () => {
      if (count() >= n) resolve();
    };
    server.proc.stderr.on('data', onData);
    onData();
  }), ms(5000), `${n} × ${re} in the server's stderr`).finally(() => server.proc.stderr.off('data', onData));
}
