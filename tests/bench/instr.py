#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""instr.py: user-space instructions and system calls per operation, the
benchmark figures that machine noise cannot move.

Each implementation (any program following PROTOCOL.md) runs each scenario
twice, with --count N and --count 2N; the difference divided by the
operations added is the cost of one operation, with start-up, connection
set-up and exit cancelled out. The client is the process started (the
parent), the server the child it forks.

- instructions: valgrind --tool=callgrind, one output file per process,
  without the final report (bench_emit_*), whose sort of the latencies
  would not cancel (repeatable to the instruction on the same binary and inputs; only the
  batching that depends on timing, e.g. how many messages one read() finds
  in thr, still varies a little);
- system calls: strace -f -ff, one trace file per process, one line per
  call.

Usage: tests/bench/instr.py [--tls | --ws | --large | --acks | --batch | --fanin] [--no-syscalls]
                            [--scale F] [IMPL ...]
IMPL is a path, or a name looked up in $BENCH_DIR (default build/tests/bench
of this repository) as given and as bench_NAME; default: raw tether_bench
(tether_bench alone with --ws).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# (label, arguments, N): N is the smaller count; the larger is 2N.
TCP = [
    ("lat tcp 64 B, one round trip", ["--scenario", "lat", "--transport", "tcp", "--size", "64"], 1000),
    ("thr tcp 64 B, one message", ["--scenario", "thr", "--transport", "tcp", "--size", "64"], 20000),
    ("hs tcp, one connection", ["--scenario", "hs", "--transport", "tcp", "--size", "64"], 100),
]
# --ws: tether's WebSocket transport next to its own tcp (issue #15).
WS = [
    ("thr tcp 64 B, one message", ["--scenario", "thr", "--transport", "tcp", "--size", "64"], 20000),
    ("thr ws 64 B, one message", ["--scenario", "thr", "--transport", "ws", "--size", "64"], 20000),
    ("thr tcp 1 MiB, one message", ["--scenario", "thr", "--transport", "tcp", "--size", "1048576"], 100),
    ("thr ws 1 MiB, one message", ["--scenario", "thr", "--transport", "ws", "--size", "1048576"], 100),
]
# --acks: tether_bench's thr through a tether_client, plain (--client)
# and with at_least_once (--acks) (issue #14: what acknowledgements cost).
ACKS = [
    ("thr tcp 64 B, one message", ["--scenario", "thr", "--transport", "tcp", "--size", "64"], 20000),
    ("thr tcp 1 KiB, one message", ["--scenario", "thr", "--transport", "tcp", "--size", "1024"], 20000),
]
ACKS_IMPLS = [("client", "tether_bench", ["--client"]), ("acks", "tether_bench", ["--acks"])]
# --batch: tether_bench's thr client with tether_conn_send_batch() (its
# default) next to one tether_conn_send() per message (--per-msg).
BATCH = ACKS
BATCH_IMPLS = [("batch", "tether_bench", []), ("per-msg", "tether_bench", ["--per-msg"])]
# --fanin: tether_bench's fan-in, 16 client connections into 1 server loop
# and into 2 (issue #12), batch sends and --per-msg. The client is the
# process with the client's loops, the server the child with its own.
FANIN = [
    ("fanin tcp 64 B, 1 server loop, one message",
     ["--scenario", "fanin", "--transport", "tcp", "--size", "64", "--loops", "1"], 50000),
    ("fanin tcp 64 B, 2 server loops, one message",
     ["--scenario", "fanin", "--transport", "tcp", "--size", "64", "--loops", "2"], 50000),
]
# --large: frames bigger than the loop's read buffer (issue #17).
LARGE = [
    ("thr tcp 1 MiB, one message", ["--scenario", "thr", "--transport", "tcp", "--size", "1048576"], 100),
    ("thr tls 64 KiB, one message", ["--scenario", "thr", "--transport", "tls", "--size", "65536"], 200),
]
TLS = [
    ("lat tls 64 B, one round trip", ["--scenario", "lat", "--transport", "tls", "--size", "64"], 500),
    ("thr tls 64 B, one message", ["--scenario", "thr", "--transport", "tls", "--size", "64"], 10000),
    ("hs tls, one connection", ["--scenario", "hs", "--transport", "tls", "--size", "64"], 10),
]


def ops(args, count):
    """Operations a run of `count` performs, warm-up included (PROTOCOL.md)."""
    scen = args[args.index("--scenario") + 1]
    if scen == "lat":
        return count + min(count // 10, 1000)
    if scen == "hs":
        return count + 1
    return count


def find_impl(name):
    if "/" in name:
        if os.access(name, os.X_OK):
            return os.path.abspath(name)
        sys.exit(f"instr: {name}: not an executable")
    bdir = os.environ.get("BENCH_DIR", os.path.join(REPO, "build", "tests", "bench"))
    for cand in (name, "bench_" + name):
        p = os.path.join(bdir, cand)
        if os.access(p, os.X_OK):
            return p
    p = shutil.which(name)
    if p:
        return p
    sys.exit(f"instr: {name}: not found in {bdir} (as {name} or bench_{name}) nor in $PATH;"
             " build first (cmake --build build)")


def run(cmd, tmp, what):
    env = dict(os.environ, BENCH_TIMEOUT_S=os.environ.get("BENCH_TIMEOUT_S", "1200"))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out, err = p.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise RuntimeError(f"{what}: timed out")
    line = out.decode(errors="replace").strip().splitlines()
    if p.returncode != 0 or not line or '"skip"' in line[-1]:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        why = line[-1] if line else "; ".join(tail)
        raise RuntimeError(f"{what}: exit {p.returncode}: {why}")
    return p.pid


def per_process(tmp, prefix, parent, value, threads=None):
    """{'client': v, 'server': v} from one file per process named prefix.PID.
    With threads (strace's one file per thread), the threads' files are
    summed into their process's: threads(path) lists the thread ids that
    file's thread created."""
    files = {}
    for f in os.listdir(tmp):
        if f.startswith(prefix + "."):
            files[int(f.rsplit(".", 1)[1])] = os.path.join(tmp, f)
    group = {}
    if threads is not None:
        # strace runs the client as its own child: the client is the one
        # thread no other thread created.
        made = {c for f in files.values() for c, _ in threads(f)}
        roots = [t for t in files if t not in made]
        if len(roots) != 1:
            raise RuntimeError(f"cannot tell the client among {sorted(files)}")
        parent = roots[0]
        todo = [parent] if parent in files else []
        group[parent] = parent
        while todo:
            tid = todo.pop()
            for child, is_thread in threads(files[tid]):
                group[child] = group[tid] if is_thread else child
                if child in files:
                    todo.append(child)
    res = {}
    for pid, path in files.items():
        leader = group.get(pid, pid)
        role = "client" if leader == parent else "server"
        if role == "server":
            res.setdefault("server_pids", set()).add(leader)
        res[role] = res.get(role, 0) + value(path)
    if len(res.pop("server_pids", ())) != 1 or set(res) != {"client", "server"}:
        raise RuntimeError(f"expected one client and one server process, got {sorted(files)}")
    return res


def callgrind_ir(path):
    with open(path, errors="replace") as fh:
        for ln in fh:
            m = re.match(r"(?:summary|totals):\s+(\d+)", ln)
            if m:
                return int(m.group(1))
    raise RuntimeError(f"{path}: no summary line")


def strace_calls(path):
    n = 0
    with open(path, errors="replace") as fh:
        for ln in fh:
            if ln.startswith(("+++", "---")) or "resumed>" in ln:
                continue
            n += 1
    return n


def strace_children(path):
    """(tid, is_thread) for each thread or process this one created."""
    out = []
    with open(path, errors="replace") as fh:
        for ln in fh:
            m = re.match(r"(clone3?|fork|vfork)\(.*\)\s+=\s+(\d+)", ln)
            if m:
                out.append((int(m.group(2)), "CLONE_THREAD" in ln))
    return out


def measure(binary, args, count, kind):
    with tempfile.TemporaryDirectory(prefix="tether-instr-") as tmp:
        cmdline = [binary] + args + ["--count", str(count)]
        if kind == "instr":
            # --toggle-collect: the report at the end (sorting the
            # latencies grows as N log N) is harness, not the operation.
            # It must come before --collect-atstart, which it resets.
            cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--dump-line=no",
                   "--toggle-collect=bench_emit_*", "--collect-atstart=yes",
                   f"--callgrind-out-file={tmp}/cg.%p", "--log-file=" + tmp + "/vg.%p"] + cmdline
            parent = run(cmd, tmp, " ".join(cmdline))
            return per_process(tmp, "cg", parent, callgrind_ir)
        cmd = ["strace", "-f", "-ff", "-qq", "-o", f"{tmp}/st"] + cmdline
        run(cmd, tmp, " ".join(cmdline))
        return per_process(tmp, "st", None, strace_calls, strace_children)


def per_op(binary, args, n, kind):
    a = measure(binary, args, n, kind)
    b = measure(binary, args, 2 * n, kind)
    d = ops(args, 2 * n) - ops(args, n)
    return {k: (b[k] - a[k]) / d for k in a}


def fmt(v, kind):
    if isinstance(v, str):
        return v
    c, s = v["client"], v["server"]
    if kind == "instr":
        f = lambda x: f"{x:,.0f}".replace(",", " ")
    else:
        f = lambda x: f"{x:.3g}"
    return f"{f(c)} + {f(s)} = {f(c + s)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tls", action="store_true", help="also the TLS scenarios")
    ap.add_argument("--ws", action="store_true",
                    help="only the tcp vs ws throughput rows (64 B and 1 MiB)")
    ap.add_argument("--large", action="store_true",
                    help="only thr tcp 1 MiB and thr tls 64 KiB (large frames)")
    ap.add_argument("--acks", action="store_true",
                    help="only thr 64 B and 1 KiB, tether_bench --client vs --acks")
    ap.add_argument("--batch", action="store_true",
                    help="only thr 64 B and 1 KiB, tether_bench (batch sends) vs --per-msg")
    ap.add_argument("--fanin", action="store_true",
                    help="only fanin tcp 64 B with 1 and 2 server loops, batch vs --per-msg")
    ap.add_argument("--no-syscalls", action="store_true", help="instructions only")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every N (default 1)")
    ap.add_argument("impls", nargs="*", default=None)
    a = ap.parse_args()
    if not a.impls:
        # The raw peer has no WebSocket transport: --ws compares tether's
        # ws with its own tcp.
        a.impls = ["tether_bench"] if a.ws else ["raw", "tether_bench"]
    for tool in ["valgrind"] + ([] if a.no_syscalls else ["strace"]):
        if not shutil.which(tool):
            sys.exit(f"instr: {tool} is not installed")
    impls = [(os.path.basename(i), find_impl(i)) for i in a.impls]
    scen = WS if a.ws else LARGE if a.large else TCP + (TLS if a.tls else [])
    if a.acks:
        impls = [(n, find_impl(b), x) for n, b, x in ACKS_IMPLS]
        scen = ACKS
    if a.batch or a.fanin:
        impls = [(n, find_impl(b), x) for n, b, x in BATCH_IMPLS]
        scen = FANIN if a.fanin else BATCH
    kinds = ["instr"] + ([] if a.no_syscalls else ["sys"])
    rows = []
    failed = False
    for kind in kinds:
        for label, args, n in scen:
            n = max(1, int(n * a.scale))
            cells = []
            for name, binary, *extra in impls:
                print(f"instr: {kind} {label}: {name} (N={n}, 2N)...", file=sys.stderr, flush=True)
                try:
                    cells.append(fmt(per_op(binary, args + sum(extra, []), n, kind), kind))
                except RuntimeError as e:
                    failed = True
                    print(f"instr: {name}: {e}", file=sys.stderr)
                    cells.append("failed")
            unit = "instructions" if kind == "instr" else "system calls"
            rows.append([f"{label}: {unit}"] + cells)
    head = ["per operation"] + [f"{n} client + server" for n, *_ in impls]
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    line = lambda r: "| " + " | ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i])
                                       for i, c in enumerate(r)) + " |"
    print(line(head))
    print("|" + "|".join("-" * (x + 2) if i == 0 else "-" * (x + 1) + ":"
                         for i, x in enumerate(w)) + "|")
    for r in rows:
        print(line(r))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
