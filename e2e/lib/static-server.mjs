// A tiny static file server for the e2e run (no dependencies).
//
//   node e2e/lib/static-server.mjs ROOT [COUNT]
//
// Serves the files under ROOT on COUNT (default 1) listeners, each on a free
// loopback port, and prints one line per listener:
//   serving ROOT on http://127.0.0.1:PORT
// Several listeners give several *origins* (the port is part of the origin),
// which is what the CORS checks need: one origin the API allows, one it does not.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(process.argv[2] ?? '.');
const count = Number(process.argv[3] ?? 1);
const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

function handler(req, res) {
  const url = new URL(req.url, 'http://localhost');
  let rel = decodeURIComponent(url.pathname);
  if (rel.endsWith('/')) rel += 'index.html';
  const file = path.join(root, path.normalize(rel));
  if (!file.startsWith(root + path.sep) && file !== root) {
    res.writeHead(403).end('forbidden');
    return;
  }
  fs.readFile(file, (err, body) => {
    if (err) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, {
      'content-type': types[path.extname(file)] ?? 'application/octet-stream',
      'cache-control': 'no-store',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
}

for (let i = 0; i < count; i++) {
  const server = http.createServer(handler);
  server.listen(0, '127.0.0.1', () => {
    console.log(`serving ${root} on http://127.0.0.1:${server.address().port}`);
  });
}
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));
