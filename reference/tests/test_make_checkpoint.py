"""Tests of reference/make_checkpoint.py: the toy checkpoint is in the official safetensors layout
and its weights are scaled so that a forward pass through the 4-stream mHC + MoE stack stays
finite with non-degenerate logits.

Run: /usr/bin/python3 -m unittest discover -s reference/tests
"""
import json
import math
import pathlib
import struct
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import make_checkpoint as MC  # noqa: E402
from dsv4_ref import formats as FM  # noqa: E402
from dsv4_ref import mhc, moe  # noqa: E402
from dsv4_ref.norms_rope import q_head_norm, rmsnorm  # noqa: E402

NP_DTYPE = {"BF16": np.uint16, "F32": np.float32, "I64": np.int64, "F8_E4M3": np.uint8, "F8_E8M0": np.uint8,
            "I8": np.uint8}


def read_safetensors(path):
    """Independent NumPy reader: {name: (dtype, array)} plus the raw header facts."""
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + n])
    start = 8 + n
    out = {}
    for name, d in hdr.items():
        if name == "__metadata__":
            continue
        b, e = d["data_offsets"]
        arr = np.frombuffer(raw, dtype=NP_DTYPE[d["dtype"]], count=(e - b) // np.dtype(NP_DTYPE[d["dtype"]]).itemsize,
                            offset=start + b).reshape(d["shape"])
        out[name] = (d["dtype"], arr)
    return raw, n, hdr, out


class ToyCheckpoint(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.dir = pathlib.Path(cls.tmp.name) / "toy"
        cfg = json.loads(json.dumps(MC.PRESETS["toy"]))
        MC.write_checkpoint(cfg, cls.dir, seed=7, quant="exact", n_shards=3, progress=False)
        cls.cfg = json.loads((cls.dir / "config.json").read_text())
        cls.index = json.loads((cls.dir / "model.safetensors.index.json").read_text())
        cls.t = {}
        cls.files = {}
        for shard in sorted(set(cls.index["weight_map"].values())):
            cls.files[shard] = read_safetensors(cls.dir / shard)
            for name, v in cls.files[shard][3].items():
                cls.t[name] = v

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_layout_is_the_official_one(self):
        self.assertGreaterEqual(len(self.files), 2)
        self.assertEqual(sorted(self.t), sorted(self.index["weight_map"]))
        schema = {n: (dt, shape) for n, dt, shape, _ in MC.schema(self.cfg)}
        self.assertEqual(sorted(schema), sorted(self.t))
        for name, (dt, arr) in self.t.items():
            self.assertEqual((dt, tuple(arr.shape)), schema[name], name)
        total = 0
        for shard, (raw, n, hdr, _) in self.files.items():
            self.assertEqual((8 + n) % 8, 0)                              # header padded to 8
            self.assertEqual(hdr["__metadata__"], {"format": "pt"})
            ents = sorted((d["data_offsets"], d["dtype"]) for k, d in hdr.items() if k != "__metadata__")
            pos = 0
            for (b, e), dt in ents:                                        # gapless, aligned
                self.assertEqual(b, pos)
                self.assertEqual((8 + n + b) % MC.DTYPE_SIZE[dt], 0)
                pos = e
            self.assertEqual(8 + n + pos, len(raw))                        # nothing trailing
            total += pos
        self.assertEqual(total, self.index["metadata"]["total_size"])

    def test_quantised_weights_decode_to_the_intended_scale(self):
        for name, fan_in in [("layers.1.attn.wq_b", 128), ("layers.0.ffn.shared_experts.w2", 128)]:
            w = FM.fp8_dequant(self.t[name + ".weight"][1], self.t[name + ".scale"][1])
            self.assertAlmostEqual(w.std() * math.sqrt(fan_in), 1.0, delta=0.1, msg=name)
        w = FM.fp4_dequant(self.t["layers.2.ffn.experts.5.w1.weight"][1], self.t["layers.2.ffn.experts.5.w1.scale"][1])
        self.assertAlmostEqual(w.std() * math.sqrt(256), 1.0, delta=0.15)
        tid = self.t["layers.0.ffn.gate.tid2eid"][1]
        self.assertTrue(np.all(tid[:, 0] != tid[:, 1]))
        self.assertTrue(np.all((tid >= 0) & (tid < self.cfg["n_routed_experts"])))
        self.assertEqual(len(np.unique(tid[:, 0])), self.cfg["n_routed_experts"])  # every expert used

    def bf16(self, name):
        return FM.bf16_bits_to_f32(self.t[name][1]).astype(np.float32)

    def fp8(self, base):
        return FM.fp8_dequant(self.t[base + ".weight"][1], self.t[base + ".scale"][1])

    def attention(self, P, y):
        """Plain causal attention over the layer's own projections (no RoPE / compressor / indexer:
        a scale check, not the kernel reference)."""
        c = self.cfg
        H, hd, G = c["num_attention_heads"], c["head_dim"], c["o_groups"]
        T = y.shape[0]
        qr = rmsnorm(FM.bf16_round((y @ self.fp8(P + "attn.wq_a").T).astype(np.float32)),
                     self.bf16(P + "attn.q_norm.weight"))
        q = q_head_norm(FM.bf16_round((qr @ self.fp8(P + "attn.wq_b").T).astype(np.float32)).reshape(T, H, hd))
        kv = rmsnorm(FM.bf16_round((y @ self.fp8(P + "attn.wkv").T).astype(np.float32)),
                     self.bf16(P + "attn.kv_norm.weight"))
        s = np.einsum("thd,ud->htu", q.astype(np.float64), kv) / math.sqrt(hd)
        s = np.where(np.tril(np.ones((T, T), bool))[None], s, -np.inf)
        sink = self.t[P + "attn.attn_sink"][1].astype(np.float64)[:, None, None]
        m = s.max(axis=-1, keepdims=True)
        p = np.exp(s - m)
        p = p / (p.sum(axis=-1, keepdims=True) + np.exp(sink - m))
        o = np.einsum("htu,ud->thd", p, kv).reshape(T, G, H * hd // G)
        wa = self.fp8(P + "attn.wo_a").reshape(G, -1, H * hd // G)
        u = FM.bf16_round(np.einsum("tgk,grk->tgr", o, wa).reshape(T, -1).astype(np.float32))
        return FM.bf16_round((u @ self.fp8(P + "attn.wo_b").T).astype(np.float32))

    def moe(self, P, y, ids):
        c = self.cfg
        E = c["n_routed_experts"]
        w = {k: np.stack([self.t[P + f"ffn.experts.{e}.{k[:2]}.{'weight' if len(k) == 2 else 'scale'}"][1]
                          for e in range(E)]) for k in ("w1", "w1s", "w3", "w3s", "w2", "w2s")}
        sh = {k: self.t[P + f"ffn.shared_experts.{k[:2]}.{'weight' if len(k) == 2 else 'scale'}"][1]
              for k in ("w1", "w1s", "w3", "w3s", "w2", "w2s")}
        bias = self.t.get(P + "ffn.gate.bias", (None, None))[1]
        tid = self.t.get(P + "ffn.gate.tid2eid", (None, None))[1]
        return moe.moe_forward(y, ids, self.bf16(P + "ffn.gate.weight"), bias, tid,
                               w["w1"], w["w1s"], w["w3"], w["w3s"], w["w2"], w["w2s"],
                               sh["w1"], sh["w1s"], sh["w3"], sh["w3s"], sh["w2"], sh["w2s"],
                               route_scale=c["routed_scaling_factor"], limit=c["swiglu_limit"],
                               topk=c["num_experts_per_tok"])

    def test_forward_stays_finite_and_logits_are_not_degenerate(self):
        c = self.cfg
        hc, iters = c["hc_mult"], c["hc_sinkhorn_iters"]
        ids = np.random.default_rng(3).integers(0, c["vocab_size"], size=24)
        H = np.repeat(self.bf16("embed.weight")[ids][:, None, :], hc, axis=1)
        rms = []
        for b in range(c["num_hidden_layers"]):
            P = f"layers.{b}."
            for site in ("attn", "ffn"):
                y, post, comb, _ = mhc.hc_pre(H, self.t[P + f"hc_{site}_fn"][1], self.t[P + f"hc_{site}_scale"][1],
                                              self.t[P + f"hc_{site}_base"][1], iters=iters)
                y = rmsnorm(y, self.bf16(P + f"{site}_norm.weight"))
                out = self.attention(P, y) if site == "attn" else self.moe(P, y, ids)
                self.assertTrue(np.all(np.isfinite(out)), f"{P}{site}")
                self.assertGreater(np.sqrt(np.mean(out.astype(np.float64) ** 2)), 1e-3, f"{P}{site} output vanished")
                H = mhc.hc_post(out, H, post, comb)
                rms.append(float(np.sqrt(np.mean(H.astype(np.float64) ** 2))))
        self.assertTrue(np.all(np.isfinite(H)))
        self.assertTrue(all(0.1 < r < 100.0 for r in rms), rms)
        y = mhc.hc_head(H, self.t["hc_head_fn"][1], self.t["hc_head_scale"][1], self.t["hc_head_base"][1])
        z = rmsnorm(y, self.bf16("norm.weight"))
        logits = z.astype(np.float64) @ self.bf16("head.weight").astype(np.float64).T
        self.assertTrue(np.all(np.isfinite(logits)))
        std = logits.std(axis=-1)
        self.assertTrue(np.all((std > 0.3) & (std < 30.0)), std)
        p = np.exp(logits - logits.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
        self.assertLess(p.max(axis=-1).mean(), 0.5)                      # not one-hot
        self.assertGreater(len(set(logits.argmax(axis=-1))), len(ids) // 2)  # positions differ


class Presets(unittest.TestCase):
    def test_v4_flash_schema_is_the_real_census(self):
        entries = MC.schema(MC.PRESETS["v4-flash"])
        self.assertEqual(len(entries), 69187)
        self.assertEqual(sum(MC.nbytes(e) for e in entries), 159609485896)

    def test_v4_pro_config_and_schema(self):
        # Published V4-Pro config (root config.json of DeepSeek-V4-Pro, copied in
        # Nicooo-Wang/DeepSeek-V4-Pro-code @ 0ec3a03): same architecture as Flash, larger dims.
        c = MC.PRESETS["v4-pro"]
        want = {"vocab_size": 129280, "hidden_size": 7168, "num_hidden_layers": 61, "num_nextn_predict_layers": 1,
                "num_attention_heads": 128, "head_dim": 512, "q_lora_rank": 1536, "o_groups": 16,
                "o_lora_rank": 1024, "index_n_heads": 64, "index_head_dim": 128, "index_topk": 1024,
                "moe_intermediate_size": 3072, "n_routed_experts": 384, "num_experts_per_tok": 6,
                "n_shared_experts": 1, "num_hash_layers": 3, "routed_scaling_factor": 2.5,
                "sliding_window": 128, "qk_rope_head_dim": 64, "max_position_embeddings": 1048576}
        for k, v in want.items():
            self.assertEqual(c[k], v, k)
        r = c["compress_ratios"]
        self.assertEqual(len(r), 62)
        self.assertEqual(r[:4], [128, 128, 4, 128])
        self.assertEqual(r[-2:], [4, 0])
        self.assertEqual((r[:61].count(4), r[:61].count(128), r[:61].count(0)), (30, 31, 0))
        entries = MC.schema(c)
        self.assertEqual(len(entries), 145116)            # 6 + 30*2344 + 31*2337 + MTP 2343
        self.assertEqual(sum(MC.nbytes(e) for e in entries), 864704792696)
        per = {}
        for name, *_ in entries:
            b = ".".join(name.split(".")[:2]) if name.startswith(("layers.", "mtp.")) else "top"
            per[b] = per.get(b, 0) + 1
        self.assertEqual((per["top"], per["layers.0"], per["layers.2"], per["layers.3"], per["mtp.0"]),
                         (6, 2337, 2344, 2337, 2343))
        shapes = {e[0]: e[2] for e in entries}
        self.assertEqual(shapes["layers.5.attn.wo_a.weight"], (16 * 1024, 128 * 512 // 16))
        self.assertEqual(shapes["layers.5.attn.wq_b.scale"], (128 * 512 // 128, 1536 // 128))
        self.assertEqual(shapes["layers.60.ffn.experts.383.w2.weight"], (7168, 3072 // 2))
        self.assertEqual(shapes["layers.0.ffn.gate.tid2eid"], (129280, 6))
        self.assertEqual(shapes["layers.0.attn.compressor.ape"], (128, 512))
        self.assertNotIn("layers.0.attn.indexer.wq_b.weight", shapes)

    def test_config_only_presets_refuse_weights(self):
        import subprocess
        with tempfile.TemporaryDirectory() as tmp:
            for preset in ("v4-pro", "v4-flash"):
                r = subprocess.run([sys.executable, str(pathlib.Path(MC.__file__)), "--preset", preset,
                                    "--out", tmp], capture_output=True, text=True)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("--config-only", r.stderr)
            r = subprocess.run([sys.executable, str(pathlib.Path(MC.__file__)), "--preset", "v4-pro",
                                "--config-only", "--out", tmp], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads((pathlib.Path(tmp) / "config.json").read_text()), MC.PRESETS["v4-pro"])

    def test_config_edits(self):
        toy = MC.PRESETS["toy"]
        c = MC.edit_config(toy, ["o_lora_rank=64", "compress_ratios=[0,4,128,4]", "sliding_window=64"],
                           ["num_nextn_predict_layers"])
        self.assertEqual((c["o_lora_rank"], c["sliding_window"]), (64, 64))
        self.assertEqual(c["compress_ratios"], [0, 4, 128, 4])
        self.assertNotIn("num_nextn_predict_layers", c)
        self.assertIn("num_nextn_predict_layers", toy)      # the preset itself is untouched
        for bad_set, bad_unset in ((["o_lora_rank"], []), (["=1"], []), (["x=not json"], []), ([], ["nope"])):
            with self.assertRaises(ValueError):
                MC.edit_config(toy, bad_set, bad_unset)
        # Absent MTP count: no MTP block in the schema (the extra compress_ratios entry is unused).
        no_mtp = MC.edit_config(toy, [], ["num_nextn_predict_layers"])
        names = [e[0] for e in MC.schema(no_mtp)]
        self.assertFalse(any(n.startswith("mtp.") for n in names))
        self.assertEqual(len(names), len(MC.schema(toy)) - 87)
        # o_lora_rank 64 with o_groups 2: wo_a [128, 256], wo_b [256, 128]
        sh = {e[0]: e[2] for e in MC.schema(MC.edit_config(toy, ["o_lora_rank=64"]))}
        self.assertEqual(sh["layers.1.attn.wo_a.weight"], (128, 256))
        self.assertEqual(sh["layers.1.attn.wo_b.weight"], (256, 128))
        # index_head_dim 96 (not a power of two): indexer wq_b and compressor widths follow
        sh = {e[0]: e[2] for e in MC.schema(MC.edit_config(toy, ["index_head_dim=96"]))}
        self.assertEqual(sh["layers.1.attn.indexer.wq_b.weight"], (4 * 96, 128))
        self.assertEqual(sh["layers.1.attn.indexer.compressor.ape"], (4, 192))

    def test_layers_option(self):
        # --layers N: the main compress_ratios pattern repeated, MTP entries kept, hash layers capped
        rd = MC.with_layers(MC.PRESETS["real-dims"], 10)
        self.assertEqual(rd["num_hidden_layers"], 10)
        self.assertEqual(rd["compress_ratios"], [0, 4, 128, 4, 128, 4, 128, 4, 128, 4])
        self.assertEqual(MC.PRESETS["real-dims"]["num_hidden_layers"], 3)   # the preset is untouched
        toy = MC.with_layers(MC.PRESETS["toy"], 6)
        self.assertEqual(toy["compress_ratios"], [0, 4, 128, 4, 4, 128, 0])  # 6 main + the MTP block's
        one = MC.with_layers(MC.PRESETS["toy"], 1)
        self.assertEqual((one["compress_ratios"], one["num_hash_layers"]), ([0, 0], 1))
        names = {e[0] for e in MC.schema(rd)}
        self.assertIn("layers.9.ffn.experts.255.w2.scale", names)
        self.assertNotIn("layers.10.attn_norm.weight", names)

    def test_fast_mode_tables_match_exact_quantisation(self):
        std = 1.0 / math.sqrt(4096)
        code, sigma = MC._fast_scale(std, FM.E2M1_MAX, MC.FP4_BLOCK_AMAX)
        u = np.random.default_rng(0).integers(0, 65536, size=1 << 16, dtype=np.uint16)
        w = FM.fp4_dequant(MC._TABLES.fp4_bytes(sigma)[u].reshape(64, -1), np.full((64, 2048 // 32), code, np.uint8))
        self.assertAlmostEqual(w.std() / std, 1.0, delta=0.1)
        code8, sigma8 = MC._fast_scale(std, FM.E4M3_MAX, MC.FP8_BLOCK_AMAX)
        w8 = FM.fp8_dequant(MC._TABLES.fp8(sigma8)[u].reshape(128, -1), np.full((1, 4), code8, np.uint8))
        self.assertAlmostEqual(w8.std() / std, 1.0, delta=0.05)


if __name__ == "__main__":
    unittest.main()
