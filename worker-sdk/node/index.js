'use strict';

// The Node side of `stickyd --ipc node`: a drop-in for sticky-session-custom's
// `listen(server, port, hostname, options)`.
//
// stickyd starts every worker as a Node `cluster` worker (NODE_UNIQUE_ID = slot + 1) on Node's
// own IPC channel (NODE_CHANNEL_FD, JSON lines). The first `listen()` says
// {cmd: 'NODE_STICKYD', act: 'ready'}: stickyd routes nothing to this worker before it (Node's
// own 'online' comes before the application's code has run). What stickyd sends are internal
// messages (their `cmd` starts with `NODE_`), which Node emits on
// `process.on('internalMessage')`, never on `process.on('message')`, so an application's own
// message handlers do not see them:
// - {cmd: 'NODE_STICKYD', act: 'welcome', worker, workers, listeners: [{name, address, port}]}
// - {cmd: 'NODE_STICKYD', act: 'conn', seq, listener, index, port, address, remotePort, hash,
//   proxyLen}, with a live net.Socket (the fd came by SCM_RIGHTS in a NODE_HANDLE line; Node's
//   child code has already answered NODE_HANDLE_ACK, so the connection is this process's);
// - {cmd: 'NODE_STICKYD', act: 'drain'}: finish and exit, as sticky-session's 'sticky:close'.
//
// On a listener of `--rehash-per-request` the `conn` message says `rehash: true`: at each
// request boundary of a kept-alive connection (the request read, its response written, nothing
// of a next request read) the package stops reading and gives the socket back,
// {cmd: 'NODE_STICKYD', act: 'handback', index} with the socket (`process.send`), for stickyd
// to route by the next request's key. See watchBoundaries below.
//
// Without stickyd (STICKYD_IPC is not 'node') `listen` prints how to start the app with
// stickyd and exits with status 2, unless STICKYD_STANDALONE=1 asks it to serve plainly in this
// one process (`server.listen(port, hostname)`).

const diagnostics = require('diagnostics_channel');
const net = require('net');
const os = require('os');
const path = require('path');

const UNDER_STICKYD = process.env.STICKYD_IPC === 'node';
const STANDALONE = !UNDER_STICKYD && process.env.STICKYD_STANDALONE === '1';

// How long a connection for a port no server is registered for yet waits for a `listen()` on
// that port (stickyd routes to a worker from its first `listen()` on; an app with several
// servers may register the others after some asynchronous start-up).
const HOLD_MS = 10000;

/** port -> the server registered for it. */
const servers = new Map();
/** port -> connections waiting for a server on that port: [{socket, msg, timer}]. */
const held = new Map();
/** socket -> the metadata stickyd sent with it. */
const infos = new WeakMap();
/** What was logged once already (option names, port problems). */
const said = new Set();

let welcome = null;
let attached = false;
let ready = false;
let draining = false;

function workerLabel() {
  if (welcome) return String(welcome.worker);
  return process.env.STICKYD_WORKER_ID !== undefined ? process.env.STICKYD_WORKER_ID : '?';
}

/** One line on stderr, in one write (so it is not cut by other processes' lines). */
function log(line) {
  const who = UNDER_STICKYD ? 'stickyd npm (worker ' + workerLabel() + ')' : 'stickyd npm';
  process.stderr.write(who + ': ' + line + '\n');
}

/** Logs `line` the first time `key` is seen in this process. */
function logOnce(key, line) {
  if (said.has(key)) return;
  said.add(key);
  log(line);
}

/**
 * Lines that several workers would print identically come from the first slot only (each
 * worker is its own process, and they all share stickyd's stderr).
 */
function isFirstSlot() {
  return !UNDER_STICKYD || process.env.STICKYD_WORKER_ID === undefined ||
    process.env.STICKYD_WORKER_ID === '0';
}

// sticky-session-custom's options that choose how its master balances: stickyd's command line
// does that here. Each given one is named once, with what replaces it; none is an error.
const MASTER_OPTIONS = {
  workers(value) {
    return 'option workers: ' + JSON.stringify(value) + ' is stickyd\'s `--workers ' +
      value + '` here (stickyd spawns the workers; the option is ignored)';
  },
  proxyHeader(value) {
    const header = String(value).toLowerCase();
    const rule = '--key header:' + header;
    const note = header === 'x-forwarded-for'
      ? ' (the leftmost address, or with `--trust CIDR` the rightmost untrusted one)'
      : '';
    return 'option proxyHeader: ' + JSON.stringify(value) + ' is stickyd\'s `' + rule + '`' +
      note + ' here (the option is ignored)';
  },
  generatePrehashArray() {
    return 'option generatePrehashArray: stickyd does not call a JavaScript function to ' +
      'choose a worker: use a key rule (`--key query:token`, `--key cookie:NAME`, ' +
      '`--key header:NAME`, tried in order) or a custom key function in Rust ' +
      '(the function is ignored)';
  },
  generatePrehashArrayNoParsing() {
    return 'option generatePrehashArrayNoParsing: stickyd\'s `--key ip` (its default) ' +
      'routes by the client address without parsing; a JavaScript function is not called ' +
      '(the function is ignored)';
  },
  dontUseExistingWorkers(value) {
    return 'option dontUseExistingWorkers: ' + JSON.stringify(value) + ': under stickyd ' +
      'every listener shares the one pool of workers' +
      (value ? ' (no equivalent: the option is ignored)' : ', as asked');
  },
};

function noteOptions(options) {
  if (!options || typeof options !== 'object' || !isFirstSlot()) return;
  for (const name of Object.keys(MASTER_OPTIONS)) {
    if (options[name] !== undefined && options[name] !== null) {
      logOnce('option:' + name, MASTER_OPTIONS[name](options[name]));
    }
  }
}

function toPort(port) {
  const n = typeof port === 'string' && port.trim() !== '' ? Number(port) : port;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > 65535) {
    throw new TypeError('stickyd: listen(server, port, ...): port must be an integer ' +
      'from 0 to 65535, got ' + JSON.stringify(port));
  }
  return n;
}

/** Warns (once each) about registered ports stickyd does not listen on. */
function checkPorts() {
  if (!welcome || !Array.isArray(welcome.listeners) || !isFirstSlot()) return;
  const ports = welcome.listeners.map((l) => l.port);
  for (const port of servers.keys()) {
    if (!ports.includes(port)) {
      logOnce('unserved:' + port, 'a server is registered for port ' + port +
        ', but stickyd listens on ' + describeListeners() + ': no connection will reach it');
    }
  }
}

function describeListeners() {
  if (!welcome || !Array.isArray(welcome.listeners)) return '(unknown)';
  return welcome.listeners.map((l) => l.address + ':' + l.port + ' (' + l.name + ')')
    .join(', ');
}

/**
 * Hands `socket` to `server` as if the server had accepted it: what Node's own
 * `net.Server` does for an accepted connection, and what sticky-session's worker does with a
 * socket its master passes (`_connections++`, `socket.server`, `emit('connection')`,
 * `resume()`).
 */
function deliver(server, socket) {
  if (socket.destroyed) return;
  // As net.Server: a server at its maxConnections drops the connection.
  if (server.maxConnections && server._connections >= server.maxConnections) {
    server.emit('drop', {
      localAddress: socket.localAddress,
      localPort: socket.localPort,
      localFamily: socket.localFamily,
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
      remoteFamily: socket.remoteFamily,
    });
    socket.destroy();
    return;
  }
  // The socket Node built from the handle has net.Socket's defaults; a server accepting it
  // would have given it the server's settings (http.Server: allowHalfOpen and noDelay true).
  socket.allowHalfOpen = Boolean(server.allowHalfOpen);
  if (server.noDelay) socket.setNoDelay(true);
  if (server.keepAlive) socket.setKeepAlive(true, server.keepAliveInitialDelay || 0);
  server._connections++;
  socket.server = server;
  // Not `socket._server`: a closing net.Socket would then decrement the count itself and call
  // `server._emitCloseIfDrained()`, and a server that never listened in this process emits
  // 'close' as soon as its connections are gone (socket.io closes its engine on it). The count
  // is kept here instead (sticky-session never decrements it: its count only grows).
  socket.once('close', () => { server._connections--; });
  server.emit('connection', socket);
  const info = infos.get(socket);
  if (info && info.rehash && !draining) watchBoundaries(socket, info);
  if (server.pauseOnConnect) {
    socket.pause();
  } else {
    socket.resume();
  }
}

/** Reads exactly `n` bytes (a PROXY header) off `socket`, then calls `done()`. */
function consumePrefix(socket, n, done) {
  let left = n;
  function onReadable() {
    while (left > 0) {
      const chunk = socket.read(left);
      if (chunk === null) return; // fewer than `left` bytes buffered: wait for more
      left -= chunk.length;
    }
    finish();
  }
  function onEnd() {
    cleanup();
    socket.destroy();
  }
  function cleanup() {
    socket.removeListener('readable', onReadable);
    socket.removeListener('end', onEnd);
    socket.removeListener('close', cleanup);
  }
  function finish() {
    cleanup();
    // Removing the last 'readable' listener takes effect on the next tick: deliver after it,
    // so the 'data' listener the server adds puts the stream in flowing mode.
    process.nextTick(done);
  }
  socket.on('readable', onReadable);
  socket.on('end', onEnd);
  socket.on('close', cleanup);
}

function onConn(msg, socket) {
  if (!socket) return; // the fd did not arrive: Node answered NODE_HANDLE_NACK
  const info = {
    seq: msg.seq,
    listener: msg.listener,
    index: msg.index,
    port: msg.port,
    address: msg.address,
    remotePort: msg.remotePort,
    hash: msg.hash,
    proxyLen: msg.proxyLen || 0,
    rehash: msg.rehash === true,
  };
  infos.set(socket, info);
  const go = () => route(socket, info);
  if (info.proxyLen > 0) {
    // The client address is the PROXY header's, which is consumed here: the application
    // reads it where it reads any client's address.
    defineAddress(socket, info);
    consumePrefix(socket, info.proxyLen, go);
  } else {
    go();
  }
}

function defineAddress(socket, info) {
  if (typeof info.address !== 'string' || info.address === '') return;
  const family = net.isIPv6(info.address) ? 'IPv6' : 'IPv4';
  Object.defineProperty(socket, 'remoteAddress', { value: info.address, configurable: true });
  Object.defineProperty(socket, 'remoteFamily', { value: family, configurable: true });
  if (typeof info.remotePort === 'number') {
    Object.defineProperty(socket, 'remotePort', { value: info.remotePort, configurable: true });
  }
}

function route(socket, info) {
  const server = servers.get(info.port);
  if (server) {
    deliver(server, socket);
    return;
  }
  // No server for this port (yet): keep the connection, paused, until the app registers one
  // or HOLD_MS pass.
  socket.pause();
  const entry = { socket, info, timer: null };
  const list = held.get(info.port) || [];
  list.push(entry);
  held.set(info.port, list);
  const forget = () => {
    const l = held.get(info.port);
    if (!l) return;
    const i = l.indexOf(entry);
    if (i !== -1) l.splice(i, 1);
    if (l.length === 0) held.delete(info.port);
    clearTimeout(entry.timer);
  };
  entry.forget = forget;
  socket.once('close', forget);
  entry.timer = setTimeout(() => {
    forget();
    socket.removeListener('close', forget);
    logOnce('noserver:' + info.port, 'a connection came on listener ' + info.listener +
      ' (port ' + info.port + ') but no server is registered for port ' + info.port +
      ' (registered: ' + (servers.size ? [...servers.keys()].join(', ') : 'none') +
      '); closing such connections: call listen(server, ' + info.port + ')');
    socket.destroy();
  }, HOLD_MS);
  entry.timer.unref();
}

function releaseHeld(port) {
  const list = held.get(port);
  if (!list) return;
  held.delete(port);
  const server = servers.get(port);
  for (const entry of list) {
    clearTimeout(entry.timer);
    entry.socket.removeListener('close', entry.forget);
    deliver(server, entry.socket);
  }
}

// ---- Hand-back at request boundaries (`--rehash-per-request`) ---------------------------------
//
// Node has no MSG_PEEK: its http server reads whatever the socket holds, and its native parser
// runs through a whole chunk (pipelined requests included) before any JavaScript runs. So the
// package counts, from inside the parser, the messages begun and completed on the connection,
// and the responses finished; at a boundary (as many of each, the response written, the
// connection kept alive) it stops reading at once, in the same turn of the event loop as the
// response's last write: the client (a proxy) sends the next request only once it has that
// response, and it cannot have been read yet. Where a next request has begun (pipelined, or
// answered before its body arrived) the connection is served here, and the next boundary is
// tried. Upgrades, `Connection: close`, HTTP/1.0 and servers that are not Node's http
// (https, plain net) never go back.
//
// It rests on Node internals (the parser's callback slots, the handle's readStop): where they
// are not as expected, nothing is handed back.

const noop = () => {};
let httpParser = null;
try {
  httpParser = require('_http_common').HTTPParser;
} catch (e) {
  httpParser = null;
}
const kOnMessageBegin = httpParser ? httpParser.kOnMessageBegin | 0 : -1;
const kOnMessageComplete = httpParser ? httpParser.kOnMessageComplete | 0 : -1;
/** socket -> its boundary count, for connections of rehash listeners. */
const watched = new WeakMap();

/** Counts the messages begun and completed on `socket` (stickyd sent it with `rehash`). */
function watchBoundaries(socket, info) {
  const parser = socket.parser;
  if (!parser || kOnMessageBegin < 0 || !socket._handle ||
      typeof socket._handle.readStop !== 'function') {
    return;
  }
  const begin = parser[kOnMessageBegin];
  const complete = parser[kOnMessageComplete];
  if (typeof complete !== 'function') return;
  const st = { info, begun: 0, completed: 0, finished: 0, req: null, done: false };
  parser[kOnMessageBegin] = function onMessageBegin(...args) {
    st.begun++;
    if (typeof begin === 'function') return begin.apply(this, args);
    return undefined;
  };
  parser[kOnMessageComplete] = function onMessageComplete(...args) {
    st.completed++;
    const r = complete.apply(this, args);
    // Answered before the request ended: the boundary may be now (checked after the parser
    // has run through the rest of this chunk).
    process.nextTick(maybeHandBack, socket, st);
    return r;
  };
  watched.set(socket, st);
}

// Every request of every http server (Node 18.7+), also those that never emit 'request'.
diagnostics.subscribe('http.server.request.start', ({ request, response, socket }) => {
  const st = watched.get(socket);
  if (!st) return;
  st.req = request;
  // Looked at in a tick: after http's own 'finish' handler has detached the response, and
  // still before the event loop reads again.
  response.once('finish', () => {
    st.finished++;
    process.nextTick(maybeHandBack, socket, st);
  });
});

function atBoundary(socket, st) {
  return !st.done && !draining && socket._handle && !socket.destroyed &&
    !socket.writableEnded && st.req && st.req.complete && !socket._httpMessage &&
    st.begun === st.completed && st.completed === st.finished;
}

/** Gives `socket` back to stickyd if it is at a request boundary. */
function maybeHandBack(socket, st) {
  if (!atBoundary(socket, st)) return;
  st.done = true;
  const handle = socket._handle;
  // Stop reading, and keep Node from starting again (a pause()/resume() cycle of http's own
  // backpressure would call readStart()).
  handle.readStop();
  handle.reading = false;
  socket._read = noop;
  // Detach it from the http server.
  for (const event of ['data', 'end', 'drain', 'timeout', 'error', 'resume', 'pause']) {
    socket.removeAllListeners(event);
  }
  socket.on('error', noop);
  socket.setTimeout(0);
  // Else child_process would treat it as a cluster server's connection.
  socket.server = null;
  const message = { cmd: 'NODE_STICKYD', act: 'handback', index: st.info.index };
  // Node closes this process's copy once stickyd acknowledges the handle; the 'close' of
  // destroy() keeps the server's count.
  process.send(message, socket, () => socket.destroy());
}

function onDrain() {
  if (draining) return;
  draining = true;
  // Exactly what sticky-session's worker does on 'sticky:close'.
  if (process.listenerCount('SIGINT') > 0) {
    process.emit('SIGINT');
  } else {
    process.exit();
  }
}

function onInternalMessage(msg, handle) {
  if (!msg || msg.cmd !== 'NODE_STICKYD') return;
  switch (msg.act) {
    case 'conn':
      onConn(msg, handle);
      break;
    case 'welcome':
      welcome = {
        worker: msg.worker,
        workers: msg.workers,
        listeners: Array.isArray(msg.listeners) ? msg.listeners : [],
      };
      checkPorts();
      break;
    case 'drain':
      onDrain();
      break;
    default:
      // A newer stickyd may send more; an older package ignores what it does not know.
      logOnce('act:' + msg.act, 'ignoring a message from stickyd it does not know: act ' +
        JSON.stringify(msg.act));
  }
}

function attach() {
  if (attached) return;
  attached = true;
  process.on('internalMessage', onInternalMessage);
}

// Attached as soon as the package is loaded: a connection Node emits while nobody listens for
// it would be lost. (stickyd hands this worker none before its first listen() says 'ready';
// connections for ports not registered yet are held, above.)
if (UNDER_STICKYD && typeof process.send === 'function') attach();

function startCommand(port, hostname, options) {
  const workers = (options && options.workers) || os.cpus().length;
  const script = process.argv[1]
    ? path.relative(process.cwd(), process.argv[1]) || process.argv[1]
    : 'app.js';
  const host = hostname || '0.0.0.0';
  const address = host.includes(':') ? '[' + host + ']:' + port : host + ':' + port;
  return 'stickyd --ipc node --listen ' + address + ' --workers ' + workers + ' -- node ' +
    [script].concat(process.argv.slice(2)).join(' ');
}

/**
 * sticky-session-custom's `listen(server, port, hostname, options)`.
 *
 * Under stickyd: `server` gets every connection stickyd accepts on a listener whose port is
 * `port`; returns false (this process is a worker: there is no master in Node).
 * Without stickyd: prints how to start the app with stickyd and exits with status 2, unless
 * STICKYD_STANDALONE=1, with which it calls `server.listen(port, hostname)` and returns false.
 */
function listen(server, port, hostname, options) {
  if (options === undefined && hostname !== null && typeof hostname === 'object') {
    options = hostname;
    hostname = undefined;
  }
  if (!server || typeof server.emit !== 'function') {
    throw new TypeError('stickyd: listen(server, port, ...): server must be a net.Server ' +
      '(an http.Server, https.Server, ...)');
  }
  const p = toPort(port);
  noteOptions(options);

  if (!UNDER_STICKYD) {
    if (STANDALONE) {
      logOnce('standalone', 'STICKYD_STANDALONE=1: serving port ' + p +
        ' in this one process, without stickyd (cluster.worker is null here)');
      servers.set(p, server);
      if (hostname) server.listen(p, hostname);
      else server.listen(p);
      return false;
    }
    const how = process.env.STICKYD_IPC
      ? 'this process was started by stickyd without `--ipc node` (STICKYD_IPC=' +
        process.env.STICKYD_IPC + '): start it with '
      : 'this app runs its workers under stickyd: start it with ';
    log(how + '`' + startCommand(p, hostname, options) + '` (or set STICKYD_STANDALONE=1 to ' +
      'serve port ' + p + ' from this one process)');
    process.exit(2);
  }
  if (typeof process.send !== 'function') {
    log('STICKYD_IPC=node but this process has no IPC channel (NODE_CHANNEL_FD): start it ' +
      'with `' + startCommand(p, hostname, options) + '`');
    process.exit(2);
  }
  attach();

  if (servers.has(p) && servers.get(p) !== server) {
    const err = new Error('stickyd: listen(): another server is already registered for port ' +
      p);
    err.code = 'EADDRINUSE';
    err.port = p;
    process.nextTick(() => server.emit('error', err));
    return false;
  }
  servers.set(p, server);
  checkPorts();
  if (held.has(p)) process.nextTick(releaseHeld, p);
  if (!ready) {
    // The worker is ready: stickyd routes connections to it from now on.
    ready = true;
    process.send({ cmd: 'NODE_STICKYD', act: 'ready' });
  }
  return false;
}

/**
 * Asks stickyd for a graceful shutdown of the whole pool, as sticky-session-custom's
 * `process.send(['sticky:masterclose', wait])`: stickyd stops accepting, routes what it has
 * accepted, drains every worker and exits 0. `wait` is passed along (stickyd always lets
 * workers finish their connections, within its `--grace`). Returns whether the message was
 * sent. Standalone, it closes the servers registered in this process.
 */
function close(wait) {
  if (UNDER_STICKYD && typeof process.send === 'function') {
    return process.send(['sticky:masterclose', Boolean(wait)]);
  }
  if (STANDALONE) {
    for (const server of servers.values()) server.close();
    return true;
  }
  return false;
}

/** The listeners stickyd announced ({name, address, port}), or null before its welcome. */
function listeners() {
  return welcome ? welcome.listeners.map((l) => Object.assign({}, l)) : null;
}

/** This worker's slot (0-based) and the pool's size, or null before stickyd's welcome. */
function pool() {
  return welcome ? { worker: welcome.worker, workers: welcome.workers } : null;
}

/** What stickyd said about a connection it handed over, or undefined for other sockets. */
function connectionInfo(socket) {
  const info = infos.get(socket);
  return info ? Object.assign({}, info) : undefined;
}

module.exports = {
  listen,
  close,
  listeners,
  pool,
  connectionInfo,
  underStickyd: UNDER_STICKYD,
};
