'use strict';
// The same socket.io app on Node's own cluster, round-robin: NOT sticky. The primary hands
// each new connection to the next worker, so a session's next long poll often reaches a worker
// that does not know it ('Session ID unknown', HTTP 400). Kept as the negative control of
// tests/node.rs and as the Node ceiling of the benchmarks.
//
//   node cluster.js            (PORT, default 3000; HOST, default 0.0.0.0; WORKERS, default 4)

const cluster = require('cluster');

const port = process.env.PORT !== undefined ? Number(process.env.PORT) : 3000;
const host = process.env.HOST || '0.0.0.0';
const workers = Number(process.env.WORKERS) || 4;

if (cluster.isPrimary) {
  cluster.schedulingPolicy = cluster.SCHED_RR;
  let said = false;
  cluster.on('listening', (worker, address) => {
    if (said) return;
    said = true;
    process.stderr.write('cluster: listening on ' + address.address + ':' + address.port + '\n');
  });
  for (let i = 0; i < workers; i++) cluster.fork();
  const stop = () => {
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  const { createApp } = require('./app');
  createApp().listen(port, host);
}
