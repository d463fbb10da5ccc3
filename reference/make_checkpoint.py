#!/usr/bin/env python3
"""Write a synthetic DeepSeek-V4 checkpoint in the official format.

Usage: python3 reference/make_checkpoint.py --preset toy|real-dims --out DIR [--seed N]
           [--set FIELD=JSON ...] [--unset FIELD ...]
       python3 reference/make_checkpoint.py --preset v4-flash|v4-pro --config-only --out DIR

Same layout as deepseek-ai/DeepSeek-V4-Flash (spec §1): HF `config.json`, safetensors shards
`model-0000K-of-0000N.safetensors` (N >= 2) and `model.safetensors.index.json`; the official
tensor names, dtypes (F8_E4M3 + F8_E8M0 block scales, FP4 packed in I8 + F8_E8M0 per 32, BF16,
F32, I64) and shapes. Within a shard tensors are ordered by element size then name, so every
tensor is aligned to its element size (like the official writer); the header is padded with
spaces to a multiple of 8.

Weights are random but scaled so that a 4-stream mHC + MoE stack stays finite and its logits
are not degenerate: linear weights ~ N(0, 1/fan_in) quantised with power-of-two E8M0 scales,
small hc_* mixing weights, attn_sink ~ 0, small gate bias, norm weights ~ 1.

Quantisation modes (--quant):
* exact (default for toy): float weights drawn and quantised through dsv4_ref.formats (the §2.1
  scale rule per 128x128 block for FP8, per 32 for FP4).
* fast (default for real-dims): one power-of-two scale per tensor and codes drawn directly from
  the distribution that quantising N(0, std) with that scale gives (a quantile table built
  through dsv4_ref.formats). Same statistics, ~100x faster; needed for the 3.4 GB of experts
  per real-dims layer.

Presets:
* toy: tiny dims, every feature on: compress_ratios [0, 4, 128, 4] + one MTP block (ratio 0),
  layer 0 a hash layer, window 128, index_topk 8, vocab 512, hidden 256, 4 heads of 128
  (64 rope + 64 nope), 8 experts of width 128 (top 2), 1 shared. ~6 MB in 3 shards, seconds.
* v4-flash: the published V4-Flash config (43 layers + MTP), with --config-only only.
* v4-pro: the published V4-Pro config (61 layers + MTP, hidden 7168, 128 heads, q LoRA 1536,
  16 output groups, 384 experts of width 3072, index_topk 1024, routed_scaling_factor 2.5,
  ratios [128, 128] + [4, 128] x 29 + [4, 0]), with --config-only only (its weights are ~865 GB).
  Values: the root config.json of DeepSeek-V4-Pro as copied in github.com/Nicooo-Wang/
  DeepSeek-V4-Pro-code (commit 0ec3a03, identical at 2074660; inference/config.json there
  gives the same values under the official ModelArgs names).
* real-dims: V4-Flash's real dimensions (spec §0) with 3 layers, ratios [0, 4, 128], the first
  a hash layer, no MTP. ~12.6 GB; written streaming, tensor by tensor (big BF16 tensors in row
  chunks), never holding more than one tensor (or chunk) in memory, with a progress bar.

``--layers N`` (any preset) gives N main layers, the compress_ratios pattern repeated (real-dims
``--layers 9``: [0, 4, 128, 4, 128, ...], ~35 GB: a checkpoint larger than a 24 GB machine's RAM,
for the expert-streaming measurements of docs/streaming.md; write it on demand, never in CI).

Config variants (any preset): ``--set FIELD=JSON`` replaces a top-level config field (the value
is JSON: ``--set o_lora_rank=64``, ``--set 'compress_ratios=[0,4,128,4]'``), ``--unset FIELD``
removes one (``--unset num_nextn_predict_layers``: no MTP block, as the official code reads the
config). The schema follows the edited config: e.g. toy with ``--set o_lora_rank=64`` (o_groups
2: o_groups * o_lora_rank = 128), ``--set index_head_dim=96`` or ``--set sliding_window=64``.

Also writes tokenizer.json + tokenizer_config.json (reference/make_tokenizer.py's pure-Python toy
tokenizer: the official structure, byte-level BPE with a few merges, vocab = the config's).

Deterministic: every tensor (and chunk) has its own generator seeded from (--seed, crc32(name)).
Only NumPy and the standard library (plus dsv4_ref, which is NumPy only).
"""
import argparse
import json
import math
import os
import pathlib
import struct
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from dsv4_ref import formats as FM  # noqa: E402
from dsv4_ref.moe import quantize_fp4_weight, quantize_fp8_weight  # noqa: E402
import make_tokenizer  # noqa: E402

# ------------------------------------------------------------------------------------------------
# configs (HF field names of the official root config.json)
# ------------------------------------------------------------------------------------------------
_COMMON = {
    "architectures": ["DeepseekV4ForCausalLM"],
    "model_type": "deepseek_v4",
    "attention_bias": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "expert_dtype": "fp4",
    "hc_eps": 1e-06,
    "hc_mult": 4,
    "hc_sinkhorn_iters": 20,
    "hidden_act": "silu",
    "norm_topk_prob": True,
    "num_key_value_heads": 1,
    "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 16,
                     "original_max_position_embeddings": 65536, "type": "yarn"},
    "rope_theta": 10000,
    "compress_rope_theta": 160000,
    "routed_scaling_factor": 1.5,
    "scoring_func": "sqrtsoftplus",
    "sliding_window": 128,
    "swiglu_limit": 10.0,
    "tie_word_embeddings": False,
    "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16",
}

PRESETS = {
    "toy": dict(_COMMON, **{
        "vocab_size": 512, "hidden_size": 256, "num_hidden_layers": 4, "num_nextn_predict_layers": 1,
        "num_attention_heads": 4, "head_dim": 128, "q_lora_rank": 128, "o_groups": 2, "o_lora_rank": 128,
        "compress_ratios": [0, 4, 128, 4, 0], "index_n_heads": 4, "index_head_dim": 128, "index_topk": 8,
        "moe_intermediate_size": 128, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_shared_experts": 1,
        "num_hash_layers": 1, "max_position_embeddings": 4096,
    }),
    "real-dims": dict(_COMMON, **{
        "vocab_size": 129280, "hidden_size": 4096, "num_hidden_layers": 3, "num_nextn_predict_layers": 0,
        "num_attention_heads": 64, "head_dim": 512, "q_lora_rank": 1024, "o_groups": 8, "o_lora_rank": 1024,
        "compress_ratios": [0, 4, 128], "index_n_heads": 64, "index_head_dim": 128, "index_topk": 512,
        "moe_intermediate_size": 2048, "n_routed_experts": 256, "num_experts_per_tok": 6, "n_shared_experts": 1,
        "num_hash_layers": 1, "max_position_embeddings": 1048576,
    }),
    # The published V4-Flash config itself (spec §0): --config-only (its weights are 160 GB).
    "v4-flash": dict(_COMMON, **{
        "vocab_size": 129280, "hidden_size": 4096, "num_hidden_layers": 43, "num_nextn_predict_layers": 1,
        "num_attention_heads": 64, "head_dim": 512, "q_lora_rank": 1024, "o_groups": 8, "o_lora_rank": 1024,
        "compress_ratios": [0, 0] + [4, 128] * 20 + [4, 0], "index_n_heads": 64, "index_head_dim": 128,
        "index_topk": 512, "moe_intermediate_size": 2048, "n_routed_experts": 256, "num_experts_per_tok": 6,
        "n_shared_experts": 1, "num_hash_layers": 3, "max_position_embeddings": 1048576,
    }),
    # The published V4-Pro config (see the module doc for the source): --config-only.
    "v4-pro": dict(_COMMON, **{
        "vocab_size": 129280, "hidden_size": 7168, "num_hidden_layers": 61, "num_nextn_predict_layers": 1,
        "num_attention_heads": 128, "head_dim": 512, "q_lora_rank": 1536, "o_groups": 16, "o_lora_rank": 1024,
        "compress_ratios": [128, 128] + [4, 128] * 29 + [4, 0], "index_n_heads": 64, "index_head_dim": 128,
        "index_topk": 1024, "moe_intermediate_size": 3072, "n_routed_experts": 384, "num_experts_per_tok": 6,
        "n_shared_experts": 1, "num_hash_layers": 3, "max_position_embeddings": 1048576,
        "routed_scaling_factor": 2.5,
    }),
}
CONFIG_ONLY = {"v4-flash": "160 GB", "v4-pro": "865 GB"}   # presets too big to write here
DEFAULTS = {"toy": dict(quant="exact", shards=3, progress=False),
            "v4-flash": dict(quant="fast", shards=46, progress=True),
            "v4-pro": dict(quant="fast", shards=64, progress=True),
            "real-dims": dict(quant="fast", shards=4, progress=True)}

DTYPE_SIZE = {"F8_E4M3": 1, "F8_E8M0": 1, "I8": 1, "BF16": 2, "F32": 4, "I64": 8}
STORAGE = {"F8_E4M3": np.uint8, "F8_E8M0": np.uint8, "I8": np.uint8, "BF16": np.uint16,
           "F32": np.float32, "I64": np.int64}


# ------------------------------------------------------------------------------------------------
# schema (spec §1.3), written independently of the C++ one so that each checks the other
# ------------------------------------------------------------------------------------------------
def schema(cfg):
    """List of (name, dtype, shape, init) for every tensor of `cfg`, MTP blocks included.
    init = (kind, params...) describes how the generator fills the tensor."""
    D, V, hc = cfg["hidden_size"], cfg["vocab_size"], cfg["hc_mult"]
    mix = (2 + hc) * hc
    H, hd, E, I = cfg["num_attention_heads"], cfg["head_dim"], cfg["n_routed_experts"], cfg["moe_intermediate_size"]
    L, n_mtp = cfg["num_hidden_layers"], cfg.get("num_nextn_predict_layers", 0)   # absent: no MTP
    oa = cfg["o_groups"] * cfg["o_lora_rank"]
    S = cfg["n_shared_experts"] * I
    out = []

    def add(name, dt, shape, init):
        out.append((name, dt, tuple(int(s) for s in shape), init))

    def fp8(base, n, k):
        add(base + ".weight", "F8_E4M3", (n, k), ("fp8_w", 1.0 / math.sqrt(k)))
        add(base + ".scale", "F8_E8M0", (-(-n // 128), -(-k // 128)), ("fp8_s", base + ".weight", 1.0 / math.sqrt(k)))

    def fp4(base, n, k):
        add(base + ".weight", "I8", (n, k // 2), ("fp4_w", 1.0 / math.sqrt(k)))
        add(base + ".scale", "F8_E8M0", (n, k // 32), ("fp4_s", base + ".weight", 1.0 / math.sqrt(k)))

    def norm(name, n):
        add(name, "BF16", (n,), ("norm",))

    def bf16(name, n, k):
        add(name, "BF16", (n, k), ("bf16", 1.0 / math.sqrt(k)))

    def compressor(base, ratio, d):
        cd = (2 if ratio == 4 else 1) * d
        add(base + "ape", "F32", (ratio, cd), ("f32", 0.02))
        bf16(base + "wkv.weight", cd, D)
        bf16(base + "wgate.weight", cd, D)
        norm(base + "norm.weight", d)

    def hc_head(p):
        add(p + "hc_head_fn", "F32", (hc, hc * D), ("f32", 0.1 / math.sqrt(hc * D)))
        add(p + "hc_head_base", "F32", (hc,), ("f32", 0.1))
        add(p + "hc_head_scale", "F32", (1,), ("const", 0.5))

    add("embed.weight", "BF16", (V, D), ("bf16", 1.0))
    bf16("head.weight", V, D)
    norm("norm.weight", D)
    hc_head("")
    for b in range(L + n_mtp):
        P = f"layers.{b}." if b < L else f"mtp.{b - L}."
        r = cfg["compress_ratios"][b]
        norm(P + "attn_norm.weight", D)
        norm(P + "ffn_norm.weight", D)
        for site in ("attn", "ffn"):
            add(P + f"hc_{site}_fn", "F32", (mix, hc * D), ("f32", 0.1 / math.sqrt(hc * D)))
            add(P + f"hc_{site}_base", "F32", (mix,), ("hc_base", hc))
            add(P + f"hc_{site}_scale", "F32", (3,), ("const", 0.5))
        fp8(P + "attn.wq_a", cfg["q_lora_rank"], D)
        norm(P + "attn.q_norm.weight", cfg["q_lora_rank"])
        fp8(P + "attn.wq_b", H * hd, cfg["q_lora_rank"])
        fp8(P + "attn.wkv", hd, D)
        norm(P + "attn.kv_norm.weight", hd)
        fp8(P + "attn.wo_a", oa, H * hd // cfg["o_groups"])
        fp8(P + "attn.wo_b", D, oa)
        add(P + "attn.attn_sink", "F32", (H,), ("f32", 0.01))
        if r:
            compressor(P + "attn.compressor.", r, hd)
        if r == 4:
            fp8(P + "attn.indexer.wq_b", cfg["index_n_heads"] * cfg["index_head_dim"], cfg["q_lora_rank"])
            bf16(P + "attn.indexer.weights_proj.weight", cfg["index_n_heads"], D)
            compressor(P + "attn.indexer.compressor.", r, cfg["index_head_dim"])
        bf16(P + "ffn.gate.weight", E, D)
        if b < L and b < cfg["num_hash_layers"]:
            add(P + "ffn.gate.tid2eid", "I64", (V, cfg["num_experts_per_tok"]), ("tid2eid", E))
        else:
            add(P + "ffn.gate.bias", "F32", (E,), ("f32", 0.01))
        for e in range(E):
            X = P + f"ffn.experts.{e}."
            fp4(X + "w1", I, D)
            fp4(X + "w3", I, D)
            fp4(X + "w2", D, I)
        if S:
            fp8(P + "ffn.shared_experts.w1", S, D)
            fp8(P + "ffn.shared_experts.w3", S, D)
            fp8(P + "ffn.shared_experts.w2", D, S)
        if b >= L:
            fp8(P + "e_proj", D, D)
            fp8(P + "h_proj", D, D)
            norm(P + "enorm.weight", D)
            norm(P + "hnorm.weight", D)
            norm(P + "norm.weight", D)
            hc_head(P)
    return out


def nbytes(entry):
    _, dt, shape, _ = entry
    return math.prod(shape) * DTYPE_SIZE[dt]


# ------------------------------------------------------------------------------------------------
# generation
# ------------------------------------------------------------------------------------------------
CHUNK_ELEMS = 1 << 24          # big BF16 tensors are generated in row chunks of about this size


def _rng(seed, name, chunk=0):
    return np.random.default_rng([seed, zlib.crc32(name.encode()), chunk])


def _pow2_code(x):
    """E8M0 code of 2^ceil(log2 x)."""
    return int(math.ceil(math.log2(x))) + 127


class _FastTables:
    """Quantile tables: uint16 uniform -> code, distributed like quantising N(0, sigma)."""

    def __init__(self):
        self.cache = {}

    def fp8(self, sigma):                                  # sigma in units of the block scale
        key = ("fp8", round(sigma, 6))
        if key not in self.cache:
            x = np.sort(np.random.default_rng(1234).standard_normal(1 << 20)) * sigma
            self.cache[key] = FM.e4m3_encode(np.clip(x, -448, 448))[8::16].astype(np.uint8)
        return self.cache[key]

    def fp4_bytes(self, sigma):
        key = ("fp4", round(sigma, 6))
        if key not in self.cache:
            x = np.sort(np.random.default_rng(1234).standard_normal(1 << 16)) * sigma
            nib = FM.e2m1_encode(np.clip(x, -6, 6))[128::256].astype(np.uint8)      # 256 quantiles
            u = np.arange(65536, dtype=np.uint32)
            self.cache[key] = (nib[u & 255] | (nib[u >> 8] << 4)).astype(np.uint8)
        return self.cache[key]


_TABLES = _FastTables()
FP8_BLOCK_AMAX = 4.0    # typical amax / std of a 128x128 Gaussian block (fast mode scale)
FP4_BLOCK_AMAX = 2.0    # typical amax / std of 32 Gaussians


def _fast_scale(std, qmax, amax_ratio):
    code = _pow2_code(std * amax_ratio / qmax)
    return code, std / 2.0 ** (code - 127)


def generate(entry, shapes, seed, quant):
    """Yields the tensor's storage array (numpy, dtype STORAGE[dtype]) in one or more row chunks.
    shapes: {name: shape} of the whole schema (a scale is derived from its weight's draw)."""
    name, dt, shape, init = entry
    kind = init[0]
    rng = _rng(seed, name)
    if kind in ("fp8_w", "fp8_s"):
        std = init[-1]
        wname = name if kind == "fp8_w" else init[1]
        if quant == "exact":
            wshape = shapes[wname]
            w = _rng(seed, wname).standard_normal(wshape, dtype=np.float32) * np.float32(std)
            codes, scales = quantize_fp8_weight(w)
            yield codes if kind == "fp8_w" else scales
        else:
            code, sigma = _fast_scale(std, FM.E4M3_MAX, FP8_BLOCK_AMAX)
            if kind == "fp8_s":
                yield np.full(shape, code, dtype=np.uint8)
            else:
                u = rng.integers(0, 65536, size=shape, dtype=np.uint16)
                yield _TABLES.fp8(sigma)[u]
        return
    if kind in ("fp4_w", "fp4_s"):
        std = init[-1]
        wname = name if kind == "fp4_w" else init[1]
        if quant == "exact":
            wshape = shapes[wname]
            w = _rng(seed, wname).standard_normal((wshape[0], wshape[1] * 2), dtype=np.float32) * np.float32(std)
            packed, scales = quantize_fp4_weight(w)
            yield packed if kind == "fp4_w" else scales
        else:
            code, sigma = _fast_scale(std, FM.E2M1_MAX, FP4_BLOCK_AMAX)
            if kind == "fp4_s":
                yield np.full(shape, code, dtype=np.uint8)
            else:
                u = rng.integers(0, 65536, size=shape, dtype=np.uint16)
                yield _TABLES.fp4_bytes(sigma)[u]
        return
    if kind == "bf16":
        std = np.float32(init[1])
        rows = max(1, CHUNK_ELEMS // max(1, shape[-1]))
        for c, r0 in enumerate(range(0, shape[0], rows)):
            part = (min(rows, shape[0] - r0),) + shape[1:]
            x = _rng(seed, name, c).standard_normal(part, dtype=np.float32) * std
            yield FM.f32_to_bf16_bits(x)
        return
    if kind == "norm":
        yield FM.f32_to_bf16_bits(1.0 + 0.05 * rng.standard_normal(shape, dtype=np.float32))
        return
    if kind == "f32":
        yield (rng.standard_normal(shape, dtype=np.float32) * np.float32(init[1])).astype(np.float32)
        return
    if kind == "const":
        yield np.full(shape, init[1], dtype=np.float32)
        return
    if kind == "hc_base":
        hc = init[1]
        base = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        base[2 * hc:] += np.eye(hc, dtype=np.float32).reshape(-1)     # comb logits prefer their own stream
        yield base
        return
    if kind == "tid2eid":
        E = init[1]
        V, k = shape
        out = np.empty(shape, dtype=np.int64)
        rows = max(1, CHUNK_ELEMS // E)
        for r0 in range(0, V, rows):
            r1 = min(V, r0 + rows)
            out[r0:r1] = np.argsort(rng.random((r1 - r0, E)), axis=1)[:, :k]   # k distinct experts
        yield out
        return
    raise ValueError(f"unknown init {init!r} for {name}")


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def plan_shards(entries, n_shards):
    """Splits the entries (schema order) into n_shards consecutive groups of about equal bytes."""
    total = sum(nbytes(e) for e in entries)
    n_shards = max(1, min(n_shards, len(entries)))
    target = total / n_shards
    groups, cur, acc = [], [], 0
    for i, e in enumerate(entries):
        left_entries = len(entries) - i
        left_groups = n_shards - len(groups)
        if cur and (acc + nbytes(e) / 2 > target) and left_groups > 1 and left_entries >= left_groups - 1:
            groups.append(cur)
            cur, acc = [], 0
        cur.append(e)
        acc += nbytes(e)
    groups.append(cur)
    return groups


def shard_header(group):
    """(header bytes incl. the 8-byte length, ordered entries). Order: element size desc, then name."""
    ordered = sorted(group, key=lambda e: (-DTYPE_SIZE[e[1]], e[0]))
    meta = {"__metadata__": {"format": "pt"}}
    off = 0
    for name, dt, shape, _ in ordered:
        n = math.prod(shape) * DTYPE_SIZE[dt]
        meta[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    text = json.dumps(meta, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8)
    return struct.pack("<Q", len(text)) + text, ordered


class Progress:
    def __init__(self, total, enabled):
        self.total, self.done, self.enabled, self.t0, self.last = total, 0, enabled, time.time(), 0.0

    def update(self, n, label):
        self.done += n
        now = time.time()
        if not self.enabled or (now - self.last < 0.2 and self.done < self.total):
            return
        self.last = now
        frac = self.done / max(1, self.total)
        bar = "#" * int(frac * 30)
        rate = self.done / max(1e-9, now - self.t0) / 2**20
        sys.stderr.write(f"\r[{bar:<30}] {frac * 100:5.1f}% {self.done / 2**30:6.2f}/{self.total / 2**30:.2f} GiB "
                         f"{rate:6.0f} MiB/s  {label[:48]:<48}")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def write_checkpoint(cfg, out, seed, quant, n_shards, progress, spot_dir=None, spot_names=()):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("model-*-of-*.safetensors")) + [out / "model.safetensors.index.json"]:
        if stale.exists():
            stale.unlink()
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    # tokenizer.json + tokenizer_config.json in the official structure, vocab = the config's
    # (pure Python: no `tokenizers` needed here)
    make_tokenizer.write_dir(out, make_tokenizer.toy_tokenizer(cfg["vocab_size"]), cfg["max_position_embeddings"])
    entries = schema(cfg)
    shapes = {e[0]: e[2] for e in entries}
    groups = plan_shards(entries, n_shards)
    total = sum(nbytes(e) for e in entries)
    bar = Progress(total, progress)
    weight_map = {}
    spot = {}
    for si, group in enumerate(groups):
        fname = f"model-{si + 1:05d}-of-{len(groups):05d}.safetensors"
        header, ordered = shard_header(group)
        with open(out / fname, "wb") as f:
            f.write(header)
            for entry in ordered:
                name, dt, shape, _ = entry
                written = 0
                parts = []
                for chunk in generate(entry, shapes, seed, quant):
                    chunk = np.ascontiguousarray(chunk, dtype=STORAGE[dt])
                    f.write(chunk.tobytes())
                    written += chunk.nbytes
                    bar.update(chunk.nbytes, name)
                    if name in spot_names:
                        parts.append(chunk)
                if written != nbytes(entry):
                    raise RuntimeError(f"{name}: wrote {written} bytes, expected {nbytes(entry)}")
                if parts:
                    spot[name] = np.concatenate(parts).reshape(shape)
                weight_map[name] = fname
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    if spot_dir:
        spot_dir = pathlib.Path(spot_dir)
        spot_dir.mkdir(parents=True, exist_ok=True)
        for name, arr in spot.items():
            np.save(spot_dir / f"{name}.npy", arr, allow_pickle=False)
        (spot_dir / "names.txt").write_text("".join(n + "\n" for n in sorted(spot)))
    return len(entries), total, len(groups)


# Tensors whose generated bytes --spot saves as .npy (one of each dtype and quantisation kind,
# spread over the shards).
SPOT_DEFAULT = ["embed.weight", "head.weight", "hc_head_fn", "hc_head_scale", "layers.0.ffn.gate.tid2eid",
                "layers.0.attn.wq_a.weight", "layers.0.attn.wq_a.scale", "layers.1.ffn.experts.3.w2.weight",
                "layers.1.ffn.experts.3.w2.scale", "layers.1.attn.indexer.compressor.ape",
                "layers.2.attn.compressor.wkv.weight", "layers.3.ffn.gate.bias", "mtp.0.e_proj.weight",
                "mtp.0.hc_head_base"]


def with_layers(cfg, n):
    """A copy of cfg with n main layers: compress_ratios keeps its first main entry, repeats the
    rest of the main pattern and keeps the MTP entries; num_hash_layers is capped at n."""
    cfg = json.loads(json.dumps(cfg))
    L = cfg["num_hidden_layers"]
    main, mtp = cfg["compress_ratios"][:L], cfg["compress_ratios"][L:]
    cycle = main[1:] or main
    ratios = main[:1] + [cycle[i % len(cycle)] for i in range(n - 1)]
    cfg["num_hidden_layers"] = n
    cfg["compress_ratios"] = ratios[:n] + mtp
    cfg["num_hash_layers"] = min(cfg.get("num_hash_layers", 0), n)
    return cfg


def edit_config(cfg, sets=(), unsets=()):
    """A copy of cfg with ``FIELD=JSON`` assignments and FIELD removals applied (in that order)."""
    cfg = json.loads(json.dumps(cfg))
    for item in sets:
        key, eq, val = item.partition("=")
        if not eq or not key:
            raise ValueError(f"--set {item!r}: expected FIELD=JSON")
        try:
            cfg[key] = json.loads(val)
        except json.JSONDecodeError as e:
            raise ValueError(f"--set {key}: value {val!r} is not JSON ({e})") from None
    for key in unsets:
        if key not in cfg:
            raise ValueError(f"--unset {key}: no such field in the config")
        del cfg[key]
    return cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", required=True, choices=sorted(PRESETS))
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quant", choices=["exact", "fast"], help="weight quantisation mode (see above)")
    ap.add_argument("--shards", type=int, help="number of shards (>= 2)")
    ap.add_argument("--layers", type=int, metavar="N",
                    help="main layers (the preset's compress_ratios pattern repeated; real-dims: "
                         "N=9 is ~35 GB, for runs larger than RAM)")
    ap.add_argument("--config-only", action="store_true", help="write config.json only")
    ap.add_argument("--spot", metavar="DIR", help="also save a few tensors' bytes as .npy in DIR")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="replace a top-level config field (value parsed as JSON); repeatable")
    ap.add_argument("--unset", action="append", default=[], metavar="FIELD",
                    help="remove a top-level config field; repeatable")
    prog = ap.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args()
    cfg = json.loads(json.dumps(PRESETS[args.preset]))
    if args.layers is not None:
        if args.layers < 1:
            ap.error("--layers must be at least 1")
        cfg = with_layers(cfg, args.layers)
    try:
        cfg = edit_config(cfg, args.set, args.unset)
    except ValueError as e:
        ap.error(str(e))
    d = DEFAULTS[args.preset]
    quant = args.quant or d["quant"]
    shards = args.shards if args.shards is not None else d["shards"]
    if shards < 2:
        ap.error("--shards must be at least 2 (the point is a sharded checkpoint)")
    progress = d["progress"] if args.progress is None else args.progress
    if args.preset in CONFIG_ONLY and not args.config_only:
        ap.error(f"--preset {args.preset} writes its config only (--config-only); "
                 f"its weights are {CONFIG_ONLY[args.preset]}")
    if args.config_only:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        print(f"make_checkpoint: {args.preset} config -> {out / 'config.json'}")
        return
    t0 = time.time()
    n, total, n_sh = write_checkpoint(cfg, args.out, args.seed, quant, shards, progress,
                                      args.spot, SPOT_DEFAULT if args.spot else ())
    print(f"make_checkpoint: {args.preset}: {n} tensors, {total} bytes, {n_sh} shards -> {args.out} "
          f"({time.time() - t0:.1f} s, quant={quant})")


if __name__ == "__main__":
    main()
