"""Checks of the OpenAPI document itself, as clients and tools see it.

    TOKENGATE_URL=http://127.0.0.1:PORT python e2e/openapi_check.py openapi/openapi.yaml

- the committed openapi/openapi.yaml is a valid OpenAPI document
  (openapi-spec-validator, against the version the document declares);
- the document the server serves at /openapi.json and /openapi.yaml is the same
  document, and valid too;
- the media types the document declares are the Content-Type the server sends
  (clients pick their decoder by that string).

Each check prints `ok - openapi-NAME` or `not ok - openapi-NAME: why`.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

failures = 0


def check(name: str, ok: bool, detail: str = "") -> None:
    global failures
    if ok:
        print(f"ok - openapi-{name}")
    else:
        failures += 1
        print(f"not ok - openapi-{name}: {detail}")


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def validation_problem(document: dict) -> str:
    try:
        validate(document)
    except OpenAPIValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(root)"
        return f"at {where}: {err.message}"
    return ""


base = os.environ["TOKENGATE_URL"]
with open(sys.argv[1], encoding="utf-8") as f:
    committed = yaml.safe_load(f)

problem = validation_problem(committed)
check("committed-yaml-valid", not problem, f"{sys.argv[1]} is not a valid OpenAPI {committed.get('openapi')} document {problem}")

status, headers, body = fetch(f"{base}/openapi.json")
served = json.loads(body) if status == 200 else None
check("served-json-equals-committed", served == committed,
      f"GET /openapi.json answered {status} with a document that differs from {sys.argv[1]}")
if served is not None and served != committed:
    problem = validation_problem(served)
    check("served-json-valid", not problem, problem)

status, headers, body = fetch(f"{base}/openapi.yaml")
served_yaml = yaml.safe_load(body) if status == 200 else None
check("served-yaml-equals-committed", served_yaml == committed,
      f"GET /openapi.yaml answered {status} with a document that differs from {sys.argv[1]}")

# Declared media types against what the server really sends.
samples = [
    ("health-200", "/health", "get", "200", {}),
    ("current-user-401-unauthenticated", "/api/v1/user", "get", "401", {}),
    ("current-user-401-invalid-token", "/api/v1/user", "get", "401", {"Authorization": "Bearer not-a-token"}),
]
for name, path, method, code, req_headers in samples:
    status, headers, body = fetch(base + path, req_headers)
    declared = sorted(committed["paths"][path][method]["responses"][code].get("content", {}).keys())
    sent = headers.get("content-type", "")
    check(
        f"media-type-{name}",
        str(status) == code and declared == [sent],
        f"{method.upper()} {path} answered {status} with Content-Type {sent!r}; the document declares {declared}",
    )

sys.exit(1 if failures else 0)
