// Node.js backend for the pcapreset reset lab: a plain http.createServer with the
// DEFAULT keepAliveTimeout (5000 ms in Node 20).  Logs one JSON object per line:
// accept / request / response / peer FIN ("end") / close, with the idle time before
// close so an idle close by the server is visible in the log.
const http = require('http');
const host = process.argv[2] || '0.0.0.0';
const port = parseInt(process.argv[3] || '3000', 10);
const maxSeconds = parseFloat(process.argv[4] || '120');
// optional 5th argument: keepAliveTimeout in ms (lab variants); default: Node's own default
const keepAliveMs = process.argv[5] ? parseInt(process.argv[5], 10) : null;
function log(event, extra) {
  process.stdout.write(JSON.stringify(Object.assign({ ts: Date.now() / 1000, event }, extra)) + '\n');
}
function peerOf(s) {
  const a = s.remoteAddress || '';
  return (a.includes(':') ? `[${a}]` : a) + ':' + s.remotePort;
}
const server = http.createServer((req, res) => {
  const s = req.socket;
  const peer = s._prlPeer;
  log('request', { peer, method: req.method, path: req.url });
  s._prlBusy = true;
  req.resume();
  req.on('end', () => {
    const body = 'ok\n';
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    res.end(body, () => {
      s._prlBusy = false;
      s._prlLastResponse = Date.now();
      log('response', { peer, path: req.url });
      if (req.url === '/reset-and-destroy') {
        // lab variant: abortive close from Node (socket.resetAndDestroy(), Node >= 18.3,
        // closes the handle with uv_tcp_close_reset, i.e. SO_LINGER 0 -> RST)
        setTimeout(() => { log('closed with SO_LINGER 0', { peer, how: 'resetAndDestroy' });
                           s.resetAndDestroy(); }, 50);
      }
    });
  });
});
server.on('connection', (s) => {
  s._prlPeer = peerOf(s);
  s._prlPeerFin = false;
  log('accept', { peer: s._prlPeer });
  s.on('end', () => { s._prlPeerFin = true; log('peer_fin', { peer: s._prlPeer }); });
  s.on('error', (e) => log('socket_error', { peer: s._prlPeer, error: String(e) }));
  s.on('close', (hadError) => {
    const idle = s._prlLastResponse ? (Date.now() - s._prlLastResponse) / 1000 : null;
    let how = 'closed';
    if (!s._prlPeerFin && !hadError && !s._prlBusy) how = 'closed idle';
    log(how, { peer: s._prlPeer, idle_s: idle, peer_fin: s._prlPeerFin, had_error: hadError,
               keepAliveTimeout_ms: server.keepAliveTimeout });
  });
});
if (keepAliveMs !== null) server.keepAliveTimeout = keepAliveMs;
// optional 6th argument: server.maxConnections (connections beyond it are accepted and
// destroyed at once; Node emits 'drop' for each)
if (process.argv[6]) {
  server.maxConnections = parseInt(process.argv[6], 10);
  server.on('drop', (d) => log('drop', { peer: (d.remoteAddress.includes(':')
    ? `[${d.remoteAddress}]` : d.remoteAddress) + ':' + d.remotePort,
    maxConnections: server.maxConnections }));
}
server.listen(port, host, () => log('listening', { host, port, pid: process.pid,
  keepAliveTimeout_ms: server.keepAliveTimeout, headersTimeout_ms: server.headersTimeout,
  node: process.version }));
setTimeout(() => { log('exit', { reason: 'max-seconds' }); process.exit(0); }, maxSeconds * 1000);
