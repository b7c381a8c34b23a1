#!/usr/bin/env python3
"""Forges distinct HS256 tokens for the load benchmark (standard library only).

usage: forge.py SECRET COUNT SUB       -> COUNT tokens (iss/aud "tokengate", 1 h), one per line
       forge.py --denylist DB COUNT   -> insert COUNT unexpired revocations into DB
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


if __name__ == "__main__":
    if sys.argv[1] == "--denylist":
        fill_denylist(sys.argv[2], int(sys.argv[3]))
    else:
        secret, count, sub = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3]
        forge(secret, count, sub, "tokengate", "tokengate", 3600)
