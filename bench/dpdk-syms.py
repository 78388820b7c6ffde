#!/usr/bin/env python3
"""Names the addresses perf shows in Debian's stripped DPDK libraries.

Debian ships librte_*.so without a symbol table, so `perf report` on DPDK's
vhost back-end prints bare addresses (`librte_vhost.so.23.0 0x7ef15`). The
static archives of the same build (librte_vhost.a, from libdpdk-dev) keep
every function's symbol, static ones included, and the shared library is
linked from the same objects: within one section of one object the code
lies at a fixed distance from the archive's offsets. That distance is read
off the functions the shared library exports (`nm -D`), and every address
in such a section gets its function's name and offset.

    perf report --no-children --sort dso,sym --stdio | bench/dpdk-syms.py
    bench/dpdk-syms.py --where virtio_dev_rx_split   # DSO ADDRESS SIZE

Reads the report on stdin and prints each line with its address named where
it can ("virtio_dev_rx_split+0x11c5"), then the shares summed per function.
Lines whose address lies outside a mapped section keep the address.
"""

import collections
import functools
import glob
import os
import re
import signal
import subprocess
import sys
import tempfile

LIBDIR = os.environ.get("DPDK_LIBDIR", "/usr/lib/x86_64-linux-gnu")


def run(*args):
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout


def exported(so):
    """name -> address of the functions a shared library exports."""
    out = {}
    for line in run("nm", "-D", "--defined-only", so).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "TtWw":
            out[parts[2].split("@")[0]] = int(parts[0], 16)
    return out


def functions(obj):
    """(section, start, size, name, is_global) of every function in an object."""
    out = []
    for line in run("objdump", "-t", obj).splitlines():
        m = re.match(r"^([0-9a-f]+) (.)\s+F (\S+)\s+([0-9a-f]+) (\S+)$", line)
        if m:
            out.append((m.group(3), int(m.group(1), 16), int(m.group(4), 16),
                        m.group(5), m.group(2) == "g"))
    return out


@functools.lru_cache(maxsize=None)
def section_bytes(path, name):
    """(address, bytes) of one section of an ELF file, or None (read once
    per file and section: every object of an archive looks into the same
    library's .text)."""
    for line in run("readelf", "-SW", path).splitlines():
        m = re.search(r"\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if m and m.group(1) == name:
            off, size = int(m.group(3), 16), int(m.group(4), 16)
            with open(path, "rb") as f:
                f.seek(off)
                return int(m.group(2), 16), f.read(size)
    return None


def byte_votes(so, obj, section, fs):
    """Distances (library address - object offset) at which the first 24
    bytes of the section's functions of 40 bytes or more occur in the
    library's .text (once each); relocated bytes simply do not match."""
    text, code = section_bytes(so, ".text") or (0, b""), section_bytes(obj, section)
    if not code or not text[1]:
        return collections.Counter()
    votes = collections.Counter()
    for (_, start, size, _, _) in fs:
        pat = code[1][start:start + 24]
        if size < 40 or len(pat) < 24:
            continue
        i = text[1].find(pat)
        if i >= 0 and text[1].find(pat, i + 1) < 0:
            votes[text[0] + i - start] += 1
    return votes


def symbol_map(so, archive, tmp):
    """Sorted [(start, end, name)] in the shared library's addresses."""
    exp = exported(so)
    where = os.path.join(tmp, os.path.basename(archive))
    os.makedirs(where, exist_ok=True)
    subprocess.run(["ar", "x", archive], cwd=where, check=False)
    spans = []
    for obj in sorted(glob.glob(os.path.join(where, "*.o"))):
        funcs = functions(obj)
        by_section = collections.defaultdict(list)
        for f in funcs:
            by_section[f[0]].append(f)
        for section, fs in by_section.items():
            # the distance voted by the exported functions of this section
            votes = collections.Counter(
                exp[name] - start for (_, start, _, name, glob_) in fs if glob_ and name in exp)
            if not votes:
                # nothing of this section is exported (a PMD's Rx/Tx code,
                # e.g. librte_net_virtio): vote with where the first bytes
                # of its larger functions occur in the library's code
                votes = byte_votes(so, obj, section, fs)
            if not votes:
                continue
            delta, _ = votes.most_common(1)[0]
            spans.extend((start + delta, start + delta + size, name)
                         for (_, start, size, name, _) in fs if size)
    return sorted(spans)


def lookup(spans, addr):
    lo, hi = 0, len(spans)
    while lo < hi:
        mid = (lo + hi) // 2
        if spans[mid][0] <= addr:
            lo = mid + 1
        else:
            hi = mid
    if lo and spans[lo - 1][0] <= addr < spans[lo - 1][1]:
        s = spans[lo - 1]
        return "%s+0x%x" % (s[2], addr - s[0])
    return None


def where(maps, tmp, name):
    """Prints `DSO ADDRESS SIZE` for each mapped function called `name`."""
    found = False
    for dso in sorted(maps):
        for start, end, n in symbol_map(*maps[dso], tmp):
            if n == name:
                print("%s 0x%x %d" % (maps[dso][0], start, end - start))
                found = True
    return 0 if found else 1


def main():
    maps = {}
    with tempfile.TemporaryDirectory() as tmp:
        for so in glob.glob(os.path.join(LIBDIR, "librte_*.so.*.*")):
            base = os.path.basename(so).split(".so")[0]
            archive = os.path.join(LIBDIR, base + ".a")
            if os.path.exists(archive):
                maps[os.path.basename(so)] = (so, archive)
        if len(sys.argv) == 3 and sys.argv[1] == "--where":
            sys.exit(where(maps, tmp, sys.argv[2]))
        loaded = {}
        per_fn = collections.Counter()
        for line in sys.stdin:
            m = re.match(r"^\s+([0-9.]+)%\s+(\S+)\s+\[\.\]\s+(\S+)", line)
            if not m:
                if line.startswith("=="):
                    print(line.rstrip())
                continue
            pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
            name = sym
            if sym.startswith("0x") and dso in maps:
                if dso not in loaded:
                    loaded[dso] = symbol_map(*maps[dso], tmp)
                name = lookup(loaded[dso], int(sym, 16)) or sym
            per_fn[(dso, name.split("+")[0])] += pct
            print("%7.2f%%  %-26s %s" % (pct, dso, name))
    print("-- summed per function")
    for (dso, name), pct in per_fn.most_common(20):
        print("%7.2f%%  %-26s %s" % (pct, dso, name))


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # quiet under `| head`
    main()
