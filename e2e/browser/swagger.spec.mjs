// Swagger UI try-it-out, as a person would use it, in headless Chromium:
// open /docs, register and log in with "Try it out" (three times: three
// sessions), read the tokens from the response shown on the page, paste the
// access token into Authorize -> bearerAuth, list the sessions, refresh with
// the refresh token (and authorize with the new access token), end one other
// session by id, log out the others with `scope=others`, then log out (204)
// and see the same token rejected by GET /api/v1/user (401). Between the
// steps, Node checks with its own requests what each step should have ended.
//
//   TOKENGATE_URL=http://127.0.0.1:PORT node e2e/browser/swagger.spec.mjs
//
// A screenshot of every step goes to target/e2e-screenshots/swagger-*.png.
import { launch, watch, runSteps, shooter, env, assert, assertEqual } from './lib.mjs';

const API = env('TOKENGATE_URL');
const shot = shooter('swagger');
const stamp = `${Date.now()}-${process.pid}`;
const user = { name: 'Swagger Ada', email: `swagger-${stamp}@example.com`, password: 'correct horse battery' };

const { context, close } = await launch();
const page = context.pages()[0] ?? (await context.newPage());
const log = watch(page);
let token = null;
// The three logins: [0] is the one authorized in Swagger UI, [1] is ended by
// id, [2] by logout?scope=others. Each: {access_token, refresh_token, ...}.
const logins = [];

/** The `sid` claim of an access token (the session id). */
const sidOf = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString()).sid;

/** GET /api/v1/user from Node with TOKEN: the status. */
async function userStatus(bearer) {
  const res = await fetch(`${API}/api/v1/user`, { headers: { Authorization: `Bearer ${bearer}` } });
  return res.status;
}

/** POST /api/v1/token/refresh from Node: "status error". */
async function refreshFromNode(refreshToken) {
  const res = await fetch(`${API}/api/v1/token/refresh`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ refresh_token: refreshToken }),
  });
  const body = await res.json().catch(() => ({}));
  return `${res.status} ${body.error ?? ''}`.trim();
}

/** The opblock of one operation (Swagger UI ids are operations-TAG-OPERATIONID). */
const op = (tag, operationId) => page.locator(`#operations-${tag}-${operationId}`);

async function expand(block) {
  if (!(await block.locator('.opblock-body').isVisible().catch(() => false))) {
    await block.locator('.opblock-summary').first().click();
  }
  await block.locator('.opblock-body').waitFor();
}

async function tryItOut(block) {
  await expand(block);
  const btn = block.locator('button.try-out__btn');
  if ((await btn.innerText()).trim().toLowerCase() === 'try it out') await btn.click();
}

async function setBody(block, json) {
  const area = block.locator('textarea.body-param__text');
  await area.fill(JSON.stringify(json, null, 2));
}

/** Clicks Execute and returns the status and body Swagger UI shows as "Server response". */
async function execute(block) {
  // A response shown from an earlier Execute is cleared first, so the one
  // read below is this call's.
  const clear = block.locator('button.btn-clear');
  if (await clear.isVisible().catch(() => false)) {
    await clear.click();
    await block.locator('.live-responses-table').waitFor({ state: 'detached' });
  }
  await block.locator('button.execute').click();
  const row = block.locator('.live-responses-table tbody tr.response').first();
  await row.waitFor();
  const status = (await row.locator('.response-col_status').innerText()).trim();
  const section = (title) => row.locator('.response-col_description > div')
    .filter({ has: page.locator('h5', { hasText: title }) });
  const bodyEl = section('Response body').locator('.highlight-code pre');
  const body = (await bodyEl.count()) ? (await bodyEl.innerText()).trim() : '';
  const headersEl = section('Response headers').locator('pre');
  const headers = (await headersEl.count()) ? await headersEl.innerText() : '';
  return { status, body, headers };
}

/** Opens Authorize, replaces any bearerAuth value with VALUE, closes the dialog. */
async function authorize(value, shotName) {
  await page.locator('.auth-wrapper button.authorize').first().click();
  const modal = page.locator('.dialog-ux .modal-ux');
  await modal.waitFor();
  const container = modal.locator('.auth-container').filter({ hasText: 'bearerAuth' });
  // Already authorized: "Logout" in the dialog forgets the old value first.
  const forget = container.locator('button', { hasText: /^Logout$/ });
  if (await forget.count()) await forget.click();
  await container.locator('input').first().fill(value);
  await shot(page, `${shotName}-pasted`);
  await container.locator('button.authorize').click();
  await container.getByText('Authorized', { exact: false }).first().waitFor();
  await shot(page, `${shotName}-done`);
  await modal.locator('button.btn-done, button.close-modal').first().click();
  await modal.waitFor({ state: 'detached' });
}

/** Lists the sessions through Swagger UI: the parsed array. */
async function listSessions(shotName) {
  const block = op('sessions', 'listSessions');
  await tryItOut(block);
  const { status, body } = await execute(block);
  await block.locator('.live-responses-table').scrollIntoViewIfNeeded();
  await shot(page, shotName);
  assertEqual(status, '200', 'list sessions status shown');
  const shown = JSON.parse(body);
  assert(Array.isArray(shown), `sessions shown: ${body}`);
  return shown;
}

const failed = await runSteps('swagger', page, [
  ['docs-page-loads', async () => {
    const res = await page.goto(`${API}/docs`);
    assertEqual(res.status(), 200, 'GET /docs status');
    await page.locator('.opblock').first().waitFor();
    const title = (await page.locator('.info .title').innerText()).trim();
    // Swagger UI lists the problems it finds in the document in an errors box.
    assert(!(await page.locator('.errors-wrapper').count()),
      `Swagger UI reports errors: ${await page.locator('.errors-wrapper').innerText().catch(() => '')}`);
    assert(title.startsWith('tokengate'), `title shown is ${JSON.stringify(title)}`);
    for (const id of ['users-register', 'auth-login', 'auth-logout', 'users-currentUser', 'auth-refreshToken',
      'sessions-listSessions', 'sessions-deleteSession', 'users-changePassword']) {
      assert(await page.locator(`#operations-${id}`).count(), `operation ${id} is not listed`);
    }
    await shot(page, 'docs-loaded');
  }],

  ['register-201', async () => {
    const block = op('users', 'register');
    await tryItOut(block);
    await setBody(block, user);
    await block.scrollIntoViewIfNeeded();
    await shot(page, 'register-filled');
    const { status, body } = await execute(block);
    await block.locator('.live-responses-table').scrollIntoViewIfNeeded();
    await shot(page, 'register-response');
    assertEqual(status, '201', 'register status shown');
    const shown = JSON.parse(body);
    assertEqual(shown.email, user.email, 'registered e-mail shown');
    assert(Number.isInteger(shown.id), 'registered user has an integer id');
  }],

  ['login-200-token-shown', async () => {
    const block = op('auth', 'login');
    await tryItOut(block);
    await setBody(block, { email: user.email, password: user.password });
    const { status, body } = await execute(block);
    await block.locator('.live-responses-table').scrollIntoViewIfNeeded();
    await shot(page, 'login-response');
    assertEqual(status, '200', 'login status shown');
    const shown = JSON.parse(body);
    assertEqual(shown.token_type, 'Bearer', 'token_type shown');
    assert(/^[\w-]+\.[\w-]+\.[\w-]+$/.test(shown.access_token), 'access_token shown is not a JWT');
    assert(/^[\w-]{24}\.[\w-]{43}$/.test(shown.refresh_token), 'refresh_token shown is not <sid>.<secret>');
    assert(!Number.isNaN(Date.parse(shown.refresh_expires_at)), 'refresh_expires_at shown is not a date');
    logins.push(shown);
    token = shown.access_token;
  }],

  ['login-twice-more-three-sessions', async () => {
    const block = op('auth', 'login');
    for (let i = 0; i < 2; i++) {
      const { status, body } = await execute(block);
      assertEqual(status, '200', `login ${i + 2} status shown`);
      logins.push(JSON.parse(body));
    }
    const sids = new Set(logins.map((l) => sidOf(l.access_token)));
    assertEqual(sids.size, 3, 'distinct sessions of the three logins');
  }],

  ['authorize-bearer', async () => {
    await authorize(token, 'authorize-token');
    // The lock icons on the protected operations now show "locked" (authorized).
    for (const id of ['auth-logout', 'sessions-listSessions', 'sessions-deleteSession']) {
      assert(await page.locator(`#operations-${id} button.authorization__btn[aria-label="authorization button locked"]`).count(),
        `${id} does not show as authorized`);
    }
  }],

  ['list-sessions-200-three-one-current', async () => {
    const shown = await listSessions('sessions-three');
    assertEqual(shown.length, 3, 'sessions listed');
    const current = shown.filter((s) => s.current);
    assertEqual(current.length, 1, 'sessions marked current');
    assertEqual(current[0].id, sidOf(token), 'current session id');
    assert(shown.every((s) => /HeadlessChrome|Chrome/.test(s.user_agent ?? '')), 'user_agent of the logins');
    assertEqual(JSON.stringify(shown.map((s) => s.id).sort()),
      JSON.stringify(logins.map((l) => sidOf(l.access_token)).sort()), 'listed session ids');
  }],

  ['refresh-200-new-pair-same-session', async () => {
    const block = op('auth', 'refreshToken');
    await tryItOut(block);
    await setBody(block, { refresh_token: logins[0].refresh_token });
    const { status, body } = await execute(block);
    await block.locator('.live-responses-table').scrollIntoViewIfNeeded();
    await shot(page, 'refresh-response');
    assertEqual(status, '200', 'refresh status shown');
    const pair = JSON.parse(body);
    assert(pair.access_token !== logins[0].access_token && pair.refresh_token !== logins[0].refresh_token,
      'refresh did not issue a new pair');
    assertEqual(sidOf(pair.access_token), sidOf(logins[0].access_token), 'session of the new pair');
    // The earlier access token stays valid until its exp; the new one works.
    assertEqual(await userStatus(logins[0].access_token), 200, 'the earlier access token');
    assertEqual(await userStatus(pair.access_token), 200, 'the new access token');
    logins[0] = pair;
    token = pair.access_token;
    await authorize(token, 'authorize-refreshed-token');
    const shown = await listSessions('sessions-after-refresh');
    assertEqual(shown.length, 3, 'sessions listed after the refresh');
    assertEqual(shown.find((s) => s.current)?.id, sidOf(token), 'current session after the refresh');
  }],

  ['refresh-401-invalid-grant-shown', async () => {
    const block = op('auth', 'refreshToken');
    await setBody(block, { refresh_token: 'not-a-refresh-token' });
    const { status, body, headers } = await execute(block);
    await shot(page, 'refresh-invalid-grant');
    assertEqual(status, '401', 'refresh status for a bad token');
    assertEqual(JSON.parse(body).error, 'invalid_grant', 'error code shown');
    assert(/www-authenticate: Bearer realm="tokengate"/i.test(headers), `challenge not shown: ${headers}`);
  }],

  ['delete-session-204', async () => {
    const victim = sidOf(logins[1].access_token);
    const block = op('sessions', 'deleteSession');
    await tryItOut(block);
    await block.locator('tr[data-param-name="id"] input').fill(victim);
    await shot(page, 'delete-session-filled');
    const { status, body } = await execute(block);
    await block.locator('.live-responses-table').scrollIntoViewIfNeeded();
    await shot(page, 'delete-session-response');
    assertEqual(status, '204', 'delete session status shown');
    assertEqual(body, '', 'delete session shows a body');
    const sent = log.responses.filter((r) => r.method === 'DELETE' && r.url === `${API}/api/v1/sessions/${victim}`);
    assertEqual(sent.at(-1)?.status, 204, 'status of the DELETE the browser sent');
    assertEqual(await userStatus(logins[1].access_token), 401, 'access token of the ended session');
    assertEqual(await refreshFromNode(logins[1].refresh_token), '401 invalid_grant', 'refresh token of the ended session');
    const shown = await listSessions('sessions-after-delete');
    assertEqual(shown.length, 2, 'sessions listed after the delete');
    // The same id again: no such active session.
    const again = await execute(block);
    assertEqual(again.status, '404', 'deleting the ended session again');
    assertEqual(JSON.parse(again.body).error, 'not_found', 'error code shown');
  }],

  ['logout-scope-others-204', async () => {
    const block = op('auth', 'logout');
    await tryItOut(block);
    await block.locator('tr[data-param-name="scope"] select').selectOption('others');
    const { status } = await execute(block);
    await block.locator('.live-responses-table').scrollIntoViewIfNeeded();
    await shot(page, 'logout-others-response');
    assertEqual(status, '204', 'logout?scope=others status shown');
    const sent = log.responses.filter((r) => r.method === 'DELETE' && r.url === `${API}/api/v1/logout?scope=others`);
    assertEqual(sent.at(-1)?.status, 204, 'status of the DELETE ?scope=others the browser sent');
    assertEqual(await userStatus(logins[2].access_token), 401, 'access token of the other session');
    assertEqual(await refreshFromNode(logins[2].refresh_token), '401 invalid_grant', 'refresh token of the other session');
    assertEqual(await userStatus(token), 200, 'the authorized token after logging out the others');
    const shown = await listSessions('sessions-after-logout-others');
    assertEqual(JSON.stringify(shown.map((s) => [s.id, s.current])), JSON.stringify([[sidOf(token), true]]),
      'sessions listed after logout?scope=others');
    // Back to the default scope for the plain logout below.
    await block.locator('tr[data-param-name="scope"] select').selectOption({ index: 0 });
  }],

  ['logout-204', async () => {
    const block = op('auth', 'logout');
    await tryItOut(block);
    const { status, body } = await execute(block);
    const curl = await block.locator('.curl-command').innerText().catch(() => '');
    await block.locator('.live-responses-table').scrollIntoViewIfNeeded();
    await shot(page, 'logout-response');
    assert(curl.includes(`Authorization: Bearer ${token}`), 'the curl line shown does not carry the pasted token');
    assertEqual(status, '204', 'logout status shown');
    assertEqual(body, '', 'logout shows a body');
    const sent = log.responses.filter((r) => r.method === 'DELETE' && r.url === `${API}/api/v1/logout`);
    assertEqual(sent.at(-1)?.status, 204, 'status of the DELETE the browser sent');
  }],

  ['current-user-401-after-logout', async () => {
    const block = op('users', 'currentUser');
    await tryItOut(block);
    const { status, body, headers } = await execute(block);
    await block.locator('.live-responses-table').scrollIntoViewIfNeeded();
    await shot(page, 'current-user-401');
    assertEqual(status, '401', 'current user status shown');
    const shown = JSON.parse(body);
    assertEqual(shown.error, 'invalid_token', 'error code shown');
    assert(/revoked/.test(shown.message), `message shown does not say revoked: ${shown.message}`);
    // Swagger UI shows header values with the spaces after commas removed.
    assert(/www-authenticate: Bearer realm="tokengate",\s*error="invalid_token"/i.test(headers),
      `WWW-Authenticate challenge not shown in the response headers: ${headers}`);
  }],

  ['no-page-errors', async () => {
    // Chromium asks every page for /favicon.ico; that 404 is not Swagger UI's doing.
    // 404s are judged by URL just below; the 401s shown on purpose are logged too.
    const errors = log.console.filter((l) => /^(error|pageerror)/.test(l))
      .filter((l) => !/Failed to load resource: the server responded with a status of (404|401)/.test(l));
    // The 404 of deleting an ended session again is deliberate.
    const bad404 = log.responses.filter((r) => r.status === 404 && !r.url.endsWith('/favicon.ico')
      && !(r.method === 'DELETE' && r.url.startsWith(`${API}/api/v1/sessions/`)));
    assert(bad404.length === 0, `requests answered 404: ${bad404.map((r) => r.url).join(', ')}`);
    assert(errors.length === 0, `console errors: ${errors.join(' | ')}`);
    assert(log.failedRequests.length === 0, `failed requests: ${log.failedRequests.join(' | ')}`);
  }],
]);

await close();
process.exit(failed ? 1 : 0);
