#!/usr/bin/env python3
"""Fail if AVX-512 (EVEX-encoded) instructions appear where they must not.

--objects: per-tier object files of the scalar and AVX2 tiers: no EVEX at all.
--binaries: linked programs: no EVEX in any function whose name does not say avx512
(the linker keeps one copy of each inline function; if it kept an AVX-512 TU's copy for
code the scalar path calls, an AVX2-only CPU would die with SIGILL).
"""
import argparse
import re
import subprocess
import sys

EVEX_OPERAND = re.compile(r"%zmm|%k[0-7]\b|%[xy]mm(1[6-9]|2[0-9]|3[01])\b|\{1to\d+\}")


def functions(path):
    out = subprocess.run(["objdump", "-d", "-C", "--no-addresses", "--insn-width=15", path],
                         capture_output=True, text=True, check=True).stdout
    name = None
    for line in out.splitlines():
        m = re.match(r"^<(.*)>:$", line)
        if m:
            name = m.group(1)
            continue
        parts = line.split("\t")
        if name is None or len(parts) < 2:
            continue
        raw = parts[0].split()
        asm = parts[1] if len(parts) > 1 else ""
        # EVEX is the 0x62 prefix in 64-bit mode, optionally after 0x67 (address size)
        first = raw[1] if raw and raw[0] == "67" and len(raw) > 1 else (raw[0] if raw else "")
        if first == "62" or EVEX_OPERAND.search(asm):
            yield name, line.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", nargs="*", default=[])
    ap.add_argument("--binaries", nargs="*", default=[])
    a = ap.parse_args()
    bad = []
    for obj in a.objects:
        for fn, insn in functions(obj):
            bad.append(f"{obj}: {fn}: {insn}")
    for exe in a.binaries:
        for fn, insn in functions(exe):
            if "avx512" not in fn:
                bad.append(f"{exe}: {fn}: {insn}")
    for b in bad[:40]:
        print("EVEX outside AVX-512 code:", b)
    checked = len(a.objects) + len(a.binaries)
    print(f"isa isolation: {checked} files checked, {len(bad)} EVEX instructions out of place")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
