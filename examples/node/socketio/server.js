'use strict';
// The socket.io app behind stickyd: every HTTP request of a session (socket.io's long polls
// are each a new request, often on a new connection) reaches the worker that holds it.
//
//   stickyd --ipc node --listen 0.0.0.0:3000 --workers 4 -- node server.js
//   stickyd --ipc node --listen 0.0.0.0:3000 --workers 4 --key header:x-forwarded-for -- node server.js
//
// PORT: the port stickyd listens on (3000 by default; the tests pass the one they bound).

const sticky = require('stickyd');
const { createApp } = require('./app');

const port = Number(process.env.PORT) || 3000;
const server = createApp();

if (!sticky.listen(server, port, '0.0.0.0')) {
  // Worker code (under stickyd every process is a worker).
}
