#!/usr/bin/env python3
"""Forges distinct HS256 tokens for the load benchmark (standard library only).

usage: forge.py SECRET COUNT SUB       -> COUNT tokens (iss/aud "tokengate", 1 h), one per line
       forge.py --denylist DB COUNT   -> insert COUNT unexpired revocations into DB
       forge.py --sessions DB SECRET COUNT USER_ID
                                      -> start COUNT sessions of USER_ID in DB (as logins
                                         would) and print, per session, its access token
                                         (with sid and iat_us) and its refresh token,
                                         separated by a space
"""
import base64
import hashlib
import hmac
import json
import os
import sqlite3
import sys
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(secret: bytes, count: int, sub: str, iss: str, aud: str, ttl: int):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    now = int(time.time())
    out = sys.stdout
    for _ in range(count):
        claims = {"iss": iss, "aud": aud, "sub": sub, "iat": now, "nbf": now,
                  "exp": now + ttl, "jti": b64(os.urandom(18))}
        payload = b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{header}.{payload}".encode()
        signature = b64(hmac.new(secret, signing_input, hashlib.sha256).digest())
        out.write(f"{header}.{payload}.{signature}\n")


def fill_denylist(path: str, count: int):
    conn = sqlite3.connect(path)
    expires = int(time.time()) + 86_400
    batch = 100_000
    for start in range(0, count, batch):
        rows = ((b64(os.urandom(18)), expires) for _ in range(min(batch, count - start)))
        conn.executemany("INSERT INTO revoked_tokens (jti, purge_after) VALUES (?, ?)", rows)
        conn.commit()
    conn.close()


def sign(secret: bytes, claims: dict) -> str:
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    return f"{header}.{payload}.{b64(hmac.new(secret, signing_input, hashlib.sha256).digest())}"


def start_sessions(path: str, secret: bytes, count: int, user_id: int):
    """Sessions as `POST /api/v1/login` stores them (one refresh token each,
    kept as the SHA-256 of its secret), so the benchmark can refresh or log
    out distinct sessions without paying for argon2 first."""
    conn = sqlite3.connect(path)
    now_ms = int(time.time() * 1000)
    now = now_ms // 1000
    refresh_expires, max_expires = now + 1_209_600, now + 7_776_000
    out = sys.stdout
    batch = 20_000
    for start in range(0, count, batch):
        sessions, tokens = [], []
        for _ in range(min(batch, count - start)):
            sid = b64(os.urandom(18))
            secret_part = b64(os.urandom(32))
            sessions.append((sid, user_id, now_ms, now_ms, refresh_expires, max_expires, 1, now_ms,
                             "bench", "127.0.0.1", refresh_expires + 3630))
            tokens.append((sid, hashlib.sha256(secret_part.encode()).digest(), 1, refresh_expires))
            claims = {"iss": "tokengate", "aud": "tokengate", "sub": str(user_id), "iat": now,
                      "nbf": now, "exp": now + 3600, "jti": b64(os.urandom(18)), "sid": sid,
                      "iat_us": now_ms * 1000}
            out.write(f"{sign(secret, claims)} {sid}.{secret_part}\n")
        conn.executemany(
            "INSERT INTO sessions (id, user_id, created_at_ms, last_used_at_ms, refresh_expires_at,"
            " max_expires_at, generation, rotated_at_ms, user_agent, ip, purge_after)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)", sessions)
        conn.executemany(
            "INSERT INTO refresh_tokens (session_id, hash, generation, expires_at) VALUES (?,?,?,?)",
            tokens)
        conn.commit()
    conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "--sessions":
        start_sessions(sys.argv[2], sys.argv[3].encode(), int(sys.argv[4]), int(sys.argv[5]))
    elif sys.argv[1] == "--denylist":
        fill_denylist(sys.argv[2], int(sys.argv[3]))
    else:
        secret, count, sub = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
        forge(secret, count, sub, "tokengate", "tokengate", 3600)
