// A Fastify app with the vxevents plugin for the flow-control tests: prints {"port":P},
// then on a line "go N PAD [stamp]" on stdin awaits app.events.broadcast('bench', 'e',
// {i, pad}) N times in a loop (with "stamp": {i, t: Date.now(), pad}) and prints {"ms":..,"hwmMiB":..,"stats":{..}} (hwm: the process's
// peak RSS, VmHWM). Extra plugin options come as JSON in argv[2].
import Fastify from 'fastify';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { eventsPlugin } from 'vxevents';

const extra = process.argv[2] ? JSON.parse(process.argv[2]) : {};
const app = Fastify();
app.register(eventsPlugin({ driver: 'ws', path: '/ws', ...extra }));
await app.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write(JSON.stringify({ port: app.server.address().port }) + '\n');

const hwm = () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;

for await (const line of createInterface({ input: process.stdin })) {
  const [cmd, n, padLen, stamp] = line.split(' ');
  if (cmd === 'go') {
    const pad = 'x'.repeat(Number(padLen));
    const t0 = performance.now();
    if (stamp) for (let i = 0; i < Number(n); i++) await app.events.broadcast('bench', 'e', { i, t: Date.now(), pad });
    else for (let i = 0; i < Number(n); i++) await app.events.broadcast('bench', 'e', { i, pad });
    const ms = Math.round(performance.now() - t0);
    const stats = await app.events.stats();
    process.stdout.write(JSON.stringify({ ms, hwmMiB: Math.round(hwm()), stats }) + '\n');
  } else if (cmd === 'stats') {
    process.stdout.write(JSON.stringify({ hwmMiB: Math.round(hwm()), stats: await app.events.stats() }) + '\n');
  } else if (cmd === 'quit') {
    await app.close();
    process.exit(0);
  }
}
