// Swagger UI try-it-out, as a person would use it, in headless Chromium:
// open /docs, register and log in with "Try it out", read the access token
// from the response shown on the page, paste it into Authorize -> bearerAuth,
// log out (204) and see the same token rejected by GET /api/v1/user (401).
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
    for (const id of ['users-register', 'auth-login', 'auth-logout', 'users-currentUser']) {
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
    token = shown.access_token;
  }],

  ['authorize-bearer', async () => {
    await page.locator('.auth-wrapper button.authorize').first().click();
    const modal = page.locator('.dialog-ux .modal-ux');
    await modal.waitFor();
    const container = modal.locator('.auth-container').filter({ hasText: 'bearerAuth' });
    await container.locator('input').first().fill(token);
    await shot(page, 'authorize-token-pasted');
    await container.locator('button.authorize').click();
    await container.getByText('Authorized', { exact: false }).first().waitFor();
    await shot(page, 'authorize-done');
    await modal.locator('button.btn-done, button.close-modal').first().click();
    await modal.waitFor({ state: 'detached' });
    // The lock icons on the protected operations now show "locked" (authorized).
    assert(await page.locator('#operations-auth-logout button.authorization__btn[aria-label="authorization button locked"]').count(),
      'logout operation does not show as authorized');
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
    // 404s are judged by URL just below; the 401 shown on purpose is logged too.
    const errors = log.console.filter((l) => /^(error|pageerror)/.test(l))
      .filter((l) => !/Failed to load resource: the server responded with a status of (404|401)/.test(l));
    const bad404 = log.responses.filter((r) => r.status === 404 && !r.url.endsWith('/favicon.ico'));
    assert(bad404.length === 0, `requests answered 404: ${bad404.map((r) => r.url).join(', ')}`);
    assert(errors.length === 0, `console errors: ${errors.join(' | ')}`);
    assert(log.failedRequests.length === 0, `failed requests: ${log.failedRequests.join(' | ')}`);
  }],
]);

await close();
process.exit(failed ? 1 : 0);
