'use strict';
// The package inside a worker, against a fake stickyd (test/helpers.js) that writes the lines
// stickyd writes on Node's real IPC channel.

const test = require('node:test');
const assert = require('node:assert');
const { startWorker, frontFor, exchange, bodies, get, sleep } = require('./helpers');

const L0 = { name: 'l0', address: '127.0.0.1', port: 3000 };
const L1 = { name: 'l1', address: '127.0.0.1', port: 3001 };

test('a connection reaches the server registered for its port, with what stickyd said', async (t) => {
  const w = await startWorker({ slot: 2, listeners: [L0, L1], env: { PORTS: '3000,3001' } });
  t.after(w.kill);
  const f0 = await frontFor(w, { name: 'l0', index: 0, port: 3000 });
  const f1 = await frontFor(w, { name: 'l1', index: 1, port: 3001 });
  const [a] = bodies(await exchange(f0.addr, [get('/a', 'Connection: close\r\n')]));
  const [b] = bodies(await exchange(f1.addr, [get('/b', 'Connection: close\r\n')]));
  assert.strictEqual(a.port, 3000);
  assert.strictEqual(b.port, 3001);
  // cluster.worker.id is NODE_UNIQUE_ID: the slot plus one.
  assert.strictEqual(a.worker, 3);
  assert.strictEqual(a.info.listener, 'l0');
  assert.strictEqual(b.info.listener, 'l1');
  assert.strictEqual(b.info.index, 1);
  assert.strictEqual(a.info.hash, '0123456789abcdef');
  assert.strictEqual(a.peer, '127.0.0.1');
  assert.deepStrictEqual(a.listeners, [L0, L1]);
  assert.deepStrictEqual(a.pool, { worker: 2, workers: 4 });
  // The server counts the connection while it is open.
  assert.strictEqual(a.connections, 1);
  // Node acknowledged each handle, and the app's own 'message' handler saw none of it.
  assert.strictEqual(w.internal.filter((m) => m.cmd === 'NODE_HANDLE_ACK').length, 2);
  assert.ok(!w.stderr.includes('fixture: user message'), w.stderr);
});

test('the server counts open connections and never emits close while it is in use', async (t) => {
  const w = await startWorker({ listeners: [L0] });
  t.after(w.kill);
  const f = await frontFor(w, { port: 3000 });
  for (let i = 0; i < 3; i++) {
    const [r] = bodies(await exchange(f.addr, [get('/n' + i, 'Connection: close\r\n')]));
    // Each earlier connection is closed and no longer counted.
    assert.strictEqual(r.connections, 1);
    await sleep(50);
  }
  // A server that never listened in this process must not emit 'close' when its last
  // connection goes (socket.io closes every session on it).
  assert.ok(!w.stderr.includes('fixture: server close'), w.stderr);
});

test('keep-alive and pipelined requests stay on the connection, in order', async (t) => {
  const w = await startWorker({ listeners: [L0] });
  t.after(w.kill);
  const f = await frontFor(w, { port: 3000 });
  const out = bodies(await exchange(f.addr, [
    get('/1') + get('/2'),
    get('/3'),
    get('/4', 'Connection: close\r\n'),
  ]));
  assert.deepStrictEqual(out.map((r) => r.url), ['/1', '/2', '/3', '/4']);
});

test('a PROXY header of proxyLen bytes is consumed, however it arrives, and nothing after it is lost', async (t) => {
  const w = await startWorker({ listeners: [L0] });
  t.after(w.kill);
  const header = 'PROXY TCP4 203.0.113.7 127.0.0.1 40123 3000\r\n';
  const f = await frontFor(w, {
    port: 3000,
    fields: () => ({ proxyLen: header.length, address: '203.0.113.7', remotePort: 40123 }),
  });
  // A body larger than a socket read, so the stream's buffering is exercised.
  const body = Array.from({ length: 20000 }, (_, i) => String(i % 10)).join('');
  const request = 'POST /p HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: ' +
    body.length + '\r\n\r\n' + body;
  const splits = [
    [header + request], // all at once
    [header.slice(0, 7), header.slice(7, 30), header.slice(30) + request.slice(0, 5), request.slice(5)],
    [header, request.slice(0, 100), request.slice(100)],
  ];
  for (const parts of splits) {
    const [r] = bodies(await exchange(f.addr, parts));
    assert.strictEqual(r.url, '/p');
    assert.strictEqual(r.body, body);
    // The app sees the client's address from the PROXY header.
    assert.strictEqual(r.peer, '203.0.113.7');
    assert.strictEqual(r.peerPort, 40123);
    assert.strictEqual(r.info.proxyLen, header.length);
  }
});

test('a client that half-closes after its request still gets the response', async (t) => {
  const w = await startWorker({ listeners: [L0] });
  t.after(w.kill);
  const f = await frontFor(w, { port: 3000 });
  const [r] = bodies(await exchange(f.addr, [get('/half')], { halfClose: true }));
  assert.strictEqual(r.url, '/half');
});

test('the first listen() tells stickyd the worker is ready, once, and not before', async (t) => {
  const w = await startWorker({ listeners: [L0, L1], env: { PORTS: '3000,3001', LATE_MS: '400' } });
  t.after(w.kill);
  const ready = () => w.internal.filter((m) => m.cmd === 'NODE_STICKYD' && m.act === 'ready');
  // Node is online, the package loaded, but no server yet: not ready.
  assert.strictEqual(ready().length, 0);
  await w.waitStderr('fixture: registered 3000,3001');
  await sleep(100);
  assert.strictEqual(ready().length, 1);
});

test('a connection that comes before its server is registered waits for listen()', async (t) => {
  const w = await startWorker({ listeners: [L0], env: { LATE_MS: '700' } });
  t.after(w.kill);
  const f = await frontFor(w, { port: 3000 });
  const started = Date.now();
  const [r] = bodies(await exchange(f.addr, [get('/early', 'Connection: close\r\n')]));
  assert.strictEqual(r.url, '/early');
  assert.ok(w.stderr.includes('fixture: registered 3000'));
  assert.ok(Date.now() - started >= 500, 'served before the server was registered?');
});

test('a connection for a port no server ever registers is closed after the hold, with one line', async (t) => {
  const w = await startWorker({ listeners: [L0, { name: 'other', address: '127.0.0.1', port: 4000 }] });
  t.after(w.kill);
  const f = await frontFor(w, { name: 'other', index: 1, port: 4000 });
  const started = Date.now();
  const [a, b] = await Promise.all([
    exchange(f.addr, [get('/x')], { timeout: 20000 }),
    exchange(f.addr, [get('/y')], { timeout: 20000 }),
  ]);
  assert.strictEqual(a, '');
  assert.strictEqual(b, '');
  assert.ok(Date.now() - started >= 9000, 'closed before the hold ended');
  const lines = w.stderr.split('\n').filter((l) => l.includes('no server is registered for port 4000'));
  assert.strictEqual(lines.length, 1, w.stderr);
  assert.match(lines[0], /^stickyd npm \(worker 0\): .*listener other .*call listen\(server, 4000\)/);
});

test('a registered port that stickyd does not listen on is named once', async (t) => {
  const w = await startWorker({ listeners: [L0], env: { PORTS: '3000,3005' } });
  t.after(w.kill);
  await w.waitStderr('port 3005, but stickyd listens on 127.0.0.1:3000 (l0)');
});

test('a second server for the same port gets EADDRINUSE', async (t) => {
  const w = await startWorker({ listeners: [L0], env: { TWICE: '1' } });
  t.after(w.kill);
  await sleep(300);
  // The fixture's second server has no 'error' listener: the worker dies of it, as with
  // net.Server.listen on a taken port.
  const { code } = await w.exited;
  assert.notStrictEqual(code, 0);
  assert.match(w.stderr, /EADDRINUSE/);
});

test('drain: a worker with a SIGINT listener gets SIGINT and finishes what is in flight', async (t) => {
  const w = await startWorker({ listeners: [L0], env: { EXIT_HOOK: '1500' } });
  t.after(w.kill);
  const f = await frontFor(w, { port: 3000 });
  // A connection already handed over, its request only half sent when the drain comes.
  const pending = exchange(f.addr, [get('/in-flight').slice(0, 10), get('/in-flight', 'Connection: close\r\n').slice(10)],
    { pause: 600 });
  await sleep(200);
  w.drain();
  await w.waitStderr('fixture: SIGINT hook');
  const [r] = bodies(await pending);
  assert.strictEqual(r.url, '/in-flight');
  const { code } = await w.exited;
  assert.strictEqual(code, 0);
  assert.match(w.stderr, /fixture: hook done/);
});

test('drain: a worker without a SIGINT listener exits at once with status 0', async (t) => {
  const w = await startWorker({ listeners: [L0] });
  t.after(w.kill);
  const started = Date.now();
  w.drain();
  const { code, signal } = await w.exited;
  assert.strictEqual(code, 0);
  assert.strictEqual(signal, null);
  assert.ok(Date.now() - started < 3000);
});

test('close(wait) sends sticky-session\'s masterclose message', async (t) => {
  const w = await startWorker({ listeners: [L0] });
  t.after(w.kill);
  const f = await frontFor(w, { port: 3000 });
  await exchange(f.addr, [get('/close?wait=1', 'Connection: close\r\n')]);
  await exchange(f.addr, [get('/close', 'Connection: close\r\n')]);
  await sleep(100);
  assert.deepStrictEqual(w.user, [['sticky:masterclose', true], ['sticky:masterclose', false]]);
});

test('the application\'s own messages still reach process.on(\'message\')', async (t) => {
  const w = await startWorker({ listeners: [L0] });
  t.after(w.kill);
  w.child.send(['hello', 1]);
  await w.waitStderr('fixture: user message ["hello",1]');
});

test('sticky-session-custom\'s master options are named once each, with what replaces them, in slot 0 only', async (t) => {
  const options = JSON.stringify({
    workers: 4,
    proxyHeader: 'x-forwarded-for',
    dontUseExistingWorkers: false,
  });
  const w0 = await startWorker({ slot: 0, listeners: [L0, L1], env: { PORTS: '3000,3001', OPTIONS: options } });
  const w1 = await startWorker({ slot: 1, listeners: [L0, L1], env: { PORTS: '3000,3001', OPTIONS: options } });
  t.after(w0.kill);
  t.after(w1.kill);
  await w0.waitStderr('fixture: registered');
  await w1.waitStderr('fixture: registered');
  const lines = w0.stderr.split('\n').filter((l) => l.startsWith('stickyd npm'));
  assert.strictEqual(lines.length, 3, w0.stderr);
  assert.match(lines[0], /workers: 4 is stickyd's `--workers 4`/);
  assert.match(lines[1], /`--key header:x-forwarded-for`/);
  assert.match(lines[2], /dontUseExistingWorkers: false: under stickyd every listener shares the one pool/);
  assert.ok(!w1.stderr.includes('stickyd npm'), w1.stderr);
});
