#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""A TLS client with length-prefixed framing, written with the stdlib alone.

    tls_py_client.py echo HOST PORT CA [--messages N] [--cert PEM --key PEM]
    tls_py_client.py resume HOST PORT CA
    tls_py_client.py reject HOST PORT CA

It knows nothing about tether except its framing: a 4-byte big-endian
payload length, then the payload (`struct.pack('!I', len(p)) + p`). TLS is
Python's `ssl` module (OpenSSL underneath, but configured by Python: its
own defaults, verification with check_hostname against HOST).

echo    Verifies the server against CA for HOST, sends N messages of varied
        sizes (0 bytes to 256 KiB) in batches of up to 512 KiB, reads and
        checks every echo in order after each batch, then closes with
        close_notify (unwrap). Prints the negotiated version and cipher.
        (One thread: an SSL object must not be read and written from two
        threads at once, so batches bound what is in flight instead.)
resume  Connects twice with the session of the first connection and
        expects the second to be resumed (the server issues tickets).
reject  Expects the handshake to fail certificate verification (for a
        server whose certificate is not valid for HOST or not trusted).

Exit status 0 when everything matched, 1 otherwise (with a reason on
stderr), 2 on bad usage.
"""

import socket
import ssl
import struct
import sys

TIMEOUT = 30.0
BATCH = 512 * 1024  # bytes of messages in flight at once


def close_clean(s):
    """A clean TLS close: our close_notify, then the server's."""
    try:
        s.unwrap()
    except (ssl.SSLError, OSError):
        pass
    s.close()


def fail(msg):
    print("tls_py_client: FAIL: " + msg, file=sys.stderr, flush=True)
    sys.exit(1)


def context(ca, cert=None, key=None):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def connect(ctx, host, port, session=None):
    raw = socket.create_connection((host, port), timeout=TIMEOUT)
    try:
        return ctx.wrap_socket(raw, server_hostname=host, session=session)
    except Exception:
        raw.close()
        raise


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            fail("connection closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


SIZES = [0, 1, 5, 100, 1000, 16379, 16380, 16384, 40000, 262144]
BASE = bytes(range(256))


def payload(i):
    """Message i: its size from SIZES, its bytes a rotation that depends on i."""
    n = SIZES[i % len(SIZES)]
    r = (i * 7) % 256
    block = BASE[r:] + BASE[:r]
    return (block * (n // 256 + 1))[:n]


def cmd_echo(host, port, ca, messages, cert, key):
    s = connect(context(ca, cert, key), host, port)
    print("tls_py_client: %s %s" % (s.version(), s.cipher()[0]), flush=True)
    msgs = [payload(i) for i in range(messages)]
    i = 0
    while i < len(msgs):
        # A batch small enough for the server's send queue and the socket
        # buffers, so that writing it never waits for us to read.
        batch = []
        size = 0
        while i + len(batch) < len(msgs) and (not batch or size + len(msgs[i + len(batch)]) <= BATCH):
            size += len(msgs[i + len(batch)])
            batch.append(msgs[i + len(batch)])
        s.sendall(b"".join(struct.pack("!I", len(m)) + m for m in batch))
        for m in batch:
            (n,) = struct.unpack("!I", recv_exact(s, 4))
            if n != len(m):
                fail("echo %d has %d bytes instead of %d" % (i, n, len(m)))
            if recv_exact(s, n) != m:
                fail("echo %d differs from what was sent" % i)
            i += 1
    close_clean(s)
    print("tls_py_client: ok %d" % messages, flush=True)


def cmd_resume(host, port, ca):
    ctx = context(ca)
    s1 = connect(ctx, host, port)
    m = b"resume me"
    s1.sendall(struct.pack("!I", len(m)) + m)
    (n,) = struct.unpack("!I", recv_exact(s1, 4))
    recv_exact(s1, n)  # TLS 1.3 tickets arrive before the echo
    sess = s1.session
    close_clean(s1)
    if sess is None:
        fail("the server issued no session")
    s2 = connect(ctx, host, port, session=sess)
    s2.sendall(struct.pack("!I", len(m)) + m)
    (n,) = struct.unpack("!I", recv_exact(s2, 4))
    recv_exact(s2, n)
    reused = s2.session_reused
    close_clean(s2)
    if not reused:
        fail("the second connection was not resumed")
    print("tls_py_client: resumed", flush=True)


def cmd_reject(host, port, ca):
    try:
        s = connect(context(ca), host, port)
    except ssl.SSLCertVerificationError as e:
        print("tls_py_client: rejected: %s" % e.verify_message, flush=True)
        return
    s.close()
    fail("the handshake succeeded, but verification should have failed")


def main(argv):
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    cmd, host, port, ca = argv[1], argv[2], int(argv[3]), argv[4]
    rest = argv[5:]
    opts = {"--messages": "200", "--cert": None, "--key": None}
    while rest:
        if rest[0] not in opts or len(rest) < 2:
            print(__doc__, file=sys.stderr)
            sys.exit(2)
        opts[rest[0]] = rest[1]
        rest = rest[2:]
    if cmd == "echo":
        cmd_echo(host, port, ca, int(opts["--messages"]), opts["--cert"], opts["--key"])
    elif cmd == "resume":
        cmd_resume(host, port, ca)
    elif cmd == "reject":
        cmd_reject(host, port, ca)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)
