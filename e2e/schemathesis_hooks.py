"""Schemathesis hooks for the `schemathesis-*` checks of e2e/run (the `bearer`
invocation of e2e/schemathesis_check.py, which tests the operations that end
tokens or sessions: `logout`, `currentUser`, `deleteSession`, `changePassword`,
and `refreshToken`).

Fresh tokens. `DELETE /api/v1/logout` revokes the token it is called with,
`DELETE /api/v1/sessions/{id}` may end the caller's session, and a password
change rejects every token issued before it, so one fixed `Authorization`
header (what the other invocation passes with `-H`) would be dead after the
first such case, and every later case would only exercise `401`. This auth
provider logs in afresh for every generated case instead (no caching:
`refresh_interval=None`), so each case that carries a token carries a valid,
unrevoked one. Unlike a fixed `-H` header, it also lets Schemathesis generate
broken `Authorization` headers for its negative cases: when it deliberately
drops or corrupts the credentials, it does not call this provider.

Real values. Random data never hits a real refresh token, session id or
password, so without help these operations would only ever answer `401`,
`404` and `403`. For cases whose part in question was generated as valid
(positive), `map_case` puts in:
- `refreshToken`: the refresh token of a fresh login;
- `deleteSession`: the id of another fresh session of the same user as the
  caller's token;
- `changePassword`: the user's current password as `current_password` (the
  generated `new_password` is kept, and becomes the current one once the
  server answers `200`). A wrong current password is never sent in a positive
  case, so the user is not throttled and its logins here keep working.
Negative cases are left as generated, and so is every fourth positive case of
`refreshToken` and `deleteSession`, so their `401 invalid_grant` and
`404 not_found` answers are checked too.

Each operation works on a user of its own (registered here on first use), so
a password change or a session ended by one does not disturb another.

Needs TOKENGATE_URL and SCHEMATHESIS_PASSWORD. Uses the standard library only,
so it adds no dependency.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import threading
import urllib.error
import urllib.request

import schemathesis
from schemathesis.core.parameters import ParameterLocation

BASE = os.environ["TOKENGATE_URL"]
FIRST_PASSWORD = os.environ["SCHEMATHESIS_PASSWORD"]

# Path -> the user whose tokens that operation gets. By path, not method: the
# coverage phase also sends an operation's cases with methods it does not
# declare (the `405` checks).
USERS = {
    "/api/v1/logout": "schemathesis-logout@example.com",
    "/api/v1/user": "schemathesis-user@example.com",
    "/api/v1/sessions/{id}": "schemathesis-sessions@example.com",
    "/api/v1/user/password": "schemathesis-password@example.com",
    "/api/v1/token/refresh": "schemathesis-refresh@example.com",
}
OTHER_USER = "schemathesis-other@example.com"
_passwords: dict[str, str] = {}
_lock = threading.Lock()
_positive_cases: collections.Counter = collections.Counter()


def _post(path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{BASE}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def password_of(email: str) -> str:
    """The user's current password; registers the user on first use."""
    with _lock:
        if email not in _passwords:
            status, body = _post("/api/v1/register", {"name": "Schemathesis", "email": email, "password": FIRST_PASSWORD})
            if status not in (201, 409):
                raise RuntimeError(f"registering {email}: {status} {body}")
            _passwords[email] = FIRST_PASSWORD
        return _passwords[email]


def fresh_pair(email: str) -> dict:
    """A new session of `email`: the login answer (access and refresh token)."""
    status, body = _post("/api/v1/login", {"email": email, "password": password_of(email)})
    if status != 200:
        raise RuntimeError(f"login of {email} for a test case: {status} {body}")
    return body


def session_id(access_token: str) -> str:
    payload = access_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"]


def user_of(case) -> str:
    return USERS.get(case.path, OTHER_USER)


def positive_at(case, location: ParameterLocation) -> bool:
    meta = case.meta
    return meta is not None and not meta.is_negative_at(location)


def gets_real_value(case, location: ParameterLocation) -> bool:
    """Positive at `location`, and not one of the every-fourth cases left as generated."""
    if not positive_at(case, location):
        return False
    with _lock:
        _positive_cases[case.path] += 1
        return _positive_cases[case.path] % 4 != 0


@schemathesis.auth(refresh_interval=None).apply_to(
    operation_id=["logout", "currentUser", "deleteSession", "changePassword"]
)
class FreshTokenPerCase:
    def get(self, case, context):
        return fresh_pair(user_of(case))["access_token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook("map_case").apply_to(operation_id="refreshToken")
def real_refresh_token(context, case):
    if isinstance(case.body, dict) and gets_real_value(case, ParameterLocation.BODY):
        case.body = {**case.body, "refresh_token": fresh_pair(user_of(case))["refresh_token"]}
    return case


@schemathesis.hook("map_case").apply_to(operation_id="deleteSession")
def real_session_id(context, case):
    if isinstance(case.path_parameters, dict) and gets_real_value(case, ParameterLocation.PATH):
        other = fresh_pair(user_of(case))["access_token"]
        case.path_parameters = {**case.path_parameters, "id": session_id(other)}
    return case


@schemathesis.hook("map_case").apply_to(operation_id="changePassword")
def real_current_password(context, case):
    if positive_at(case, ParameterLocation.BODY) and isinstance(case.body, dict):
        case.body = {**case.body, "current_password": password_of(user_of(case))}
    return case


@schemathesis.hook("after_call").apply_to(operation_id="changePassword")
def remember_new_password(context, case, response):
    if response.status_code == 200 and case.method.upper() == "PUT" and isinstance(case.body, dict):
        with _lock:
            _passwords[user_of(case)] = case.body["new_password"]
