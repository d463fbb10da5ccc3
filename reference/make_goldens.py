#!/usr/bin/env python3
"""Write NumPy golden files for one kernel family (or all of them).

Usage: python3 reference/make_goldens.py --family codec --out build/goldens

Every family is a module dsv4_ref/<family>.py exposing write_goldens(writer).
Layout written: OUT/<family>/cases.txt (one case name per line) and
OUT/<family>/<case>/<array>.npy. Seeds are fixed: the same files every run.
"""
import argparse
import importlib
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from dsv4_ref.golden_writer import GoldenWriter  # noqa: E402

FAMILIES = ["codec", "gemv", "attention", "compressor", "indexer", "mhc", "moe"]


def available_families():
    here = pathlib.Path(__file__).resolve().parent / "dsv4_ref"
    return [f for f in FAMILIES if (here / f"{f}.py").exists()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", required=True,
                    help="family name or 'all' (" + ", ".join(available_families()) + ")")
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args()
    fams = available_families() if args.family == "all" else [args.family]
    for fam in fams:
        if fam not in available_families():
            sys.exit(f"make_goldens.py: unknown family '{fam}' "
                     f"(known: {', '.join(available_families())})")
        mod = importlib.import_module(f"dsv4_ref.{fam}")
        w = GoldenWriter(pathlib.Path(args.out), fam)
        mod.write_goldens(w)
        w.finish()
        print(f"goldens: {fam}: {len(w.cases)} cases -> {w.root}")


if __name__ == "__main__":
    main()
