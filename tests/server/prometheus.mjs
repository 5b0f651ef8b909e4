// GET /metrics parsed with a real Prometheus text-format parser
// (parse-prometheus-text-format, a devDependency), for the metrics and origin tests.
import assert from 'node:assert/strict';
import parsePrometheus from 'parse-prometheus-text-format';
import { ms } from './helpers.mjs';

/** GET /metrics with `token` (default: the server's API key), parsed. */
export async function scrape(srv, token = srv.apiKey) {
  const res = await fetch(`${srv.url}/metrics`, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
    signal: AbortSignal.timeout(ms(5000)),
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8');
  return { text, families: parsePrometheus(text) };
}

/** The value of `name` with exactly these labels (a number), or undefined. */
export function value(families, name, labels = {}) {
  const fam = families.find((f) => f.name === name);
  if (!fam) return undefined;
  const want = JSON.stringify(Object.entries(labels).sort());
  const m = fam.metrics.find((x) => JSON.stringify(Object.entries(x.labels || {}).sort()) === want);
  return m ? Number(m.value) : undefined;
}

