#!/usr/bin/env python3
"""bench/ceiling-table.py JSON... : the ceiling table of docs/PERFORMANCE.md.

Reads bench/dpdk-compare.sh JSON files written with CEILING=1 and prints one
markdown row per cell and machine phase: the medians over the pairs whose
three runs (DPDK, vhostd, ceiling) all saw that phase, of each side's Mpps
and of the ratios ceiling/DPDK (the highest vhostd/DPDK reachable with this
front-end where the ceiling runs above vhostd; on the loop path it does not,
docs/PERFORMANCE.md 2026-11-29 evening), vhostd/DPDK and vhostd/ceiling. Pairs that straddle a
phase change are left out; a cell with none in a phase has no row for it.
Exit status 1 if a file has no ceiling runs (not written with CEILING=1).
"""
import json
import statistics
import sys

SIDES = ("dpdk", "vhostd", "ceiling")


def rows(path):
    with open(path) as f:
        doc = json.load(f)
    out = []
    for c in doc["cells"]:
        if "ceiling" not in c:
            raise ValueError("%s: cell %s has no ceiling runs (run with CEILING=1)" % (path, c["cell"]))
        pairs = {}
        for s in SIDES:
            for r in c[s]["runs"]:
                if r["status"] == "ok":
                    pairs.setdefault(r["pair"], {})[s] = (r["mpps"], r["far"])
        for far in (False, True):
            t = [p for p in pairs.values() if len(p) == 3 and all(v[1] == far for v in p.values())]
            if not t:
                continue
            med = lambda s: statistics.median(p[s][0] for p in t)
            rat = lambda a, b: statistics.median(p[a][0] / p[b][0] for p in t)
            out.append("| %s | %s | %d | %d | %d | %s | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f | %d |" % (
                c["path"], c["ring"], c["mrg"], c["ino"], c["size"], "far" if far else "near",
                med("dpdk"), med("vhostd"), med("ceiling"),
                rat("ceiling", "dpdk"), rat("vhostd", "dpdk"), rat("vhostd", "ceiling"), len(t)))
    return out


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    print("| path | ring | mrg | ino | size | phase | DPDK | vhostd | ceiling "
          "| ceiling/DPDK | vhostd/DPDK | vhostd/ceiling | triples |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    try:
        for path in argv[1:]:
            for r in rows(path):
                print(r)
    except (OSError, ValueError, KeyError) as e:
        sys.exit("ceiling-table: %s" % e)


if __name__ == "__main__":
    main(sys.argv)
