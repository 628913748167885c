// sticky-session-custom's README, "Shutting down gracefully", with require('stickyd') for
// require('sticky-session-custom'). stickyd's SIGTERM (or SIGINT, or a worker's
// process.send(['sticky:masterclose', wait])) drains the workers: each one's exit hook runs.
//   stickyd --ipc node --listen 0.0.0.0:3000 --workers 4 -- node graceful-shutdown.js
// (PORT: the tests pass the port stickyd listens on; the README's 3000 otherwise.)
var cluster = require('cluster');
var sticky = require('stickyd');
var exitHook = require('async-exit-hook');

var server = require('http').createServer(function(req, res) {
  res.end('worker: ' + cluster.worker.id);
});

var closeMaster = sticky.listen(server, +process.env.PORT || 3000);

if (closeMaster) {
  // Master code
  server.once('listening', function() {
    console.log('server started on 3000 port');
    setTimeout(function () {
      closeMaster(function () {
        console.log('Closed master!');
      }, false); // set to true if you want to wait for connections to close
    }, 2000);
  });
} else {
  // Worker code

  exitHook(function(done) {
    console.log('Worker received exit signal. Shutting down...');
    setTimeout(function() {
      console.log('shutdown');
      done();
    }, 3000);
  });
  
  // you can also send a shutdown signal to the master.
  // set to true if you want to wait for connections to close before
  // shutting down workers
  // process.send(['sticky:masterclose', false]);
}
