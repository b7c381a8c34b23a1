// A resource server that trusts tokengate's access tokens (Node.js >= 20, `jose`).
//
//   npm install                # jose, pinned in package.json
//   tokengate --jwt-algorithm EdDSA --introspection-clients "orders-api:$SECRET"
//   TOKENGATE_URL=http://127.0.0.1:8080 INTROSPECTION_CLIENT="orders-api:$SECRET" node server.mjs
//
// GET /cheap     checks the signature and claims with the public keys from the
//                JWKS: no round trip, but it cannot know about a logout, so a
//                logged-out token is accepted here until its `exp`.
// GET /sensitive also asks tokengate (RFC 7662 introspection) whether the
//                token is still valid: knows about every logout, costs a round trip.
import http from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';

const TOKENGATE = process.env.TOKENGATE_URL ?? 'http://127.0.0.1:8080';
const [CLIENT_ID, ...rest] = (process.env.INTROSPECTION_CLIENT ?? '').split(':');
const CLIENT_SECRET = rest.join(':');

// Cached for 10 minutes (the JWKS's max-age); a token naming a kid the cache
// lacks (a key rotation) makes jose fetch the set again, at most once per cooldown.
const jwks = createRemoteJWKSet(new URL('/.well-known/jwks.json', TOKENGATE), {
  cacheMaxAge: 600_000,
  cooldownDuration: Number(process.env.JWKS_COOLDOWN_MS ?? 30_000),
});

async function verifySignature(token) {
  const { payload } = await jwtVerify(token, jwks, {
    issuer: process.env.TOKENGATE_ISSUER ?? 'tokengate',
    audience: process.env.TOKENGATE_AUDIENCE ?? 'tokengate',
    algorithms: ['EdDSA', 'ES256'],
    requiredClaims: ['sub', 'jti', 'exp'],
  });
  return payload;
}

// Throws when tokengate cannot answer: the caller then fails closed (503).
async function introspect(token) {
  const credentials = `${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`;
  const response = await fetch(new URL('/api/v1/token/introspect', TOKENGATE), {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(credentials).toString('base64')}` },
    body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
  });
  if (!response.ok) throw new Error(`introspection answered ${response.status}`);
  const answer = await response.json();
  return answer.active === true && answer.token_type === 'access_token';
}

function send(res, status, body) {
  const headers = { 'content-type': 'application/json', 'cache-control': 'no-store' };
  if (status === 401) headers['www-authenticate'] = 'Bearer realm="orders"';
  res.writeHead(status, headers).end(JSON.stringify(body));
}

const server = http.createServer(async (req, res) => {
  const route = new URL(req.url, 'http://localhost').pathname;
  if (req.method !== 'GET' || !['/cheap', '/sensitive'].includes(route)) {
    return send(res, 404, { error: 'not_found' });
  }
  const token = /^Bearer +(\S+)$/i.exec(req.headers.authorization ?? '')?.[1];
  let claims;
  try {
    claims = await verifySignature(token ?? '');
  } catch {
    return send(res, 401, { error: 'invalid_token' });
  }
  if (route === '/sensitive') {
    try {
      if (!(await introspect(token))) return send(res, 401, { error: 'invalid_token' });
    } catch (error) {
      console.error(`introspection failed: ${error.message}`);
      return send(res, 503, { error: 'service_unavailable' });
    }
  }
  send(res, 200, { route, sub: claims.sub });
});

server.listen(Number(process.env.PORT ?? 8081), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}`);
});
