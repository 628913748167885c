// sticky-session-custom's README, "Balancing based on direct IP connection", with
// require('stickyd') for require('sticky-session-custom'):
//   stickyd --ipc node --listen 0.0.0.0:3000 --workers 4 -- node direct-ip.js
// (PORT: the tests pass the port stickyd listens on; the README's 3000 otherwise.)
var cluster = require('cluster'); // Only required if you want the worker id
var sticky = require('stickyd');

var server = require('http').createServer(function(req, res) {
  res.end('worker: ' + cluster.worker.id);
});

if (sticky.listen(server, +process.env.PORT || 3000, '0.0.0.0', {
  workers: 4 // if workers is unset, it will use all the available cores in the system
})) {
  // Master code
  server.once('listening', function() {
    console.log('server started on 3000 port');
  });
} else {
  // Worker code
}
