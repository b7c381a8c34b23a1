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
'use strict';

const DEFAULT_API = 'http://127.0.0.1:8080';
const apiBase = (new URLSearchParams(location.search).get('api') || DEFAULT_API).replace(/\/+$/, '');

// The access token lives in this variable, in memory, and nowhere else.
//
// Why not localStorage (or sessionStorage)? Anything stored there can be read
// by every script that runs on this origin, so one XSS bug or one compromised
// third-party script is enough to copy the token and use it from anywhere for
// its whole lifetime. A variable inside this script is gone when the tab is
// closed or reloaded and is not sitting in a well-known place for injected code
// to collect. The cost is that a reload logs the user out; an app that must
// survive reloads should keep tokens short-lived and log in again, or move the
// token behind its own backend (an HttpOnly, SameSite cookie on a
// backend-for-frontend) instead of putting it in Web Storage.
//
// The token is sent only in the Authorization header, never in a cookie, so
// requests carry no ambient credentials (no CSRF exposure) and fetch is called
// with credentials: 'omit'.
let accessToken = null;
let tokenExpiresAt = null;

// Kept only for the demonstration after logout: the page retries GET
// /api/v1/user with the revoked token to show that the API now refuses it.
// A real app would simply drop the token.
let revokedToken = null;

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

function showLoggedIn(user) {
  $('user-id').textContent = user.id;
  $('user-name').textContent = user.name;
  $('user-email').textContent = user.email;
  $('user-created').textContent = user.created_at;
  $('token-info').textContent = tokenExpiresAt
    ? `Token kept in memory only; it expires at ${tokenExpiresAt}.`
    : 'Token kept in memory only.';
  $('login-section').hidden = true;
  $('user-section').hidden = false;
}

function showLoggedOut() {
  accessToken = null;
  tokenExpiresAt = null;
  $('login-section').hidden = false;
  $('user-section').hidden = true;
}

async function loadUser() {
  const res = await api('GET', '/api/v1/user', { token: accessToken });
  if (res.status === 200) {
    showLoggedIn(res.body);
    setStatus(`Logged in as ${res.body.email}.`, 'ok');
    return;
  }
  if (res.status === 401) {
    // Expired or revoked elsewhere (another tab, another device): log in again.
    showLoggedOut();
  }
  setStatus(`Could not load the current user: ${describeError(res)}`, 'error');
}

async function login(email, password) {
  const res = await api('POST', '/api/v1/login', { body: { email, password } });
  if (res.status !== 200) {
    setStatus(`Login failed: ${describeError(res)}`, 'error');
    return;
  }
  accessToken = res.body.access_token;
  tokenExpiresAt = res.body.expires_at;
  $('password').value = '';
  $('revoked-section').hidden = true;
  await loadUser();
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
  const token = accessToken;
  const res = await api('DELETE', '/api/v1/logout', { token });
  if (res.status !== 204 && res.status !== 401) {
    // 503: the revocation was not stored; the token still works. Keep it and say so.
    setStatus(`Logout failed, the token is still valid: ${describeError(res)}`, 'error');
    return;
  }
  // 204: revoked for good. 401: it was already revoked or expired. Either way, drop it.
  revokedToken = token;
  showLoggedOut();
  setStatus('Logged out: the token was revoked on the server.', 'ok');
  await checkRevokedToken();
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

$('page-origin').textContent = location.origin;
$('api-base').textContent = apiBase;
$('login-form').addEventListener('submit', guard(() => login($('email').value, $('password').value)));
$('register').addEventListener('click', guard(() => register($('name').value || $('email').value, $('email').value, $('password').value)));
$('refresh').addEventListener('click', guard(loadUser));
$('logout').addEventListener('click', guard(logout));
$('retry-old').addEventListener('click', guard(checkRevokedToken));
document.body.dataset.ready = 'true';
