'use strict';
// The request handler every Node system of the end-to-end benchmark (benches/e2e/run.sh)
// serves, answering like hello_worker: `X-Worker: <0-based id>`, `X-Listener`, `X-Peer`, the
// body `worker: <id>\n`, and `GET /bytes/<n>` (n up to 64 MiB) answers n bytes of `x`.

const cluster = require('cluster');

const MAX_BYTES = 64 * 1024 * 1024;

// The last /bytes body, kept: the benchmark asks for the same size again and again.
let xs = Buffer.alloc(0);

function handler(req, res) {
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
}

module.exports = handler;
