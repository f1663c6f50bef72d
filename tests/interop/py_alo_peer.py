#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""An echo server that speaks len32 and the control-frame handshake of a
tether peer that predates acknowledgements, written against the wire
format alone (include/tether/conn.h, "Heartbeat wire format"): it answers
a HELLO with a HELLO whose flags are 0 (no capability bits, so no
acknowledgements), answers PINGs, and echoes every data frame.

    py_alo_peer.py PORTFILE

Listens on 127.0.0.1 port 0, writes the port to PORTFILE, serves one
connection at a time until killed (or 120 s pass). A RESUME or ACK frame
(types 7, 8), which a client must never send to a peer that did not
announce acknowledgements, ends it with status 3.
"""

import socket
import struct
import sys
import time

DEADLINE = time.monotonic() + 120


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def serve(s):
    out = []
    while True:
        hdr = recv_exact(s, 4)
        if hdr is None:
            return
        if hdr[0] == 0xFF:
            ftype = hdr[1]
            (plen,) = struct.unpack("!H", hdr[2:4])
            payload = recv_exact(s, plen)
            if payload is None:
                return
            if ftype == 1:  # HELLO: version 1, flags 0, interval 0
                s.sendall(b"\xff\x01\x00\x06\x01\x00\x00\x00\x00\x00")
            elif ftype == 2:  # PING -> PONG
                s.sendall(b"\xff\x03" + struct.pack("!H", plen) + payload)
            elif ftype in (7, 8):
                print("py_alo_peer: FAIL: got control frame type %d" % ftype,
                      file=sys.stderr, flush=True)
                sys.exit(3)
            continue
        (n,) = struct.unpack("!I", hdr)
        data = recv_exact(s, n)
        if data is None:
            return
        out.append(hdr + data)
        if len(out) >= 64:
            s.sendall(b"".join(out))
            out = []
        s.setblocking(False)
        try:
            more = s.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            more = None
        s.setblocking(True)
        if not more and out:
            s.sendall(b"".join(out))
            out = []


def main():
    if len(sys.argv) != 2:
        print("usage: py_alo_peer.py PORTFILE", file=sys.stderr)
        sys.exit(2)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write("%d\n" % ls.getsockname()[1])
    import os
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    ls.settimeout(1.0)
    while time.monotonic() < DEADLINE:
        try:
            s, _ = ls.accept()
        except socket.timeout:
            continue
        s.settimeout(30.0)
        try:
            serve(s)
        except (ConnectionError, socket.timeout):
            pass
        s.close()


if __name__ == "__main__":
    main()
