// The example SPA (examples/spa/) across origins, in headless Chromium.
//
// Part 1, against TOKENGATE_URL: the page is served from SPA_URL, an origin
// the API allows (--cors-origins): create an account, log in, show the
// current user, log out, then see the old token rejected with 401 and a
// WWW-Authenticate header that the script can read. The same page served from
// OTHER_URL, an origin the API does not list, must not be able to read any
// answer of the API (fetch fails with a CORS error).
//
// Part 2, sessions, against SESSION_API_URL: a server with short access
// tokens (SESSION_TOKEN_TTL seconds, SESSION_LEEWAY seconds of leeway), so the
// page's timer-based refresh is seen within seconds (polled with deadlines,
// no fixed sleeps). Two tabs share one session: the second takes the pair
// from the first, timers refresh before expiry in one tab at a time, both tabs
// refresh at the same moment (with the lock, and without it so the server's
// reuse interval has to forgive two uses of one refresh token), both keep
// working and the session is not ended; logging out in one tab logs out the
// other. Then one tab without the timer: an expired token gets one refresh and
// one retry; the session list shows other devices (logged in from Node), ends
// one, logs out the others; a session ended elsewhere gets exactly one refresh
// attempt and the login form.
//
//   TOKENGATE_URL=... SPA_URL=... OTHER_URL=... SESSION_API_URL=... \
//   SESSION_TOKEN_TTL=5 SESSION_LEEWAY=1 node e2e/browser/spa.spec.mjs
import { launch, watch, runSteps, shooter, env, assert, assertEqual } from './lib.mjs';

const API = env('TOKENGATE_URL');
const SPA = env('SPA_URL');
const OTHER = env('OTHER_URL');
const SESSION_API = env('SESSION_API_URL');
const SESSION_TTL = Number(env('SESSION_TOKEN_TTL'));
const SESSION_LEEWAY = Number(env('SESSION_LEEWAY'));
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

failed += await sessionChecks();
process.exit(failed ? 1 : 0);

// --- Part 2: sessions and refresh ----------------------------------------------

/** Records each refresh request a page sends: its body and when it started and finished. */
function watchRefreshes(page, into, tab) {
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url() === `${SESSION_API}/api/v1/token/refresh`) {
      into.push({ tab, request: r, token: r.postDataJSON()?.refresh_token, start: performance.now(), end: null, status: null });
    }
  });
  page.on('requestfinished', async (r) => {
    const entry = into.find((e) => e.request === r);
    if (entry) {
      entry.end = performance.now();
      entry.status = (await r.response())?.status() ?? null;
    }
  });
}

/** Calls the API from Node as another device (its own User-Agent), returns {status, body}. */
async function device(method, path, { token, body, agent } = {}) {
  const headers = { 'User-Agent': agent ?? 'e2e device (node)' };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body) headers['Content-Type'] = 'application/json';
  const res = await fetch(SESSION_API + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function sessionChecks() {
  const shotS = shooter('spa-sessions');
  const who = { name: 'Spa Hopper', email: `spa-sessions-${stamp}@example.com`, password: 'correct horse battery' };
  const url = (query = '') => `${SPA}/?api=${encodeURIComponent(SESSION_API)}${query}`;
  const { context: ctx, close: closeCtx } = await launch();
  const tabs = [];
  const allTabs = [];
  const refreshes = [];
  let lastRefreshChecked = 0;

  async function openTab(query = '') {
    const page = tabs.length === 0 && ctx.pages()[0] ? ctx.pages()[0] : await ctx.newPage();
    const tab = { page, log: watch(page), n: tabs.length + 1 };
    tabs.push(tab);
    allTabs.push(tab);
    watchRefreshes(page, refreshes, tab.n);
    const res = await page.goto(url(query));
    assertEqual(res.status(), 200, `GET the SPA page for tab ${tab.n}`);
    await page.waitForSelector('body[data-ready="true"]');
    return tab;
  }
  // Clicks a button and waits until its action is over (the page disables
  // every button while an action runs).
  async function act(page, selector) {
    await page.click(selector);
    await page.waitForFunction((sel) => !document.querySelector(sel).disabled, selector);
  }
  const textOf = async (page, id) => (await page.locator(`#${id}`).innerText()).trim();
  const number = async (page, id) => Number(await textOf(page, id));
  const statusIs = (page, re, timeout) => page.waitForFunction(
    (src) => new RegExp(src).test(document.getElementById('status').textContent), re.source, { timeout });
  const fingerprints = (list) => Promise.all(list.map((t) => textOf(t.page, 'token-fingerprint')));
  const currentSession = (page) => page.locator('#sessions tbody tr.current').getAttribute('data-session-id');
  const sessionCount = async (page) => Number(await page.locator('#sessions').getAttribute('data-count'));
  const apiResponses = (tab, from = 0) => tab.log.responses.slice(from)
    .filter((r) => r.url.startsWith(`${SESSION_API}/`) && r.method !== 'OPTIONS')
    .map((r) => `${r.method} ${r.url.slice(SESSION_API.length)} ${r.status}`);
  // Polls FN (a Node-side condition) every 100 ms until it holds or TIMEOUT ms pass.
  async function until(what, fn, timeout) {
    const deadline = Date.now() + timeout;
    for (;;) {
      const value = await fn();
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`${what}: not seen within ${timeout} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  // Every refresh request since the last call answered 200, and none overlapped
  // another unless the tabs ran without the lock.
  function checkRefreshes({ mayOverlap = false } = {}) {
    const fresh = refreshes.slice(lastRefreshChecked);
    lastRefreshChecked = refreshes.length;
    for (const r of fresh) assertEqual(r.status, 200, `refresh sent by tab ${r.tab}`);
    if (!mayOverlap) {
      const done = [...fresh].sort((a, b) => a.start - b.start);
      for (let i = 1; i < done.length; i++) {
        assert(done[i].start >= done[i - 1].end,
          `tabs ${done[i - 1].tab} and ${done[i].tab} refreshed at the same time despite the lock`);
      }
    }
    return fresh;
  }
  // A refresh round is over when every open tab holds the same, new access token.
  async function settled(list, before) {
    return until('every tab on one new pair', async () => {
      const fps = await fingerprints(list);
      return fps.every((f) => f && f === fps[0]) && fps[0] !== before && fps[0];
    }, (SESSION_TTL + 5) * 1000);
  }
  // A tab's calls work: Reload user answers 200 and the session list has one session, the same.
  async function tabWorks(tab, sid) {
    const from = tab.log.responses.length;
    await act(tab.page, '#refresh');
    await statusIs(tab.page, /^Logged in as /);
    await act(tab.page, '#reload-sessions');
    assertEqual(await currentSession(tab.page), sid, `session of tab ${tab.n}`);
    assertEqual(await sessionCount(tab.page), 1, `sessions listed in tab ${tab.n}`);
    const seen = apiResponses(tab, from);
    assert(seen.every((l) => / 200$/.test(l)), `tab ${tab.n} saw ${seen.join(', ')}`);
  }

  let sid = null;
  let devices = {};
  const failedSessions = await runSteps('spa-sessions', null, [
    ['tab1-logs-in', async () => {
      const { page } = await openTab();
      await page.fill('#email', who.email);
      await page.fill('#password', who.password);
      await page.fill('#name', who.name);
      await page.click('#register');
      await statusIs(page, /^Logged in as /);
      await page.locator('#sessions tbody tr.current').waitFor();
      sid = await currentSession(page);
      assert(/^[\w-]{24}$/.test(sid ?? ''), `session id listed: ${sid}`);
      assertEqual(await sessionCount(page), 1, 'sessions listed after login');
      assert(await page.locator('#tokens-section').isVisible(), 'token panel not shown');
      await shotS(page, 'tab1-logged-in', { fullPage: true });
    }],

    ['tab2-takes-the-pair-from-tab1', async () => {
      const tab2 = await openTab();
      await statusIs(tab2.page, /^Logged in as /);
      await tab2.page.locator('#sessions tbody tr.current').waitFor();
      const sent = apiResponses(tab2);
      assert(!sent.some((l) => /\/(login|register) /.test(l)), `tab 2 logged in by itself: ${sent.join(', ')}`);
      assertEqual(await currentSession(tab2.page), sid, 'session of tab 2');
      await settled(tabs, null);
      const storage = await tab2.page.evaluate(() => localStorage.length + sessionStorage.length);
      assertEqual(storage, 0, 'entries in Web Storage');
      await shotS(tab2.page, 'tab2-joined', { fullPage: true });
    }],

    ['timer-refreshes-before-expiry-one-tab-at-a-time', async () => {
      const [before] = await fingerprints(tabs);
      const sentBefore = refreshes.length;
      // Two rounds of the timer, each within the token's lifetime.
      const first = await settled(tabs, before);
      await settled(tabs, first);
      const fresh = checkRefreshes();
      assert(fresh.length >= 2 && refreshes.length > sentBefore, `refresh requests: ${fresh.length}`);
      for (const tab of tabs) {
        const refused = tab.log.responses.filter((r) => r.status === 401);
        assertEqual(refused.length, 0, `401 answers seen by tab ${tab.n} (the timer should refresh before expiry)`);
      }
      const adopted = await Promise.all(tabs.map((t) => number(t.page, 'pairs-adopted')));
      assert(adopted.some((n) => n > 0), 'no tab took a pair from the other');
      console.log(`#   ${fresh.length} timer refreshes in two rounds; by tab: ${fresh.map((r) => r.tab).join(',')}`);
      await shotS(tabs[0].page, 'tab1-after-timer-refreshes', { fullPage: true });
    }],

    ['both-tabs-refresh-at-once-with-the-lock', async () => {
      const [before] = await fingerprints(tabs);
      const sentBefore = refreshes.length;
      await Promise.all(tabs.map((t) => t.page.click('#refresh-now')));
      await until('both forced refreshes answered', () => refreshes.length >= sentBefore + 2
        && refreshes.slice(sentBefore).every((r) => r.status !== null), 10_000);
      await settled(tabs, before);
      checkRefreshes();
      for (const tab of tabs) await tabWorks(tab, sid);
    }],

    ['both-tabs-refresh-at-once-without-the-lock', async () => {
      // Two more tabs that do not take turns: both present the same refresh
      // token at once; the API's reuse interval gives both a working pair.
      const racers = [await openTab('&lock=off&autorefresh=off'), await openTab('&lock=off&autorefresh=off')];
      for (const t of racers) await statusIs(t.page, /^Logged in as /);
      await settled(tabs, null);
      checkRefreshes();
      const sentBefore = refreshes.length;
      // Two clicks are never quite at once: hold each refresh request until
      // both tabs have sent theirs, so neither can see the other's answer
      // (a fast server answered the first before the second click landed).
      const isRefresh = (u) => u.pathname === '/api/v1/token/refresh';
      let releaseBoth;
      const bothSent = new Promise((resolve) => { releaseBoth = resolve; });
      let held = 0;
      const hold = async (route) => {
        if (route.request().method() === 'POST') {
          held += 1;
          if (held === 2) releaseBoth();
          await bothSent;
        }
        await route.continue();
      };
      await ctx.route(isRefresh, hold);
      await Promise.all(racers.map((t) => t.page.click('#refresh-now')));
      await until('both racing refreshes answered', () => refreshes.filter((r, i) => i >= sentBefore
        && racers.some((t) => t.n === r.tab) && r.status !== null).length >= 2, 10_000);
      await ctx.unroute(isRefresh, hold);
      const raced = refreshes.slice(sentBefore).filter((r) => racers.some((t) => t.n === r.tab));
      assertEqual(raced[0].token, raced[1].token, 'refresh token presented by the two racing tabs');
      checkRefreshes({ mayOverlap: true });
      await settled(tabs, null);
      for (const tab of tabs) await tabWorks(tab, sid);
      await shotS(racers[1].page, 'racing-tab-still-logged-in', { fullPage: true });
    }],

    ['session-list-after-refreshes', async () => {
      const row = tabs[0].page.locator('#sessions tbody tr.current');
      assertEqual(await row.count(), 1, 'current session rows');
      const cells = await row.locator('td').allInnerTexts();
      assert(/HeadlessChrome|Chrome/.test(cells[1]), `device shown: ${cells[1]}`);
      assert(/this browser/.test(cells[0]), `current session not marked: ${cells[0]}`);
    }],

    ['logout-in-one-tab-logs-out-every-tab', async () => {
      const from = tabs[0].log.responses.length;
      await act(tabs[0].page, '#logout');
      await statusIs(tabs[0].page, /^Logged out/);
      assert(apiResponses(tabs[0], from).includes('DELETE /api/v1/logout 204'), 'no 204 from logout');
      for (const tab of tabs.slice(1)) {
        await tab.page.locator('#login-section').waitFor({ state: 'visible', timeout: 5_000 });
        assert(await tab.page.locator('#user-section').isHidden(), `tab ${tab.n} still shows the user`);
      }
      await shotS(tabs[1].page, 'tab2-logged-out-by-tab1', { fullPage: true });
      for (const tab of tabs.splice(0)) await tab.page.close();
    }],

    ['expired-token-gets-one-refresh-and-one-retry', async () => {
      const tab = await openTab('&autorefresh=off');
      const { page } = tab;
      assert(await page.locator('#login-section').isVisible(), 'a new tab after logout is logged in');
      await page.fill('#email', who.email);
      await page.fill('#password', who.password);
      await page.click('#login');
      await statusIs(page, /^Logged in as /);
      assertEqual(await textOf(page, 'next-refresh'), 'off (refreshed on 401 only)', 'timer shown as');
      // Wait (polling, with a deadline) until the server must refuse the access token.
      const expiresMs = Number(await page.locator('#access-expires').getAttribute('data-ms'));
      await page.waitForFunction((at) => Date.now() > at, expiresMs + SESSION_LEEWAY * 1000 + 1200,
        { timeout: (SESSION_TTL + SESSION_LEEWAY + 10) * 1000, polling: 100 });
      const from = tab.log.responses.length;
      await act(page, '#refresh');
      await statusIs(page, /^Logged in as /);
      const seen = apiResponses(tab, from);
      assertEqual(seen.join(', '), 'GET /api/v1/user 401, POST /api/v1/token/refresh 200, GET /api/v1/user 200',
        'requests after the token expired');
      assertEqual(await number(page, 'refreshes-sent'), 1, 'refreshes sent by the tab');
      await shotS(page, 'expired-token-refreshed-on-401', { fullPage: true });
    }],

    ['other-devices-listed-one-ended-the-others-logged-out', async () => {
      const { page } = tabs[0];
      for (const agent of ['e2e phone', 'e2e laptop']) {
        const r = await device('POST', '/api/v1/login', { agent, body: { email: who.email, password: who.password } });
        assertEqual(r.status, 200, `login of ${agent}`);
        devices[agent] = r.body;
      }
      await act(page, '#reload-sessions');
      await until('three sessions listed', async () => (await sessionCount(page)) === 3, 5_000);
      const agents = await page.locator('#sessions tbody tr td:nth-child(2)').allInnerTexts();
      assert(agents.includes('e2e phone') && agents.includes('e2e laptop'), `devices listed: ${agents.join(' | ')}`);
      await shotS(page, 'three-sessions', { fullPage: true });
      // End the phone's session from its row.
      await page.locator('#sessions tbody tr', { hasText: 'e2e phone' }).locator('button.end-session').click();
      await statusIs(page, /^Session .* ended\.$/);
      await until('two sessions listed', async () => (await sessionCount(page)) === 2, 5_000);
      const phone = devices['e2e phone'];
      assertEqual((await device('GET', '/api/v1/user', { token: phone.access_token })).status, 401, 'phone access token');
      const grant = await device('POST', '/api/v1/token/refresh', { body: { refresh_token: phone.refresh_token } });
      assertEqual(`${grant.status} ${grant.body?.error}`, '401 invalid_grant', 'phone refresh token');
      // Log out every other device.
      await act(page, '#logout-others');
      await statusIs(page, /^Logged out everywhere else/);
      await until('one session listed', async () => (await sessionCount(page)) === 1, 5_000);
      const laptop = devices['e2e laptop'];
      assertEqual((await device('GET', '/api/v1/user', { token: laptop.access_token })).status, 401, 'laptop access token');
      const grant2 = await device('POST', '/api/v1/token/refresh', { body: { refresh_token: laptop.refresh_token } });
      assertEqual(`${grant2.status} ${grant2.body?.error}`, '401 invalid_grant', 'laptop refresh token');
      await shotS(page, 'others-logged-out', { fullPage: true });
    }],

    ['session-ended-elsewhere-one-refresh-then-login-form', async () => {
      const tab = tabs[0];
      const tablet = await device('POST', '/api/v1/login', { agent: 'e2e tablet', body: { email: who.email, password: who.password } });
      assertEqual(tablet.status, 200, 'login of the tablet');
      const listed = await device('GET', '/api/v1/sessions', { token: tablet.body.access_token });
      const target = listed.body.find((s) => !s.current);
      assert(target, `sessions seen by the tablet: ${JSON.stringify(listed.body)}`);
      assertEqual((await device('DELETE', `/api/v1/sessions/${target.id}`, { token: tablet.body.access_token })).status, 204,
        'DELETE of the browser session by the tablet');
      const sentBefore = await number(tab.page, 'refreshes-sent');
      const from = tab.log.responses.length;
      await act(tab.page, '#refresh');
      await statusIs(tab.page, /^Your session has ended/);
      assert(await tab.page.locator('#login-section').isVisible(), 'login form not shown');
      const seen = apiResponses(tab, from);
      assertEqual(seen.join(', '), 'GET /api/v1/user 401, POST /api/v1/token/refresh 401', 'requests after the session ended');
      assertEqual(await number(tab.page, 'refreshes-sent'), sentBefore, 'successful refreshes');
      await shotS(tab.page, 'session-ended-elsewhere', { fullPage: true });
    }],

    ['no-page-errors', async () => {
      for (const tab of allTabs) {
        const errors = tab.log.console.filter((l) => /^(error|pageerror)/.test(l))
          // 401s are part of the checks above; Chromium logs them as failed loads.
          .filter((l) => !/Failed to load resource: the server responded with a status of 401/.test(l));
        assert(errors.length === 0, `console errors in tab ${tab.n}: ${errors.join(' | ')}`);
        assert(tab.log.failedRequests.length === 0, `failed requests in tab ${tab.n}: ${tab.log.failedRequests.join(' | ')}`);
      }
    }],
  ]);
  await closeCtx();
  return failedSessions;
}
