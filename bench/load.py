#!/usr/bin/env python3
"""Load benchmark for tokengate (see README "Performance").

Starts the release binary on a temporary database, next to the JWT-only
"ceiling" server (examples/jwt_ceiling.rs), drives both with wrk on loopback,
and prints req/s, p50/p99 latency, server CPU per request and peak RSS for:
health, authenticated read, token introspection by a resource server (HTTP
Basic, form body, one valid token), durable logout (distinct pre-forged
tokens), durable refresh rotation, the authenticated read with EdDSA and ES256
keys, and the authenticated read with 1,000,000 revoked tokens in the denylist
against the same read with an empty one.

Figures that are compared (tokengate against the ceiling, 1,000,000 revoked
against empty) are measured in alternating slices, so that the drift of a
shared machine between two moments hits both sides alike.

Everything is bounded: each scenario runs DURATION seconds, then all servers
are stopped. Only 127.0.0.1 is used.
"""
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
BIN = os.path.join(ROOT, "target", "release", "tokengate")
CEILING = os.path.join(ROOT, "target", "release", "examples", "jwt_ceiling")
SECRET = "bench-secret-0123456789abcdef-0123456789"
# The resource server that introspects (id:secret, secret of 32+ bytes).
INTROSPECTION_CLIENT = "bench-rs:bench-introspection-secret-0123456789abcdef"
DURATION = int(os.environ.get("DURATION", "10"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "64"))
THREADS = int(os.environ.get("THREADS", "2"))
REVOKED = int(os.environ.get("REVOKED", "1000000"))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def peak_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def http(method, url, body=None, token=None):
    req = urllib.request.Request(url, method=method)
    if body is not None:
        req.data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read()


def wait_ready(base, proc, limit=10.0):
    """Seconds from now until GET /health answers 200 (polls every 1 ms)."""
    start = time.perf_counter()
    while time.perf_counter() - start < limit:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=0.2) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(12).startswith(b"HTTP/1.1 200"):
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.001)
    raise SystemExit("server not ready in time")


def start_tokengate(db, port, log, extra=()):
    proc = subprocess.Popen(
        [BIN, "serve", "--database", db, "--bind", f"127.0.0.1:{port}", "--jwt-secret", SECRET,
         "--introspection-clients", INTROSPECTION_CLIENT, *extra],
        stdout=log, stderr=subprocess.STDOUT)
    ready = wait_ready(f"http://127.0.0.1:{port}", proc)
    return proc, ready


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wrk(url, pid, headers=(), script=None, script_args=(), duration=None):
    duration = duration or DURATION
    cmd = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for h in headers:
        cmd += ["-H", h]
    if script:
        cmd += ["-s", script]
    cmd.append(url)
    if script_args:
        cmd += ["--", *script_args]
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120).stdout
    cpu1 = cpu_seconds(pid)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": requests,
        "rps": rps,
        "p50": latency(out, "50%"),
        "p99": latency(out, "99%"),
        "cpu_us": (cpu1 - cpu0) * 1e6 / max(requests, 1),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "none",
        "extra": "\n".join(l for l in out.splitlines() if l.startswith(("logout statuses", "introspect statuses", "refresh statuses"))),
    }


def paired(first, second):
    """Measures two targets in alternating slices of 2 s (first, second,
    first, ...), DURATION seconds each in all, so that a shared machine's
    drift between two moments hits both alike; each target is (url, pid,
    headers)."""
    slices = max(1, DURATION // 2)
    parts = ([], [])
    for _ in range(slices):
        for i, (url, pid, headers) in enumerate((first, second)):
            parts[i].append(wrk(url, pid, headers, duration=max(1, DURATION // slices)))
    return tuple(combine(p) for p in parts)


def combine(parts):
    requests = sum(p["requests"] for p in parts)
    seconds = sum(p["requests"] / p["rps"] for p in parts if p["rps"])
    return {
        "requests": requests,
        "rps": requests / seconds if seconds else 0.0,
        "p50": sum(p["p50"] for p in parts) / len(parts),
        "p99": max(p["p99"] for p in parts),
        "cpu_us": sum(p["cpu_us"] * p["requests"] for p in parts) / max(requests, 1),
        "non2xx": sum(p["non2xx"] for p in parts),
        "socket_errors": "; ".join(p["socket_errors"] for p in parts),
        "extra": "",
    }


def latency(out, pct):
    m = re.search(rf"^\s+{re.escape(pct)}\s+([\d.]+)(us|ms|s)", out, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def row(name, r, rss):
    print(f"| {name} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['cpu_us']:.1f} | {rss:.1f} | {r['non2xx']} |")


def main():
    if not (os.path.exists(BIN) and os.path.exists(CEILING)):
        raise SystemExit("build first: cargo build --release --bin tokengate --example jwt_ceiling")
    tmp = tempfile.mkdtemp(prefix="tokengate-bench-")
    db = os.path.join(tmp, "bench.db")
    log = open(os.path.join(tmp, "server.log"), "w")
    print(f"# tokengate load benchmark: {DURATION}s per scenario, {CONNECTIONS} connections, "
          f"{THREADS} wrk threads, {os.cpu_count()} CPUs, wrk on the same host")

    ceiling_port = free_port()
    ceiling = subprocess.Popen([CEILING, f"127.0.0.1:{ceiling_port}", SECRET], stdout=log, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{ceiling_port}", ceiling)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server, _ = start_tokengate(db, port, log)
    http("POST", f"{base}/api/v1/register", {"name": "Bench", "email": "bench@example.com", "password": "bench-password"})
    status, body = http("POST", f"{base}/api/v1/login", {"email": "bench@example.com", "password": "bench-password"})
    token = json.loads(body)["access_token"]
    auth = [f"Authorization: Bearer {token}"]

    # Enough distinct sessions for the logout and refresh scenarios at well
    # over 20k/s: each logout ends its token's session, each refresh rotates
    # its session's refresh token (both durable).
    count = max(50_000, 40_000 * DURATION)
    tokens_file = os.path.join(tmp, "logout-sessions.txt")
    refresh_file = os.path.join(tmp, "refresh-sessions.txt")
    for path in (tokens_file, refresh_file):
        with open(path, "w") as f:
            subprocess.run([sys.executable, os.path.join(BENCH, "forge.py"), "--sessions", db, SECRET,
                            str(count), "1"], stdout=f, check=True)

    print("\n| scenario | req/s | p50 ms | p99 ms | server CPU µs/req | peak RSS MiB | non-2xx |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    # Each tokengate figure that is compared with another is measured in
    # slices alternating with it (see `paired`).
    results["ceiling_health"], results["health"] = paired(
        (f"http://127.0.0.1:{ceiling_port}/health", ceiling.pid, ()), (f"{base}/health", server.pid, ()))
    row("ceiling: GET /health", results["ceiling_health"], peak_rss_mib(ceiling.pid))
    row("tokengate: GET /health", results["health"], peak_rss_mib(server.pid))
    results["ceiling_read"], results["read"] = paired(
        (f"http://127.0.0.1:{ceiling_port}/api/v1/user", ceiling.pid, auth), (f"{base}/api/v1/user", server.pid, auth))
    row("ceiling: GET /api/v1/user (JWT only)", results["ceiling_read"], peak_rss_mib(ceiling.pid))
    row("tokengate: GET /api/v1/user", results["read"], peak_rss_mib(server.pid))
    basic = base64.b64encode(INTROSPECTION_CLIENT.encode()).decode()
    results["introspect"] = wrk(f"{base}/api/v1/token/introspect", server.pid,
                                script=os.path.join(BENCH, "introspect.lua"), script_args=(basic, token))
    row("tokengate: POST /api/v1/token/introspect", results["introspect"], peak_rss_mib(server.pid))
    results["logout"] = wrk(f"{base}/api/v1/logout", server.pid, script=os.path.join(BENCH, "logout.lua"),
                            script_args=(tokens_file, str(THREADS)))
    row("tokengate: DELETE /api/v1/logout (durable)", results["logout"], peak_rss_mib(server.pid))
    logout_extra = results["logout"]["extra"]
    results["refresh"] = wrk(f"{base}/api/v1/token/refresh", server.pid, script=os.path.join(BENCH, "refresh.lua"),
                             script_args=(refresh_file, str(THREADS)))
    row("tokengate: POST /api/v1/token/refresh (durable rotation)", results["refresh"], peak_rss_mib(server.pid))

    # 1M revocations added under the running server (as another process
    # would); the read of this database, and of one whose denylist is empty,
    # in alternating slices (two more servers, each on its own database).
    subprocess.run([sys.executable, os.path.join(BENCH, "forge.py"), "--denylist", db, str(REVOKED)], check=True)
    stop(server)
    stop(ceiling)
    # Start-up time on the now large database.
    server, ready = start_tokengate(db, port, log)
    stop(server)
    pair = []
    for name, revoked in (("empty", 0), ("full", REVOKED)):
        pdb = os.path.join(tmp, f"read-{name}.db")
        pport = free_port()
        pserver, _ = start_tokengate(pdb, pport, log)
        pbase = f"http://127.0.0.1:{pport}"
        http("POST", f"{pbase}/api/v1/register", {"name": "Bench", "email": "bench@example.com", "password": "bench-password"})
        _, body = http("POST", f"{pbase}/api/v1/login", {"email": "bench@example.com", "password": "bench-password"})
        if revoked:
            subprocess.run([sys.executable, os.path.join(BENCH, "forge.py"), "--denylist", pdb, str(revoked)], check=True)
        pair.append((f"{pbase}/api/v1/user", pserver, [f"Authorization: Bearer {json.loads(body)['access_token']}"]))
    # The forge wrote some 150 MB: let the kernel write it back now, not
    # during the measured reads (writeback takes CPU from the servers).
    os.sync()
    results["read_empty"], results["read_1m"] = paired(*((u, p.pid, h) for u, p, h in pair))
    row("tokengate: GET /api/v1/user, empty denylist", results["read_empty"], peak_rss_mib(pair[0][1].pid))
    row(f"tokengate: GET /api/v1/user, {REVOKED:,} revoked", results["read_1m"], peak_rss_mib(pair[1][1].pid))
    for _, pserver, _ in pair:
        stop(pserver)

    # The read with asymmetric keys (each on its own fresh database).
    for algorithm in ("EdDSA", "ES256"):
        adb = os.path.join(tmp, f"{algorithm}.db")
        aserver, _ = start_tokengate(adb, port, log, ("--jwt-algorithm", algorithm))
        http("POST", f"{base}/api/v1/register", {"name": "Bench", "email": "bench@example.com", "password": "bench-password"})
        _, body = http("POST", f"{base}/api/v1/login", {"email": "bench@example.com", "password": "bench-password"})
        atoken = json.loads(body)["access_token"]
        results[f"read_{algorithm}"] = wrk(f"{base}/api/v1/user", aserver.pid, [f"Authorization: Bearer {atoken}"])
        row(f"tokengate: GET /api/v1/user, {algorithm}", results[f"read_{algorithm}"], peak_rss_mib(aserver.pid))
        stop(aserver)

    r, c, e, m = results["read"], results["ceiling_read"], results["read_empty"], results["read_1m"]
    print()
    print(results["introspect"]["extra"])
    print(logout_extra)
    print(results["refresh"]["extra"])
    print(f"read CPU vs ceiling: {r['cpu_us']:.1f} / {c['cpu_us']:.1f} µs = {r['cpu_us'] / c['cpu_us']:.2f}x (target <= 1.3x)")
    print(f"read req/s vs ceiling: {100 * r['rps'] / c['rps']:.0f}% (target >= 80%)")
    print(f"read with {REVOKED:,} revoked vs empty: {100 * (m['rps'] / e['rps'] - 1):+.1f}% req/s, "
          f"{100 * (m['cpu_us'] / e['cpu_us'] - 1):+.1f}% CPU/req (target within 5%)")
    print(f"durable logouts: {results['logout']['rps']:,.0f}/s at {CONNECTIONS} connections, "
          f"{results['logout']['cpu_us']:.1f} µs server CPU each (target >= 20,000/s)")
    print(f"durable refreshes: {results['refresh']['rps']:,.0f}/s at {CONNECTIONS} connections, "
          f"{results['refresh']['cpu_us']:.1f} µs server CPU each")
    print(f"introspection: {results['introspect']['rps']:,.0f}/s at {CONNECTIONS} connections, "
          f"{results['introspect']['cpu_us']:.1f} µs server CPU per request")
    for algorithm in ("EdDSA", "ES256"):
        a = results[f"read_{algorithm}"]
        print(f"read CPU with {algorithm}: {a['cpu_us']:.1f} µs ({a['cpu_us'] / r['cpu_us']:.2f}x HS256), {a['rps']:,.0f} req/s")
    print(f"ready after start on the {REVOKED:,}-row database: {ready * 1000:.0f} ms (target <= 150 ms)")
    print(f"(work files in {tmp})")


if __name__ == "__main__":
    main()
