#!/usr/bin/env node
// Reads the JSON lines that bench/build/loadgen printed (one per run, label "server:scenario")
// and either prints the comparison table or checks the runs for failures.
//
//   node report.mjs table RESULTS.jsonl [--markdown]   table vxevents vs node, with targets
//   node report.mjs check RESULTS.jsonl                 exit 1 on any failed/lossy run
//
// No dependencies: it runs before/without `npm ci`.

import fs from 'node:fs';

const [cmd, file, ...rest] = process.argv.slice(2);
if (!cmd || !file || !['table', 'check'].includes(cmd)) {
  process.stderr.write('usage: node report.mjs table|check RESULTS.jsonl [--markdown]\n');
  process.exit(2);
}
const markdown = rest.includes('--markdown');

const runs = [];
for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
  if (!line.trim()) continue;
  try {
    runs.push(JSON.parse(line));
  } catch {
    runs.push({ label: '?:?', error: `unparseable line: ${line.slice(0, 80)}`, exit: 2 });
  }
}

function runFailures(r) {
  const f = [];
  if (r.exit !== 0) f.push(`exit ${r.exit}`);
  if (r.error) f.push(r.error);
  if (r.connect_failures) f.push(`${r.connect_failures} connect failures`);
  if (r.subscribed !== undefined && r.connections !== undefined && r.subscribed !== r.connections) {
    f.push(`${r.subscribed}/${r.connections} subscribed`);
  }
  if (r.lost) f.push(`${r.lost} lost (${r.conns_with_loss} connections)`);
  if (r.dup) f.push(`${r.dup} duplicates (${r.conns_with_dup} connections)`);
  if (r.mode && r.mode !== 'idle' && !(r.delivered > 0)) f.push('nothing delivered in the window');
  return f;
}

if (cmd === 'check') {
  let bad = 0;
  for (const r of runs) {
    const f = runFailures(r);
    if (f.length) {
      bad++;
      process.stderr.write(`FAIL ${r.label}: ${f.join('; ')}\n`);
    } else {
      process.stderr.write(`ok   ${r.label}\n`);
    }
  }
  process.stderr.write(`${runs.length - bad} passed, ${bad} failed\n`);
  process.exit(bad || runs.length === 0 ? 1 : 0);
}

// ---- table ----
const byKey = new Map();
const scenarios = [];
for (const r of runs) {
  const [server, scenario] = String(r.label).split(':');
  if (!scenarios.includes(scenario)) scenarios.push(scenario);
  byKey.set(`${server}:${scenario}`, r);
}

// What each scenario is judged on; `better` says which way is good.
function metricOf(scenario) {
  if (scenario.startsWith('idle')) return { name: 'server RSS bytes / idle connection', key: 'rss_bytes_per_conn', better: 'lower', fmt: (v) => v.toFixed(0), target: { max: 1024 } };
  if (scenario.startsWith('paced')) return { name: 'latency p99 ms', key: 'lat_p99_ms', better: 'lower', fmt: (v) => v.toFixed(2), target: { max: 9 } };
  if (scenario.startsWith('burst')) return { name: 'deliveries / server-CPU-s', key: 'deliveries_per_server_cpu_s', better: 'higher', fmt: (v) => Math.round(v).toLocaleString('en-US'), target: { min: 700000, ratio: 2 } };
  return { name: 'deliveries / server-CPU-s', key: 'deliveries_per_server_cpu_s', better: 'higher', fmt: (v) => Math.round(v).toLocaleString('en-US'), target: { min: 180000, ratio: 2 } };
}

function cell(r, m) {
  if (!r) return 'not run';
  if (runFailures(r).length) return 'FAILED';
  const v = r[m.key];
  return typeof v === 'number' ? m.fmt(v) : 'n/a';
}

function targetText(m) {
  const t = m.target;
  const parts = [];
  if (t.min !== undefined) parts.push(`>= ${t.min.toLocaleString('en-US')}`);
  if (t.max !== undefined) parts.push(`<= ${t.max}`);
  if (t.ratio !== undefined) parts.push(`>= ${t.ratio}x node`);
  return parts.join(', ');
}

function verdict(vx, nd, m) {
  if (!vx || runFailures(vx).length || typeof vx[m.key] !== 'number') return '-';
  const v = vx[m.key];
  const t = m.target;
  let ok = true;
  if (t.min !== undefined && !(v >= t.min)) ok = false;
  if (t.max !== undefined && !(v <= t.max)) ok = false;
  if (t.ratio !== undefined) {
    if (!nd || runFailures(nd).length || typeof nd[m.key] !== 'number') return ok ? 'met (no node figure)' : 'MISSED';
    if (!(v >= t.ratio * nd[m.key])) ok = false;
  }
  return ok ? 'met' : 'MISSED';
}

const header = ['scenario', 'metric', 'vxevents', 'node', 'vxevents / node', 'target (vxevents)', 'verdict'];
const rows = [];
for (const s of scenarios) {
  const m = metricOf(s);
  const vx = byKey.get(`vxevents:${s}`);
  const nd = byKey.get(`node:${s}`);
  let ratio = '-';
  if (vx && nd && !runFailures(vx).length && !runFailures(nd).length &&
      typeof vx[m.key] === 'number' && typeof nd[m.key] === 'number' && nd[m.key] !== 0) {
    ratio = `${(vx[m.key] / nd[m.key]).toFixed(2)} (${m.better} is better)`;
  }
  rows.push([s, m.name, cell(vx, m), cell(nd, m), ratio, targetText(m), verdict(vx, nd, m)]);
}

const detailHeader = ['run', 'deliveries/s', 'server CPU s', 'deliv/CPU-s', 'p50 ms', 'p99 ms', 'max ms', 'lost', 'dup', 'RSS B/conn', 'note'];
const detail = runs.map((r) => {
  const n = (v, d = 0) => (typeof v === 'number' ? v.toFixed(d) : '-');
  const f = runFailures(r);
  return [r.label, n(r.deliveries_per_s), n(r.server_cpu_s, 2), n(r.deliveries_per_server_cpu_s), n(r.lat_p50_ms, 3),
    n(r.lat_p99_ms, 3), n(r.lat_max_ms, 3), n(r.lost), n(r.dup), n(r.rss_bytes_per_conn), f.join('; ')];
});

function print(head, body) {
  if (markdown) {
    process.stdout.write(`| ${head.join(' | ')} |\n|${head.map(() => '---').join('|')}|\n`);
    for (const r of body) process.stdout.write(`| ${r.join(' | ')} |\n`);
    return;
  }
  const w = head.map((h, i) => Math.max(h.length, ...body.map((r) => String(r[i]).length)));
  const fmt = (r) => r.map((c, i) => String(c).padEnd(w[i])).join('  ').trimEnd();
  process.stdout.write(`${fmt(head)}\n${w.map((x) => '-'.repeat(x)).join('  ')}\n`);
  for (const r of body) process.stdout.write(`${fmt(r)}\n`);
}

print(header, rows);
process.stdout.write('\n');
print(detailHeader, detail);
