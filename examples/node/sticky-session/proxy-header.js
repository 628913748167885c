// sticky-session-custom's README, "Balancing based on `x-forwarded-for`", with
// require('stickyd') for require('sticky-session-custom'):
//   stickyd --ipc node --listen 0.0.0.0:3000 --workers 4 --key header:x-forwarded-for -- node proxy-header.js
// (PORT: the tests pass the port stickyd listens on; the README's 3000 otherwise.)
var cluster = require('cluster');
var sticky = require('stickyd');

var server = require('http').createServer(function(req, res) {
  res.end('worker: ' + cluster.worker.id);
});

var closeMaster = sticky.listen(server, +process.env.PORT || 3000, '0.0.0.0', {
  proxyHeader: 'x-forwarded-for' // header to read for IP
});

if (closeMaster) {
  // Master code
  server.once('listening', function() {
    console.log('server started on 3000 port');
  });
} else {
  // Worker code
}
