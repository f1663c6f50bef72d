#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A plain length-prefixed client for kv_server, written against the wire
format alone: a 4-byte big-endian length, then the payload. It never sends
a HELLO control frame, so it never negotiates calls: the server must serve
it with plain messages, in order, exactly as before calls existed.

    py_kv_plain.py HOST PORT

Sends `set k1 v1`, `get k1`, `get nope`, `del k1`, `get k1` back to back
(pipelined, in one write), then checks the five replies in order:
`ok`, `value v1`, `missing`, `ok`, `missing`. Exit status 0 when they
match, 1 otherwise (with a reason on stderr).
"""

import socket
import struct
import sys

TIMEOUT = 30.0


def fail(msg):
    print("py_kv_plain: FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            fail("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def main():
    if len(sys.argv) != 3:
        print("usage: py_kv_plain.py HOST PORT", file=sys.stderr)
        sys.exit(2)
    host, port = sys.argv[1], int(sys.argv[2])
    requests = [b"set k1 v1", b"get k1", b"get nope", b"del k1", b"get k1"]
    want = [b"ok", b"value v1", b"missing", b"ok", b"missing"]
    s = socket.create_connection((host, port), timeout=TIMEOUT)
    s.sendall(b"".join(struct.pack("!I", len(r)) + r for r in requests))
    for req, exp in zip(requests, want):
        (n,) = struct.unpack("!I", recv_exact(s, 4))
        if n > 1 << 20:
            fail("reply to %r announces %d bytes" % (req, n))
        got = recv_exact(s, n)
        if got != exp:
            fail("reply to %r: %r, want %r" % (req, got, exp))
        print("%s: %s" % (req.decode(), got.decode()))
    s.close()


if __name__ == "__main__":
    main()
