#!/usr/bin/env python3
"""Soak run of tokengate: mixed traffic for minutes, watching memory and the denylist.

    python3 bench/soak.py [--duration 180] [--warmup 30] ...   (bench/soak.py --help)

Starts the release binary (target/release/tokengate; build it first) on a
temporary database on 127.0.0.1 with a short token lifetime (--token-ttl 20),
--leeway 1 and --purge-interval 5, so tokens expire and the periodic purge runs
many times during the soak. Because the soak sends thousands of wrong-password
logins from one client address, the server is started with
--login-max-failures and --login-max-failures-per-client raised to 1,000,000,000
(the defaults of 5 per e-mail address and 100 per client would answer almost
every login 429 after a few seconds); wrong-password traffic is also spread
over the registered users and a pool of unknown e-mail addresses.

Traffic, on keep-alive connections (http.client, one per worker thread):
- auth workers: logins with the right password for one of several users, then
  either keep the token for the readers or log it out at once (DELETE /logout,
  a fresh token) and check the revoked token is refused (GET /user -> 401);
  logins with a wrong password for a registered user and for unknown e-mail
  addresses (401);
- read workers: GET /api/v1/user with live tokens of the auth workers (200);
- a health worker: GET /health (200).

Every --sample seconds it records the server's RSS (VmRSS from /proc), the
request counts by status, and the denylist size (SELECT count(*) FROM
revoked_tokens, on a read-only connection to the live database). At the end it
prints the requests by endpoint and status, the RSS at start / after warm-up /
end and its maximum, and the denylist size over time, and exits non-zero if a
5xx, an unexpected status, a transport error or an accepted revoked token was
seen, if RSS grew by more than --max-rss-growth-mib between warm-up and end
(or, with --max-rss-mib, ever exceeded that), or if the denylist outgrew logouts/s x (ttl + leeway + purge interval) x 1.5 + 50.

Bounded in time (--duration; every worker stops at the deadline, the server is
stopped after) and in count (--max-requests). Only 127.0.0.1 is used. Standard
library only.
"""
from __future__ import annotations

import argparse
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

# label -> the status that label must get
EXPECTED = {
    "POST /api/v1/login (right password)": 200,
    "POST /api/v1/login (wrong password)": 401,
    "POST /api/v1/login (unknown e-mail)": 401,
    "GET /api/v1/user": 200,
    "GET /api/v1/user (revoked token)": 401,
    "DELETE /api/v1/logout": 204,
    "GET /health": 200,
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--duration", type=float, default=180, help="seconds of traffic")
    p.add_argument("--warmup", type=float, default=30,
                   help="seconds after which RSS is taken as the warm baseline "
                        "(past ttl + leeway + purge interval, so the denylist has reached its plateau)")
    p.add_argument("--sample", type=float, default=5, help="seconds between samples")
    p.add_argument("--users", type=int, default=4, help="registered users who log in")
    p.add_argument("--unknown-emails", type=int, default=1000, help="pool of unknown e-mail addresses")
    p.add_argument("--auth-workers", type=int, default=2)
    p.add_argument("--read-workers", type=int, default=4)
    p.add_argument("--health-workers", type=int, default=1)
    p.add_argument("--keep-fraction", type=float, default=0.3,
                   help="share of right-password logins whose token is kept for the readers instead of logged out")
    p.add_argument("--token-ttl", type=int, default=20)
    p.add_argument("--leeway", type=int, default=1)
    p.add_argument("--purge-interval", type=int, default=5)
    p.add_argument("--max-requests", type=int, default=20_000_000, help="stop after this many requests")
    p.add_argument("--max-rss-growth-mib", type=float, default=16.0,
                   help="fail if RSS at the end exceeds RSS after warm-up by more than this")
    p.add_argument("--max-rss-mib", type=float, default=None,
                   help="also fail if RSS ever exceeds this (absolute; off by default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bin", default=BIN)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (database, server log)")
    return p.parse_args()


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
        self.revoked_accepted = 0
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
               "--purge-interval", str(args.purge_interval),
               "--login-max-failures", HIGH, "--login-max-failures-per-client", HIGH]
    print("# tokengate soak: " + " ".join(os.path.relpath(c, ROOT) if c == args.bin else c for c in command[1:]))
    print(f"# {args.duration:.0f} s of traffic, warm-up {args.warmup:.0f} s, sample every {args.sample:.0f} s; "
          f"{args.auth_workers} auth + {args.read_workers} read + {args.health_workers} health workers; "
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
    for i, email in enumerate(users):
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

    def auth_worker(n):
        rng = random.Random(args.seed * 1000 + n)
        client = Client(port, stats)
        while running():
            r = rng.random()
            if r < 0.5:
                status, body = client.request("POST /api/v1/login (right password)", "POST", "/api/v1/login",
                                              {"email": rng.choice(users), "password": PASSWORD})
                if status != 200:
                    continue
                token = json.loads(body)
                if rng.random() < args.keep_fraction:
                    pool.put(token["access_token"], time.time() + token["expires_in"])
                    continue
                status, _ = client.request("DELETE /api/v1/logout", "DELETE", "/api/v1/logout",
                                           token=token["access_token"])
                if status == 204:
                    status, _ = client.request("GET /api/v1/user (revoked token)", "GET", "/api/v1/user",
                                               token=token["access_token"])
                    if status is not None and 200 <= status < 300:
                        with stats.lock:
                            stats.revoked_accepted += 1
            elif r < 0.75:
                client.request("POST /api/v1/login (wrong password)", "POST", "/api/v1/login",
                               {"email": rng.choice(users), "password": f"wrong-password-{rng.randrange(10**6)}"})
            else:
                client.request("POST /api/v1/login (unknown e-mail)", "POST", "/api/v1/login",
                               {"email": rng.choice(unknown), "password": f"wrong-password-{rng.randrange(10**6)}"})

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
    threads += [threading.Thread(target=read_worker, args=(i,), daemon=True) for i in range(args.read_workers)]
    threads += [threading.Thread(target=health_worker, args=(i,), daemon=True) for i in range(args.health_workers)]

    denylist = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5, check_same_thread=False)

    def denylist_size():
        try:
            return denylist.execute("SELECT count(*) FROM revoked_tokens").fetchone()[0]
        except sqlite3.Error as err:
            print(f"# denylist read failed: {err}")
            return -1

    samples = []  # (t, rss KiB, total, counts, denylist rows, server threads)
    started = time.monotonic()
    samples.append((0.0, proc_status(server.pid), 0, collections.Counter(), denylist_size(),
                    proc_status(server.pid, "Threads")))
    for t in threads:
        t.start()
    print()
    print("|   t s | RSS MiB | threads | requests | req/s | logouts/s | 5xx | denylist rows |")
    print("|---|---|---|---|---|---|---|---|")
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
            sample = (now, proc_status(server.pid), total, counts, denylist_size(), proc_status(server.pid, "Threads"))
            prev = samples[-1]
            dt = now - prev[0]
            logouts = counts[("DELETE /api/v1/logout", 204)] - prev[3][("DELETE /api/v1/logout", 204)]
            five = sum(n for (label, status), n in counts.items() if isinstance(status, int) and status >= 500)
            samples.append(sample)
            if rss_warm is None and now >= args.warmup:
                rss_warm = sample[1]
            print(f"| {now:5.0f} | {mib(sample[1])} | {sample[5]} | {total} | {(total - prev[2]) / dt:,.0f} | "
                  f"{logouts / dt:.1f} | {five} | {sample[4]} |", flush=True)
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
    final_denylist = denylist_size()
    denylist.close()

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

    logouts = counts[("DELETE /api/v1/logout", 204)]
    rate = logouts / elapsed
    lifetime = args.token_ttl + args.leeway + args.purge_interval
    bound = rate * lifetime * 1.5 + 50
    after_warm = [s[4] for s in samples if s[0] >= args.warmup]
    max_denylist = max((s[4] for s in samples), default=0)
    print()
    print(f"5xx responses: {five}")
    print(f"unexpected statuses: {unexpected}; transport errors: {errors}; "
          f"revoked tokens accepted: {stats.revoked_accepted}")
    print(f"RSS MiB: start {mib(rss_start)} (before traffic), after warm-up ({args.warmup:.0f} s) "
          f"{mib(rss_warm) if rss_warm else 'n/a'}, end {mib(rss_end)}, max sampled {mib(rss_max)}, "
          f"peak (VmHWM) {mib(rss_hwm)}")
    print("denylist rows by sample: " + ", ".join(f"{s[0]:.0f}s:{s[4]}" for s in samples)
          + f"; at the end {final_denylist}")
    print(f"logouts: {logouts:,} ({rate:.1f}/s); expected plateau about {rate:.1f}/s x "
          f"({args.token_ttl} + {args.leeway} + {args.purge_interval}) s = {rate * lifetime:.0f} rows; "
          f"after warm-up: min {min(after_warm, default=0)}, max {max(after_warm, default=0)}; "
          f"max over the run {max_denylist} (limit {bound:.0f})")

    failures = []
    if five:
        failures.append(f"{five} responses with 5xx")
    if unexpected:
        failures.append(f"{unexpected} unexpected statuses")
    if errors:
        failures.append(f"{errors} transport errors")
    if stats.revoked_accepted:
        failures.append(f"{stats.revoked_accepted} revoked tokens accepted")
    if server.poll() is not None:
        failures.append(f"server exited with {server.returncode}")
    if rss_warm is None:
        failures.append("the soak ended before the warm-up did: no RSS baseline")
    elif rss_end - rss_warm > args.max_rss_growth_mib * 1024:
        failures.append(f"RSS grew {mib(rss_end - rss_warm)} MiB after warm-up (limit {args.max_rss_growth_mib} MiB)")
    if args.max_rss_mib is not None and max(rss_max, rss_hwm) > args.max_rss_mib * 1024:
        failures.append(f"RSS reached {mib(max(rss_max, rss_hwm))} MiB (limit {args.max_rss_mib} MiB)")
    if max_denylist > bound:
        failures.append(f"denylist reached {max_denylist} rows (limit {bound:.0f})")
    print()
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print("PASS: no 5xx, no unexpected status, RSS and denylist bounded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
