"""Minimal safetensors reader and DeepSeek-V4 config loader (spec §0, §1), NumPy + stdlib only.

Reader
------
``SafeTensors(path)`` opens a single ``*.safetensors`` file, a sharded checkpoint directory
(resolved through ``model.safetensors.index.json``, spec §1.1; the shard count is never assumed)
or the index file itself. Tensors are memory-mapped read-only and returned as NumPy arrays in
their *storage* encoding (spec §1.2/§1.4), never decoded:

=========== ========= ==========================================================
dtype        NumPy     meaning
=========== ========= ==========================================================
F8_E4M3      uint8     e4m3fn codes (decode with formats.e4m3_decode)
F8_E8M0      uint8     E8M0 exponent bytes (formats.e8m0_decode)
I8           uint8     packed FP4 e2m1, element 2k in the low nibble (formats.unpack_fp4)
BF16         uint16    bfloat16 bit patterns (formats.bf16_bits_to_f32)
F16          uint16    IEEE half bit patterns (formats.fp16_bits_to_f32)
F32 / F64    float32 / float64
I64/I32/I16  int64 / int32 / int16
U8 / BOOL    uint8 / bool
=========== ========= ==========================================================

(I8 is returned as uint8 on purpose: in DeepSeek-V4 checkpoints the I8 dtype only ever holds
packed FP4 bytes, spec §1.2.)  Data offsets are relative to the end of the header (8-byte LE
length + JSON). Every header entry is validated (dtype known, byte length = prod(shape) * size,
offsets inside the file).

Config
------
``load_config(path)`` reads an HF-style ``config.json`` (root config of the official repo, or
what ``reference/make_checkpoint.py`` writes) *or* the official ``inference/config.json``
(ModelArgs names) and returns a dict keyed by the official ModelArgs names of spec §0 (``dim``,
``n_layers``, ``n_heads``, ``window_size``, ...). Missing optional fields fall back to the V4-Flash
values of spec §0; structural fields (dims, layer count, ratios) are required.
"""
import json
import mmap
import os
import pathlib
import struct

import numpy as np

__all__ = ["SafeTensors", "load_safetensors", "load_config", "DTYPES"]

# dtype string -> (numpy storage dtype, element size in bytes)
DTYPES = {
    "F8_E4M3": (np.uint8, 1),
    "F8_E8M0": (np.uint8, 1),
    "I8": (np.uint8, 1),
    "U8": (np.uint8, 1),
    "BOOL": (np.bool_, 1),
    "BF16": (np.uint16, 2),
    "F16": (np.uint16, 2),
    "I16": (np.int16, 2),
    "F32": (np.float32, 4),
    "I32": (np.int32, 4),
    "F64": (np.float64, 8),
    "I64": (np.int64, 8),
}

INDEX_NAME = "model.safetensors.index.json"


class _File:
    """One safetensors file: parsed header + read-only mmap of the whole file."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        with open(self.path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError(f"{self.path}: too short for a safetensors header")
            (n,) = struct.unpack("<Q", head)
            size = os.fstat(f.fileno()).st_size
            if n > size - 8:
                raise ValueError(f"{self.path}: header length {n} exceeds the file")
            meta = json.loads(f.read(n).decode("utf-8"))
            self.data_start = 8 + n
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
        self.meta = {}
        for name, ent in meta.items():
            if name == "__metadata__":
                continue
            dt = ent["dtype"]
            if dt not in DTYPES:
                raise ValueError(f"{self.path}: tensor {name}: unsupported dtype {dt}")
            shape = tuple(int(s) for s in ent["shape"])
            b, e = (int(v) for v in ent["data_offsets"])
            want = int(np.prod(shape, dtype=np.int64)) * DTYPES[dt][1]
            if e - b != want or b < 0 or self.data_start + e > size:
                raise ValueError(f"{self.path}: tensor {name}: bad data_offsets {b},{e} "
                                 f"for {dt}{list(shape)}")
            self.meta[name] = (dt, shape, b, e)

    def get(self, name):
        dt, shape, b, e = self.meta[name]
        npdt = DTYPES[dt][0]
        if e == b:
            return np.zeros(shape, dtype=npdt)
        arr = np.frombuffer(self._mm, dtype=npdt, count=(e - b) // DTYPES[dt][1],
                            offset=self.data_start + b)
        return arr.reshape(shape)


class SafeTensors:
    """Read-only view of a safetensors checkpoint (single file or sharded directory).

    ``st[name]`` / ``st.get(name)`` -> NumPy array (read-only, memory-mapped; ``copy=True`` for a
    writable copy); ``st.dtype(name)`` -> the safetensors dtype string; ``st.shape(name)``;
    ``name in st``; ``st.keys()`` (sorted).
    """

    def __init__(self, path):
        p = pathlib.Path(path)
        if p.is_dir():
            idx = p / INDEX_NAME
            if idx.exists():
                p = idx
            else:
                files = sorted(p.glob("*.safetensors"))
                if len(files) != 1:
                    raise FileNotFoundError(f"{path}: no {INDEX_NAME} and {len(files)} "
                                            f"*.safetensors files")
                p = files[0]
        self.root = p.parent
        self._files = {}
        self._where = {}
        if p.name.endswith(".json"):
            index = json.loads(p.read_text())
            wm = index.get("weight_map")
            if not isinstance(wm, dict):
                raise ValueError(f"{p}: no weight_map")
            for fname in sorted(set(wm.values())):
                self._files[fname] = _File(self.root / fname)
            for name, fname in wm.items():
                if name not in self._files[fname].meta:
                    raise ValueError(f"{p}: {name} mapped to {fname}, which does not hold it")
                self._where[name] = fname
        else:
            self._files[p.name] = _File(p)
            for name in self._files[p.name].meta:
                self._where[name] = p.name

    def keys(self):
        return sorted(self._where)

    def __contains__(self, name):
        return name in self._where

    def __len__(self):
        return len(self._where)

    def _meta(self, name):
        if name not in self._where:
            raise KeyError(name)
        return self._files[self._where[name]].meta[name]

    def dtype(self, name):
        return self._meta(name)[0]

    def shape(self, name):
        return self._meta(name)[1]

    def get(self, name, copy=False):
        self._meta(name)
        a = self._files[self._where[name]].get(name)
        return np.array(a) if copy else a

    __getitem__ = get


def load_safetensors(path, names=None):
    """Convenience: dict name -> array (copies) for ``names`` (default: all tensors)."""
    st = SafeTensors(path)
    return {n: st.get(n, copy=True) for n in (st.keys() if names is None else names)}


# ------------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------------
# official ModelArgs name -> HF root config.json name (spec §0 brackets); None = same name
_HF_NAMES = {
    "vocab_size": None, "dim": "hidden_size", "n_layers": "num_hidden_layers",
    "n_mtp_layers": "num_nextn_predict_layers", "n_heads": "num_attention_heads",
    "head_dim": None, "rope_head_dim": "qk_rope_head_dim", "q_lora_rank": None,
    "o_groups": None, "o_lora_rank": None, "window_size": "sliding_window",
    "compress_ratios": None, "index_n_heads": None, "index_head_dim": None, "index_topk": None,
    "moe_inter_dim": "moe_intermediate_size", "n_routed_experts": None,
    "n_activated_experts": "num_experts_per_tok", "n_shared_experts": None,
    "n_hash_layers": "num_hash_layers", "score_func": "scoring_func",
    "route_scale": "routed_scaling_factor", "swiglu_limit": None, "rope_theta": None,
    "compress_rope_theta": None, "hc_mult": None, "hc_sinkhorn_iters": None, "hc_eps": None,
    "norm_eps": "rms_norm_eps", "max_seq_len": "max_position_embeddings",
    "expert_dtype": None, "n_kv_heads": "num_key_value_heads",
}
_REQUIRED = ["vocab_size", "dim", "n_layers", "n_heads", "head_dim", "q_lora_rank", "o_groups",
             "o_lora_rank", "compress_ratios", "moe_inter_dim", "n_routed_experts",
             "n_activated_experts"]
# V4-Flash values (spec §0) for optional fields
_DEFAULTS = {
    "n_mtp_layers": 0, "rope_head_dim": 64, "window_size": 128, "index_n_heads": 64,
    "index_head_dim": 128, "index_topk": 512, "n_shared_experts": 1, "n_hash_layers": 0,
    "score_func": "sqrtsoftplus", "route_scale": 1.5, "swiglu_limit": 10.0, "rope_theta": 10000.0,
    "compress_rope_theta": 160000.0, "rope_factor": 16.0, "original_seq_len": 65536,
    "beta_fast": 32, "beta_slow": 1, "hc_mult": 4, "hc_sinkhorn_iters": 20, "hc_eps": 1e-6,
    "norm_eps": 1e-6, "max_seq_len": 1048576, "expert_dtype": "fp4", "n_kv_heads": 1,
}


def load_config(path):
    """Read config.json (HF root names or official ModelArgs names) -> dict of ModelArgs names.

    ``path``: the file or the checkpoint directory. YaRN fields come from ``rope_scaling``
    (factor, original_max_position_embeddings, beta_fast, beta_slow) in the HF format, or from
    rope_factor / original_seq_len / beta_fast / beta_slow in the official format. The raw JSON is
    kept under ``"raw"``.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / "config.json"
    raw = json.loads(p.read_text())
    cfg = {}
    for name, hf in _HF_NAMES.items():
        if hf is not None and hf in raw:
            cfg[name] = raw[hf]
        elif name in raw:
            cfg[name] = raw[name]
    rs = raw.get("rope_scaling") or {}
    yarn = {"rope_factor": ("factor", "rope_factor"),
            "original_seq_len": ("original_max_position_embeddings", "original_seq_len"),
            "beta_fast": ("beta_fast", "beta_fast"), "beta_slow": ("beta_slow", "beta_slow")}
    for name, (hf, off) in yarn.items():
        if hf in rs:
            cfg[name] = rs[hf]
        elif off in raw:
            cfg[name] = raw[off]
    missing = [k for k in _REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"{p}: missing config fields {missing}")
    for k, v in _DEFAULTS.items():
        cfg.setdefault(k, v)
    if rs and rs.get("type", rs.get("rope_type", "yarn")) != "yarn":
        raise ValueError(f"{p}: unsupported rope_scaling {rs}")
    ints = ["vocab_size", "dim", "n_layers", "n_mtp_layers", "n_heads", "head_dim", "rope_head_dim",
            "q_lora_rank", "o_groups", "o_lora_rank", "window_size", "index_n_heads",
            "index_head_dim", "index_topk", "moe_inter_dim", "n_routed_experts",
            "n_activated_experts", "n_shared_experts", "n_hash_layers", "original_seq_len",
            "beta_fast", "beta_slow", "hc_mult", "hc_sinkhorn_iters", "max_seq_len", "n_kv_heads"]
    for k in ints:
        cfg[k] = int(cfg[k])
    for k in ["route_scale", "swiglu_limit", "rope_theta", "compress_rope_theta", "rope_factor",
              "hc_eps", "norm_eps"]:
        cfg[k] = float(cfg[k])
    cfg["compress_ratios"] = [int(r) for r in cfg["compress_ratios"]]
    blocks = cfg["n_layers"] + cfg["n_mtp_layers"]       # the official code reads entry layer_id
    if len(cfg["compress_ratios"]) < blocks:
        raise ValueError(f"{p}: compress_ratios has {len(cfg['compress_ratios'])} entries for "
                         f"{cfg['n_layers']} layers + {cfg['n_mtp_layers']} MTP blocks")
    if any(r < 0 for r in cfg["compress_ratios"]):
        raise ValueError(f"{p}: negative compress ratio in {cfg['compress_ratios']}")
    cfg["raw"] = raw
    return cfg
