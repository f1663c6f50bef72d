# SPDX-License-Identifier: MIT
"""The attacks of the stress suite against examples/echo_server (and, for
the hostile-server attacks, against echo_client and reconnecting_client).

Each attack is `async def NAME(run, res)`: it starts its own server through
`under_attack()` (which also runs the well-behaved probe client, samples the
server's memory and descriptors, and checks that the server survived and
exits cleanly), records figures with `res.fig()` and pass/fail criteria with
`res.check()`, and closes every socket it opened before it returns. Counts
and time windows come from `run.p` (see stress.py: short, short under
ASan, long).
"""

import asyncio
import random
import socket
import ssl
import struct
import subprocess
import time

from common import (CTRL_PING, HOST, MIB, Probe, Server, cpu_seconds, ctrl, hello,
                    len32, mib, open_conn, peer_closed, proc_status, reap, set_rst, settle, spawn,
                    varint, wait_closed, wait_socks)


def now():
    return time.monotonic()


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def under_attack(run, res, srv, body, probe=True):
    """Starts srv and the probe, runs body(), then checks the probe's
    figures and the server's survival and clean exit."""
    await in_thread(srv.start)
    sampler = asyncio.create_task(srv.sample_loop())
    pr = None
    try:
        if probe:
            pr = Probe(run, srv)
            ready = await in_thread(pr.wait_ready)
            res.check("the probe client got its first echo before the attack", ready)
        try:
            await asyncio.wait_for(body(), run.p["attack_limit"])
        except asyncio.TimeoutError:
            res.check("the attack ended within its time bound (%d s)" % run.p["attack_limit"], False)
    finally:
        alive = srv.alive()
        if pr is not None:
            r = await in_thread(pr.finish)
            res.fig(Probe.describe(r))
            res.check("a well-behaved client kept getting its echoes during the attack", Probe.ok(r),
                      "; ".join(r.get("errors", [])))
        sampler.cancel()
        peak = srv.peak("VmRSS")
        res.fig("server peak RSS %s, peak VmSize %s" % (mib(peak), mib(srv.peak("VmSize"))))
        res.check("the server survived", alive, "exit status %s; stderr: %s" %
                  (srv.proc.poll(), srv.stderr_tail()))
        problems = await in_thread(srv.stop)
        res.check("the server exits 0 on SIGTERM with no sanitizer report", not problems,
                  "; ".join(problems))
        lines = srv.stderr_lines()
        if lines:
            res.fig("server stderr: %d lines, e.g. %r" % (len(lines), lines[0][:150]))


async def closing_times(run, res, srv, n, peer):
    """Runs n copies of peer(loop, t0) at once under attack; each returns
    the seconds from the start until the server closed it, or None if it
    did not. Returns the times of those it closed, sorted."""
    closed_at = [None] * n

    async def one(i, t0, loop):
        closed_at[i] = await peer(loop, t0)

    async def body():
        loop = asyncio.get_running_loop()
        t0 = now()
        await asyncio.gather(*(one(i, t0, loop) for i in range(n)))

    await under_attack(run, res, srv, body)
    return sorted(t for t in closed_at if t is not None)


def baseline_socks(srv):
    """Sockets the server holds before an attack: the listener and the
    probe's connection."""
    st = srv.status()
    return st["socks"] if st else 0


# ---- slowloris --------------------------------------------------------------

async def slowloris(run, res):
    p = run.p
    n, window, target = p["slow_peers"], p["slow_window"], p["slow_target"]
    args = []
    if p.get("slow_frame_timeout") and run.has_flag("--frame-timeout"):
        args = ["--frame-timeout", str(p["slow_frame_timeout"])]
    srv = Server(run, "slowloris", args)
    res.fig("server options: %s" % (" ".join(args) or "defaults"))

    async def peer(loop, t0):
        s = await open_conn(loop, srv.port)
        frame = len32(1024) + bytes(1024)  # 1028 s at one byte a second
        try:
            for k in range(len(frame)):
                if now() - t0 >= window:
                    return None
                try:
                    await loop.sock_sendall(s, frame[k:k + 1])
                except OSError:
                    return now() - t0
                if await wait_closed(loop, s, 1.0):
                    return now() - t0
            return None
        finally:
            s.close()

    done = await closing_times(run, res, srv, n, peer)
    res.fig("%d peers trickling 1 byte/s: %d closed by the server within the %d s window%s" %
            (n, len(done), window,
             "" if not done else " (first after %.1f s, last after %.1f s)" % (done[0], done[-1])))
    res.check("all %d trickling peers closed within %d s" % (n, target),
              len(done) == n and done[-1] <= target,
              "%d of %d closed" % (len([t for t in done if t <= target]), n))


# ---- non-reading peers --------------------------------------------------------

async def _writable(loop, s, timeout):
    fut = loop.create_future()
    loop.add_writer(s.fileno(), lambda: fut.done() or fut.set_result(None))
    try:
        await asyncio.wait_for(fut, timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        loop.remove_writer(s.fileno())


async def nonreading_attack(run, res, name, n, window, target, args, rss_limit=None):
    """n peers send 16 MiB messages as fast as the server takes them and
    never read an echo. Measures when the server closes them (its socket
    count; the peers see a reset) and whether their memory comes back."""
    srv = Server(run, name, args)
    res.fig("server options: %s" % (" ".join(args) or "defaults"))
    size = 16 * MIB
    msg = memoryview(len32(size) + bytes(size))
    stall = [None] * n  # time of a peer's last progress
    closed_at = [None] * n
    sent = [0] * n
    fig = {}

    socks = []

    async def peer(i, t0, loop):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and never read
        s.setblocking(False)
        set_rst(s)
        socks.append(s)  # closed by body() once the server's figures are in
        await asyncio.wait_for(loop.sock_connect(s, (HOST, srv.port)), 10)
        off = 0
        stall[i] = now() - t0
        while now() - t0 < window:
            if peer_closed(s):
                closed_at[i] = now() - t0
                return
            try:
                k = s.send(msg[off:off + MIB])
                off = (off + k) % len(msg)
                sent[i] += k
                stall[i] = now() - t0
            except BlockingIOError:
                await _writable(loop, s, 0.5)
            except OSError:
                closed_at[i] = now() - t0
                return

    async def body():
        loop = asyncio.get_running_loop()
        base = baseline_socks(srv)
        idle = srv.status()
        fig["idle"] = idle
        t0 = now()
        tasks = [asyncio.create_task(peer(i, t0, loop)) for i in range(n)]
        try:
            await watch(tasks, base, t0)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for s in socks:
                s.close()

    async def watch(tasks, base, t0):
        # The server's count of attack connections over time.
        while not all(t.done() for t in tasks):
            st = srv.status()
            if st is not None and now() - t0 > 5 and st["socks"] <= base:
                fig.setdefault("server_closed_all", now() - t0)
            await asyncio.sleep(0.5)
        fig["end"] = srv.status()
        fig["left_open"] = max(0, (fig["end"]["socks"] - base) if fig["end"] else 0)
        if len([c for c in closed_at if c is not None]) == n:
            # The server closed them all: does their memory come back?
            st = await settle(srv, "VmRSS", quiet=2.0, limit=20.0)
            fig["after"] = st

    await under_attack(run, res, srv, body)
    done = [c for c in closed_at if c is not None]
    idle, peak = fig.get("idle"), srv.peak("VmRSS")
    res.fig("%d peers sent %.0f MiB in all and never read; %d closed by the server within %d s%s" %
            (n, sum(sent) / MIB, len(done), window,
             "" if not done else " (first after %.1f s, last after %.1f s)" % (min(done), max(done))))
    res.fig("at the window's end the server still held %s of their connections%s" %
            (fig.get("left_open", "-"), "" if "server_closed_all" not in fig else
             "; it held none from %.1f s on" % fig["server_closed_all"]))
    res.fig("server RSS idle %s, peak %s, after the closes %s" %
            (mib(idle and idle["VmRSS"]), mib(peak), mib(fig.get("after") and fig["after"]["VmRSS"])))
    late = [c - stall[i] for i, c in enumerate(closed_at) if c is not None]
    if target is not None:
        res.check("all %d non-reading peers closed within %d s of their last progress" % (n, target),
                  len(done) == n and max(late) <= target,
                  "%d of %d closed; %s connections still open on the server" %
                  (len(done), n, fig.get("left_open")))
        after = fig.get("after")
        if run.asan:
            res.fig("memory return not checked under ASan (its quarantine keeps freed memory)")
        else:
            res.check("their memory was returned (RSS within 64 MiB of idle after the closes)",
                      after is not None and idle is not None and
                      after["VmRSS"] <= idle["VmRSS"] + 64 * MIB,
                      "not all closed" if after is None else "RSS %s" % mib(after["VmRSS"]))
    if rss_limit is not None and run.asan:
        res.fig("RSS limit not checked under ASan (its quarantine and redzones count in RSS)")
    elif rss_limit is not None:
        res.check("server RSS stayed under %s" % mib(rss_limit), peak is not None and peak < rss_limit,
                  "peak %s" % mib(peak))


async def nonreading(run, res):
    p = run.p
    args = []
    if p.get("nr_write_timeout") and run.has_flag("--write-timeout"):
        args = ["--write-timeout", str(p["nr_write_timeout"])]
    await nonreading_attack(run, res, "nonreading", p["nr_peers"], p["nr_window"], p["nr_target"], args)


async def mem_limit(run, res):
    if not run.has_flag("--mem-limit"):
        return res.skip("echo_server has no --mem-limit")
    p = run.p
    await nonreading_attack(run, res, "mem-limit", p["ml_peers"], p["ml_window"], None,
                            ["--mem-limit", "256M"], rss_limit=400 * MIB)


# ---- header-only reservations ----------------------------------------------------

async def _header_only(run, res, framing):
    n = run.p["ho_conns"]
    size = 16 * MIB
    hdr = len32(size) if framing == "len32" else varint(size)
    srv = Server(run, "header-only-" + framing, framing=framing)
    fig = {}
    socks = []

    async def one(loop):
        s = await open_conn(loop, srv.port, timeout=30)
        socks.append(s)
        await loop.sock_sendall(s, hdr)

    async def body():
        loop = asyncio.get_running_loop()
        fig["idle"] = await settle(srv, "VmSize", quiet=1.0, limit=10)
        base = fig["idle"]["socks"]
        t0 = now()
        try:
            for i in range(0, n, 250):
                await asyncio.gather(*(one(loop) for _ in range(min(250, n - i))))
            fig["connect_s"] = now() - t0
            # Every connection accepted and its header read.
            t1 = now()
            while now() - t1 < 60:
                st = srv.status()
                if st is None or st["socks"] >= base + n:
                    break
                await asyncio.sleep(0.2)
            fig["loaded"] = await settle(srv, "VmSize", quiet=1.5, limit=30)
        finally:
            for s in socks:
                s.close()
        st = srv.status()
        if st is not None:
            await wait_socks(srv, base, 30)
            fig["closed"] = await settle(srv, "VmSize", quiet=1.0, limit=15)

    await under_attack(run, res, srv, body)
    idle, loaded, closed = fig.get("idle"), fig.get("loaded"), fig.get("closed")
    if not (idle and loaded):
        res.check("measured the server's memory", False)
        return
    dv = loaded["VmSize"] - idle["VmSize"]
    dr = loaded["VmRSS"] - idle["VmRSS"]
    per = dv / n
    res.fig("%d %s connections that sent only a header announcing 16 MiB (connected in %.1f s, "
            "the server held %d sockets)" % (n, framing, fig.get("connect_s", 0), loaded["socks"]))
    res.fig("server VmSize idle %s, loaded %s (+%s, %.1f KiB per connection), closed %s" %
            (mib(idle["VmSize"]), mib(loaded["VmSize"]), mib(dv), per / 1024,
             mib(closed and closed["VmSize"])))
    res.fig("server VmRSS idle %s, loaded %s (+%s, %.1f KiB per connection)" %
            (mib(idle["VmRSS"]), mib(loaded["VmRSS"]), mib(dr), dr / n / 1024))
    res.check("all %d connections reached the server" % n, loaded["socks"] >= idle["socks"] + n,
              "it held %d sockets" % loaded["socks"])
    res.check("10 000 such connections would cost < 64 MiB of virtual memory above idle",
              per * 10000 < 64 * MIB, "%s projected for 10 000" % mib(per * 10000))


async def header_only(run, res):
    await _header_only(run, res, "len32")


async def header_only_varint(run, res):
    await _header_only(run, res, "varint")


# ---- connection flood to EMFILE and back ------------------------------------------

async def _flood(run, res, name, nofile, count, args, max_conns=None):
    srv = Server(run, name, args, nofile=nofile)
    fig = {}
    socks = []

    async def one(loop):
        try:
            s = await open_conn(loop, srv.port, timeout=3)
        except (OSError, asyncio.TimeoutError):
            fig["refused"] = fig.get("refused", 0) + 1
            return
        socks.append(s)

    async def body():
        loop = asyncio.get_running_loop()
        base = baseline_socks(srv)
        try:
            for i in range(0, count, 200):
                await asyncio.gather(*(one(loop) for _ in range(min(200, count - i))))
            fig["connected"] = len(socks)
            await asyncio.sleep(1.0)
            c0, t0 = cpu_seconds(srv.pid), now()
            await asyncio.sleep(run.p["flood_hold"])
            c1 = cpu_seconds(srv.pid)
            fig["cpu"] = (c1 - c0) / (now() - t0) if c0 is not None and c1 is not None else None
            fig["held"] = srv.status()
            if max_conns is not None:
                shut = sum(1 for s in socks if peer_closed(s))
                fig["shut"] = shut
        finally:
            for s in socks:
                s.close()
        fig["back_s"] = await wait_socks(srv, base, 30)
        # And back: a new client is served.
        cl = await in_thread(run_client, run, ["echo_client", "--connect", "tcp://%s:%d" % (HOST, srv.port),
                                                "--count", "20", "--timeout", "15000"], 30)
        fig["fresh"] = cl

    await under_attack(run, res, srv, body)
    held = fig.get("held") or {}
    res.fig("server descriptor limit %d; %d connections opened (%d timed out), held %d s; "
            "server held %s sockets, used %s CPU meanwhile" %
            (nofile, fig.get("connected", 0), fig.get("refused", 0), run.p["flood_hold"],
             held.get("socks", "-"), "-" if fig.get("cpu") is None else "%.0f%%" % (100 * fig["cpu"])))
    res.check("no busy loop while flooded (server CPU < 50%)",
              fig.get("cpu") is not None and fig["cpu"] < 0.5)
    res.check("the server let go of every flood connection after they closed",
              fig.get("back_s") is not None, "still holding sockets after 30 s")
    cl = fig.get("fresh")
    res.check("a new client is served afterwards", cl is not None and cl["status"] == 0,
              cl and cl["err"])
    if max_conns is not None:
        res.check("at most %d connections held" % max_conns,
                  held.get("socks", 1 << 30) <= max_conns + 2, "held %s" % held.get("socks"))
        res.fig("%s of the connections beyond the limit were closed by the server" % fig.get("shut"))
    lines = [x for x in srv.stderr_lines() if "accept" in x]
    res.fig("server stderr lines about accept: %d" % len(lines))


async def flood(run, res):
    nofile = run.p["flood_nofile"]
    await _flood(run, res, "flood", nofile, 2 * nofile, [])


async def max_conns(run, res):
    if not run.has_flag("--max-conns"):
        return res.skip("echo_server has no --max-conns")
    await _flood(run, res, "max-conns", 4096, 300, ["--max-conns", "50"], max_conns=50)


# ---- RST mid-frame -------------------------------------------------------------------

async def rst(run, res):
    srv = Server(run, "rst")
    rng = random.Random(1)
    fig = {"conns": 0, "bytes": 0}
    blob = rng.randbytes(MIB)

    async def one(loop):
        s = await open_conn(loop, srv.port)
        try:
            kind = rng.randrange(4)
            if kind == 0:  # a reset right after connecting
                data = b""
            elif kind == 1:  # inside a header
                data = len32(MIB)[: rng.randint(1, 3)]
            elif kind == 2:  # inside a 1 MiB payload
                data = len32(MIB) + blob[: rng.randint(0, MIB - 1)]
            else:  # after whole messages, inside the next one
                data = (len32(100) + blob[:100]) * rng.randint(1, 20) + len32(5000) + blob[:2500]
            if data:
                await loop.sock_sendall(s, data)
            fig["bytes"] += len(data)
            fig["conns"] += 1
        finally:
            set_rst(s)
            s.close()

    async def body():
        loop = asyncio.get_running_loop()
        base = baseline_socks(srv)
        fig["before"] = await settle(srv, "VmRSS", quiet=0.5, limit=5)
        t0 = now()
        while now() - t0 < run.p["rst_secs"]:
            await asyncio.gather(*(one(loop) for _ in range(run.p["rst_batch"])))
        fig["back_s"] = await wait_socks(srv, base, 30)
        fig["after"] = await settle(srv, "VmRSS", quiet=1.0, limit=10)

    await under_attack(run, res, srv, body)
    b, a = fig.get("before"), fig.get("after")
    res.fig("%d connections reset mid-frame after %.0f MiB in all; server RSS before %s, after %s" %
            (fig["conns"], fig["bytes"] / MIB, mib(b and b["VmRSS"]), mib(a and a["VmRSS"])))
    res.check("the server let go of every reset connection", fig.get("back_s") is not None)
    if run.asan:
        res.fig("memory not checked under ASan (its quarantine keeps freed memory; LSan checks leaks)")
    else:
        res.check("no memory kept (RSS after within 64 MiB of before)",
                  bool(a and b) and a["VmRSS"] <= b["VmRSS"] + 64 * MIB)


# ---- garbage and silent TLS ---------------------------------------------------------

def client_hello():
    """The bytes of a real TLS ClientHello, from an SSLObject over memory
    BIOs (nothing is sent anywhere)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inb, outb, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outb.read()


async def tls_garbage(run, res):
    srv = Server(run, "tls-garbage", tls=True)
    rng = random.Random(2)
    ch = client_hello()
    fig = {"conns": 0, "closed": 0, "late": 0, "slowest": 0.0}

    async def one(loop):
        s = await open_conn(loop, srv.port)
        kind = rng.randrange(4)
        try:
            if kind == 0:  # random bytes
                data = rng.randbytes(rng.randint(1, 65536))
            elif kind == 1:  # a TLS record header, then random bytes
                data = b"\x16\x03\x01" + struct.pack("!H", rng.randint(0, 65535)) + rng.randbytes(
                    rng.randint(0, 20000))
            elif kind == 2:  # a real ClientHello cut short, then a reset
                data = ch[: rng.randint(1, len(ch) - 1)]
            else:  # a whole ClientHello, then a reset in the handshake
                data = ch
            try:
                await loop.sock_sendall(s, data)
            except OSError:
                pass
            fig["conns"] += 1
            if kind < 2:
                t0 = now()
                if await wait_closed(loop, s, 20.0):
                    fig["closed"] += 1
                    fig["slowest"] = max(fig["slowest"], now() - t0)
                else:
                    fig["late"] += 1
            else:
                await asyncio.sleep(rng.random() * 0.05)
                set_rst(s)
        finally:
            s.close()

    async def body():
        loop = asyncio.get_running_loop()
        base = baseline_socks(srv)
        t0 = now()
        while now() - t0 < run.p["tls_secs"]:
            await asyncio.gather(*(one(loop) for _ in range(run.p["tls_batch"])))
        fig["back_s"] = await wait_socks(srv, base, 30)

    await under_attack(run, res, srv, body)
    res.fig("%d connections to the tls:// port: random bytes, bogus records, ClientHellos cut "
            "short or reset; %d garbage senders closed by the server within 20 s (the slowest "
            "after %.1f s), %d not" % (fig["conns"], fig["closed"], fig["slowest"], fig["late"]))
    res.check("every garbage sender was closed by the server within 20 s (its TLS handshake "
              "timeout is 10 s)",
              fig["late"] == 0 and fig["closed"] > 0)
    res.check("the server let go of every connection", fig.get("back_s") is not None)


async def tls_silent(run, res):
    p = run.p
    n, window, target = p["silent_peers"], p["silent_window"], p["silent_target"]
    srv = Server(run, "tls-silent", tls=True)

    async def peer(loop, t0):
        s = await open_conn(loop, srv.port)
        try:
            if await wait_closed(loop, s, window):
                return now() - t0
            return None
        finally:
            s.close()

    done = await closing_times(run, res, srv, n, peer)
    res.fig("%d connections to the tls:// port that never send: %d closed by the server within "
            "the %d s window%s" % (n, len(done), window,
                                   "" if not done else " (after %.1f to %.1f s)" % (done[0], done[-1])))
    res.check("all %d silent peers closed within %d s" % (n, target),
              len(done) == n and done[-1] <= target, "%d of %d closed" % (len(done), n))


# ---- hostile HELLO values ------------------------------------------------------------

async def read_frames(loop, s, timeout, on_frame):
    """Reads len32/control frames from s for timeout seconds, calling
    on_frame(header4, payload); returns the time the peer closed, or None."""
    buf = bytearray()
    t0 = now()
    while now() - t0 < timeout:
        try:
            data = await asyncio.wait_for(loop.sock_recv(s, 65536), timeout - (now() - t0))
        except asyncio.TimeoutError:
            return None
        except OSError:
            return now() - t0
        if not data:
            return now() - t0
        buf += data
        while len(buf) >= 4:
            if buf[0] == 0xFF:
                n = 4 + struct.unpack("!H", bytes(buf[2:4]))[0]
            else:
                n = 4 + struct.unpack("!I", bytes(buf[:4]))[0]
            if len(buf) < n:
                break
            on_frame(bytes(buf[:4]), bytes(buf[4:n]))
            del buf[:n]
    return None


async def hello_interval(run, res):
    """A peer announces a heartbeat interval of 0xFFFFFFFF ms, then never
    answers a PING (a half-open peer that switched detection off)."""
    window = run.p["hello_window"]
    srv = Server(run, "hello-interval", ["--heartbeat", "1000"])
    fig = {"pings": []}

    async def body():
        loop = asyncio.get_running_loop()
        s = await open_conn(loop, srv.port)
        try:
            await loop.sock_sendall(s, hello(0xFFFFFFFF))
            t0 = now()

            def on_frame(h, payload):
                if h[0] == 0xFF and h[1] == CTRL_PING:
                    fig["pings"].append(now() - t0)

            fig["closed"] = await read_frames(loop, s, window, on_frame)
        finally:
            s.close()

    await under_attack(run, res, srv, body)
    pings = fig["pings"]
    res.fig("server --heartbeat 1000; the peer announced 4294967295 ms and never answers: "
            "%d PINGs in %d s (at %s s), %s" %
            (len(pings), window, ", ".join("%.1f" % t for t in pings[:6]) or "-",
             "closed after %.1f s" % fig["closed"] if fig.get("closed") is not None else "never closed"))
    res.check("the server detects the silent peer (closes it) within %d s" % window,
              fig.get("closed") is not None)


async def _violation(loop, port, first, second):
    """Sends first (+ second); returns seconds until the server closed the
    connection, or None (10 s)."""
    s = await open_conn(loop, port)
    try:
        await loop.sock_sendall(s, first)
        await asyncio.sleep(0.2)
        if second:
            await loop.sock_sendall(s, second)
        t0 = now()
        if await wait_closed(loop, s, 10.0):
            return now() - t0
        return None
    finally:
        s.close()


VIOLATIONS = {
    "a duplicate HELLO": (hello(1000), hello(1000)),
    "a PING before HELLO": (ctrl(CTRL_PING, bytes(8)), None),
    "a PONG before HELLO": (ctrl(3, bytes(8)), None),
}


async def hello_violations(run, res):
    srv = Server(run, "hello-violations", ["--heartbeat", "1000"])
    fig = {}

    async def body():
        loop = asyncio.get_running_loop()
        for name, (a, b) in VIOLATIONS.items():
            fig[name] = await _violation(loop, srv.port, a, b)
        await asyncio.sleep(0.5)

    await under_attack(run, res, srv, body)
    for name in VIOLATIONS:
        res.check("the server closes a connection that sends %s" % name, fig.get(name) is not None,
                  "still open after 10 s")
    res.fig("server's reasons: " + " | ".join(x[x.find(": ") + 2:][:110] for x in srv.stderr_lines()))


async def hello_reason(run, res):
    """Issue #9 bug 5: a peer that negotiated control frames and then
    sends a duplicate HELLO (or a PING before HELLO) must read about the
    protocol violation, not an absurd message size."""
    srv = Server(run, "hello-reason")

    async def body():
        loop = asyncio.get_running_loop()
        for name in ("a duplicate HELLO", "a PING before HELLO"):
            await _violation(loop, srv.port, *VIOLATIONS[name])
        await asyncio.sleep(0.5)

    await under_attack(run, res, srv, body)
    lines = srv.stderr_lines()
    res.fig("server's reasons: " + " | ".join(x[x.find(": ") + 2:][:110] for x in lines))
    res.check("two reasons logged", len(lines) >= 2, "%d lines" % len(lines))
    bad = [x for x in lines if "-byte message" in x]
    res.check("no reason reports a control frame as an absurd message size", not bad,
              bad[0][:150] if bad else "")


# ---- a hostile server against the clients ----------------------------------------------

def run_client(run, argv, guard, watch=True):
    """Runs an example client (argv[0] is its name) with a hang guard of
    guard seconds; returns its status, time, last error line and peak
    VmRSS/VmSize."""
    argv = [run.bins[argv[0]]] + argv[1:]
    t0 = now()
    p = spawn(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    peak_rss = peak_vm = 0
    out, err = b"", b""
    hung = False
    while True:
        try:
            o, e = p.communicate(timeout=0.1)
            out += o or b""
            err += e or b""
            break
        except subprocess.TimeoutExpired:
            st = proc_status(p.pid) if watch else None
            if st:
                peak_rss, peak_vm = max(peak_rss, st["VmRSS"]), max(peak_vm, st["VmSize"])
            if now() - t0 > guard:
                hung = True
                reap(p, grace=2.0)
                o, e = p.communicate()
                out += o or b""
                err += e or b""
                break
    lines = [x for x in err.decode(errors="replace").splitlines() if x.strip()]
    olines = out.decode(errors="replace").splitlines()
    return {"status": p.returncode, "secs": now() - t0, "hung": hung, "rss": peak_rss, "vm": peak_vm,
            "err": lines[-1] if lines else "", "out": olines}


class FakeServer:
    """A hostile len32 'echo server' on 127.0.0.1 port 0."""

    def __init__(self, mode):
        self.mode = mode
        self.conns = 0
        self.writers = []
        self.tasks = []

    async def handle(self, reader, writer):
        self.conns += 1
        self.writers.append(writer)
        self.tasks.append(asyncio.current_task())
        try:
            if self.mode == "tls-silent":
                await reader.read()  # accept the TCP connection, never answer
                return
            # The hostile answer goes out at once: a client that already
            # sent its message on an earlier connection gets it too.
            if self.mode == "huge-header":
                writer.write(len32(0x7FFFFFFF) + bytes(100))
            elif self.mode == "garbage":
                writer.write(random.Random(3).randbytes(65536))
            elif self.mode == "trickle":
                # Announces 16 MiB, then one byte a second.
                writer.write(len32(16 * MIB))
                for _ in range(3600):
                    await writer.drain()
                    writer.write(b"x")
                    await asyncio.sleep(1.0)
            await writer.drain()
            await reader.read()
        except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # (cancelled: the suite is done with this server)
        finally:
            writer.close()

    async def __aenter__(self):
        self.srv = await asyncio.start_server(self.handle, HOST, 0)
        self.port = self.srv.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.srv.close()
        for w in self.writers:
            w.transport.abort()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.srv.wait_closed()


async def _hostile_server(run, res, mode, clients):
    p = run.p
    tls = mode == "tls-silent"
    rss_limit = p["client_rss_limit"]
    async with FakeServer(mode) as fs:
        url = "%s://%s:%d" % ("tls" if tls else "tcp", HOST, fs.port)
        runs = []
        if "echo_client" in clients:
            argv = ["echo_client", "--connect", url, "--count", "3", "--size", "100"]
            if tls:
                argv += ["--ca", run.cert("ca.pem")]
            argv += p["echo_client_timeouts"]
            runs.append(("echo_client", argv, p["echo_client_bound"]))
        if "reconnecting_client" in clients:
            argv = ["reconnecting_client", "--connect", url, "--count", "1", "--interval", "200",
                    "--max-attempts", "2", "--initial-backoff", "200"]
            if tls:
                argv += ["--ca", run.cert("ca.pem")]
            runs.append(("reconnecting_client", argv, p["rc_bound"]))
        for name, argv, bound in runs:
            r = await in_thread(run_client, run, argv, bound + 15)
            why = r["err"]
            if name == "reconnecting_client":
                gave = [x for x in r["out"] if "giving up" in x or "disconnected" in x]
                why = gave[-1] if gave else why
            res.fig("%s: %s after %.1f s, status %s, peak RSS %s, VmSize %s: %r" %
                    (name, "killed (hung)" if r["hung"] else "exited", r["secs"], r["status"],
                     mib(r["rss"]), mib(r["vm"]), why[:150]))
            res.check("%s fails within %d s (not a hang)" % (name, bound),
                      not r["hung"] and r["secs"] <= bound and r["status"] not in (0, None),
                      "status %s after %.1f s" % (r["status"], r["secs"]))
            res.check("%s says why" % name, bool(why.strip()), "no error line")
            res.check("%s stays under %s RSS" % (name, mib(rss_limit)), r["rss"] < rss_limit,
                      mib(r["rss"]))


async def client_huge_header(run, res):
    await _hostile_server(run, res, "huge-header", ("echo_client", "reconnecting_client"))


async def client_garbage(run, res):
    await _hostile_server(run, res, "garbage", ("echo_client", "reconnecting_client"))


async def client_tls_silent(run, res):
    await _hostile_server(run, res, "tls-silent", ("echo_client",))


async def client_trickle(run, res):
    await _hostile_server(run, res, "trickle", ("echo_client",))


# reconnecting_client takes at least 20 s per attempt to give up on a TLS
# handshake (tether_client_opts::min_connect_timeout_ms; no command-line
# option shortens it), so these two run in the long run only.
LONG_ONLY = "long run only (reconnecting_client needs 20 s per attempt to give up)"


async def rc_tls_silent(run, res):
    if run.mode != "long":
        return res.skip(LONG_ONLY)
    await _hostile_server(run, res, "tls-silent", ("reconnecting_client",))


async def rc_trickle(run, res):
    if run.mode != "long":
        return res.skip(LONG_ONLY)
    await _hostile_server(run, res, "trickle", ("reconnecting_client",))


# ---- soak -----------------------------------------------------------------------------

def soak_size(rng):
    r = rng.random()
    if r < 0.4:
        return rng.randint(0, 64)
    if r < 0.7:
        return rng.randint(65, 4096)
    if r < 0.9:
        return rng.randint(4097, 65536)
    if r < 0.99:
        return rng.randint(65537, 512 * 1024)
    return rng.randint(512 * 1024, 2 * MIB)


async def soak(run, res):
    p = run.p
    secs = p["soak_secs"]
    srv = Server(run, "soak")
    pool = random.Random(4).randbytes(4 * MIB)
    st = {"msgs": 0, "bytes": 0, "lost": 0, "corrupted": 0, "conns": 0, "errors": []}
    rss = {}

    async def worker(i, t_end):
        rng = random.Random(100 + i)
        while now() < t_end:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, srv.port), 10)
            except (OSError, asyncio.TimeoutError) as e:
                st["errors"].append("connect: %s" % e)
                await asyncio.sleep(0.5)
                continue
            st["conns"] += 1
            budget = rng.randint(20, 400)  # messages before reconnecting
            pending = asyncio.Queue()
            depth = asyncio.Semaphore(8)

            async def reader_task():
                while True:
                    item = await pending.get()
                    if item is None:
                        return
                    off, n = item
                    hdr = await asyncio.wait_for(reader.readexactly(4), 30)
                    data = await asyncio.wait_for(reader.readexactly(struct.unpack("!I", hdr)[0]), 30)
                    if data != pool[off:off + n]:
                        st["corrupted"] += 1
                    st["msgs"] += 1
                    st["bytes"] += n
                    depth.release()

            rt = asyncio.create_task(reader_task())
            sent = 0
            try:
                while sent < budget and now() < t_end:
                    await depth.acquire()
                    n = soak_size(rng)
                    off = rng.randint(0, len(pool) - n)
                    writer.write(len32(n) + pool[off:off + n])
                    pending.put_nowait((off, n))
                    sent += 1
                    await writer.drain()
                pending.put_nowait(None)
                await asyncio.wait_for(rt, 60)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as e:
                if len(st["errors"]) < 5:
                    st["errors"].append("%s: %s" % (type(e).__name__, e))
                rt.cancel()
                st["lost"] += pending.qsize() + 1
            finally:
                writer.close()

    async def body():
        t0 = now()
        rss["start"] = srv.status()
        t_end = t0 + secs
        ws = [asyncio.create_task(worker(i, t_end)) for i in range(p["soak_conns"])]
        await asyncio.sleep(secs / 2)
        rss["middle"] = srv.status()
        await asyncio.gather(*ws)
        rss["end"] = srv.status()
        st["secs"] = now() - t0

    await under_attack(run, res, srv, body)

    def r(k):
        return mib(rss.get(k) and rss[k]["VmRSS"])

    res.fig("%d connections (%d opened in all, reconnecting every 20-400 messages) for %.0f s: "
            "%d messages, %.0f MiB echoed, %d lost, %d corrupted" %
            (p["soak_conns"], st["conns"], st.get("secs", 0), st["msgs"], st["bytes"] / MIB, st["lost"],
             st["corrupted"]))
    res.fig("server RSS start %s, middle %s, end %s" % (r("start"), r("middle"), r("end")))
    res.check("messages were echoed", st["msgs"] > 0)
    res.check("nothing lost", st["lost"] == 0, "; ".join(st["errors"][:3]))
    res.check("nothing corrupted", st["corrupted"] == 0)


# Name, function, one-line description; run in this order.
ATTACKS = [
    ("slowloris", slowloris, "peers trickle one byte per second into a frame"),
    ("nonreading", nonreading, "peers send 16 MiB messages and never read the echoes"),
    ("mem-limit", mem_limit, "--mem-limit 256M with non-reading 16 MiB peers (60; short run 20)"),
    ("header-only", header_only, "connections send only a len32 header announcing 16 MiB"),
    ("header-only-varint", header_only_varint, "the same with a varint header"),
    ("flood", flood, "connection flood to EMFILE (low ulimit -n) and back"),
    ("max-conns", max_conns, "--max-conns 50 against 300 connections"),
    ("rst", rst, "connections reset in the middle of a frame"),
    ("tls-garbage", tls_garbage, "random bytes and cut handshakes to a tls:// port"),
    ("tls-silent", tls_silent, "connections to a tls:// port that never send"),
    ("hello-interval", hello_interval, "a HELLO announcing heartbeat 0xFFFFFFFF ms, then silence"),
    ("hello-violations", hello_violations, "a duplicate HELLO, a PING or PONG before HELLO"),
    ("hello-reason", hello_reason, "the reasons logged for a duplicate HELLO / PING before HELLO"),
    ("client-huge-header", client_huge_header, "a server answering with a 2 GiB length header"),
    ("client-garbage", client_garbage, "a server answering with random bytes"),
    ("client-tls-silent", client_tls_silent, "a server that never answers the TLS handshake"),
    ("client-trickle", client_trickle, "a server trickling a 16 MiB echo at one byte per second"),
    ("rc-tls-silent", rc_tls_silent, "reconnecting_client against a silent TLS server"),
    ("rc-trickle", rc_trickle, "reconnecting_client against a trickling server"),
    ("soak", soak, "mixed sizes, reconnects, every echo checked"),
]
