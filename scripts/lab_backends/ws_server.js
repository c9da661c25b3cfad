// WebSocket backend for the pcapreset reset lab (Node.js, no packages): an http server
// whose 'upgrade' handler completes the RFC 6455 handshake and echoes text frames.
// Paths containing "ping" get a server ping every PING_MS.  SIGTERM exits at once (no
// close frames: a restart without draining).  Logs one JSON object per line: accept,
// upgrade, message, ping, close_frame, end (peer FIN), close, sigterm.
const http = require('http');
const crypto = require('crypto');
const host = process.argv[2] || '0.0.0.0';
const port = parseInt(process.argv[3] || '3000', 10);
const maxSeconds = parseFloat(process.argv[4] || '120');
const pingMs = parseInt(process.argv[5] || '1000', 10);
const t0 = performance.timeOrigin;
function log(event, extra) {
  const ts = (t0 + performance.now()) / 1000;
  process.stdout.write(JSON.stringify(Object.assign({ ts, event }, extra)) + '\n');
}
function peerOf(s) {
  const a = s.remoteAddress || '';
  return (a.includes(':') ? `[${a}]` : a) + ':' + s.remotePort;
}
function frame(opcode, payload) {
  const n = payload.length;
  const head = n < 126 ? Buffer.from([0x80 | opcode, n])
    : Buffer.from([0x80 | opcode, 126, n >> 8, n & 0xff]);
  return Buffer.concat([head, payload]);
}
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 3 });
  res.end('ok\n');
});
server.on('connection', (s) => {
  const peer = peerOf(s);
  log('accept', { peer });
  s.on('end', () => log('end', { peer }));
  s.on('close', (hadError) => log('close', { peer, had_error: hadError }));
  s.on('error', (e) => log('error', { peer, code: e.code }));
});
server.on('upgrade', (req, s, head) => {
  const peer = peerOf(s);
  const key = req.headers['sec-websocket-key'] || '';
  const accept = crypto.createHash('sha1')
    .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
          + `Sec-WebSocket-Accept: ${accept}\r\n\r\n`);
  log('upgrade', { peer, path: req.url });
  let buf = head && head.length ? Buffer.from(head) : Buffer.alloc(0);
  let timer = null;
  if (req.url.includes('ping')) {
    timer = setInterval(() => { log('ping', { peer }); s.write(frame(9, Buffer.from('lab'))); },
                        pingMs);
    s.on('close', () => clearInterval(timer));
  }
  s.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 2) {
      const op = buf[0] & 0x0f;
      let n = buf[1] & 0x7f;
      let off = 2;
      if (n === 126) { if (buf.length < 4) return; n = buf.readUInt16BE(2); off = 4; }
      const masked = buf[1] & 0x80;
      const total = off + (masked ? 4 : 0) + n;
      if (buf.length < total) return;
      const mask = masked ? buf.subarray(off, off + 4) : null;
      const p = Buffer.from(buf.subarray(off + (masked ? 4 : 0), total));
      if (mask) for (let i = 0; i < p.length; i++) p[i] ^= mask[i % 4];
      buf = buf.subarray(total);
      if (op === 8) { log('close_frame', { peer }); s.end(frame(8, p)); return; }
      if (op === 10) { log('pong', { peer }); continue; }
      if (op === 1 || op === 2) { log('message', { peer, len: n }); s.write(frame(op, p)); }
    }
  });
});
process.on('SIGTERM', () => { log('sigterm', { note: 'exit without close frames' });
                              process.exit(0); });
server.listen(port, host, () => log('listening', { host, port, ping_ms: pingMs }));
setTimeout(() => process.exit(0), maxSeconds * 1000).unref();
