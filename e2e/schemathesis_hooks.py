"""Schemathesis hooks for the `schemathesis-*` checks of e2e/run (the `bearer`
invocation of e2e/schemathesis_check.py, which tests `logout` and `currentUser`).

`DELETE /api/v1/logout` revokes the token it is called with, so one fixed
`Authorization` header (what the other invocation passes with `-H`) would be
revoked by the first generated logout, and every later case would only exercise
the `401 invalid_token` path. This auth provider logs in afresh for every
generated case instead (no caching: `refresh_interval=None`), so each case that
carries a token carries a valid, unrevoked one. Unlike a fixed `-H` header, it
also lets Schemathesis generate broken `Authorization` headers for its negative
cases: when it deliberately drops or corrupts the credentials, it does not call
this provider.

Needs TOKENGATE_URL, SCHEMATHESIS_EMAIL and SCHEMATHESIS_PASSWORD (a registered
user). Uses the standard library only, so it adds no dependency.
"""

from __future__ import annotations

import json
import os
import urllib.request

import schemathesis

BASE = os.environ["TOKENGATE_URL"]
EMAIL = os.environ["SCHEMATHESIS_EMAIL"]
PASSWORD = os.environ["SCHEMATHESIS_PASSWORD"]


def fresh_token() -> str:
    request = urllib.request.Request(
        f"{BASE}/api/v1/login",
        data=json.dumps({"email": EMAIL, "password": PASSWORD}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["access_token"]


@schemathesis.auth(refresh_interval=None).apply_to(operation_id=["logout", "currentUser"])
class FreshTokenPerCase:
    def get(self, case, context):
        return fresh_token()

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
