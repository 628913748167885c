'use strict';
// The Node workers of the end-to-end benchmark (benches/e2e/run.sh), serving handler.js:
//
//   stickyd --ipc node --listen 127.0.0.1:3000 --workers 2 -- node app.js
//       workers behind stickyd, through Node's IPC channel and the `stickyd` package
//       (worker-sdk/node): PORT names the listener's port (default 3000)
//   MODE=cluster PORT=3000 WORKERS=2 node app.js
//       Node's own cluster, round-robin (not sticky): the Node ceiling
//
// Both bind or serve 127.0.0.1 only.

const cluster = require('cluster');
const http = require('http');
const path = require('path');
const handler = require('./handler');

const PORT = Number(process.env.PORT || 3000);
const WORKERS = Number(process.env.WORKERS || 2);

const server = http.createServer(handler);
server.keepAliveTimeout = 30000;

if (process.env.MODE === 'cluster') {
  if (cluster.isPrimary) {
    cluster.schedulingPolicy = cluster.SCHED_RR;
    for (let i = 0; i < WORKERS; i++) cluster.fork();
    const stop = () => {
      for (const w of Object.values(cluster.workers)) w.kill();
      process.exit(0);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  } else {
    server.listen(PORT, '127.0.0.1');
  }
} else {
  require(path.join(__dirname, '../../../worker-sdk/node')).listen(server, PORT, '127.0.0.1');
}
