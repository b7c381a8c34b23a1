#!/usr/bin/env python3
"""Login timing: can an attacker tell an unknown e-mail from a wrong password?

    python3 bench/login_timing.py [-n 200] [--warmup 10] [--seed 1]

Starts the release binary (target/release/tokengate; build it first) on a
temporary database on 127.0.0.1, registers one user, and times sequential
logins on one keep-alive connection for
  (a) an unknown e-mail address (a distinct one per request),
  (b) the registered e-mail address with a wrong password,
  (c) the registered e-mail address with the right password (for reference),
interleaved in a random order within each round (seeded), N of each after a
few unmeasured warm-up rounds. The server is started with --login-max-failures
and --login-max-failures-per-client raised to 1,000,000,000 so the 429 throttle
does not interfere (3 x N logins from one client, most of them failures).

Prints median, p90, mean and standard deviation per case, the difference of
the medians (a) - (b) in ms and in % of (b), and whether (a) and (b) got
identical answers (status, body, Content-Type and WWW-Authenticate), which
they must. Exits non-zero if the answers differ, if a login got an unexpected
status, or (only with --max-diff-percent) if |(a) - (b)| exceeds that share.
Standard library only.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tokengate")
SECRET = "timing-secret-0123456789abcdef-0123456789abcdef"
HIGH = "1000000000"
EMAIL = "known@timing.example"
PASSWORD = "the-right-password"
CASES = {
    "a": "unknown e-mail",
    "b": "known e-mail, wrong password",
    "c": "known e-mail, right password",
}
EXPECTED = {"a": 401, "b": 401, "c": 200}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-n", type=int, default=200, help="measured logins per case")
    p.add_argument("--warmup", type=int, default=10, help="unmeasured rounds first")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--max-diff-percent", type=float, default=None,
                   help="fail if |median(a) - median(b)| exceeds this share of median(b)")
    p.add_argument("--bin", default=BIN)
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    args = parse_args()
    if not os.path.exists(args.bin):
        raise SystemExit(f"{args.bin} not found: cargo build --release first")
    tmp = tempfile.mkdtemp(prefix="tokengate-timing-")
    port = free_port()
    log = open(os.path.join(tmp, "server.log"), "w")
    server = subprocess.Popen(
        [args.bin, "serve", "--database", os.path.join(tmp, "timing.db"), "--bind", f"127.0.0.1:{port}",
         "--jwt-secret", SECRET, "--login-max-failures", HIGH, "--login-max-failures-per-client", HIGH],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        return measure(args, port, server)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        for name in os.listdir(tmp):
            os.remove(os.path.join(tmp, name))
        os.rmdir(tmp)


def measure(args, port, server):
    conn = None
    for _ in range(500):
        if server.poll() is not None:
            raise SystemExit(f"server exited with {server.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.connect()
            break
        except OSError:
            conn = None
            time.sleep(0.02)
    if conn is None:
        raise SystemExit("server not ready in time")

    def post(path, body):
        data = json.dumps(body)
        start = time.perf_counter()
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - start
        headers = (response.getheader("Content-Type"), response.getheader("WWW-Authenticate"))
        return response.status, payload, headers, elapsed

    status, body, _, _ = post("/api/v1/register", {"name": "Timing", "email": EMAIL, "password": PASSWORD})
    if status != 201:
        raise SystemExit(f"register: {status} {body!r}")

    rng = random.Random(args.seed)
    times = {k: [] for k in CASES}
    answers = {k: set() for k in CASES}  # (status, body, content-type, www-authenticate); c's body varies
    unexpected = []
    counter = 0
    print(f"# tokengate login timing: {args.n} logins per case after {args.warmup} warm-up rounds, "
          f"sequential, interleaved (random order per round, seed {args.seed}), one keep-alive connection, "
          f"127.0.0.1, {os.cpu_count()} CPUs")
    for round_ in range(args.warmup + args.n):
        order = list(CASES)
        rng.shuffle(order)
        for case in order:
            counter += 1
            if case == "a":
                body = {"email": f"unknown-{counter}@timing.example", "password": "a-wrong-password"}
            elif case == "b":
                body = {"email": EMAIL, "password": "a-wrong-password"}
            else:
                body = {"email": EMAIL, "password": PASSWORD}
            status, payload, headers, elapsed = post("/api/v1/login", body)
            if status != EXPECTED[case]:
                unexpected.append(f"({case}) {status} {payload[:200]!r}")
            if round_ < args.warmup:
                continue
            times[case].append(elapsed * 1000)
            answers[case].add((status, payload if case != "c" else b"<token>", *headers))

    print()
    print("| case | n | median ms | p90 ms | mean ms | stdev ms | min ms |")
    print("|---|---|---|---|---|---|---|")
    for case, label in CASES.items():
        t = times[case]
        print(f"| ({case}) {label} | {len(t)} | {statistics.median(t):.2f} | {percentile(t, 0.9):.2f} | "
              f"{statistics.mean(t):.2f} | {statistics.stdev(t):.2f} | {min(t):.2f} |")
    med_a, med_b = statistics.median(times["a"]), statistics.median(times["b"])
    diff = med_a - med_b
    pct = 100 * diff / med_b
    print()
    print(f"median (a) - median (b) = {diff:+.3f} ms ({pct:+.2f}% of (b))")
    print(f"mean (a) - mean (b) = {statistics.mean(times['a']) - statistics.mean(times['b']):+.3f} ms")

    failures = []
    same = answers["a"] == answers["b"] and len(answers["a"]) == 1
    if same:
        status, payload, content_type, challenge = next(iter(answers["a"]))
        print(f"(a) and (b) answers identical in all {args.n} + {args.n} logins: {status}, "
              f"Content-Type: {content_type}, WWW-Authenticate: {challenge}, body {payload.decode()}")
    else:
        print("(a) and (b) answers differ:")
        for case in ("a", "b"):
            for answer in sorted(answers[case], key=repr):
                print(f"  ({case}) {answer!r}")
        failures.append("(a) and (b) got different answers")
    if unexpected:
        failures.append(f"{len(unexpected)} unexpected statuses, e.g. {unexpected[0]}")
    if args.max_diff_percent is not None and abs(pct) > args.max_diff_percent:
        failures.append(f"|{pct:.2f}%| > {args.max_diff_percent}%")
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
