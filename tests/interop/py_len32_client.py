#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A length-prefixed echo client written against the wire format alone.

    py_len32_client.py echo HOST PORT [--seed N] [--messages N]
    py_len32_client.py oversize HOST PORT SIZE

It uses only the Python standard library and knows nothing about tether
except its framing: a 4-byte big-endian payload length, then the payload
(`struct.pack('!I', len(payload)) + payload`). That makes it an
independent check of the LEN32 framing of examples/echo_server.

echo      Sends many messages (random sizes, including 0 bytes and 1 MiB),
          framed and concatenated into one byte string that goes out in
          random-sized chunks: 1-byte chunks, chunks that split a header,
          chunks that span many frames. A reader thread reassembles the
          echoes itself and checks each one, in order, byte for byte. The
          reader starts late and reads through a small receive buffer so the
          server has to apply back-pressure instead of buffering everything.
oversize  Announces a SIZE-byte message (above the server's --max-msg) and
          expects the server to close the connection (EOF or a reset)
          without answering.

Exit status 0 when everything matched, 1 otherwise (with a reason on
stderr), 2 on bad usage.
"""

import random
import socket
import struct
import sys
import threading
import time

TIMEOUT = 30.0  # seconds for any single socket operation


def fail(msg):
    print("py_len32_client: FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def connect(host, port, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect(), so that the window is small from the start.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(TIMEOUT)
    s.connect((host, port))
    # Without Nagle every small chunk leaves as its own segment, so the
    # server really sees headers and payloads cut at odd places.
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def make_payloads(rng, count):
    """Message sizes: mostly small, some around read-buffer sizes, plus the
    edge cases the issue names (empty, 1 MiB)."""
    sizes = []
    for _ in range(count):
        r = rng.random()
        if r < 0.70:
            sizes.append(rng.randint(0, 300))
        elif r < 0.98:
            sizes.append(rng.randint(301, 5000))
        else:
            sizes.append(rng.randint(5001, 200000))
    sizes += [0, 1 << 20, 0, 65536, 131072, 131073]
    rng.shuffle(sizes)
    # Tiny messages first: they go out one byte at a time (see
    # chunk_sizes), so every one of their headers arrives in pieces.
    head = [rng.randint(0, 20) for _ in range(40)] + [0]
    return [rng.randbytes(n) for n in head + sizes]


def chunk_sizes(rng, total):
    """Random chunk sizes covering total bytes."""
    first = min(600, total)
    out = [1] * first
    left = total - first
    while left > 0:
        r = rng.random()
        if r < 0.25:
            n = 1
        elif r < 0.50:
            n = rng.randint(2, 7)  # shorter than a header plus a bit
        elif r < 0.80:
            n = rng.randint(8, 4096)
        else:
            n = rng.randint(4097, 64 * 1024)
        n = min(n, left)
        out.append(n)
        left -= n
    return out


def run_echo(host, port, seed, count):
    rng = random.Random(seed)
    payloads = make_payloads(rng, count)
    wire = b"".join(struct.pack("!I", len(p)) + p for p in payloads)
    chunks = chunk_sizes(rng, len(wire))
    print(
        "py_len32_client: seed %d: %d messages, %d bytes in %d chunks (%d of 1 byte)"
        % (seed, len(payloads), len(wire), len(chunks), chunks.count(1)),
        flush=True,
    )

    s = connect(host, port, rcvbuf=32 * 1024)
    send_error = []
    send_done = threading.Event()

    def sender():
        try:
            view = memoryview(wire)
            off = 0
            for i, n in enumerate(chunks):
                s.sendall(view[off : off + n])
                off += n
                # Now and then a pause after a tiny chunk, so that the server
                # reads a partial header on its own rather than coalesced.
                if n < 4 and i % 40 == 0:
                    time.sleep(0.001)
        except OSError as e:
            send_error.append(e)
        finally:
            send_done.set()

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    # Let the sender run ahead: the echoes pile up, the server's queue
    # reaches its high-water mark and it must stop reading from us.
    time.sleep(0.5)
    print(
        "py_len32_client: after 0.5 s the sender is %s"
        % ("done" if send_done.is_set() else "blocked (server applied back-pressure)"),
        flush=True,
    )

    buf = bytearray()
    idx = 0
    while idx < len(payloads):
        try:
            data = s.recv(256 * 1024)
        except OSError as e:
            fail("recv after %d of %d echoes: %s" % (idx, len(payloads), e))
        if not data:
            fail("server closed the connection after %d of %d echoes" % (idx, len(payloads)))
        buf += data
        # Reassemble: a frame is complete once its header and payload are in.
        pos = 0
        while len(buf) - pos >= 4:
            (n,) = struct.unpack_from("!I", buf, pos)
            if len(buf) - pos - 4 < n:
                break
            got = bytes(buf[pos + 4 : pos + 4 + n])
            if idx >= len(payloads):
                fail("an echo nobody sent (%d bytes)" % n)
            want = payloads[idx]
            if got != want:
                diff = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), None)
                fail(
                    "echo %d: %d bytes, expected %d; first difference at %s"
                    % (idx, len(got), len(want), diff)
                )
            idx += 1
            pos += 4 + n
        del buf[:pos]
    if buf:
        fail("%d stray bytes after the last echo" % len(buf))

    t.join(TIMEOUT)
    if send_error:
        fail("send: %s" % send_error[0])
    # A clean goodbye: our FIN, then the server's.
    s.shutdown(socket.SHUT_WR)
    try:
        rest = s.recv(1)
    except OSError as e:
        fail("after our FIN: %s" % e)
    if rest:
        fail("data after the last echo")
    s.close()
    print("py_len32_client: ok %d echoes verified" % len(payloads), flush=True)


def run_oversize(host, port, size):
    s = connect(host, port)
    s.settimeout(10.0)
    # The header and a little of the payload: the server must not wait for
    # (or allocate) the rest.
    s.sendall(struct.pack("!I", size) + b"x" * 100)
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        data = b""
    except socket.timeout:
        fail("the server did not close the connection within 10 s")
    if data:
        fail("the server answered (%d bytes) instead of closing" % len(data))
    s.close()
    print("py_len32_client: ok the server closed the connection after a %d-byte announcement" % size)


def main(argv):
    if len(argv) >= 4 and argv[1] == "echo":
        host, port = argv[2], int(argv[3])
        seed = random.randrange(1 << 31)
        count = 3000
        rest = argv[4:]
        while rest:
            if rest[0] == "--seed" and len(rest) >= 2:
                seed = int(rest[1])
            elif rest[0] == "--messages" and len(rest) >= 2:
                count = int(rest[1])
            else:
                break
            rest = rest[2:]
        if not rest:
            run_echo(host, port, seed, count)
            return 0
    elif len(argv) == 5 and argv[1] == "oversize":
        run_oversize(argv[2], int(argv[3]), int(argv[4]))
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
