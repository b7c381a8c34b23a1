#!/usr/bin/env python3
"""PostgreSQL benchmark: tokengate on one PostgreSQL server, with 1 and with 3 nodes.

usage: python3 bench/pg.py      (after `cargo build --release --bin tokengate --example jwt_ceiling`)

Needs wrk, Debian's postgresql-15 binaries (/usr/lib/postgresql/*/bin) and, as root,
the `postgres` user (initdb refuses to run as root). It starts its own PostgreSQL
server (fsync on, synchronous_commit on) on a free port in a temporary directory,
beside the JWT-only ceiling, and for each node count runs, at 64 connections in
all (split evenly over the nodes, one wrk process per node, all at once):

  read     GET /api/v1/user with one token (a database round trip per request:
           PostgreSQL verdicts are never remembered as "not revoked")
  logout   DELETE /api/v1/logout, each request with its own session's token
  refresh  POST /api/v1/token/refresh, each request with its own session

The sessions are forged into a SQLite file (bench/forge.py) and moved to
PostgreSQL with `tokengate copy`, as an operator would. CPU per request is
reported for the tokengate processes and for PostgreSQL's processes separately.
Knobs: DURATION (seconds per scenario, default 10), CONNECTIONS (64).
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (the helpers of bench/run)

DURATION = load.DURATION
CONNECTIONS = load.CONNECTIONS
SECRET = load.SECRET


def pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise SystemExit("bench/pg.py needs PostgreSQL (apt-get install postgresql-15)")
    return os.path.dirname(found[-1])


def as_postgres(cmd):
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def postgres_cpu_seconds(data):
    """CPU of PostgreSQL: the postmaster, its live processes, and those that
    have exited (counted in the postmaster's children times)."""
    with open(os.path.join(data, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    total = 0.0
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.split("/")[2])
        if pid == postmaster:
            # utime, stime, cutime, cstime
            total += sum(int(x) for x in rest[11:15]) / load.TICK
        elif int(rest[1]) == postmaster:
            total += (int(rest[11]) + int(rest[12])) / load.TICK
    return total


def run_wrk(data, nodes, path, make_args):
    """One wrk per node at once, CONNECTIONS split evenly; sums the results."""
    per = CONNECTIONS // len(nodes)
    procs = []
    cpu0 = [load.cpu_seconds(n["proc"].pid) for n in nodes]
    pg0 = postgres_cpu_seconds(data)
    for i, node in enumerate(nodes):
        cmd = ["wrk", "-t1", f"-c{per}", f"-d{DURATION}s", "--latency", "--timeout", "5s",
               *make_args(i), f"{node['base']}{path}"]
        extra = make_args.after(i) if hasattr(make_args, "after") else []
        procs.append(subprocess.Popen(cmd + extra, stdout=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=DURATION + 120)[0] for p in procs]
    cpu1 = [load.cpu_seconds(n["proc"].pid) for n in nodes]
    pg1 = postgres_cpu_seconds(data)
    requests = sum(int(re.search(r"(\d+) requests in", o).group(1)) for o in outs)
    rps = sum(float(re.search(r"Requests/sec:\s+([\d.]+)", o).group(1)) for o in outs)
    non2xx = sum(int(m.group(1)) for o in outs for m in [re.search(r"Non-2xx or 3xx responses: (\d+)", o)] if m)
    statuses = [l for o in outs for l in o.splitlines() if l.startswith(("logout statuses", "refresh statuses"))]
    return {
        "rps": rps,
        "p99": max(load.latency(o, "99%") for o in outs),
        "cpu_us": (sum(cpu1) - sum(cpu0)) * 1e6 / max(requests, 1),
        "pg_us": (pg1 - pg0) * 1e6 / max(requests, 1),
        "non2xx": non2xx,
        "statuses": statuses,
    }


class Script:
    """wrk arguments for a Lua scenario whose sessions file is split per node."""

    def __init__(self, script, files):
        self.script, self.files = script, files

    def __call__(self, i):
        return ["-s", self.script]

    def after(self, i):
        return ["--", self.files[i], "1"]


def split(path, parts):
    with open(path) as f:
        lines = f.readlines()
    out = []
    for i in range(parts):
        part = f"{path}.{parts}.{i}"
        with open(part, "w") as f:
            f.writelines(lines[i::parts])
        out.append(part)
    return out


def main():
    sys.stdout.reconfigure(line_buffering=True)
    if not os.path.exists(load.BIN):
        raise SystemExit("build first: cargo build --release --bin tokengate --example jwt_ceiling")
    binary = pg_bin()
    tmp = tempfile.mkdtemp(prefix="tokengate-pgbench-")
    os.chmod(tmp, 0o755)
    # The server's own directory (data, log, socket), owned by its user.
    run = os.path.join(tmp, "pg")
    os.mkdir(run, 0o755)
    if os.geteuid() == 0:
        shutil.chown(run, "postgres", "postgres")
    data = os.path.join(run, "data")
    log = open(os.path.join(tmp, "server.log"), "w")
    subprocess.run(as_postgres([f"{binary}/initdb", "-D", data, "-A", "trust", "-U", "postgres"]),
                   check=True, stdout=subprocess.DEVNULL)
    port = load.free_port()
    subprocess.run(as_postgres([f"{binary}/pg_ctl", "-D", data, "-l", os.path.join(run, "log"), "-o",
                                f"-p {port} -k {run} -c listen_addresses=127.0.0.1 -c fsync=on "
                                f"-c synchronous_commit=on -c shared_buffers=256MB -c max_connections=300 " + os.environ.get("PG_OPTIONS", ""),
                                "-w", "start"]), check=True, stdout=subprocess.DEVNULL)
    nodes = []
    ceiling = None
    try:
        subprocess.run([f"{binary}/psql", "-h", run, "-p", str(port), "-U", "postgres", "-qc",
                        "CREATE DATABASE tokengate"], check=True)
        url = f"postgres://postgres@127.0.0.1:{port}/tokengate"
        print(f"# tokengate on PostgreSQL ({os.path.basename(os.path.dirname(binary))}, fsync and "
              f"synchronous_commit on, same host): {DURATION}s per scenario, {CONNECTIONS} connections "
              f"in all, {os.cpu_count()} CPUs")

        # Users and sessions made in SQLite, then copied over.
        seed = os.path.join(tmp, "seed.db")
        node_port = load.free_port()
        seeder, _ = load.start_tokengate(seed, node_port, log)
        load.http("POST", f"http://127.0.0.1:{node_port}/api/v1/register",
                  {"name": "Bench", "email": "bench@example.com", "password": "bench-password"})
        load.stop(seeder)
        count = 8_000 * DURATION
        files = {}
        for nodes_n in (1, 3):
            for kind in ("logout", "refresh"):
                path = os.path.join(tmp, f"{kind}-{nodes_n}.txt")
                with open(path, "w") as f:
                    subprocess.run([sys.executable, os.path.join(load.BENCH, "forge.py"), "--sessions", seed,
                                    SECRET, str(count), "1"], stdout=f, check=True)
                files[(kind, nodes_n)] = split(path, nodes_n)
        subprocess.run([load.BIN, "copy", "--database", seed, "--jwt-secret", SECRET, "--to", url],
                       check=True, stdout=subprocess.DEVNULL)

        ceiling_port = load.free_port()
        ceiling = subprocess.Popen([load.CEILING, f"127.0.0.1:{ceiling_port}", SECRET], stdout=log,
                                   stderr=subprocess.STDOUT)
        load.wait_ready(f"http://127.0.0.1:{ceiling_port}", ceiling)

        print("\n| nodes | scenario | req/s | p99 ms | tokengate CPU µs/req | PostgreSQL CPU µs/req | non-2xx |")
        print("|---|---|---|---|---|---|---|")
        token = None
        for nodes_n in (1, 3):
            nodes = []
            for _ in range(nodes_n):
                p = load.free_port()
                proc = subprocess.Popen([load.BIN, "serve", "--database", url, "--bind", f"127.0.0.1:{p}",
                                         "--jwt-secret", SECRET], stdout=log, stderr=subprocess.STDOUT)
                load.wait_ready(f"http://127.0.0.1:{p}", proc)
                nodes.append({"proc": proc, "base": f"http://127.0.0.1:{p}"})
            if token is None:
                _, body = load.http("POST", f"{nodes[0]['base']}/api/v1/login",
                                    {"email": "bench@example.com", "password": "bench-password"})
                token = json.loads(body)["access_token"]
                c = load.wrk(f"http://127.0.0.1:{ceiling_port}/api/v1/user", ceiling.pid,
                             [f"Authorization: Bearer {token}"])
                print(f"| - | ceiling: GET /api/v1/user (JWT only) | {c['rps']:,.0f} | {c['p99']:.2f} | "
                      f"{c['cpu_us']:.1f} | - | {c['non2xx']} |")
            header = ["-H", f"Authorization: Bearer {token}"]
            results = [
                ("GET /api/v1/user", run_wrk(data, nodes, "/api/v1/user", lambda i: header)),
                ("DELETE /api/v1/logout (durable)",
                 run_wrk(data, nodes, "/api/v1/logout",
                         Script(os.path.join(load.BENCH, "logout.lua"), files[("logout", nodes_n)]))),
                ("POST /api/v1/token/refresh (durable rotation)",
                 run_wrk(data, nodes, "/api/v1/token/refresh",
                         Script(os.path.join(load.BENCH, "refresh.lua"), files[("refresh", nodes_n)]))),
            ]
            for name, r in results:
                print(f"| {nodes_n} | {name} | {r['rps']:,.0f} | {r['p99']:.2f} | {r['cpu_us']:.1f} | "
                      f"{r['pg_us']:.1f} | {r['non2xx']} |")
                for line in r["statuses"]:
                    print(f"|   | ({line}) | | | | | |")
            for node in nodes:
                load.stop(node["proc"])
            nodes = []
        print(f"\n(work files in {tmp})")
    finally:
        for node in nodes:
            load.stop(node["proc"])
        if ceiling:
            load.stop(ceiling)
        subprocess.run(as_postgres([f"{binary}/pg_ctl", "-D", data, "-m", "fast", "stop"]),
                       stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
