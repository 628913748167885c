'use strict';
// The package outside stickyd: a one-line hint and exit 2, or STICKYD_STANDALONE=1.

const test = require('node:test');
const assert = require('node:assert');
const { spawn } = require('child_process');
const path = require('path');
const { FIXTURE, exchange, bodies, get, waitFor } = require('./helpers');

function run(env) {
  const clean = Object.assign({}, process.env);
  for (const k of Object.keys(clean)) {
    if (k.startsWith('STICKYD_') || k === 'NODE_UNIQUE_ID') delete clean[k];
  }
  const child = spawn(process.execPath, [FIXTURE, '--flag'], {
    env: Object.assign(clean, env),
    cwd: path.join(__dirname, '..'),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const r = { child, stderr: '' };
  child.stderr.on('data', (d) => { r.stderr += d; });
  r.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  return r;
}

test('without stickyd: one line saying how to start it, exit status 2', async () => {
  const r = run({ OPTIONS: JSON.stringify({ workers: 3 }) });
  assert.strictEqual(await r.exited, 2);
  const lines = r.stderr.trim().split('\n')
    .filter((l) => !l.includes('option workers') && !l.startsWith('fixture:'));
  assert.strictEqual(lines.length, 1, r.stderr);
  assert.ok(lines[0].includes(
    '`stickyd --ipc node --listen 127.0.0.1:3000 --workers 3 -- node test/fixtures/http-app.js --flag`'),
  lines[0]);
  assert.ok(lines[0].includes('STICKYD_STANDALONE=1'), lines[0]);
});

test('started by stickyd without --ipc node: says so, exit status 2', async () => {
  const r = run({ STICKYD_IPC: 'native' });
  assert.strictEqual(await r.exited, 2);
  assert.match(r.stderr, /without `--ipc node`/);
});

test('STICKYD_STANDALONE=1: serves in this one process', async (t) => {
  const r = run({ STICKYD_STANDALONE: '1', PORTS: '0' });
  t.after(() => r.child.kill('SIGKILL'));
  await waitFor(() => /fixture: listening \d+/.test(r.stderr), 10000, () => r.stderr);
  const port = Number(/fixture: listening (\d+)/.exec(r.stderr)[1]);
  const [body] = bodies(await exchange(port, [get('/s', 'Connection: close\r\n')]));
  assert.strictEqual(body.url, '/s');
  assert.strictEqual(body.worker, null); // not a cluster worker
  assert.strictEqual(body.listeners, null);
  assert.match(r.stderr, /STICKYD_STANDALONE=1: serving port 0/);
});
