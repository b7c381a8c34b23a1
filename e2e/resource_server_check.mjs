// Resource servers against a live tokengate, for e2e/run.
//
//   TOKENGATE_BIN=target/release/tokengate WORK_DIR=/tmp/... node e2e/resource_server_check.mjs
//
// For EdDSA and for ES256, starts tokengate (with --introspection-clients) and
// examples/resource-server/server.mjs on free loopback ports, then checks:
//   jose-ALG-*             tokengate's JWKS and a token it issued, verified by an
//                          independent JOSE library (node `jose`): public keys only,
//                          the cache header, the kid, a tampered token refused
//   resource-server-ALG-*  the example: /cheap (JWKS only) and /sensitive (JWKS +
//                          introspection) accept a fresh token and refuse garbage;
//                          after logout /sensitive refuses it while /cheap, which
//                          only checks the signature, still accepts it (the known
//                          limit of JWKS-only checks); a rotated key is fetched on
//                          its first unknown kid; /sensitive fails closed (503)
//                          when tokengate is gone
// Every check prints `ok - ID` or `not ok - ID: why`; exits non-zero on any failure.
// Everything it starts is stopped at exit; every wait is bounded.
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from 'jose';

const E2E = path.dirname(fileURLToPath(import.meta.url));
const EXAMPLE = path.join(E2E, '..', 'examples', 'resource-server', 'server.mjs');
const BIN = process.env.TOKENGATE_BIN;
const WORK = process.env.WORK_DIR;
const CLIENT = `orders-api:${randomBytes(32).toString('base64url')}`;
const PASSWORD = 'resource-server-password';
const children = [];
let failures = 0;

function check(id, ok, why = '') {
  console.log(ok ? `ok - ${id}` : `not ok - ${id}: ${why}`);
  if (!ok) failures += 1;
}

// Starts a process and resolves with the URL of its "listening on" line.
function start(command, args, options, log) {
  const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const out = fs.createWriteStream(log);
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`${command} did not start in 20 s (${log})`)), 20_000);
    const read = (chunk) => {
      out.write(chunk);
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec((seen += chunk.toString()));
      if (match) { clearTimeout(timer); resolve({ child, url: match[1] }); }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    child.on('exit', (code) => { clearTimeout(timer); reject(new Error(`${command} exited (${code}) before listening; see ${log}`)); });
  });
}

function stop(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', resolve);
    child.kill('SIGTERM');
  });
}

async function call(url, init = {}) {
  const response = await fetch(url, { ...init, signal: AbortSignal.timeout(10_000) });
  const text = await response.text();
  return { status: response.status, headers: response.headers, text, json: () => JSON.parse(text) };
}

const postJson = (url, body) => call(url, {
  method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
});
const bearer = (token) => ({ headers: { authorization: `Bearer ${token}` } });

async function run(algorithm) {
  const dir = path.join(WORK, algorithm);
  fs.mkdirSync(dir, { recursive: true });
  const db = path.join(dir, 'tokengate.db');
  const gate = await start(BIN, ['--database', db, '--bind', '127.0.0.1:0', '--jwt-algorithm', algorithm,
    '--introspection-clients', CLIENT, '--keys-reload-ms', '100'], {}, path.join(dir, 'tokengate.log'));
  // The example, with the e2e tools' `jose` (a copy beside their node_modules).
  fs.copyFileSync(EXAMPLE, path.join(dir, 'server.mjs'));
  fs.symlinkSync(path.join(E2E, 'node_modules'), path.join(dir, 'node_modules'));
  const example = await start(process.execPath, [path.join(dir, 'server.mjs')], {
    env: { ...process.env, TOKENGATE_URL: gate.url, INTROSPECTION_CLIENT: CLIENT, PORT: '0', JWKS_COOLDOWN_MS: '0' },
  }, path.join(dir, 'example.log'));
  const id = (name) => `${name.split(':')[0]}-${algorithm}-${name.split(':')[1]}`;
  const email = `rs-${algorithm.toLowerCase()}@example.com`;
  const user = (await postJson(`${gate.url}/api/v1/register`, { name: 'RS', email, password: PASSWORD })).json();
  const login = async () => (await postJson(`${gate.url}/api/v1/login`, { email, password: PASSWORD })).json().access_token;
  const token = await login();
  const route = async (name, token) => (await call(`${example.url}/${name}`, token ? bearer(token) : {})).status;

  // An independent JOSE implementation agrees with tokengate's JWKS and token.
  const jwks = await call(`${gate.url}/.well-known/jwks.json`);
  const keys = jwks.json().keys;
  check(id('jose:jwks-public-keys-only'), jwks.status === 200 && keys.length >= 1
    && keys.every((k) => !('d' in k) && k.use === 'sig' && k.alg === algorithm && k.kid)
    && jwks.headers.get('cache-control') === 'public, max-age=600', jwks.text);
  try {
    const { payload, protectedHeader } = await jwtVerify(token, createLocalJWKSet({ keys }), {
      issuer: 'tokengate', audience: 'tokengate', algorithms: [algorithm] });
    check(id('jose:verifies-token'), payload.sub === String(user.id) && typeof payload.sid === 'string'
      && keys.some((k) => k.kid === protectedHeader.kid), JSON.stringify({ payload, protectedHeader }));
  } catch (error) {
    check(id('jose:verifies-token'), false, error.message);
  }
  const [head, body, signature] = token.split('.');
  const claims = JSON.parse(Buffer.from(body, 'base64url'));
  const forged = `${head}.${Buffer.from(JSON.stringify({ ...claims, sub: `${claims.sub}0` })).toString('base64url')}.${signature}`;
  const refused = await jwtVerify(forged, createLocalJWKSet({ keys }), { algorithms: [algorithm] })
    .then(() => false, () => true);
  check(id('jose:rejects-tampered-token'), refused, 'a token with a changed sub verified');

  // The example: both routes, before and after logout.
  check(id('resource-server:cheap-accepts-token'), (await route('cheap', token)) === 200);
  check(id('resource-server:sensitive-accepts-token'), (await route('sensitive', token)) === 200);
  const garbage = [await route('cheap'), await route('sensitive'), await route('cheap', 'x.y.z'),
    await route('sensitive', forged)];
  check(id('resource-server:refuses-missing-and-bad-tokens'), garbage.every((s) => s === 401), `${garbage}`);
  const logout = await call(`${gate.url}/api/v1/logout`, { method: 'DELETE', ...bearer(token) });
  check(id('resource-server:logout'), logout.status === 204, `logout answered ${logout.status}`);
  const sensitive = await route('sensitive', token);
  check(id('resource-server:sensitive-refuses-after-logout'), sensitive === 401, `answered ${sensitive}`);
  const cheap = await route('cheap', token);
  check(id('resource-server:cheap-still-accepts-after-logout-signature-only'), cheap === 200,
    `answered ${cheap}; a JWKS-only check cannot know about logout, as documented`);

  // A key rotation: the example fetches the JWKS again for the new kid.
  const tool = (...args) => execFileSync(BIN, ['--database', db, '--jwt-algorithm', algorithm, 'keys', ...args],
    { encoding: 'utf8', timeout: 20_000 });
  const kid = /added key (\S+)/.exec(tool('add'))[1];
  tool('activate', kid);
  let rotated = await login();
  for (let i = 0; i < 100 && decodeProtectedHeader(rotated).kid !== kid; i += 1) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    rotated = await login();
  }
  const afterRotation = [decodeProtectedHeader(rotated).kid === kid, await route('cheap', rotated),
    await route('sensitive', rotated)];
  check(id('resource-server:new-key-after-rotation'), `${afterRotation}` === 'true,200,200', `${afterRotation}`);

  // Without tokengate, /sensitive cannot know: 503, never a guess.
  await stop(gate.child);
  const down = [await route('sensitive', rotated), await route('cheap', rotated)];
  check(id('resource-server:sensitive-fails-closed-without-tokengate'), `${down}` === '503,200', `${down}`);
  await stop(example.child);
}

try {
  for (const algorithm of ['EdDSA', 'ES256']) await run(algorithm);
} catch (error) {
  check('resource-server-run', false, error.stack);
} finally {
  await Promise.all(children.map(stop));
}
process.exit(failures ? 1 : 0);
