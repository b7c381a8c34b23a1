// The example SPA (examples/spa/) across origins, in headless Chromium.
//
// The page is served from SPA_URL, an origin the API allows (--cors-origins),
// and talks to the API at TOKENGATE_URL: create an account, log in, show the
// current user, log out, then see the old token rejected with 401 and a
// WWW-Authenticate header that the script can read. The same page served from
// OTHER_URL, an origin the API does not list, must not be able to read any
// answer of the API (fetch fails with a CORS error).
//
//   TOKENGATE_URL=... SPA_URL=... OTHER_URL=... node e2e/browser/spa.spec.mjs
import { launch, watch, runSteps, shooter, env, assert, assertEqual } from './lib.mjs';

const API = env('TOKENGATE_URL');
const SPA = env('SPA_URL');
const OTHER = env('OTHER_URL');
const shot = shooter('spa');
const stamp = `${Date.now()}-${process.pid}`;
const user = { name: 'Spa Grace', email: `spa-${stamp}@example.com`, password: 'correct horse battery' };

const { context, close } = await launch();
const page = context.pages()[0] ?? (await context.newPage());
const log = watch(page);
let other = null;
let otherLog = null;

const text = async (id) => (await page.locator(`#${id}`).innerText()).trim();
const waitStatus = (re) => page.waitForFunction(
  (src) => new RegExp(src).test(document.getElementById('status').textContent), re.source);

let failed = await runSteps('spa', page, [
  ['page-loads-from-another-origin', async () => {
    assert(new URL(SPA).origin !== new URL(API).origin, 'the SPA and the API share an origin');
    const res = await page.goto(`${SPA}/?api=${encodeURIComponent(API)}`);
    assertEqual(res.status(), 200, 'GET the SPA page');
    await page.waitForSelector('body[data-ready="true"]');
    assertEqual(await text('page-origin'), new URL(SPA).origin, 'origin shown on the page');
    assertEqual(await text('api-base'), API, 'API base shown on the page');
    await shot(page, 'loaded');
  }],

  ['register-and-login', async () => {
    await page.fill('#email', user.email);
    await page.fill('#password', user.password);
    await page.fill('#name', user.name);
    await shot(page, 'form-filled');
    await page.click('#register');
    await waitStatus(/^Logged in as /);
    assertEqual(await text('user-email'), user.email, 'e-mail of the current user');
    assertEqual(await text('user-name'), user.name, 'name of the current user');
    assert(/^\d+$/.test(await text('user-id')), 'user id shown');
    await shot(page, 'logged-in');
    const cross = log.responses.filter((r) => r.url.startsWith(`${API}/api/v1/`));
    assert(cross.some((r) => r.method === 'POST' && r.url.endsWith('/register') && r.status === 201), 'no 201 from register');
    assert(cross.some((r) => r.method === 'POST' && r.url.endsWith('/login') && r.status === 200), 'no 200 from login');
    assert(cross.some((r) => r.method === 'GET' && r.url.endsWith('/user') && r.status === 200), 'no 200 from current user');
  }],

  ['token-only-in-memory', async () => {
    const stored = await page.evaluate(() => ({
      local: localStorage.length, session: sessionStorage.length, cookie: document.cookie,
    }));
    assertEqual(JSON.stringify(stored), JSON.stringify({ local: 0, session: 0, cookie: '' }), 'browser storage');
  }],

  ['reload-current-user', async () => {
    await page.click('#refresh');
    await waitStatus(/^Logged in as /);
    assertEqual(await text('user-email'), user.email, 'e-mail after reload');
  }],

  ['logout-204', async () => {
    const before = log.responses.length;
    await page.click('#logout');
    await waitStatus(/^Logged out/);
    await page.locator('#revoked-section').waitFor();
    const del = log.responses.slice(before).find((r) => r.method === 'DELETE' && r.url === `${API}/api/v1/logout`);
    assertEqual(del?.status, 204, 'status of DELETE /api/v1/logout');
    assert(await page.locator('#login-section').isVisible(), 'login form not shown again after logout');
  }],

  ['old-token-rejected-401-with-challenge', async () => {
    await page.waitForFunction(() => document.getElementById('revoked-status').textContent !== '');
    await page.locator('#revoked-section').scrollIntoViewIfNeeded();
    await shot(page, 'logged-out-old-token-rejected', { fullPage: true });
    assertEqual(await text('revoked-status'), '401', 'status for the old token');
    assertEqual(await text('revoked-error'), 'invalid_token', 'error code for the old token');
    const challenge = await text('revoked-challenge');
    assert(challenge.startsWith('Bearer realm="tokengate", error="invalid_token"'),
      `WWW-Authenticate as read by the script: ${challenge}`);
  }],

  ['login-again-after-logout', async () => {
    await page.fill('#email', user.email);
    await page.fill('#password', user.password);
    await page.click('#login');
    await waitStatus(/^Logged in as /);
    assert(await page.locator('#revoked-section').isHidden(), 'old-token panel still shown');
    await shot(page, 'logged-in-again');
  }],

  ['no-page-errors', async () => {
    const errors = log.console.filter((l) => /^(error|pageerror)/.test(l))
      // The deliberate request with the revoked token is logged by Chromium as a failed load.
      .filter((l) => !/Failed to load resource: the server responded with a status of 401/.test(l))
      .filter((l) => !/favicon\.ico/.test(l));
    const bad404 = log.responses.filter((r) => r.status === 404 && !r.url.endsWith('/favicon.ico'));
    assert(bad404.length === 0, `requests answered 404: ${bad404.map((r) => r.url).join(', ')}`);
    assert(errors.length === 0, `console errors: ${errors.join(' | ')}`);
    assert(log.failedRequests.length === 0, `failed requests: ${log.failedRequests.join(' | ')}`);
  }],
]);

// The same page from an origin that is not in --cors-origins.
failed += await runSteps('spa-cors', null, [
  ['allowed-origin-can-read', async () => {
    const r = await page.evaluate(async (api) => {
      const res = await fetch(`${api}/health`);
      return { status: res.status, body: await res.json() };
    }, API);
    assertEqual(JSON.stringify(r), JSON.stringify({ status: 200, body: { status: 'ok' } }), 'GET /health from the allowed origin');
  }],

  ['other-origin-cannot-log-in', async () => {
    assert(new URL(OTHER).origin !== new URL(SPA).origin, 'the two page origins are the same');
    other = await context.newPage();
    otherLog = watch(other);
    await other.goto(`${OTHER}/?api=${encodeURIComponent(API)}`);
    await other.waitForSelector('body[data-ready="true"]');
    await other.fill('#email', user.email);
    await other.fill('#password', user.password);
    await other.click('#login');
    await other.waitForFunction(() => document.getElementById('status').className === 'error');
    const status = (await other.locator('#status').innerText()).trim();
    await shot(other, 'other-origin-refused');
    assert(/^Could not reach the API/.test(status), `status shown: ${status}`);
    assert(await other.locator('#login-section').isVisible(), 'the other origin got past the login form');
    assert(otherLog.console.some((l) => /blocked by CORS policy/.test(l)),
      `no CORS error in the console: ${otherLog.console.join(' | ')}`);
  }],

  ['other-origin-cannot-read-any-answer', async () => {
    // Simple requests (no preflight) reach the server, but the browser must not
    // hand the answer to the script: the API sends no Access-Control-Allow-Origin.
    const results = await other.evaluate(async (api) => {
      const attempt = async (path, init) => {
        try {
          const res = await fetch(api + path, init);
          return `read ${res.status}`;
        } catch (err) {
          return `${err.name}: ${err.message}`;
        }
      };
      return {
        health: await attempt('/health'),
        user: await attempt('/api/v1/user', { headers: { Authorization: 'Bearer x' } }),
        login: await attempt('/api/v1/login', {
          method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{"email":"a@b.example","password":"12345678"}',
        }),
      };
    }, API);
    for (const [what, result] of Object.entries(results)) {
      assert(/^TypeError: Failed to fetch/.test(result), `${what} from the other origin: ${result}`);
    }
  }],
]);

await close();
process.exit(failed ? 1 : 0);
