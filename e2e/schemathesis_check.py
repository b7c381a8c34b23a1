"""Schemathesis against a live tokengate, with every check, authenticated.

    TOKENGATE_URL=http://127.0.0.1:PORT WORK_DIR=/tmp/... python e2e/schemathesis_check.py

Runs the installed Schemathesis (pinned in e2e/requirements.txt) on the served
`/openapi.json` with `--checks all`, positive and negative generation
(`--mode all`), the default phases, a fixed seed and at most 100 test cases
per operation, in two invocations:

1. `bearer`: the operations that end tokens or sessions or need real values
   (`logout`, `currentUser`, `deleteSession`, `changePassword`,
   `refreshToken`), with e2e/schemathesis_hooks.py giving every generated case
   a fresh token of its own (a fixed token would be ended by the first logout,
   session delete or password change, and every later case would only see
   `401`) and real values where random data never hits one (a real refresh
   token, session id, current password: see the hooks), and Schemathesis free
   to generate broken `Authorization` headers for its negative cases;
2. `others`: every other operation (so `currentUser` again), with
   `-H "Authorization: Bearer $TOKEN"`, a real token of a user registered and
   logged in just before, sent with every request; nothing in this run can
   end that token.

`bearer` goes first: its hooks need successful logins, which the fuzzing of
`login` in `others` could otherwise get throttled (per e-mail address: the
runs use different users; per client: the server for this check is started
with a high `--login-max-failures-per-client`).

Prints, from the runs' NDJSON event reports:
- `ok - schemathesis-CHECK` or `not ok - schemathesis-CHECK: ...` for each
  check the installed version ran (failing requests and responses are listed);
- `schemathesis-no-errors`: neither run stopped on an error (schema loading,
  authentication, network, time limit);
- `schemathesis-authenticated-coverage`: the operations that need a real
  token or value really got through (enough `2xx` on each of them), so a
  broken token or hook cannot turn the run into a test of `401` answers only;
- the response statuses seen per operation, as `#` lines.
"""

from __future__ import annotations

import base64
import collections
import json
import os
import subprocess
import sys
import time
import urllib.request

E2E = os.path.dirname(os.path.abspath(__file__))
BASE = os.environ["TOKENGATE_URL"].rstrip("/")
WORK = os.environ["WORK_DIR"]
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")
SEED = os.environ.get("SCHEMATHESIS_SEED", "20261124")
MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "100")
# Wall-clock limit of each invocation, so the two stay within 3 minutes (they
# take 2-5 s each on 2 cores); a run that hits it is a failure, not a pass.
TIME_LIMIT = int(os.environ.get("SCHEMATHESIS_TIME_LIMIT", "90"))
# Each of these operations must answer this many generated cases with its 2xx.
MIN_AUTHENTICATED_SUCCESSES = 10
# (listSessions is not here: with no parameters, Schemathesis sends it only a
# handful of cases, all with the fixed token of the `others` run.)
NEEDS_REAL_VALUES = {
    "GET /api/v1/user": 200,
    "DELETE /api/v1/logout": 204,
    "DELETE /api/v1/sessions/{id}": 204,
    "PUT /api/v1/user/password": 200,
    "POST /api/v1/token/refresh": 200,
}
# Operations of the `bearer` run (see the hooks); the `others` run has the rest.
BEARER_OPERATIONS = ["logout", "currentUser", "deleteSession", "changePassword", "refreshToken"]

PASSWORD = "schemathesis-password"
TOKEN_USER = "schemathesis-token@example.com"

COMMON = [
    "--checks", "all",
    "--mode", "all",
    "--max-examples", MAX_EXAMPLES,
    "--seed", SEED,
    "--continue-on-failure",
    "--request-timeout", "10",
    "--generation-database", "none",
    "--no-color",
]


def post(path: str, body: dict) -> dict:
    request = urllib.request.Request(
        BASE + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def run(name: str, args: list[str], env: dict[str, str]) -> tuple[str, int | None]:
    """Runs one invocation in its own directory; returns (ndjson path, exit status or None on time-out)."""
    directory = os.path.join(WORK, name)
    os.makedirs(directory, exist_ok=True)
    events = os.path.join(directory, "events.ndjson")
    command = [SCHEMATHESIS, "run", f"{BASE}/openapi.json", *COMMON, *args,
               "--report", "ndjson", "--report-ndjson-path", events]
    shown = " ".join(a if "Bearer " not in a else "'Authorization: Bearer $TOKEN'" for a in command[1:])
    print(f"# schemathesis {shown}", flush=True)
    started = time.monotonic()
    with open(os.path.join(directory, "output.txt"), "w") as out:
        try:
            # cwd: Schemathesis and Hypothesis keep their caches (.schemathesis/, .hypothesis/) there.
            status = subprocess.run(command, cwd=directory, env={**os.environ, **env}, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=TIME_LIMIT).returncode
        except subprocess.TimeoutExpired:
            status = None
    with open(os.path.join(directory, "output.txt")) as out:
        summary = out.read().rsplit(" SUMMARY ", 1)[-1].split("\n", 1)[-1]
    for line in summary.strip().splitlines():
        print(f"#   {line}")
    print(f"# {name}: exit status {status}, {time.monotonic() - started:.0f} s", flush=True)
    return events, status


def body_text(content: dict | None) -> str:
    if not content:
        return ""
    raw = base64.b64decode(content.get("$base64", "")) if "$base64" in content else str(content).encode()
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= 300 else text[:300] + "..."


class Results:
    def __init__(self) -> None:
        self.checks: dict[str, int] = collections.Counter()  # check -> cases it judged
        # check -> (code, title, response status) -> [(request line, full detail)]
        self.failures: dict[str, dict[tuple, list[tuple[str, str]]]] = collections.defaultdict(
            lambda: collections.defaultdict(list))
        self.statuses: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.cases = 0
        self.errors: list[str] = []

    def read(self, name: str, path: str, status: int | None) -> None:
        if status is None:
            self.errors.append(f"{name}: still running after {TIME_LIMIT} s, stopped")
        elif status not in (0, 1):
            self.errors.append(f"{name}: exit status {status} (1 means failures, more means an error)")
        if not os.path.exists(path):
            self.errors.append(f"{name}: no event report at {path}")
            return
        finished = False
        with open(path) as f:
            for line in f:
                event = json.loads(line)
                if "EngineFinished" in event:
                    finished = True
                if "NonFatalError" in event:
                    error = event["NonFatalError"]
                    self.errors.append(f"{name}: {error.get('label')}: {json.dumps(error.get('info', error))[:500]}")
                if "FatalError" in event:
                    self.errors.append(f"{name}: fatal: {json.dumps(event['FatalError'])[:500]}")
                for kind in ("ScenarioFinished", "FuzzScenarioFinished"):
                    if kind in event:
                        self.scenario(event[kind])
        if not finished and status is not None:
            self.errors.append(f"{name}: the run did not finish")

    def scenario(self, scenario: dict) -> None:
        recorder = scenario.get("recorder", {})
        cases = recorder.get("cases", {})
        interactions = recorder.get("interactions", {})
        for case_id, checks in recorder.get("checks", {}).items():
            self.cases += 1
            case = cases.get(case_id, {}).get("value", {})
            interaction = interactions.get(case_id) or {}
            request, response = interaction.get("request", {}), interaction.get("response") or {}
            label = f"{case.get('method', request.get('method', '?'))} {case.get('path', '?')}"
            if response:
                self.statuses[label][response.get("status_code")] += 1
            for check in checks:
                self.checks[check["name"]] += 1
                if check["status"] != "failure":
                    continue
                failure = check.get("failure_info", {}).get("failure", {})
                message = " ".join(failure.get("message", "").split())
                request_line = f"{request.get('method', '?')} {request.get('uri', '?')}"
                headers = {k: v for k, v in request.get("headers", {}).items()
                           if k.lower() not in ("user-agent", "accept-encoding", "accept", "connection")}
                body = body_text(request.get("body"))
                key = (failure.get("code", "?"), failure.get("title", ""), response.get("status_code", "?"))
                self.failures[check["name"]][key].append((label, f"{message} | request: {request_line}"
                    + (f" headers={json.dumps(headers)}" if headers else "")
                    + (f" body={body!r}" if body else "")
                    + f" | response: {response.get('status_code', '?')}"
                    + f" headers={json.dumps(response.get('headers', {}))} body={body_text(response.get('content'))!r}"))


def main() -> int:
    post("/api/v1/register", {"name": "Schemathesis", "email": TOKEN_USER, "password": PASSWORD})
    token = post("/api/v1/login", {"email": TOKEN_USER, "password": PASSWORD})["access_token"]

    results = Results()
    include = [arg for op in BEARER_OPERATIONS for arg in ("--include-operation-id", op)]
    events, status = run("bearer", include, {
        "SCHEMATHESIS_HOOKS": os.path.join(E2E, "schemathesis_hooks.py"),
        "TOKENGATE_URL": BASE, "SCHEMATHESIS_PASSWORD": PASSWORD,
    })
    results.read("bearer", events, status)
    exclude = [arg for op in BEARER_OPERATIONS if op != "currentUser" for arg in ("--exclude-operation-id", op)]
    events, status = run("others", [*exclude, "-H", f"Authorization: Bearer {token}"], {})
    results.read("others", events, status)

    with urllib.request.urlopen(f"{BASE}/openapi.json", timeout=10) as response:
        paths = json.load(response)["paths"]
    declared = {f"{method.upper()} {path}" for path, item in paths.items() for method in item}
    print(f"# {results.cases} test cases judged in all; statuses seen per operation:")
    undeclared: collections.Counter = collections.Counter()
    for label in sorted(results.statuses):
        if label not in declared:
            undeclared.update(results.statuses[label])
            continue
        counts = ", ".join(f"{code}: {n}" for code, n in sorted(results.statuses[label].items(), key=str))
        print(f"#   {label}: {counts}")
    if undeclared:
        counts = ", ".join(f"{code}: {n}" for code, n in sorted(undeclared.items(), key=str))
        print(f"#   undeclared methods on the documented paths: {counts}")

    failed = 0
    for name in sorted(results.checks):
        problems = results.failures.get(name, [])
        if not problems:
            print(f"ok - schemathesis-{name}")
            continue
        failed += 1
        count = sum(len(cases) for cases in problems.values())
        print(f"not ok - schemathesis-{name}: {count} of {results.checks[name]} test cases failed")
        for (code, title, status), cases in problems.items():
            where = ", ".join(sorted({label for label, _ in cases}))
            print(f"#   {code} {title}, response {status}, {len(cases)} case(s): {where}")
            print(f"#     e.g. {cases[0][1]}")
    if not results.checks:
        results.errors.append("no check ran at all")

    if results.errors:
        failed += 1
        print("not ok - schemathesis-no-errors: " + "; ".join(results.errors))
    else:
        print("ok - schemathesis-no-errors")

    short = {label: results.statuses[label][code] for label, code in NEEDS_REAL_VALUES.items()
             if results.statuses[label][code] < MIN_AUTHENTICATED_SUCCESSES}
    if short:
        failed += 1
        counts = ", ".join(f"{n} x {NEEDS_REAL_VALUES[label]} on {label}" for label, n in short.items())
        print(f"not ok - schemathesis-authenticated-coverage: only {counts} (want >= {MIN_AUTHENTICATED_SUCCESSES} each)")
    else:
        print("ok - schemathesis-authenticated-coverage")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
