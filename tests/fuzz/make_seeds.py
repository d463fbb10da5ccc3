#!/usr/bin/env python3
"""Seed corpora for the libFuzzer targets, made from valid files (written into the build).

Usage: python3 tests/fuzz/make_seeds.py --out DIR
Writes DIR/<target>/<seed> for the targets safetensors_header, index_json, config_json and
npy_file:
* safetensors_header: small valid files re-laid from the toy checkpoint's tensors (a few
  hundred bytes to ~16 KB each, every dtype), plus each toy shard's real header with its
  data cut off (rich JSON, fails the range check late);
* index_json: the toy index and a trimmed one;
* config_json: the toy, real-dims and published V4-Flash configs;
* npy_file: small .npy files of every dtype the reader knows, format versions 1 and 2.
"""
import argparse
import io
import json
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
MAKE = HERE.parents[1] / "reference" / "make_checkpoint.py"


def st_file(entries):
    """entries: [(name, dtype, shape, bytes)] -> safetensors bytes (contiguous, 8-aligned header)."""
    meta, off, data = {"__metadata__": {"format": "pt"}}, 0, b""
    for name, dt, shape, raw in entries:
        meta[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    text = json.dumps(meta, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data


def read_header(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw, n, json.loads(raw[8:8 + n])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    dirs = {t: out / t for t in ("safetensors_header", "index_json", "config_json", "npy_file")}
    for d in dirs.values():
        d.mkdir(parents=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for preset in ("toy", "real-dims", "v4-flash"):
            subprocess.run([sys.executable, str(MAKE), "--preset", preset, "--out", str(tmp / preset),
                            "--config-only"], check=True, stdout=subprocess.DEVNULL)
            shutil.copy(tmp / preset / "config.json", dirs["config_json"] / f"{preset}.json")
        subprocess.run([sys.executable, str(MAKE), "--preset", "toy", "--out", str(tmp / "toy")], check=True,
                       stdout=subprocess.DEVNULL)
        toy = tmp / "toy"
        index = json.loads((toy / "model.safetensors.index.json").read_text())
        shutil.copy(toy / "model.safetensors.index.json", dirs["index_json"] / "toy.json")
        small = dict(list(index["weight_map"].items())[:12])
        (dirs["index_json"] / "small.json").write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": small}))

        # Re-laid small files: the smallest tensors of each shard (all dtypes appear).
        for shard in sorted(toy.glob("model-*.safetensors")):
            raw, n, hdr = read_header(shard)
            start = 8 + n
            ents = []
            for name, d in hdr.items():
                if name == "__metadata__":
                    continue
                b, e = d["data_offsets"]
                ents.append((e - b, name, d["dtype"], d["shape"], raw[start + b:start + e]))
            ents.sort()
            pick = [x for x in ents if x[0] <= 4096][:24]
            (dirs["safetensors_header"] / f"{shard.stem}-small.safetensors").write_bytes(
                st_file([(nm, dt, sh, rb) for _, nm, dt, sh, rb in pick]))
            (dirs["safetensors_header"] / f"{shard.stem}-header-only.bin").write_bytes(raw[:start])
        one = st_file([("t", "F32", [2, 2], np.arange(4, dtype=np.float32).tobytes()),
                       ("i", "I64", [1], np.array([7], dtype=np.int64).tobytes()),
                       ("b", "BF16", [3], b"\x80\x3f" * 3), ("e", "U8", [0], b"")])
        (dirs["safetensors_header"] / "tiny.safetensors").write_bytes(one)

    for dt in ("u1", "i1", "b1", "u2", "i2", "f2", "u4", "i4", "f4", "u8", "i8", "f8"):
        a = np.arange(6).astype(np.dtype("<" + dt) if dt != "b1" else np.bool_).reshape(2, 3)
        buf = io.BytesIO()
        np.save(buf, a, allow_pickle=False)
        (dirs["npy_file"] / f"{dt}.npy").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.zeros((2, 0, 3), np.float32), version=(2, 0))
    (dirs["npy_file"] / "v2_empty.npy").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.float64(3.5), allow_pickle=False)
    (dirs["npy_file"] / "scalar.npy").write_bytes(buf.getvalue())
    (out / "stamp").write_text("ok\n")
    print(f"fuzz seeds -> {out}: " + ", ".join(f"{t} {len(list(d.iterdir()))}" for t, d in dirs.items()))


if __name__ == "__main__":
    main()
