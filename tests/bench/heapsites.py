#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""heapsites.py: bytes per connection by allocation site, from the dumps of
heapsites.c (README.md: "Where an idle connection's memory goes").

usage: heapsites.py [--depth D] [--minus EARLIER] DUMP K
       heapsites.py [--depth D] --diff DUMP_A DUMP_B K

The first form lists the allocation sites with at least K/2 live blocks in
DUMP, taken when the server held K connections: blocks, requested bytes and
glibc chunk bytes per connection, and their sum. With --minus, a dump of the
same process taken earlier (HEAPSITES_AT=N,M) is subtracted first and K is
the connections added in between. The second form compares two servers
(e.g. bench_raw and tether_bench) at the same K, site by site, with each
program's own frames left out so that the same OpenSSL sites line up.

A site is the first D frames (default 3) of the stack below the allocator
wrappers (CRYPTO_malloc, CRYPTO_zalloc, ...). Frames outside exported
symbols show as [library+offset]; `addr2line -e LIB OFFSET` names them
where the library has symbols.
"""

import argparse
import collections
import signal
import sys

WRAPPERS = ("CRYPTO_malloc", "CRYPTO_zalloc", "CRYPTO_realloc", "CRYPTO_clear_realloc",
            "CRYPTO_strdup", "CRYPTO_strndup", "CRYPTO_memdup", "malloc", "calloc", "realloc")


def load(path):
    """[(count, bytes, chunk, frames)], the heap line."""
    sites, heap = [], ""
    with open(path) as f:
        for line in f:
            if line.startswith("S "):
                _, _, c, b, ch = line.split()
                sites.append((int(c), int(b), int(ch), []))
            elif line.startswith("M "):
                heap = line[2:].strip()
            elif sites:
                sites[-1][3].append(line.strip())
    return sites, heap


def frame_name(fr):
    if fr.startswith("["):
        return fr.strip("[]")
    return fr.split(" (")[0]


def is_program(fr):
    """A frame of the benchmark program or of tether itself (not of a
    system library)."""
    if fr.startswith("["):
        lib = fr.strip("[]").split("+")[0]
    else:
        lib = fr.rsplit(" (", 1)[-1].rstrip(")")
    return not lib.startswith("lib") or lib.startswith("libtether")


def site_key(frames, depth, drop_program):
    i = 0
    while i < len(frames) - 1 and frame_name(frames[i]).split("+")[0] in WRAPPERS:
        i += 1
    if not frames:
        return "(no stack)"
    if not drop_program:
        return " < ".join(frame_name(f) for f in frames[i:i + depth])
    if is_program(frames[i]):
        # Offsets inside the programs differ from build to build: one
        # bucket per program or library of the benchmark's own.
        return "(%s's own)" % frame_name(frames[i]).split("+")[0]
    return " < ".join([frame_name(f) for f in frames[i:] if not is_program(f)][:depth])


def aggregate(sites, depth, drop_program=False):
    agg = collections.defaultdict(lambda: [0, 0, 0])
    for c, b, ch, frames in sites:
        a = agg[site_key(frames, depth, drop_program)]
        a[0] += c
        a[1] += b
        a[2] += ch
    return agg


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quietly into head
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--minus", metavar="EARLIER")
    ap.add_argument("--diff", action="store_true")
    ap.add_argument("dumps", nargs="+")
    ap.add_argument("k", type=float)
    a = ap.parse_args()
    if a.diff:
        if len(a.dumps) != 2:
            ap.error("--diff takes two dumps")
        (sa, ha), (sb, hb) = load(a.dumps[0]), load(a.dumps[1])
        ga, gb = aggregate(sa, a.depth, True), aggregate(sb, a.depth, True)
        total = 0.0
        print("   B-A     A blocks  A bytes |  B blocks  B bytes   (chunk bytes per connection)")
        for key in sorted(set(ga) | set(gb), key=lambda k: -abs(gb[k][2] - ga[k][2])):
            d = (gb[key][2] - ga[key][2]) / a.k
            total += d
            if abs(d) >= 1:
                print("%8.1f  %7.2f %8.1f | %7.2f %8.1f   %s" % (
                    d, ga[key][0] / a.k, ga[key][2] / a.k, gb[key][0] / a.k, gb[key][2] / a.k,
                    key))
        print("B - A in all: %.1f bytes per connection" % total)
        print("A heap: " + ha)
        print("B heap: " + hb)
        return 0
    if len(a.dumps) != 1:
        ap.error("one dump (or --diff with two)")
    sites, heap = load(a.dumps[0])
    agg = aggregate(sites, a.depth)
    if a.minus:
        for key, v in aggregate(load(a.minus)[0], a.depth).items():
            for j in range(3):
                agg[key][j] -= v[j]
    total = [0.0, 0.0, 0.0]
    print("blocks  bytes  chunk   (per connection)")
    for key, v in sorted(agg.items(), key=lambda kv: -kv[1][2]):
        if v[0] < a.k / 2:
            continue
        for j in range(3):
            total[j] += v[j] / a.k
        print("%5.2f %7.1f %7.1f  %s" % (v[0] / a.k, v[1] / a.k, v[2] / a.k, key))
    print("in all: %.2f blocks, %.1f bytes requested, %.1f in glibc chunks per connection"
          % tuple(total))
    print("heap: " + heap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
