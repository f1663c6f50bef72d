#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""check.py: the benchmark tools work (ctest bench_tools).

Each implementation given runs every scenario and transport of PROTOCOL.md
with small counts and must print one JSON line naming what it ran, with
every metric the scenario defines, positive (or a "skip" with a reason and
exit 0); a client given the wrong CA must fail with no JSON; a bad flag
must exit 2 naming the program. Then compare must report a median,
ratios and their intervals for the implementations, in rotated order (and
its interval be right on rounds whose answer is known), and instr.py (when valgrind and strace are
installed) a positive instruction and system-call count per operation for
bench_raw and tether_bench; table.sh must list the compare command of every
row of its tables.
Figures are never judged: only that the tools measure and report.

usage: check.py BENCH_DIR IMPL...   (IMPL: names of programs in BENCH_DIR)
"""

import importlib.machinery
import json
import re
import os
import shutil
import subprocess
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
CERTS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "certs")
METRICS = {
    "thr": ["msgs_per_s", "mb_per_s"],
    "lat": ["p50_us", "p99_us", "mean_us"],
    "hs": ["conns_per_s"],
    "conns": ["setup_s", "server_rss_kib_per_conn", "echo_all_s"],
    "fanin": ["msgs_per_s", "mb_per_s"],
}
COUNT = {"thr": 2000, "lat": 50, "hs": 5, "conns": 20, "fanin": 2000}
FANIN_CONNS = 4
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def run(cmd, timeout=120):
    env = dict(os.environ, BENCH_TIMEOUT_S="60")
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          env=env, text=True)


def check_impl(path):
    name = os.path.basename(path)
    for tr in ("tcp", "tls"):
        for sc, metrics in METRICS.items():
            args = ["--scenario", sc, "--transport", tr, "--size", "100"]
            args += ["--conns", str(COUNT[sc])] if sc == "conns" else ["--count", str(COUNT[sc])]
            if sc == "fanin":
                args += ["--conns", str(FANIN_CONNS)]
            what = f"{name} {sc} {tr}"
            p = run([path] + args)
            lines = p.stdout.splitlines()
            if p.returncode != 0 or len(lines) != 1:
                fail(f"{what}: exit {p.returncode}, {len(lines)} stdout lines: {p.stderr.strip()}")
                continue
            d = json.loads(lines[0])
            want = {"scenario": sc, "transport": tr, "size": 100, "count": COUNT[sc]}
            got = {k: d.get(k) for k in want}
            if got != want:
                fail(f"{what}: reports {got}, ran {want}")
            if "skip" in d:
                if not isinstance(d["skip"], str) or not d["skip"]:
                    fail(f"{what}: skip without a reason")
                print(f"ok   {what}: skip ({d['skip']})")
                continue
            bad = [m for m in metrics if not (isinstance(d.get(m), (int, float)) and d[m] > 0)]
            if sc == "conns":  # RSS growth per connection may round to 0
                bad = [m for m in bad if m != "server_rss_kib_per_conn" or d.get(m) != 0]
            if bad:
                fail(f"{what}: metrics missing or not positive: {bad} in {lines[0]}")
            else:
                print(f"ok   {what}")
    # fanin over a server group of 2 loops, where the implementation has one.
    p = run([path, "--scenario", "fanin", "--transport", "tcp", "--count", "2000", "--conns",
             str(FANIN_CONNS), "--loops", "2"])
    lines = p.stdout.splitlines()
    if p.returncode != 0 or len(lines) != 1:
        fail(f"{name} fanin --loops 2: exit {p.returncode}: {p.stderr.strip()}")
    else:
        d = json.loads(lines[0])
        if "skip" in d:
            print(f"ok   {name} fanin --loops 2: skip ({d['skip']})")
        elif d.get("loops") != 2 or d.get("conns") != FANIN_CONNS \
                or not d.get("msgs_per_s", 0) > 0:
            fail(f"{name} fanin --loops 2: {lines[0]}")
        else:
            print(f"ok   {name} fanin --loops 2")
    # Wrong CA: the client must refuse the server, and say so.
    p = run([path, "--scenario", "lat", "--transport", "tls", "--count", "5",
             "--ca", os.path.join(CERTS, "other-ca.pem")])
    if "skip" not in p.stdout:
        if p.returncode == 0 or p.stdout.strip() or not p.stderr.strip():
            fail(f"{name} with the wrong CA: exit {p.returncode}, stdout {p.stdout!r}")
        else:
            print(f"ok   {name}: wrong CA refused ({p.stderr.strip().splitlines()[-1]})")
    if name != "tether_bench":
        p = run([path, "--scenario", "hs", "--transport", "tls", "--resume"])
        if p.returncode != 2 or p.stdout.strip() or \
                not p.stderr.startswith(f"{name}: --resume is tether_bench's own flag"):
            fail(f"{name} --resume: exit {p.returncode}, stderr {p.stderr!r}")
        else:
            print(f"ok   {name}: --resume refused")
    p = run([path, "--scenario", "nope", "--transport", "tcp"])
    if p.returncode != 2 or not p.stderr.startswith(f"{name}: unknown scenario") \
            or f"usage: {name} " not in p.stderr:
        fail(f"{name} with a bad scenario: exit {p.returncode}, stderr {p.stderr!r}")
    else:
        print(f"ok   {name}: usage error names the program")


def check_tether_send(path):
    """tether_bench's own --per-msg flag, the "send" field of thr and fanin
    (which call sent), and fanin's CPU accounting (issue #12)."""
    name = os.path.basename(path)
    cpu = ["server_cpu_ns_per_msg", "server_user_ns_per_msg", "server_sys_ns_per_msg",
           "client_cpu_ns_per_msg", "client_user_ns_per_msg", "client_sys_ns_per_msg",
           "cpu_ceiling_2loops", "cpu_cores_busy"]
    for sc in ("thr", "fanin"):
        for extra, send in (([], "batch"), (["--per-msg"], "per-msg")):
            what = f"{name} {sc} {' '.join(extra) or '(default)'}"
            args = [path, "--scenario", sc, "--transport", "tcp", "--count", "2000"] + extra
            if sc == "fanin":
                args += ["--conns", str(FANIN_CONNS)]
            p = run(args)
            lines = p.stdout.splitlines()
            if p.returncode != 0 or len(lines) != 1:
                fail(f"{what}: exit {p.returncode}: {p.stderr.strip()}")
                continue
            d = json.loads(lines[0])
            if d.get("send") != send:
                fail(f"{what}: \"send\" is {d.get('send')!r}, expected {send!r}")
                continue
            if sc == "fanin":
                bad = [m for m in cpu if not isinstance(d.get(m), (int, float)) or d[m] < 0]
                bad += [m for m in ("server_cpu_ns_per_msg", "client_cpu_ns_per_msg")
                        if not d.get(m, 0) > 0]
                if not 0 < d.get("cpu_ceiling_2loops", 0) < 2:
                    bad.append("cpu_ceiling_2loops")
                if bad:
                    fail(f"{what}: CPU fields missing or out of range: {bad} in {lines[0]}")
                    continue
            print(f"ok   {what}: send {send}")
    # fanin's --balance: the acceptor (default) splits the connections
    # evenly over the server's loops; reuseport is the kernel's hash.
    for extra, balance in (([], "acceptor"), (["--balance", "reuseport"], "reuseport")):
        what = f"{name} fanin --loops 2 {' '.join(extra) or '(default)'}"
        p = run([path, "--scenario", "fanin", "--transport", "tcp", "--count", "2000", "--conns",
                 "8", "--loops", "2"] + extra)
        lines = p.stdout.splitlines()
        m = re.search(r"connections per server loop: (\d+) (\d+)", p.stderr)
        if p.returncode != 0 or len(lines) != 1 or m is None:
            fail(f"{what}: exit {p.returncode}: {p.stderr.strip()}")
            continue
        d = json.loads(lines[0])
        split = sorted(int(x) for x in m.groups())
        if d.get("balance") != balance or sum(split) != 8 \
                or (balance == "acceptor" and split != [4, 4]):
            fail(f"{what}: balance {d.get('balance')!r}, split {split}: {lines[0]}")
        else:
            print(f"ok   {what}: balance {balance}, split {split[0]}/{split[1]}")
    p = run([path, "--scenario", "fanin", "--transport", "tcp", "--count", "5", "--balance",
             "random"])
    if p.returncode == 0 or "--balance" not in p.stderr:
        fail(f"{name} --balance random: exit {p.returncode}, stderr {p.stderr!r}")
    else:
        print(f"ok   {name}: --balance random refused")
    p = run([path, "--scenario", "lat", "--transport", "tcp", "--count", "5", "--per-msg"])
    if p.returncode == 0 or "--per-msg" not in p.stderr:
        fail(f"{name} lat --per-msg: exit {p.returncode}, stderr {p.stderr!r}")
    else:
        print(f"ok   {name}: --per-msg refused outside thr and fanin")


def check_compare(paths):
    cmd = [os.path.join(HERE, "compare"), "--rounds", "2", "--json", "--", "--scenario", "lat",
           "--transport", "tcp", "--count", "50", "::"] + paths
    p = run(cmd, timeout=300)
    if p.returncode != 0:
        fail(f"compare: exit {p.returncode}: {p.stderr.strip()[-300:]}")
        return
    d = json.loads(p.stdout)
    names = d["impls"]
    for m in METRICS["lat"]:
        cells = d["metrics"].get(m, {})
        if set(cells) != set(names) or cells[names[0]]["ratio"] != 1.0 \
                or any(c["runs"] != 2 or not c["median"] > 0 or not c["ratio"] > 0
                       for c in cells.values()):
            fail(f"compare: metric {m}: {cells}")
            return
    k = len(names)
    if d.get("order") != "rotate" or d.get("sequence") != names + names[1:] + names[:1]:
        fail(f"compare: round 2 does not start at the second program: {d.get('sequence')}")
        return
    for m in METRICS["lat"]:
        for n, c in d["metrics"][m].items():
            ci = c.get("ratio_ci95")
            if len(c.get("values", [])) != 2 or (
                    n != names[0] and not (ci and ci[0] <= c["ratio"] <= ci[1])):
                fail(f"compare: {m} of {n}: values {c.get('values')}, ratio {c['ratio']}, ci {ci}")
                return
    h = d.get("host", {})
    if h.get("cpus") != os.cpu_count() or (
            os.path.exists("/proc/sys/net/ipv4/tcp_congestion_control")
            and not h.get("tcp_congestion_control")):
        fail(f"compare: host {h}")
        return
    print(f"ok   compare: medians, ratios and intervals of {', '.join(names)} ({k} programs, "
          f"rotated), host {h}")
    check_ratio_ci()


def check_ratio_ci():
    """compare's bootstrap interval on rounds whose answer is known."""
    loader = importlib.machinery.SourceFileLoader("compare", os.path.join(HERE, "compare"))
    cmp = types.ModuleType(loader.name)
    cmp.__file__ = loader.path
    loader.exec_module(cmp)
    same = cmp.ratio_ci([10.0] * 5, [15.0] * 5)
    base = [100.0, 90.0, 110.0, 95.0, 105.0, 120.0, 80.0]
    vals = [v * 1.5 for v in base]
    wide = cmp.ratio_ci(base, vals)
    if same != (1.5, 1.5) or not (wide[0] < 1.5 < wide[1]) or wide != cmp.ratio_ci(base, vals) \
            or cmp.ratio_ci([0.0] * 3, [1.0] * 3) is not None:
        fail(f"compare: ratio_ci: constant rounds {same}, scattered {wide}")
        return
    print(f"ok   compare: ratio_ci exact on constant rounds, {wide[0]:.3f}-{wide[1]:.3f} "
          "around 1.5 on scattered ones, repeatable")


def check_instr(paths):
    if not shutil.which("valgrind") or not shutil.which("strace"):
        print("note: instr.py not checked: valgrind or strace is not installed")
        return
    for path in paths:
        with open(path, "rb") as fh:
            if b"__asan_init" in fh.read():
                print(f"note: instr.py not checked: {path} is built with AddressSanitizer,"
                      " which does not run under valgrind")
                return
    p = run([os.path.join(HERE, "instr.py"), "--scale", "0.05"] + paths, timeout=600)
    rows = [r for r in p.stdout.splitlines() if r.startswith("| ") and ": " in r]
    if p.returncode != 0 or len(rows) != 6:
        fail(f"instr.py: exit {p.returncode}, {len(rows)} rows: {p.stderr.strip()[-300:]}")
        return
    for r in rows:
        # thr's system calls per message are a few thousandths that depend
        # on how many messages one read() finds, i.e. on timing: on a busy
        # machine the 2N run can batch better than the N run and the
        # difference comes out at or below zero. Everything else is a real
        # per-operation cost and must be positive.
        timing = r.startswith("| thr ") and "system calls" in r
        for cell in r.strip("| ").split(" | ")[1:]:
            total = float(cell.split("=")[-1].replace(" ", ""))
            if not (total > 0 or (timing and abs(total) < 0.5)):
                fail(f"instr.py: a count that is not positive: {r}")
                return
    print("ok   instr.py: instructions and system calls per operation\n" + p.stdout)


def check_table(bench_dir):
    """table.sh names every row it runs: 15 (12 with --peers, 12 pinned
    to the last CPU with --one-core) compare commands, each of programs
    that are built or optional peers."""
    pin = ["taskset", "-c", str(max(os.sched_getaffinity(0)))]
    for flags, want in (([], 15), (["--peers"], 12), (["--one-core"], 12)):
        p = run(["bash", os.path.join(HERE, "table.sh"), "--list"] + flags)
        lines = p.stdout.splitlines()
        if p.returncode != 0 or len(lines) != want:
            fail(f"table.sh --list {flags}: exit {p.returncode}, {len(lines)} rows, want {want}")
            return
        for ln in lines:
            words = ln.split()
            if flags == ["--one-core"]:
                if words[:3] != pin:
                    fail(f"table.sh --list --one-core: not pinned with {pin}: {ln}")
                    return
                words = words[3:]
            if words[0] != os.path.join(HERE, "compare") or "::" not in words:
                fail(f"table.sh --list {flags}: not a compare command: {ln}")
                return
            for impl in words[words.index("::") + 1:]:
                known = ("raw", "tether_bench", "libevent", "zmq", "nng")
                if "/" not in impl and impl not in known:
                    fail(f"table.sh --list {flags}: unknown program {impl}")
                    return
                if impl in ("raw", "tether_bench") and not any(
                        os.path.exists(os.path.join(bench_dir, n)) for n in (impl, "bench_" + impl)):
                    fail(f"table.sh --list {flags}: {impl} is not built in {bench_dir}")
                    return
    for bad in (["--rounds", "0"], ["--peers", "--one-core"]):
        p = run(["bash", os.path.join(HERE, "table.sh")] + bad)
        if p.returncode != 2 or "table.sh:" not in p.stderr:
            fail(f"table.sh {' '.join(bad)}: exit {p.returncode}, stderr {p.stderr!r}")
            return
    print("ok   table.sh: 15 rows, 12 with --peers, 12 pinned with --one-core")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__.split("\n\n")[-1])
    paths = [os.path.join(sys.argv[1], n) for n in sys.argv[2:]]
    for path in paths:
        check_impl(path)
        if os.path.basename(path) == "tether_bench":
            check_tether_send(path)
    check_compare(paths)
    check_table(sys.argv[1])
    # instr.py's own pair: valgrind runs the library peers (ZeroMQ's and
    # NNG's threads) tens of times slower and would add nothing it checks.
    check_instr([p for p in paths if os.path.basename(p) in ("bench_raw", "tether_bench")])
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
