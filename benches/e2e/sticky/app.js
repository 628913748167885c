'use strict';
// The sticky-session-custom peer of the end-to-end benchmark (benches/e2e/run.sh): a Node
// cluster of WORKERS workers behind the package's master, which parses each connection's
// request head and routes it by X-Forwarded-For. The workers serve ../node/handler.js, which
// answers like hello_worker.
//
//   PORT=3000 WORKERS=2 node app.js        (binds 127.0.0.1 only)

const http = require('http');
const sticky = require('sticky-session-custom');
const handler = require('../node/handler');

const PORT = Number(process.env.PORT || 3000);
const WORKERS = Number(process.env.WORKERS || 2);

const server = http.createServer(handler);
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
