# SPDX-License-Identifier: MIT
"""Shared parts of the stress suite: the server under attack, its memory
and descriptor figures from /proc, the well-behaved probe client, the wire
formats an attacker needs, and a child-process reaper.

Standard library only. Every socket goes to 127.0.0.1; every child process
is started through `spawn()`, which makes the kernel kill it if this
program dies (PR_SET_PDEATHSIG) and records it so `reap_all()` can end it.
"""

import asyncio
import ctypes
import json
import os
import resource
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time

HOST = "127.0.0.1"
HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1024 * 1024

_children = []
_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def raise_nofile():
    """Raises this process's soft RLIMIT_NOFILE to the hard limit (children
    inherit it). Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def spawn(argv, nofile=None, **kw):
    """Popen that dies with us; nofile lowers the child's descriptor limit
    (as `ulimit -n` would)."""

    def pre():
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    p = subprocess.Popen(argv, preexec_fn=pre, **kw)
    _children.append(p)
    return p


def reap(p, grace=10.0):
    """SIGTERM, then SIGKILL after grace seconds; always waits. Returns
    (exit status, True if it had to be killed)."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return p.returncode, True
    return p.returncode, False


def reap_all():
    for p in _children:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass


def proc_status(pid):
    """VmSize and VmRSS of pid in bytes, and its number of open sockets;
    None when the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            text = f.read()
        socks = 0
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:"):
                    socks += 1
            except OSError:
                pass
    except OSError:
        return None
    out = {"socks": socks}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmSize", "VmRSS", "VmPeak", "VmHWM"):
            out[k] = int(v.split()[0]) * 1024
    if "VmRSS" not in out:  # a zombie has no memory lines
        return None
    return out


def cpu_seconds(pid):
    """User + system CPU seconds of pid so far (None when gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mib(n):
    return "%.1f MiB" % (n / MIB) if n else "-"


def len32(n):
    return struct.pack("!I", n)


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


# Control frames of tether's len32 framing (lib/frame.h): 0xFF, a type, a
# 16-bit big-endian payload length. HELLO carries version 1, flags 0 and the
# heartbeat interval in ms (be32).
CTRL_HELLO, CTRL_PING, CTRL_PONG = 1, 2, 3


def ctrl(ctype, payload):
    return bytes([0xFF, ctype]) + struct.pack("!H", len(payload)) + payload


def hello(interval_ms):
    return ctrl(CTRL_HELLO, bytes([1, 0]) + struct.pack("!I", interval_ms))


class Server:
    """One echo_server under attack, with its output in the run's
    directory. `start()` waits for its `listening on` line."""

    def __init__(self, run, name, args=(), tls=False, nofile=None, framing=None):
        self.run = run
        self.name = name
        self.tls = tls
        self.framing = framing or "len32"
        self.argv = [run.bins["echo_server"], "--listen", "%s://%s:0" % ("tls" if tls else "tcp", HOST)]
        if tls:
            self.argv += ["--cert", run.cert("server.pem"), "--key", run.cert("server.key")]
        if framing:
            self.argv += ["--framing", framing]
        self.argv += list(args)
        self.nofile = nofile
        self.out = os.path.join(run.tmp, name + ".server.out")
        self.err = os.path.join(run.tmp, name + ".server.err")
        self.proc = None
        self.port = None
        self.samples = []

    def start(self, timeout=30.0):
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = spawn(self.argv, nofile=self.nofile, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.out) as f:
                for line in f:
                    if line.startswith("listening on "):
                        self.port = int(line.strip().rsplit(":", 1)[1])
                        return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("%s did not start: %s" % (" ".join(self.argv), self.stderr_tail()))

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self):
        return proc_status(self.pid) if self.alive() else None

    def stderr_lines(self):
        try:
            with open(self.err, errors="replace") as f:
                return f.read().splitlines()
        except OSError:
            return []

    def stderr_tail(self, n=5):
        return " | ".join(self.stderr_lines()[-n:])

    def stop(self):
        """SIGTERM and wait (10 s, more for a sanitizer build). Returns a
        list of problems: an exit status other than 0, a kill, a sanitizer
        report."""
        if self.proc is None:
            return ["never started"]
        was_alive = self.alive()
        status, killed = reap(self.proc, grace=30.0 if self.run.asan else 10.0)
        problems = []
        if not was_alive:
            problems.append("died during the attack (status %s)" % status)
        elif killed:
            problems.append("did not exit within the grace period after SIGTERM (killed)")
        elif status != 0:
            problems.append("exit status %s after SIGTERM" % status)
        for line in self.stderr_lines():
            if "Sanitizer" in line or "runtime error:" in line:
                problems.append("sanitizer: " + line.strip()[:160])
                break
        return problems

    async def sample_loop(self, period=0.25):
        """Appends (t, status) samples until cancelled."""
        t0 = time.monotonic()
        while True:
            st = self.status()
            if st is not None:
                self.samples.append((time.monotonic() - t0, st))
            await asyncio.sleep(period)

    def peak(self, key):
        vals = [s[key] for _, s in self.samples if key in s]
        return max(vals) if vals else None


async def settle(srv, key="VmSize", quiet=1.0, limit=30.0):
    """Waits until the server's `key` figure stopped changing for `quiet`
    seconds (at most `limit`); returns its status then."""
    last = srv.status()
    since = time.monotonic()
    deadline = since + limit
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        st = srv.status()
        if st is None:
            return None
        if last is None or st[key] != last[key] or st["socks"] != last["socks"]:
            last, since = st, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return st
    return last


async def wait_socks(srv, want, limit):
    """Waits until the server holds at most `want` sockets (or `limit`
    seconds pass); returns the time it took, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        st = srv.status()
        if st is None:
            return None
        if st["socks"] <= want:
            return time.monotonic() - t0
        await asyncio.sleep(0.1)
    return None


class Probe:
    """The well-behaved client: a separate process (probe.py) that sends a
    small message every interval on one connection, checks every echo and
    reports the figures as JSON when its stdin closes."""

    def __init__(self, run, srv, interval=0.1):
        argv = [sys.executable, os.path.join(HERE, "probe.py"), "--port", str(srv.port),
                "--interval", str(interval), "--timeout", str(run.probe_timeout)]
        if srv.tls:
            argv += ["--ca", run.cert("ca.pem")]
        argv += ["--framing", srv.framing]
        self.proc = spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL)
        self.result = None

    def wait_ready(self, timeout=30.0):
        """Waits for the probe's `ready` line (its first echo came back)."""
        import select

        deadline = time.monotonic() + timeout
        fd = self.proc.stdout
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.2)
            if r:
                line = fd.readline().decode(errors="replace").strip()
                if line == "ready":
                    return True
                if not line:
                    return False
        return False

    def finish(self):
        try:
            # It finishes the echo in flight first (at most its --timeout).
            out, _ = self.proc.communicate(timeout=30.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        try:
            self.result = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.result = {"sent": 0, "answered": 0, "failures": 1,
                           "errors": ["probe produced no summary"], "reconnects": 0}
        return self.result

    @staticmethod
    def describe(r):
        if not r:
            return "probe: none"
        s = "probe: %d/%d echoes answered, %d failures" % (r["answered"], r["sent"], r["failures"])
        if r.get("p50_ms") is not None:
            s += ", latency p50 %.1f ms p99 %.1f ms max %.1f ms" % (r["p50_ms"], r["p99_ms"], r["max_ms"])
        if r.get("max_gap_s") is not None:
            s += ", longest gap %.1f s" % r["max_gap_s"]
        if r.get("errors"):
            s += "; first error: " + r["errors"][0]
        return s

    @staticmethod
    def ok(r):
        return bool(r) and r["answered"] > 0 and r["failures"] == 0


def client_ctx(run):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=run.cert("ca.pem"))
    return ctx


async def open_conn(loop, port, timeout=10.0):
    """A non-blocking socket connected to 127.0.0.1:port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(s, (HOST, port)), timeout)
    except BaseException:
        s.close()
        raise
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def set_rst(s):
    """Makes close() send a RST (SO_LINGER with a zero timeout)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def peer_closed(s):
    """True when the other end closed or reset s, without reading from it."""
    import select

    p = select.poll()
    p.register(s, select.POLLRDHUP | select.POLLERR | select.POLLHUP)
    for _, ev in p.poll(0):
        if ev & (select.POLLRDHUP | select.POLLERR | select.POLLHUP):
            return True
    return False


async def wait_closed(loop, s, timeout):
    """Reads (and discards) from s for at most timeout seconds; True when the
    peer closed or reset it in that time."""
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            data = await asyncio.wait_for(loop.sock_recv(s, 65536), left)
            if not data:
                return True
    except asyncio.TimeoutError:
        return False
    except OSError:
        return True
