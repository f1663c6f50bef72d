#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The stress suite's well-behaved client: one len32 (or varint) connection (plain or
TLS) to 127.0.0.1:PORT that sends a small random message every interval
and checks each echo byte for byte.

    probe.py --port N [--ca PEM] [--framing len32|varint] [--interval S]
             [--timeout S]

It prints `ready` after its first echo, runs until its stdin closes, then
prints one JSON line: sent, answered, failures, reconnects, latency
p50/p99/max (ms), the longest time between two answers (s) and the first
errors. An echo not back within --timeout, a wrong echo or a lost
connection is a failure; after one the probe reconnects and goes on.
Standard library only; it runs as its own process so that the attackers'
load in the suite's process does not delay it.
"""

import argparse
import json
import os
import random
import select
import socket
import ssl
import struct
import sys
import time


def connect(args):
    s = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if args.ca:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.ca)
        s = ctx.wrap_socket(s, server_hostname="localhost")
    s.settimeout(args.timeout)
    return s


def recv_exact(s, n, deadline):
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no echo within the timeout")
        s.settimeout(left)
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buf += chunk
    return bytes(buf)


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(s, deadline):
    n = shift = 0
    while True:
        b = recv_exact(s, 1, deadline)[0]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n


def stopped(wait):
    """Waits up to `wait` seconds for stdin to close; True once it has."""
    r, _, _ = select.select([sys.stdin], [], [], max(0.0, wait))
    return bool(r) and os.read(sys.stdin.fileno(), 4096) == b""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ca")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--timeout", type=float, default=10.0)
    ap.add_argument("--framing", choices=("len32", "varint"), default="len32")
    args = ap.parse_args()
    rng = random.Random(os.getpid())
    sent = answered = failures = reconnects = 0
    lat = []
    errors = []
    last_answer = None
    max_gap = 0.0
    announced = False
    s = None
    while True:
        if stopped(args.interval):
            break
        try:
            if s is None:
                s = connect(args)
            msg = rng.randbytes(rng.randint(1, 4096))
            t = time.monotonic()
            sent += 1
            deadline = t + args.timeout
            if args.framing == "len32":
                s.sendall(struct.pack("!I", len(msg)) + msg)
                (n,) = struct.unpack("!I", recv_exact(s, 4, deadline))
            else:
                s.sendall(varint(len(msg)) + msg)
                n = read_varint(s, deadline)
            if n != len(msg) or recv_exact(s, n, deadline) != msg:
                raise ValueError("wrong echo")
            now = time.monotonic()
            lat.append((now - t) * 1000.0)
            answered += 1
            if last_answer is not None:
                max_gap = max(max_gap, now - last_answer)
            last_answer = now
            if not announced:
                print("ready", flush=True)
                announced = True
        except (OSError, ValueError, ssl.SSLError) as e:
            failures += 1
            if len(errors) < 5:
                errors.append("%s: %s" % (type(e).__name__, e))
            if s is not None:
                s.close()
                s = None
                reconnects += 1
            if stopped(0.5):
                break
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None

    print(json.dumps({"sent": sent, "answered": answered, "failures": failures,
                      "reconnects": reconnects, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                      "max_ms": lat[-1] if lat else None,
                      "max_gap_s": max_gap if answered > 1 else None, "errors": errors}),
          flush=True)


if __name__ == "__main__":
    main()
