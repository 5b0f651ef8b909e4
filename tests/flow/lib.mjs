// Child processes for the flow-control tests: JSON lines on stdout, awaited with bounds.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export function child(cmd, args, opts = {}) {
  const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'], ...opts });
  const lines = [];
  const waiters = [];
  createInterface({ input: p.stdout }).on('line', (l) => {
    let v;
    try {
      v = JSON.parse(l);
    } catch {
      return;
    }
    const w = waiters.shift();
    if (w) w.resolve(v);
    else lines.push(v);
  });
  p.on('exit', (code) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`${cmd} ${args[0]} exited (${code}) before answering`));
  });
  return {
    proc: p,
    /** The next JSON line, within `ms`. */
    next(ms, what) {
      if (lines.length) return Promise.resolve(lines.shift());
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
        waiters.push({
          resolve: (v) => { clearTimeout(t); resolve(v); },
          reject: (e) => { clearTimeout(t); reject(e); },
        });
      });
    },
    send(line) {
      p.stdin.write(line + '\n');
    },
    kill() {
      if (p.exitCode === null) p.kill('SIGKILL');
    },
  };
}
