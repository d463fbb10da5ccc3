#!/usr/bin/env python3
"""Copies a safetensors checkpoint directory and overwrites single elements of named tensors,
for the tests of `dsv4-generate --verify` and of the forward's non-finite checks.

    corrupt_checkpoint.py SRC DST --set TENSOR:ELEMENT:HEX [--set ...]

HEX is the element's new little-endian bytes (e.g. 7f for an e4m3 NaN, ff for an E8M0 NaN,
c07f for a bf16 NaN: 0x7fc0 stored low byte first). DST is replaced if it exists.
"""
import argparse
import json
import os
import shutil
import struct
import sys

SIZES = {"F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1, "BF16": 2, "F16": 2, "F32": 4, "I32": 4, "I64": 8}


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return 8 + n, json.loads(f.read(n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--set", action="append", default=[], metavar="TENSOR:ELEMENT:HEX")
    a = ap.parse_args()
    if os.path.exists(a.dst):
        shutil.rmtree(a.dst)
    shutil.copytree(a.src, a.dst)
    index = os.path.join(a.dst, "model.safetensors.index.json")
    with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    for spec in a.set:
        name, elem, hexbytes = spec.rsplit(":", 2)
        shard = os.path.join(a.dst, weight_map[name])
        data_start, h = header(shard)
        t = h[name]
        size = SIZES[t["dtype"]]
        value = bytes.fromhex(hexbytes)
        if len(value) != size:
            sys.exit(f"{spec}: {t['dtype']} elements are {size} bytes")
        off = data_start + t["data_offsets"][0] + int(elem) * size
        if off + size > data_start + t["data_offsets"][1]:
            sys.exit(f"{spec}: element outside the tensor")
        with open(shard, "r+b") as f:
            f.seek(off)
            f.write(value)
        print(f"{name}[{elem}] := {hexbytes} in {os.path.basename(shard)}")


if __name__ == "__main__":
    main()
