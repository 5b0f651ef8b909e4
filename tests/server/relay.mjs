// A TCP relay for tests of clients that must survive a cut or a silent connection: it
// forwards 127.0.0.1:<its port> to 127.0.0.1:<port>; cut() resets every connection through it,
// hold(true) keeps them open but stops forwarding (a dead network), hold(false) resumes.

import net from 'node:net';

export async function startRelay(port) {
  const pairs = new Set();
  let holding = false;
  const srv = net.createServer((a) => {
    const b = net.connect({ host: '127.0.0.1', port });
    const pair = { a, b };
    pairs.add(pair);
    a.on('data', (d) => holding || b.write(d));
    b.on('data', (d) => holding || a.write(d));
    const end = () => {
      pairs.delete(pair);
      a.destroy();
      b.destroy();
    };
    a.on('error', end).on('close', end);
    b.on('error', end).on('close', end);
  });
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${srv.address().port}`,
    get connections() {
      return pairs.size;
    },
    cut() {
      for (const { a, b } of pairs) {
        a.resetAndDestroy();
        b.destroy();
      }
    },
    hold(on) {
      holding = on;
    },
    close() {
      for (const { a, b } of pairs) {
        a.destroy();
        b.destroy();
      }
      return new Promise((r) => srv.close(r));
    },
  };
}

