#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the seed corpus of fuzz_tls_server: what real TLS clients send.

Each handshake runs in memory between Python's ssl client and server
(certs/ from the repository) and records every byte the client sends, up
to its Finished. Replayed against tether, the server's random differs, so
the handshake fails at the client's Finished (TLS 1.2: CertificateVerify),
but everything before it, client certificates included, is real. The
seeds that complete their handshake (session-*) are recorded by the
target itself: FUZZ_TLS_RECORD=DIR build-fuzz/tests/fuzz/fuzz_tls_server.

    python3 tests/fuzz/make-tls-seeds.py   # rewrites its files in tests/fuzz/corpus/fuzz_tls_server/
"""
import os
import ssl

HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = os.path.join(HERE, "..", "..", "certs")
OUT = os.path.join(HERE, "corpus", "fuzz_tls_server")


def cert(name):
    return os.path.join(CERTS, name)


def record(version, client_cert=None, sni="localhost", alpn=None):
    """Returns the bytes a client sends in a handshake with a local server."""
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert("server.pem"), cert("server.key"))
    sctx.load_verify_locations(cert("ca.pem"))
    sctx.verify_mode = ssl.CERT_OPTIONAL
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cctx.minimum_version = cctx.maximum_version = version
    if client_cert:
        cctx.load_cert_chain(cert(client_cert + ".pem"), cert(client_cert + ".key"))
    if alpn:
        cctx.set_alpn_protocols(alpn)
    sbio_in, sbio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    cbio_in, cbio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = sctx.wrap_bio(sbio_in, sbio_out, server_side=True)
    client = cctx.wrap_bio(cbio_in, cbio_out, server_hostname=sni)
    sent = b""
    for _ in range(10):
        for side in (client, server):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                pass  # the server refused the client: its bytes are recorded
        out = cbio_out.read()
        sent += out
        sbio_in.write(out)
        cbio_in.write(sbio_out.read())
    return sent


def main():
    os.makedirs(OUT, exist_ok=True)
    v12, v13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
    seeds = {
        # byte 0: the listener (0 plain, 1 TLS 1.2 + optional client cert,
        # 2 client cert required); byte 1: chunk size - 1.
        "tls13-hello": (0, 255, record(v13, alpn=["h2"])),
        "tls13-hello-bytewise": (0, 0, record(v13)[:200]),
        "tls12-client-cert": (1, 255, record(v12, "client", alpn=["fuzz/1"])),
        "tls12-untrusted-client-cert": (1, 63, record(v12, "untrusted-client", sni="alt.localhost")),
        "tls12-no-client-cert": (1, 255, record(v12, alpn=["nope"])),
        "tls13-client-cert-required": (2, 255, record(v13, "client", sni="alt.localhost")),
        "tls13-no-cert-required": (2, 15, record(v13, alpn=["h2"])),
        "http-request": (0, 255, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        "tether-len32": (1, 255, b"\x00\x00\x00\x05hello"),
    }
    for name, (which, chunk, data) in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes([which, chunk]) + data)


if __name__ == "__main__":
    main()
