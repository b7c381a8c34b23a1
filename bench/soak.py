#!/usr/bin/env python3
"""Soak run of tokengate: mixed traffic for minutes, watching memory and the tables that grow.

    python3 bench/soak.py [--duration 180] [--warmup auto] ...   (bench/soak.py --help)

Starts the release binary (target/release/tokengate; build it first) on a
temporary database on 127.0.0.1 with short lifetimes, so tokens and sessions
expire and the periodic purge runs many times during the soak: --token-ttl 10,
--leeway 1, --refresh-ttl 60 (its minimum) and --purge-interval 5. Because the
soak sends thousands of wrong-password logins from one client address, the
server is started with --login-max-failures and --login-max-failures-per-client
raised to 1,000,000,000 (the defaults of 5 per e-mail address and 100 per
client would answer almost every login 429 after a few seconds); wrong-password
traffic is also spread over the registered users and a pool of unknown e-mail
addresses.

Traffic, on keep-alive connections (http.client, one per worker thread):
- auth workers (users shared with the readers): logins with the right
  password, then either keep the token for the readers, refresh the session
  1-3 times (each new access token checked, and kept for the readers), or log
  out at once (DELETE /logout, scope local) and check that the access token
  (GET /user) and the session's refresh token (POST /token/refresh) are
  refused; logins with a wrong password for a registered user and for unknown
  e-mail addresses (401);
- session workers, each with a user of its own (these end every session of
  their user): one of
  - concurrent refresh: --concurrent-refreshes threads present one refresh
    token at the same moment (all must get 200 and working pairs of the same
    session), then a local logout ends it and the other pairs are refused;
  - session delete: two logins, DELETE /sessions/{id} of the second with the
    first's token, the second's tokens refused;
  - logout others: two logins, a refresh, DELETE /logout?scope=others, the
    other session refused, this one still accepted, then logged out;
  - logout global: two logins, DELETE /logout?scope=global, both refused;
  - password change: two logins, PUT /user/password with the first's token
    (alternating between two passwords), every earlier token refused, the new
    pair accepted, then logged out;
- read workers: GET /api/v1/user with live tokens of the auth workers (200);
- a health worker: GET /health (200).

Every --sample seconds it records the server's RSS (VmRSS from /proc), the
request counts by status, and the sizes of the tables that grow with traffic
(revoked_tokens, sessions, refresh_tokens; counted on a read-only connection to
the live database). At the end it prints the requests by endpoint and status,
the RSS at start / after warm-up / end and its maximum, and the table sizes
over time, and exits non-zero if a 5xx, an unexpected status, a transport
error or an accepted ended token (access or refresh) was seen, if RSS grew by
more than --max-rss-growth-mib between warm-up and end (or, with
--max-rss-mib, ever exceeded that), or if a table outgrew its bound:
  revoked_tokens  logouts/s x (token ttl + leeway + purge interval)
  sessions        logins/s x (refresh ttl + token ttl + leeway + purge interval)
  refresh_tokens  refresh tokens issued/s x (refresh ttl + purge interval)
each x 1.5 + 50 (no session here is refreshed for long, so none outlives its
first refresh token by much). The warm-up (by default the longest of those
lifetimes plus 5 s) ends when the tables have reached their plateau.

Bounded in time (--duration; every worker stops at the deadline, the server is
stopped after) and in count (--max-requests). Only 127.0.0.1 is used. Standard
library only.
"""
from __future__ import annotations

import argparse
import base64
import collections
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tokengate")
SECRET = "soak-secret-0123456789abcdef-0123456789abcdef"
PASSWORD = "soak-password-1"
HIGH = "1000000000"

OTHER_PASSWORD = "soak-password-2"

# label -> the status that label must get
EXPECTED = {
    "POST /api/v1/login (right password)": 200,
    "POST /api/v1/login (wrong password)": 401,
    "POST /api/v1/login (unknown e-mail)": 401,
    "GET /api/v1/user": 200,
    "GET /api/v1/user (ended token)": 401,
    "DELETE /api/v1/logout": 204,
    "DELETE /api/v1/logout?scope=others": 204,
    "DELETE /api/v1/logout?scope=global": 204,
    "DELETE /api/v1/sessions/{id}": 204,
    "PUT /api/v1/user/password": 200,
    "POST /api/v1/token/refresh": 200,
    "POST /api/v1/token/refresh (concurrent)": 200,
    "POST /api/v1/token/refresh (ended session)": 401,
    "GET /health": 200,
}
LOGOUTS = ("DELETE /api/v1/logout", "DELETE /api/v1/logout?scope=others", "DELETE /api/v1/logout?scope=global")
# Answers that issue a refresh token (a row of refresh_tokens).
PAIRS = ("POST /api/v1/login (right password)", "POST /api/v1/token/refresh",
         "POST /api/v1/token/refresh (concurrent)", "PUT /api/v1/user/password")
TABLES = ("revoked_tokens", "sessions", "refresh_tokens")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=float, default=180, help="seconds of traffic")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds after which RSS is taken as the warm baseline (default: refresh ttl + "
                        "token ttl + leeway + purge interval + 5, so every table has reached its plateau)")
    p.add_argument("--sample", type=float, default=5, help="seconds between samples")
    p.add_argument("--users", type=int, default=4, help="registered users who log in")
    p.add_argument("--unknown-emails", type=int, default=1000, help="pool of unknown e-mail addresses")
    p.add_argument("--auth-workers", type=int, default=2)
    p.add_argument("--session-workers", type=int, default=2,
                   help="workers that refresh concurrently, delete sessions, log out others/globally, change passwords")
    p.add_argument("--concurrent-refreshes", type=int, default=4,
                   help="threads presenting one refresh token at the same moment")
    p.add_argument("--refresh-fraction", type=float, default=0.3,
                   help="share of the auth workers' right-password logins whose session is refreshed 1-3 times")
    p.add_argument("--read-workers", type=int, default=4)
    p.add_argument("--health-workers", type=int, default=1)
    p.add_argument("--keep-fraction", type=float, default=0.3,
                   help="share of right-password logins whose token is kept for the readers instead of logged out")
    p.add_argument("--token-ttl", type=int, default=10)
    p.add_argument("--leeway", type=int, default=1)
    p.add_argument("--refresh-ttl", type=int, default=60, help="the server's minimum")
    p.add_argument("--purge-interval", type=int, default=5)
    p.add_argument("--max-requests", type=int, default=20_000_000, help="stop after this many requests")
    p.add_argument("--max-rss-growth-mib", type=float, default=16.0,
                   help="fail if RSS at the end exceeds RSS after warm-up by more than this")
    p.add_argument("--max-rss-mib", type=float, default=None,
                   help="also fail if RSS ever exceeds this (absolute; off by default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bin", default=BIN)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (database, server log)")
    args = p.parse_args()
    if args.warmup is None:
        args.warmup = args.refresh_ttl + args.token_ttl + args.leeway + args.purge_interval + 5
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int, field: str = "VmRSS") -> int:
    """A number from /proc/PID/status (VmRSS and VmHWM in KiB, Threads)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()      # (label, status) -> n; status "error" for transport errors
        self.latency = collections.defaultdict(list)  # label -> seconds
        self.total = 0
        self.revoked_accepted = 0  # ended access or refresh tokens that got a 2xx
        self.anomalies = collections.Counter()  # wrong answers with an expected status
        self.errors = collections.Counter()

    def add(self, label, status, seconds):
        with self.lock:
            self.counts[(label, status)] += 1
            self.total += 1
            if isinstance(status, int):
                self.latency[label].append(seconds)

    def snapshot(self):
        with self.lock:
            return self.total, collections.Counter(self.counts)


class Client:
    """One keep-alive connection; reconnects after a transport error (which is counted)."""

    def __init__(self, port, stats):
        self.port, self.stats = port, stats
        self.conn = None

    def request(self, label, method, path, body=None, token=None):
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        start = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            payload = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as err:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            with self.stats.lock:
                self.stats.errors[f"{label}: {type(err).__name__}: {err}"] += 1
            self.stats.add(label, "error", time.perf_counter() - start)
            return None, b""
        self.stats.add(label, status, time.perf_counter() - start)
        return status, payload


class TokenPool:
    """Live tokens for the readers: (token, expiry as time.time())."""

    def __init__(self, size=64):
        self.lock = threading.Lock()
        self.tokens = collections.deque(maxlen=size)

    def put(self, token, expires_at):
        with self.lock:
            self.tokens.append((token, expires_at))

    def pick(self, rng, margin=3.0):
        now = time.time()
        with self.lock:
            live = [t for t, exp in self.tokens if exp - now > margin]
        return rng.choice(live) if live else None


def main():
    args = parse_args()
    if not os.path.exists(args.bin):
        raise SystemExit(f"{args.bin} not found: cargo build --release first")
    tmp = tempfile.mkdtemp(prefix="tokengate-soak-")
    db = os.path.join(tmp, "soak.db")
    log_path = os.path.join(tmp, "server.log")
    port = free_port()
    command = [args.bin, "serve", "--database", db, "--bind", f"127.0.0.1:{port}", "--jwt-secret", SECRET,
               "--token-ttl", str(args.token_ttl), "--leeway", str(args.leeway),
               "--refresh-ttl", str(args.refresh_ttl), "--purge-interval", str(args.purge_interval),
               "--login-max-failures", HIGH, "--login-max-failures-per-client", HIGH]
    print("# tokengate soak: " + " ".join(os.path.relpath(c, ROOT) if c == args.bin else c for c in command[1:]))
    print(f"# {args.duration:.0f} s of traffic, warm-up {args.warmup:.0f} s, sample every {args.sample:.0f} s; "
          f"{args.auth_workers} auth + {args.session_workers} session ({args.concurrent_refreshes} concurrent "
          f"refreshes) + {args.read_workers} read + {args.health_workers} health workers; "
          f"{args.users} users, {args.unknown_emails} unknown e-mails; {os.cpu_count()} CPUs, client on the same host")
    log = open(log_path, "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        return soak(args, server, port, db, tmp)
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        log.close()
        if args.keep:
            print(f"# work files kept in {tmp}")
        else:
            for name in os.listdir(tmp):
                os.remove(os.path.join(tmp, name))
            os.rmdir(tmp)


def wait_ready(port, server, limit=15.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit("server not ready in time")


def soak(args, server, port, db, tmp):
    wait_ready(port, server)
    rss_start = proc_status(server.pid)
    setup = Client(port, Stats())
    users = [f"soak-user-{i}@example.com" for i in range(args.users)]
    session_users = [f"soak-sessions-{i}@example.com" for i in range(args.session_workers)]
    for i, email in enumerate(users + session_users):
        status, _ = setup.request("setup", "POST", "/api/v1/register",
                                  {"name": f"Soak {i}", "email": email, "password": PASSWORD})
        if status != 201:
            raise SystemExit(f"register {email}: {status}")
    unknown = [f"nobody-{i}@soak.example" for i in range(args.unknown_emails)]

    stats = Stats()
    pool = TokenPool()
    stop = threading.Event()
    deadline = time.monotonic() + args.duration

    def running():
        return not stop.is_set() and time.monotonic() < deadline and stats.total < args.max_requests

    def login(client, email, password=PASSWORD):
        status, body = client.request("POST /api/v1/login (right password)", "POST", "/api/v1/login",
                                      {"email": email, "password": password})
        return json.loads(body) if status == 200 else None

    def refresh(client, refresh_token, label="POST /api/v1/token/refresh"):
        status, body = client.request(label, "POST", "/api/v1/token/refresh", {"refresh_token": refresh_token})
        return json.loads(body) if status == 200 else None

    def refused(client, pair, refresh_too=True):
        """Checks that an ended session's access token and refresh token are refused."""
        status, _ = client.request("GET /api/v1/user (ended token)", "GET", "/api/v1/user",
                                   token=pair["access_token"])
        accepted = status is not None and 200 <= status < 300
        if refresh_too:
            status, _ = client.request("POST /api/v1/token/refresh (ended session)", "POST",
                                       "/api/v1/token/refresh", {"refresh_token": pair["refresh_token"]})
            accepted |= status is not None and 200 <= status < 300
        if accepted:
            with stats.lock:
                stats.revoked_accepted += 1

    def accepted(client, pair):
        client.request("GET /api/v1/user", "GET", "/api/v1/user", token=pair["access_token"])

    def logout(client, pair, scope=None):
        path = "/api/v1/logout" + (f"?scope={scope}" if scope else "")
        status, _ = client.request(f"DELETE {path}", "DELETE", path, token=pair["access_token"])
        return status == 204

    def sid_of(access_token):
        payload = access_token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sid"]

    def auth_worker(n):
        rng = random.Random(args.seed * 1000 + n)
        client = Client(port, stats)
        while running():
            r = rng.random()
            if r < 0.5:
                pair = login(client, rng.choice(users))
                if pair is None:
                    continue
                r = rng.random()
                if r < args.keep_fraction:
                    pool.put(pair["access_token"], time.time() + pair["expires_in"])
                elif r < args.keep_fraction + args.refresh_fraction:
                    # Each refresh gives a working pair; the earlier access tokens stay valid too.
                    for _ in range(rng.randint(1, 3)):
                        pair = refresh(client, pair["refresh_token"])
                        if pair is None:
                            break
                        pool.put(pair["access_token"], time.time() + pair["expires_in"])
                elif logout(client, pair):
                    refused(client, pair)
            elif r < 0.75:
                client.request("POST /api/v1/login (wrong password)", "POST", "/api/v1/login",
                               {"email": rng.choice(users), "password": f"wrong-password-{rng.randrange(10**6)}"})
            else:
                client.request("POST /api/v1/login (unknown e-mail)", "POST", "/api/v1/login",
                               {"email": rng.choice(unknown), "password": f"wrong-password-{rng.randrange(10**6)}"})

    def session_worker(n):
        """One user of its own: scenarios that end sessions user-wide stay inside it."""
        rng = random.Random(args.seed * 3000 + n)
        email = session_users[n]
        password = [PASSWORD]
        client = Client(port, stats)
        racers = [Client(port, stats) for _ in range(args.concurrent_refreshes)]

        def concurrent_refresh():
            first = login(client, email, password[0])
            if first is None:
                return
            barrier = threading.Barrier(len(racers))
            pairs = [None] * len(racers)

            def race(i):
                try:
                    barrier.wait(timeout=10)
                except threading.BrokenBarrierError:
                    pass
                pairs[i] = refresh(racers[i], first["refresh_token"], "POST /api/v1/token/refresh (concurrent)")

            threads = [threading.Thread(target=race, args=(i,)) for i in range(len(racers))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            got = [p for p in pairs if p is not None]
            if not got:
                return
            if any(sid_of(p["access_token"]) != sid_of(first["access_token"]) for p in got):
                with stats.lock:
                    stats.anomalies["concurrent refresh: a pair of another session"] += 1
            for p in got:
                accepted(client, p)
            if logout(client, got[0]):
                for p in got[1:] + [first]:
                    refused(client, p)

        def delete_session():
            a, b = login(client, email, password[0]), login(client, email, password[0])
            if a is None or b is None:
                return
            path = f"/api/v1/sessions/{sid_of(b['access_token'])}"
            status, _ = client.request("DELETE /api/v1/sessions/{id}", "DELETE", path, token=a["access_token"])
            if status == 204:
                refused(client, b)
            if logout(client, a):
                refused(client, a)

        def logout_others():
            a, b = login(client, email, password[0]), login(client, email, password[0])
            if a is None or b is None:
                return
            a = refresh(client, a["refresh_token"]) or a
            if logout(client, a, "others"):
                refused(client, b)
                accepted(client, a)
            if logout(client, a):
                refused(client, a)

        def logout_global():
            a, b = login(client, email, password[0]), login(client, email, password[0])
            if a is None or b is None:
                return
            if logout(client, a, "global"):
                refused(client, a)
                refused(client, b)

        def change_password():
            a, b = login(client, email, password[0]), login(client, email, password[0])
            if a is None or b is None:
                return
            new = OTHER_PASSWORD if password[0] == PASSWORD else PASSWORD
            status, body = client.request("PUT /api/v1/user/password", "PUT", "/api/v1/user/password",
                                          {"current_password": password[0], "new_password": new},
                                          token=a["access_token"])
            if status != 200:
                return
            password[0] = new
            c = json.loads(body)
            refused(client, a, refresh_too=False)  # its session goes on, with c's refresh token
            refused(client, b)
            accepted(client, c)
            if logout(client, c):
                refused(client, c)

        scenarios = [concurrent_refresh, delete_session, logout_others, logout_global, change_password]
        while running():
            rng.choice(scenarios)()

    def read_worker(n):
        rng = random.Random(args.seed * 2000 + n)
        client = Client(port, stats)
        while running():
            token = pool.pick(rng)
            if token is None:
                time.sleep(0.01)
                continue
            client.request("GET /api/v1/user", "GET", "/api/v1/user", token=token)

    def health_worker(n):
        client = Client(port, stats)
        while running():
            client.request("GET /health", "GET", "/health")

    threads = [threading.Thread(target=auth_worker, args=(i,), daemon=True) for i in range(args.auth_workers)]
    threads += [threading.Thread(target=session_worker, args=(i,), daemon=True) for i in range(args.session_workers)]
    threads += [threading.Thread(target=read_worker, args=(i,), daemon=True) for i in range(args.read_workers)]
    threads += [threading.Thread(target=health_worker, args=(i,), daemon=True) for i in range(args.health_workers)]

    database = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5, check_same_thread=False)

    def table_sizes():
        sizes = {}
        for table in TABLES:
            try:
                sizes[table] = database.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            except sqlite3.Error as err:
                print(f"# counting {table} failed: {err}")
                sizes[table] = -1
        return sizes

    samples = []  # (t, rss KiB, total, counts, table sizes, server threads)
    started = time.monotonic()
    samples.append((0.0, proc_status(server.pid), 0, collections.Counter(), table_sizes(),
                    proc_status(server.pid, "Threads")))
    for t in threads:
        t.start()
    print()
    print("|   t s | RSS MiB | threads | requests | req/s | logins/s | refreshes/s | logouts/s | 5xx "
          "| revoked_tokens | sessions | refresh_tokens |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rss_warm = None
    next_sample = started + args.sample
    try:
        while any(t.is_alive() for t in threads):
            time.sleep(max(0.0, min(next_sample, started + args.duration + 1) - time.monotonic()))
            if time.monotonic() < next_sample and any(t.is_alive() for t in threads):
                continue
            next_sample += args.sample
            if server.poll() is not None:
                print(f"# server exited with {server.returncode} during the soak")
                stop.set()
                break
            now = time.monotonic() - started
            total, counts = stats.snapshot()
            sample = (now, proc_status(server.pid), total, counts, table_sizes(), proc_status(server.pid, "Threads"))
            prev = samples[-1]
            dt = now - prev[0]

            def rate(labels, status):
                return sum(counts[(label, status)] - prev[3][(label, status)] for label in labels) / dt

            five = sum(n for (label, status), n in counts.items() if isinstance(status, int) and status >= 500)
            samples.append(sample)
            if rss_warm is None and now >= args.warmup:
                rss_warm = sample[1]
            sizes = sample[4]
            print(f"| {now:5.0f} | {mib(sample[1])} | {sample[5]} | {total} | {(total - prev[2]) / dt:,.0f} | "
                  f"{rate(['POST /api/v1/login (right password)'], 200):.1f} | "
                  f"{rate(['POST /api/v1/token/refresh', 'POST /api/v1/token/refresh (concurrent)'], 200):.1f} | "
                  f"{rate(LOGOUTS, 204):.1f} | {five} | "
                  f"{sizes['revoked_tokens']} | {sizes['sessions']} | {sizes['refresh_tokens']} |", flush=True)
    except KeyboardInterrupt:
        stop.set()
    stop.set()
    for t in threads:
        t.join(timeout=40)
    elapsed = time.monotonic() - started
    total, counts = stats.snapshot()
    rss_end = proc_status(server.pid) if server.poll() is None else -1
    rss_hwm = proc_status(server.pid, "VmHWM") if server.poll() is None else -1
    rss_max = max(s[1] for s in samples)
    final_sizes = table_sizes()
    database.close()

    print()
    print(f"## {total:,} requests in {elapsed:.0f} s ({total / elapsed:,.0f}/s)")
    print()
    print("| endpoint | status | count | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    unexpected = 0
    for (label, status), n in sorted(counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        lat = sorted(stats.latency[label]) if status == EXPECTED.get(label) else []
        p50 = f"{1000 * statistics.median(lat):.2f}" if lat else ""
        p99 = f"{1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]:.2f}" if lat else ""
        flag = "" if status == EXPECTED.get(label) else " (unexpected)"
        if flag:
            unexpected += n
        print(f"| {label} | {status}{flag} | {n:,} | {p50} | {p99} |")
    five = sum(n for (label, status), n in counts.items() if isinstance(status, int) and status >= 500)
    errors = sum(n for (label, status), n in counts.items() if status == "error")
    for message, n in stats.errors.most_common(5):
        print(f"# transport error x{n}: {message}")
    for message, n in stats.anomalies.items():
        print(f"# anomaly x{n}: {message}")
    anomalies = sum(stats.anomalies.values())

    logouts = sum(counts[(label, 204)] for label in LOGOUTS)
    logins = counts[("POST /api/v1/login (right password)", 200)]
    pairs = sum(counts[(label, 200)] for label in PAIRS)
    lifetimes = {
        "revoked_tokens": (logouts, args.token_ttl + args.leeway + args.purge_interval, "logouts"),
        "sessions": (logins, args.refresh_ttl + args.token_ttl + args.leeway + args.purge_interval, "logins"),
        "refresh_tokens": (pairs, args.refresh_ttl + args.purge_interval, "refresh tokens issued"),
    }
    print()
    print(f"5xx responses: {five}")
    print(f"unexpected statuses: {unexpected}; transport errors: {errors}; "
          f"ended tokens accepted: {stats.revoked_accepted}")
    print(f"RSS MiB: start {mib(rss_start)} (before traffic), after warm-up ({args.warmup:.0f} s) "
          f"{mib(rss_warm) if rss_warm else 'n/a'}, end {mib(rss_end)}, max sampled {mib(rss_max)}, "
          f"peak (VmHWM) {mib(rss_hwm)}")
    failures = []
    for table, (events, lifetime, what) in lifetimes.items():
        rate = events / elapsed
        bound = rate * lifetime * 1.5 + 50
        after_warm = [s[4][table] for s in samples if s[0] >= args.warmup]
        highest = max((s[4][table] for s in samples), default=0)
        print(f"{table} rows by sample: " + ", ".join(f"{s[0]:.0f}s:{s[4][table]}" for s in samples)
              + f"; at the end {final_sizes[table]}")
        print(f"  {what}: {events:,} ({rate:.1f}/s); expected plateau about {rate:.1f}/s x {lifetime} s = "
              f"{rate * lifetime:.0f} rows; after warm-up: min {min(after_warm, default=0)}, "
              f"max {max(after_warm, default=0)}; max over the run {highest} (limit {bound:.0f})")
        if highest > bound:
            failures.append(f"{table} reached {highest} rows (limit {bound:.0f})")

    if five:
        failures.append(f"{five} responses with 5xx")
    if unexpected:
        failures.append(f"{unexpected} unexpected statuses")
    if errors:
        failures.append(f"{errors} transport errors")
    if anomalies:
        failures.append(f"{anomalies} anomalies (see above)")
    if stats.revoked_accepted:
        failures.append(f"{stats.revoked_accepted} ended tokens accepted")
    if server.poll() is not None:
        failures.append(f"server exited with {server.returncode}")
    if rss_warm is None:
        failures.append("the soak ended before the warm-up did: no RSS baseline")
    elif rss_end - rss_warm > args.max_rss_growth_mib * 1024:
        failures.append(f"RSS grew {mib(rss_end - rss_warm)} MiB after warm-up (limit {args.max_rss_growth_mib} MiB)")
    if args.max_rss_mib is not None and max(rss_max, rss_hwm) > args.max_rss_mib * 1024:
        failures.append(f"RSS reached {mib(max(rss_max, rss_hwm))} MiB (limit {args.max_rss_mib} MiB)")
    print()
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("PASS: no 5xx, no unexpected status, no ended token accepted, RSS and tables bounded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
