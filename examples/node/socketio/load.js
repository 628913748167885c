'use strict';
// Many socket.io clients, long-polling only (every poll and every emit is an HTTP request of
// its own, on a connection of its own), from several loopback source addresses. Prints one
// line of JSON: what happened to the clients.
//
//   node load.js --url http://127.0.0.1:3000 [--clients 200] [--sources 20] [--rounds 20]
//                [--first-source 10] [--timeout-ms 20000] [--deadline-ms 120000]
//
// Client i connects from 127.0.0.(first-source + i % sources) with
// `transports: ['polling']` and no reconnection (a failure stays a failure), then emits 'echo'
// `rounds` times, one after the other, each waiting for its acknowledgement.
//
// The summary: clients, connected (saw 'connect'), completed (connected and got every ack),
// roundTrips (acks, all clients), failures (clients that did not complete), status400 (failed
// HTTP requests answered 400), sessionUnknown (of those, how many said 'Session ID unknown'),
// errors (counts by kind: connect_error, disconnect:<reason>, timeout, bad_ack), moved (clients
// whose acks came from more than one worker), workers (clients per worker id), ms.

const http = require('http');
const { io } = require('socket.io-client');

function args() {
  const out = {
    url: 'http://127.0.0.1:3000',
    clients: 200,
    sources: 20,
    rounds: 20,
    firstSource: 10,
    timeoutMs: 20000,
    deadlineMs: 120000,
  };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in out)) {
      process.stderr.write('load.js: unknown option ' + argv[i] + '\n');
      process.exit(2);
    }
    out[key] = key === 'url' ? argv[i + 1] : Number(argv[i + 1]);
  }
  return out;
}

function runClient(opts, i, summary) {
  const localAddress = '127.0.0.' + (opts.firstSource + (i % opts.sources));
  // keepAlive false: each request opens its own connection, as a browser's long polls may.
  const agent = new http.Agent({ localAddress, keepAlive: false });
  const seen = new Set();
  let failed = false;
  return new Promise((resolve) => {
    const socket = io(opts.url, {
      transports: ['polling'],
      agent,
      reconnection: false,
      forceNew: true,
      timeout: opts.timeoutMs,
    });
    const fail = (kind, details) => {
      if (failed) return;
      failed = true;
      summary.errors[kind] = (summary.errors[kind] || 0) + 1;
      noteHttp(details);
      socket.disconnect();
      agent.destroy();
      resolve();
    };
    // An HTTP failure of a long poll or an emit: its status and body, when there is one.
    const noteHttp = (details) => {
      if (!details) return;
      const status = details.description;
      const ctx = details.context;
      if (status === 400) summary.status400++;
      const text = ctx && typeof ctx.responseText === 'string' ? ctx.responseText : '';
      if (text.includes('Session ID unknown')) summary.sessionUnknown++;
    };
    socket.on('connect_error', (err) => fail('connect_error', err));
    socket.on('disconnect', (reason, details) => {
      if (reason === 'io client disconnect') return;
      fail('disconnect:' + reason, details);
    });
    socket.on('connect', async () => {
      summary.connected++;
      for (let r = 0; r < opts.rounds; r++) {
        let ack;
        try {
          ack = await socket.timeout(opts.timeoutMs).emitWithAck('echo', { client: i, round: r });
        } catch (e) {
          fail('timeout');
          return;
        }
        if (failed) return;
        if (!ack || !ack.data || ack.data.client !== i || ack.data.round !== r) {
          fail('bad_ack');
          return;
        }
        summary.roundTrips++;
        seen.add(ack.worker);
      }
      summary.completed++;
      if (seen.size > 1) summary.moved++;
      for (const w of seen) summary.workers[w] = (summary.workers[w] || 0) + 1;
      failed = true; // done: what follows is our own disconnect
      socket.disconnect();
      agent.destroy();
      resolve();
    });
  });
}

async function main() {
  const opts = args();
  const started = Date.now();
  const summary = {
    clients: opts.clients,
    connected: 0,
    completed: 0,
    roundTrips: 0,
    failures: 0,
    status400: 0,
    sessionUnknown: 0,
    errors: {},
    moved: 0,
    workers: {},
    ms: 0,
  };
  const all = [];
  for (let i = 0; i < opts.clients; i++) all.push(runClient(opts, i, summary));
  const deadline = new Promise((resolve) => {
    const t = setTimeout(() => {
      summary.errors.deadline = 1;
      resolve();
    }, opts.deadlineMs);
    t.unref();
  });
  await Promise.race([Promise.all(all), deadline]);
  summary.failures = opts.clients - summary.completed;
  summary.ms = Date.now() - started;
  process.stdout.write(JSON.stringify(summary) + '\n');
  process.exit(0);
}

main().catch((e) => {
  process.stderr.write('load.js: ' + (e && e.stack || e) + '\n');
  process.exit(1);
});
