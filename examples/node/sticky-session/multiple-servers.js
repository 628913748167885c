// sticky-session-custom's README, "Multiple HTTP servers", with require('stickyd') for
// require('sticky-session-custom'). One stickyd listener per port, one pool of workers; each
// connection reaches the server registered for its listener's port:
//   stickyd --ipc node --listen 0.0.0.0:3000 --listen 0.0.0.0:3001 --workers 4 -- node multiple-servers.js
// (PORT, PORT2: the tests pass the ports stickyd listens on; the README's 3000 and 3001
// otherwise.)
var cluster = require('cluster');
var sticky = require('stickyd');

var server1 = require('http').createServer(function (req, res) {
  res.end('from server1, worker: ' + cluster.worker.id);
});

var server2 = require('http').createServer(function (req, res) {
  res.end('from server2, worker: ' + cluster.worker.id);
});

var closeHandle = sticky.listen(server1, +process.env.PORT || 3000);
sticky.listen(server2, +process.env.PORT2 || 3001, '0.0.0.0', {
  // setting this to false will use workers of the first sticky instance spawned instead of
  // spawning more workers (only works if the amount of workers are the same)
  dontUseExistingWorkers: false
});

if (closeHandle) {
  // Master code
  server1.once('listening', function () {
    console.log('server started on 3000 port');
  });
  server2.once('listening', function () {
    console.log('server started on 3001 port');
  });
} else {
  // Worker code
}
