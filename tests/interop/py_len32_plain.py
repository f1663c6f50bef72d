#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A plain length-prefixed echo server that knows nothing of tether's
control frames: every frame is a 4-byte big-endian length and that many
bytes, echoed back as they came. A tether HELLO (0xFF 0x01 ...) therefore
reads as a length of about 4 GB.

    py_len32_plain.py PORTFILE close|wait

close: a length above 16 MiB closes the connection (as most plain
servers do with an oversized message). wait: the length is taken as it
is, and the server waits for that many bytes (until the peer goes).

Listens on 127.0.0.1 port 0, writes the port to PORTFILE, serves each
connection in its own thread until killed (or 120 s pass). Prints
`plain: N connections, M messages echoed` to stderr after each
connection.
"""

import os
import socket
import struct
import sys
import threading
import time

DEADLINE = time.monotonic() + 120
MAX = 16 * 1024 * 1024
lock = threading.Lock()
totals = {"conns": 0, "echoed": 0}


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def serve(s, mode):
    echoed = 0
    try:
        while True:
            hdr = recv_exact(s, 4)
            if hdr is None:
                break
            (n,) = struct.unpack("!I", hdr)
            if n > MAX and mode == "close":
                break
            data = recv_exact(s, n)
            if data is None:
                break
            s.sendall(hdr + data)
            echoed += 1
    except (ConnectionError, socket.timeout):
        pass
    s.close()
    with lock:
        totals["conns"] += 1
        totals["echoed"] += echoed
        print("plain: %d connections, %d messages echoed" % (totals["conns"], totals["echoed"]),
              file=sys.stderr, flush=True)


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("close", "wait"):
        print("usage: py_len32_plain.py PORTFILE close|wait", file=sys.stderr)
        sys.exit(2)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write("%d\n" % ls.getsockname()[1])
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    ls.settimeout(1.0)
    while time.monotonic() < DEADLINE:
        try:
            s, _ = ls.accept()
        except socket.timeout:
            continue
        s.settimeout(60.0)
        threading.Thread(target=serve, args=(s, sys.argv[2]), daemon=True).start()


if __name__ == "__main__":
    main()
