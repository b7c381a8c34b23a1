// tokengate from a single-page app: plain JavaScript, no build step.
//
// Serve this folder from its own origin and start the API with that origin
// allowed, for example:
//
//   python3 -m http.server 5173 --bind 127.0.0.1 -d examples/spa
//   tokengate --cors-origins http://127.0.0.1:5173
//   open http://127.0.0.1:5173/?api=http://127.0.0.1:8080
//
// The origin must match exactly: http://localhost:5173 and
// http://127.0.0.1:5173 are two different origins.
//
// Query parameters: `api` (the API's base URL), `autorefresh=off` (no timer:
// tokens are refreshed only when the API answers 401, to watch that path),
// `lock=off` (tabs refresh without taking turns, to watch the API's reuse
// interval forgive two tabs presenting the same refresh token at once).
'use strict';

const DEFAULT_API = 'http://127.0.0.1:8080';
const params = new URLSearchParams(location.search);
const apiBase = (params.get('api') || DEFAULT_API).replace(/\/+$/, '');
const autoRefresh = params.get('autorefresh') !== 'off';
const useLock = params.get('lock') !== 'off' && Boolean(navigator.locks);

// The tokens live in this variable, in memory, and nowhere else:
//   { accessToken, accessExpiresAtMs, refreshToken, refreshExpiresAt, obtainedAtMs }
//
// Why not localStorage (or sessionStorage)? Anything stored there can be read
// by every script that runs on this origin, now or later, and it stays on
// disk after the browser is closed: one XSS bug or one compromised
// third-party script, any day, is enough to copy a refresh token and keep the
// session alive from elsewhere for weeks. A variable inside this script is
// gone when the last tab of the app closes, and is not sitting in a
// well-known place for injected code to collect.
//
// Tabs of this origin share the pair over a BroadcastChannel (same origin
// only): a new tab asks the open ones for it, and a tab that refreshes tells
// the others. That keeps every tab on the newest refresh token (a tab left on
// an older one would present it later, which the API treats as theft and
// ends the session) and lets a tab opened next to a logged-in one start
// logged in. Script injected into a live tab could ask the channel too: this
// is not XSS-proof (nothing in the page is), it only keeps the token out of
// storage and out of reach once the app is closed. Reloading the only tab
// logs out; an app that must survive that should keep the refresh token
// behind its own backend (an HttpOnly, SameSite cookie on a
// backend-for-frontend) rather than in Web Storage.
//
// Only one tab refreshes at a time (navigator.locks): a tab that waited for
// the lock first looks whether another tab has refreshed meanwhile. If two
// tabs still present the same refresh token at once (no Web Locks, or a
// message still on its way), the API's reuse interval gives both a working
// pair of the same session.
//
// Tokens are sent only in the Authorization header, never in a cookie, so
// requests carry no ambient credentials (no CSRF exposure) and fetch is
// called with credentials: 'omit'.
let tokens = null;

// Kept only for the demonstration after logout: the page retries GET
// /api/v1/user with the revoked token to show that the API now refuses it.
// A real app would simply drop the token.
let revokedToken = null;

const channel = 'BroadcastChannel' in window ? new BroadcastChannel(`tokengate:${apiBase}`) : null;
const LOCK = `tokengate-refresh:${apiBase}`;
let refreshTimer = null;
let refreshesSent = 0;
let pairsAdopted = 0;

const $ = (id) => document.getElementById(id);

function setStatus(text, kind = '') {
  const el = $('status');
  el.textContent = text;
  el.className = kind;
}

/**
 * Calls the API. Resolves to {status, headers, body} for every HTTP answer
 * (errors included); rejects only when there is no readable answer at all:
 * the network failed or the browser refused the cross-origin response (CORS).
 */
async function api(method, path, { body, token } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(apiBase + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'omit',
      mode: 'cors',
    });
  } catch (err) {
    // The browser hides the reason on purpose; its console says "blocked by CORS policy"
    // when this origin is not in the API's --cors-origins list.
    throw new Error(`Could not reach the API at ${apiBase} (network error, or this origin ` +
      `${location.origin} is not allowed by the API's --cors-origins): ${err.message}`);
  }
  const text = await response.text();
  let parsed = null;
  if (text) {
    try { parsed = JSON.parse(text); } catch { parsed = text; }
  }
  return { status: response.status, headers: response.headers, body: parsed };
}

function describeError(res) {
  const b = res.body && typeof res.body === 'object' ? res.body : {};
  let text = `${res.status} ${b.error ?? ''}: ${b.message ?? ''}`.trim();
  if (b.fields) {
    text += ' ' + Object.entries(b.fields).map(([f, problems]) => `${f}: ${problems.join(', ')}`).join('; ');
  }
  const retry = res.headers.get('Retry-After');
  if (retry) text += ` (retry after ${retry} s)`;
  return text;
}

// --- tokens: keep, share, refresh ------------------------------------------

/** The pair of a login or refresh answer, with its expiry on this browser's clock. */
function pairFrom(body) {
  const now = Date.now();
  return {
    accessToken: body.access_token,
    // From expires_in, not expires_at: the browser's clock may be off from the server's.
    accessExpiresAtMs: now + body.expires_in * 1000,
    accessLifetimeMs: body.expires_in * 1000,
    refreshToken: body.refresh_token,
    refreshExpiresAt: body.refresh_expires_at,
    obtainedAtMs: now,
  };
}

/** Takes a pair (our own or another tab's), shows it and schedules its refresh. */
function adopt(pair, how) {
  tokens = pair;
  $('last-change').textContent = `${how} at ${new Date().toLocaleTimeString()}`;
  showTokens();
  scheduleRefresh();
}

/** Whether pair `a` is newer than pair `b` (or there is no `b`). */
function isNewer(a, b) {
  if (!b) return true;
  if (a.obtainedAtMs !== b.obtainedAtMs) return a.obtainedAtMs > b.obtainedAtMs;
  return a.refreshToken > b.refreshToken;
}

function share(message) {
  channel?.postMessage(message);
}

/** When to refresh: a quarter of the lifetime before expiry, at most 60 s before. */
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  if (!tokens || !autoRefresh) {
    $('next-refresh').textContent = autoRefresh ? '' : 'off (refreshed on 401 only)';
    return;
  }
  const margin = Math.min(60_000, tokens.accessLifetimeMs / 4);
  const at = tokens.accessExpiresAtMs - margin;
  $('next-refresh').textContent = new Date(at).toLocaleTimeString();
  const seen = tokens;
  refreshTimer = setTimeout(() => {
    refreshTokens(seen, 'timer').catch((err) => setStatus(err.message, 'error'));
  }, Math.max(0, at - Date.now()));
}

/**
 * Exchanges the refresh token of `seen` (the pair the caller found stale) for
 * a new pair, one tab at a time. If another tab already replaced `seen` while
 * this one waited for the lock, that newer pair is used instead. Resolves to
 * true when a working pair is held afterwards, false when the session is over
 * (this tab is then logged out).
 */
async function refreshTokens(seen, reason, { force = false } = {}) {
  const run = async () => {
    if (!tokens) return false;
    if (!force && tokens.refreshToken !== seen?.refreshToken) return true;
    const res = await api('POST', '/api/v1/token/refresh', { body: { refresh_token: tokens.refreshToken } });
    if (res.status === 200) {
      refreshesSent += 1;
      $('refreshes-sent').textContent = String(refreshesSent);
      const pair = pairFrom(res.body);
      adopt(pair, `refreshed by this tab (${reason})`);
      share({ type: 'pair', pair });
      return true;
    }
    if (res.status === 401) {
      // invalid_grant: the session ended (logged out elsewhere, ended from the
      // session list, expired, or its refresh token was reused late). Every
      // tab of this session is logged out with it.
      endLocally(`Your session has ended (${describeError(res)}); log in again.`);
      share({ type: 'ended' });
      return false;
    }
    // 5xx or throttling: keep the pair (it may still work) and try later.
    setStatus(`Could not refresh the tokens: ${describeError(res)}`, 'error');
    return true;
  };
  return useLock ? navigator.locks.request(LOCK, run) : run();
}

/**
 * Calls an authenticated route. On a 401, refreshes once (unless another tab
 * already did) and retries the call once; a second 401 means logged out.
 */
async function authed(method, path) {
  if (!tokens) throw new Error('Not logged in.');
  const used = tokens;
  let res = await api(method, path, { token: used.accessToken });
  if (res.status !== 401) return res;
  if (!(await refreshTokens(used, `401 from ${method} ${path}`))) return res;
  res = await api(method, path, { token: tokens.accessToken });
  if (res.status === 401) {
    endLocally(`Logged out: the API refused the refreshed token too (${describeError(res)}).`);
    share({ type: 'ended' });
  }
  return res;
}

// Messages between this origin's tabs.
channel?.addEventListener('message', ({ data }) => {
  if (data?.type === 'hello' && tokens) {
    share({ type: 'pair', pair: tokens });
  } else if (data?.type === 'pair' && data.pair) {
    // Keep the newest. Two tabs that refreshed at once each hold a working
    // pair; comparing (time, token) the same way in both, they settle on one.
    if (!isNewer(data.pair, tokens)) return;
    const wasLoggedOut = !tokens;
    pairsAdopted += 1;
    $('pairs-adopted').textContent = String(pairsAdopted);
    adopt(data.pair, 'from another tab');
    if (wasLoggedOut) showSignedIn().catch((err) => setStatus(err.message, 'error'));
  } else if (data?.type === 'ended' && tokens) {
    endLocally('Logged out in another tab.');
  }
});

/** Asks the open tabs for their pair; resolves once one answered or after a short wait. */
function askOtherTabs() {
  if (!channel) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { channel.removeEventListener('message', onPair); clearTimeout(timer); resolve(); };
    const onPair = ({ data }) => { if (data?.type === 'pair') setTimeout(done); };
    const timer = setTimeout(done, 300);
    channel.addEventListener('message', onPair);
    share({ type: 'hello' });
  });
}

// --- what the page shows -----------------------------------------------------

async function fingerprint(token) {
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(token));
  return [...new Uint8Array(digest).slice(0, 6)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function showTokens() {
  $('tokens-section').hidden = !tokens;
  if (!tokens) return;
  const shown = tokens;
  $('access-expires').textContent = new Date(shown.accessExpiresAtMs).toLocaleTimeString();
  $('access-expires').dataset.ms = String(shown.accessExpiresAtMs);
  $('refresh-expires').textContent = shown.refreshExpiresAt;
  fingerprint(shown.accessToken).then((fp) => {
    if (tokens === shown) $('token-fingerprint').textContent = fp;
  });
}

function showUser(user) {
  $('user-id').textContent = user.id;
  $('user-name').textContent = user.name;
  $('user-email').textContent = user.email;
  $('user-created').textContent = user.created_at;
  $('login-section').hidden = true;
  $('user-section').hidden = false;
  $('sessions-section').hidden = false;
}

/** Drops the tokens of this tab and shows the login form. */
function endLocally(message) {
  tokens = null;
  clearTimeout(refreshTimer);
  refreshTimer = null;
  $('login-section').hidden = false;
  $('user-section').hidden = true;
  $('sessions-section').hidden = true;
  $('tokens-section').hidden = true;
  if (message) setStatus(message, 'error');
}

async function loadUser() {
  const res = await authed('GET', '/api/v1/user');
  if (res.status === 200) {
    showUser(res.body);
    setStatus(`Logged in as ${res.body.email}.`, 'ok');
    return true;
  }
  if (res.status !== 401) setStatus(`Could not load the current user: ${describeError(res)}`, 'error');
  return false;
}

function cell(row, text) {
  const td = row.insertCell();
  td.textContent = text ?? '';
  return td;
}

async function loadSessions() {
  const res = await authed('GET', '/api/v1/sessions');
  if (res.status !== 200) {
    if (res.status !== 401) setStatus(`Could not list the sessions: ${describeError(res)}`, 'error');
    return;
  }
  const body = $('sessions').tBodies[0];
  body.replaceChildren();
  for (const s of res.body) {
    const row = body.insertRow();
    row.dataset.sessionId = s.id;
    if (s.current) row.className = 'current';
    const id = cell(row, `${s.id.slice(0, 8)}… `);
    if (s.current) {
      const tag = document.createElement('span');
      tag.className = 'tag';
      tag.textContent = 'this browser';
      id.append(tag);
    }
    cell(row, s.user_agent ?? '(unknown)');
    cell(row, s.ip ?? '');
    cell(row, new Date(s.created_at).toLocaleString());
    cell(row, new Date(s.last_used_at).toLocaleString());
    const end = document.createElement('button');
    end.type = 'button';
    end.className = 'secondary end-session';
    end.textContent = s.current ? 'Log out here' : 'End';
    end.addEventListener('click', guard(() => endSession(s.id, s.current)));
    row.insertCell().append(end);
  }
  $('sessions').dataset.count = String(res.body.length);
}

async function showSignedIn() {
  if (await loadUser()) await loadSessions();
}

// --- actions -------------------------------------------------------------------

async function login(email, password) {
  const res = await api('POST', '/api/v1/login', { body: { email, password } });
  if (res.status !== 200) {
    setStatus(`Login failed: ${describeError(res)}`, 'error');
    return;
  }
  const pair = pairFrom(res.body);
  adopt(pair, 'logged in');
  share({ type: 'pair', pair });
  $('password').value = '';
  $('revoked-section').hidden = true;
  await showSignedIn();
}

async function register(name, email, password) {
  const res = await api('POST', '/api/v1/register', { body: { name, email, password } });
  if (res.status !== 201) {
    setStatus(`Could not create the account: ${describeError(res)}`, 'error');
    return;
  }
  setStatus(`Account ${res.body.email} created; logging in...`);
  await login(email, password);
}

async function checkRevokedToken() {
  const res = await api('GET', '/api/v1/user', { token: revokedToken });
  $('revoked-section').hidden = false;
  $('revoked-status').textContent = String(res.status);
  $('revoked-error').textContent = res.body?.error ?? '';
  // Readable from script only because the API sends
  // Access-Control-Expose-Headers: www-authenticate (CORS hides other headers).
  $('revoked-challenge').textContent = res.headers.get('WWW-Authenticate') ?? '(header not readable)';
  $('revoked-body').textContent = JSON.stringify(res.body, null, 2);
}

async function logout() {
  const res = await authed('DELETE', '/api/v1/logout');
  if (res.status !== 204 && res.status !== 401) {
    // 503: nothing was ended; the tokens still work. Keep them and say so.
    setStatus(`Logout failed, the session is still valid: ${describeError(res)}`, 'error');
    return;
  }
  // 204: this token and its session ended for good (every tab of this browser
  // shares the session, so all of them are logged out). 401: it had already ended.
  revokedToken = tokens?.accessToken ?? null;
  endLocally();
  share({ type: 'ended' });
  setStatus('Logged out: the token and its session were ended on the server.', 'ok');
  if (revokedToken) await checkRevokedToken();
}

async function logoutOthers() {
  const res = await authed('DELETE', '/api/v1/logout?scope=others');
  if (res.status !== 204) {
    if (res.status !== 401) setStatus(`Could not log out the other devices: ${describeError(res)}`, 'error');
    return;
  }
  setStatus('Logged out everywhere else: every other session has ended.', 'ok');
  await loadSessions();
}

async function endSession(id, current) {
  const res = await authed('DELETE', `/api/v1/sessions/${encodeURIComponent(id)}`);
  if (res.status !== 204) {
    if (res.status !== 401) setStatus(`Could not end that session: ${describeError(res)}`, 'error');
    if (res.status === 404) await loadSessions();
    return;
  }
  if (current) {
    endLocally();
    share({ type: 'ended' });
    setStatus('Logged out: this session was ended on the server.', 'ok');
    return;
  }
  setStatus(`Session ${id.slice(0, 8)}… ended.`, 'ok');
  await loadSessions();
}

function guard(fn) {
  return async (event) => {
    event?.preventDefault();
    const buttons = document.querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await fn();
    } catch (err) {
      setStatus(err.message, 'error');
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  };
}

// A tab coming back (from the back/forward cache, or shown again) asks the
// others for the newest pair before it uses its own.
window.addEventListener('pageshow', (event) => { if (event.persisted) askOtherTabs(); });
document.addEventListener('visibilitychange', () => { if (!document.hidden) askOtherTabs(); });

$('page-origin').textContent = location.origin;
$('api-base').textContent = apiBase;
$('login-form').addEventListener('submit', guard(() => login($('email').value, $('password').value)));
$('register').addEventListener('click', guard(() => register($('name').value || $('email').value, $('email').value, $('password').value)));
$('refresh').addEventListener('click', guard(loadUser));
$('logout').addEventListener('click', guard(logout));
$('retry-old').addEventListener('click', guard(checkRevokedToken));
$('refresh-now').addEventListener('click', guard(() => refreshTokens(tokens, 'button', { force: true })));
$('reload-sessions').addEventListener('click', guard(loadSessions));
$('logout-others').addEventListener('click', guard(logoutOthers));

// Another tab of this app may already be logged in: take its pair.
askOtherTabs().finally(() => { document.body.dataset.ready = 'true'; });
