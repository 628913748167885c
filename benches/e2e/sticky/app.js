'use strict';
// The sticky-session-custom peer of the end-to-end benchmark (benches/e2e/run.sh): a Node
// cluster of WORKERS workers behind the package's master, which parses each connection's
// request head and routes it by X-Forwarded-For. The workers answer like hello_worker:
// `X-Worker: <0-based id>`, `X-Listener`, `X-Peer`, the body `worker: <id>\n`, and
// `GET /bytes/<n>` (n up to 64 MiB) answers n bytes of `x`.
//
//   PORT=3000 WORKERS=2 node app.js        (binds 127.0.0.1 only)

const cluster = require('cluster');
const http = require('http');
const sticky = require('sticky-session-custom');

const PORT = Number(process.env.PORT || 3000);
const WORKERS = Number(process.env.WORKERS || 2);
const MAX_BYTES = 64 * 1024 * 1024;

// The last /bytes body, kept: the benchmark asks for the same size again and again.
let xs = Buffer.alloc(0);

const server = http.createServer((req, res) => {
  const id = cluster.worker ? cluster.worker.id - 1 : 0;
  const peer = String(req.socket.remoteAddress || '').replace(/^::ffff:/, '');
  const headers = {
    'X-Worker': String(id),
    'X-Listener': 'l0',
    'X-Peer': peer,
    'Content-Type': 'text/plain',
  };
  const path = req.url.split('?')[0];
  let body;
  let status = 200;
  if (path.startsWith('/bytes/')) {
    const digits = path.slice('/bytes/'.length);
    const n = /^[0-9]{1,10}$/.test(digits) ? Number(digits) : -1;
    if (n >= 0 && n <= MAX_BYTES) {
      if (xs.length !== n) xs = Buffer.alloc(n, 'x');
      body = xs;
    } else {
      status = 400;
      body = `byte count must be 0..=${MAX_BYTES}\n`;
    }
  } else {
    body = `worker: ${id}\n`;
  }
  headers['Content-Length'] = String(Buffer.byteLength(body));
  res.writeHead(status, headers);
  res.end(req.method === 'HEAD' ? undefined : body);
});
server.keepAliveTimeout = 30000;

const closeMaster = sticky.listen(server, PORT, '127.0.0.1', {
  workers: WORKERS,
  proxyHeader: 'x-forwarded-for',
});
if (closeMaster) {
  server.once('listening', () => {
    console.error(`sticky-session-custom: master ${process.pid} listening on 127.0.0.1:${PORT}`);
  });
  const stop = () => closeMaster(() => process.exit(0), false);
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
