// sticky-session-custom's README, "Custom balancing logic", with require('stickyd') for
// require('sticky-session-custom'). stickyd does not call generatePrehashArray: its key rule
// does the same work (the `token` query parameter), and requests without a token fall back to
// the client address (`--fallback ip`, the default):
//   stickyd --ipc node --listen 0.0.0.0:3000 --workers 4 --key query:token -- node custom-token.js
// (PORT: the tests pass the port stickyd listens on; the README's 3000 otherwise.)
var cluster = require('cluster');
var sticky = require('stickyd');

var server = require('http').createServer(function(req, res) {
  res.end('worker: ' + cluster.worker.id);
});

var closeMaster = sticky.listen(server, +process.env.PORT || 3000, '0.0.0.0', {
  generatePrehashArray(req, socket) {
    var parsed = new URL(req.url, 'https://dummyurl.example.com');
    // you can use '' instead of Math.random() if you want to use a consistent worker
    // for all unauthenticated requests
    var userToken = parsed.searchParams.get('token') || Math.random().toString();
    // turn string into an array of numbers for hashing
    return (userToken.split('') || ' ').map(e => e.charCodeAt());
  }
});

if (closeMaster) {
  // Master code
  server.once('listening', function() {
    console.log('server started on 3000 port');
  });
} else {
  // Worker code
}
