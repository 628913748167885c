'use strict';
// The socket.io app itself, the same for server.js (behind stickyd) and cluster.js (Node's own
// cluster, round-robin): an HTTP server with a socket.io 4 server on it that answers 'echo'
// and 'ping' with the worker's id.

const cluster = require('cluster');
const http = require('http');
const { Server } = require('socket.io');

function workerId() {
  return cluster.worker ? cluster.worker.id : 0;
}

function createApp() {
  const server = http.createServer((req, res) => {
    // Not socket.io: a plain answer, with the worker id.
    res.end('worker: ' + workerId() + '\n');
  });
  const io = new Server(server);
  io.on('connection', (socket) => {
    socket.on('echo', (data, ack) => {
      if (typeof ack === 'function') ack({ worker: workerId(), data });
    });
    socket.on('ping', (ack) => {
      if (typeof ack === 'function') ack({ worker: workerId() });
    });
  });
  // A request engine.io refuses: 'Session ID unknown' is what a session whose requests reach
  // another worker gets (the session lives in one process).
  io.engine.on('connection_error', (err) => {
    process.stderr.write('socket.io worker ' + workerId() + ': connection_error ' + err.code +
      ' ' + err.message + ' (' + err.req.method + ' ' + err.req.url + ')\n');
  });
  return server;
}

module.exports = { createApp, workerId };
