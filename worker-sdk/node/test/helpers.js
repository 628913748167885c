'use strict';
// A fake stickyd for the package's tests: a Node parent that forks the app exactly as stickyd
// spawns it (a cluster worker on Node's IPC channel, JSON serialization, STICKYD_IPC=node) and
// writes the lines stickyd writes. Node's own ChildProcess.send(message, socket) writes
// {"cmd":"NODE_HANDLE","type":"net.Socket","msg":message} with the socket's fd by SCM_RIGHTS,
// one handle per sendmsg: the line stickyd writes for a connection, so the child side under
// test is Node's real code path. (Node does not stop user code from sending a message whose
// cmd starts with NODE_; the child emits it on 'internalMessage', as it does stickyd's.)

const { fork } = require('child_process');
const net = require('net');
const path = require('path');

const FIXTURE = path.join(__dirname, 'fixtures', 'http-app.js');

/** The environment of a worker in slot `slot`, as stickyd sets it. */
function workerEnv(slot, extra) {
  const env = Object.assign({}, process.env);
  for (const k of Object.keys(env)) {
    if (k.startsWith('STICKYD_') || k.startsWith('NODE_CHANNEL') || k === 'NODE_UNIQUE_ID') {
      delete env[k];
    }
  }
  return Object.assign(env, {
    NODE_UNIQUE_ID: String(slot + 1),
    STICKYD_WORKER_ID: String(slot),
    STICKYD_IPC: 'node',
  }, extra || {});
}

/**
 * Starts `app` (default: the fixture) as worker `slot` of a fake stickyd whose listeners are
 * `listeners` ([{name, address, port}]). Resolves once Node said `online` and the welcome is
 * sent.
 */
async function startWorker({ app = FIXTURE, slot = 0, workers = 4, listeners = [], env } = {}) {
  const child = fork(app, [], {
    env: workerEnv(slot, env),
    serialization: 'json',
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  const w = {
    child,
    stderr: '',
    stdout: '',
    internal: [],
    user: [],
    exited: new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal }))),
  };
  child.stderr.on('data', (d) => { w.stderr += d; });
  child.stdout.on('data', (d) => { w.stdout += d; });
  child.on('message', (m) => w.user.push(m));
  const online = new Promise((resolve) => {
    child.on('internalMessage', (m) => {
      w.internal.push(m);
      if (m.cmd === 'NODE_CLUSTER' && m.act === 'online') resolve();
    });
  });
  await online;
  child.send({ cmd: 'NODE_STICKYD', act: 'welcome', worker: slot, workers, listeners });
  w.kill = () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); };
  /** Waits until the child's stderr contains `text`. */
  w.waitStderr = (text, ms = 10000) => waitFor(() => w.stderr.includes(text), ms,
    () => 'stderr never had ' + JSON.stringify(text) + ': ' + w.stderr);
  w.drain = () => child.send({ cmd: 'NODE_STICKYD', act: 'drain' });
  return w;
}

/**
 * A listener of the fake stickyd: accepts connections (paused: not one byte read) and hands
 * each to `worker` with the conn message stickyd would send. `fields(n)` may override the
 * message's fields for the n-th connection.
 */
function frontFor(worker, { name = 'l0', index = 0, port, fields } = {}) {
  let seq = 0;
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    const n = seq++;
    // As stickyd: no net.Server key in the message (Node would add one for a socket its own
    // server accepted, and track it for the child).
    socket.server = null;
    const msg = Object.assign({
      cmd: 'NODE_STICKYD',
      act: 'conn',
      seq: n,
      listener: name,
      index,
      port,
      address: socket.remoteAddress,
      remotePort: socket.remotePort,
      hash: '0123456789abcdef',
      proxyLen: 0,
    }, fields ? fields(n, socket) : {});
    worker.child.send(msg, socket);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      server.unref();
      resolve({ server, addr: server.address().port });
    });
  });
}

/**
 * Connects to 127.0.0.1:`port`, writes each of `parts` (strings or Buffers) with a pause
 * between them, optionally half-closes, and resolves with everything read until the server
 * closes.
 */
function exchange(port, parts, { pause = 30, halfClose = false, timeout = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('no answer within ' + timeout + ' ms; got ' +
        JSON.stringify(Buffer.concat(chunks).toString())));
    }, timeout);
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', (e) => { clearTimeout(timer); reject(e); });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString());
    });
    socket.on('connect', async () => {
      for (let i = 0; i < parts.length; i++) {
        if (i > 0) await sleep(pause);
        socket.write(parts[i]);
      }
      if (halfClose) socket.end();
    });
  });
}

/** The JSON bodies of the HTTP/1.1 responses in `text` (Content-Length framed). */
function bodies(text) {
  const out = [];
  let rest = text;
  while (rest.length > 0) {
    const end = rest.indexOf('\r\n\r\n');
    if (end === -1) throw new Error('no complete response in ' + JSON.stringify(rest));
    const head = rest.slice(0, end);
    const m = /content-length: *(\d+)/i.exec(head);
    if (!/^HTTP\/1\.1 200 /.test(head) || !m) throw new Error('unexpected response ' + head);
    const len = Number(m[1]);
    out.push(JSON.parse(rest.slice(end + 4, end + 4 + len)));
    rest = rest.slice(end + 4 + len);
  }
  return out;
}

function get(path, extra) {
  return 'GET ' + path + ' HTTP/1.1\r\nHost: t\r\n' + (extra || '') + '\r\n';
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(cond, ms, what) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(what());
    await sleep(20);
  }
}

module.exports = { FIXTURE, startWorker, frontFor, exchange, bodies, get, sleep, waitFor, workerEnv };
