"""Whole-model forward pass of DeepSeek-V4-Flash (spec §4-§9), NumPy only.

    m = Model("/path/to/checkpoint")           # dir with config.json + safetensors (index or single)
    logits = m.prefill(ids)                    # start_pos 0, any S >= 1: f32 [vocab] of the LAST position
    logits = m.decode(tok)                     # one token at position m.pos (>= 1): f32 [vocab]

Composition (spec §9): ``H = repeat4(embed(ids))``; per block l (§7 order)
``R=H; (y,post,C)=hc_pre(H, hc_attn_*); y=attn_norm(y); y=Attention_l(y); H=hc_post(y,R,post,C);
R=H; (y,post,C)=hc_pre(H, hc_ffn_*); y=ffn_norm(y); y=MoE_l(y, ids); H=hc_post(y,R,post,C)``;
then ``y = hc_head(H)``, ``z = norm(y)`` (bf16), ``logits = f32(z[last]) . f32(head)^T`` (f32).
The MTP block is not part of the main forward; dsv4_ref/mtp.py runs it through ``block`` with its
official layer id ``n_layers + j`` (prefix ``mtp.{j}.``) and its own ``LayerState``. After every
call ``final_streams`` holds the residual streams H [S, 4, dim] of all positions before hc_head
(the MTP block's input).

Every kernel is the tested kernel reference of this package (no re-implementation):
formats (act_quant / simulations / dequantisation), norms_rope (RMSNorm, per-head q norm, RoPE,
Hadamard), attention (index lists, ring buffer, sparse_attn in kernel precision, inverse RoPE),
compressor (§5 state machine), indexer (§6), mhc (§7), moe (gate / routing / SwiGLU / quantised
linears, §8). This module only wires them together and keeps the per-sequence state.

Precision (what is rounded where; "bf16" = RNE to bfloat16, values carried in float32 arrays):
* embedding rows: bf16 (exact); residual H: bf16 after every hc_post.
* FP8 linears (wq_a, wq_b, wkv, wo_b, indexer.wq_b, shared w1/w3/w2) and FP4 expert linears:
  act_quant(x, 128) (E8M0 power-of-two scales) x dequantised weight, exact sum -> f32 -> bf16
  (``moe.quant_linear``; identical to ``indexer.fp8_linear``).
* q path: qr = q_norm(wq_a(x)) (bf16); q = wq_b(qr) (bf16) -> per-head q norm in bf16 arithmetic
  -> RoPE (bf16). kv path: kv = kv_norm(wkv(x)) -> RoPE (bf16) -> FP8 simulation of the nope dims
  in 64-blocks (current revision: e4m3 round trip; initial revision: identity).
* sparse_attn: official kernel precision (``attention.sparse_attention``), bf16 output; inverse
  RoPE with the query position (bf16).
* wo_a: weights dequantised FP8 -> bf16 (exact for these formats), bf16 activations, f32
  accumulate, bf16 per group; wo_b: FP8 linear.
* compressor / indexer / hc / MoE: exactly as their modules document.
* head: float64 dot of the bf16 final-norm output with the bf16 head rows, rounded once to f32.

Revisions (spec §10.1): ``revision="current"`` (default) or ``"initial"`` sets both switches;
``kv_fp8_sim`` ("current" | "initial") and ``shared_clamp`` (bool) override them individually.

Per-sequence state (spec §5.5), kept per layer in ``Model.layers[l]`` (a ``LayerState``):
window ring [window, head_dim] (slot of position p = p mod window); compressed entries (ratio
4/128) [n, head_dim]; main compressor state; for ratio-4 layers the indexer key cache and the
indexer compressor state. ``prefill`` resets everything (a prefill starts a sequence);
``decode`` continues the current sequence; ``reset()`` clears explicitly.

Prefill vs decode (different code paths, spec §4 steps 4-7): the only difference that can change
bits is the column layout of the sparse-attention index list, which decides how the valid indices
fall into the kernel's 64-wide online-softmax blocks (where the running maximum is taken and the
unnormalised weights are rounded to bf16). The reference uses the OFFICIAL layout of both paths
(inference/model.py get_window_topk_idxs / get_compress_topk_idxs / Attention.forward):
prefill rows are [window: min(S, window) columns | compressed], the compressed part starting at
column min(S, window) with values offset by S; decode rows are [window: ``window`` ring slots |
compressed] with values offset by ``window``. For S >= window both put the compressed part at
column ``window`` and prefill(N) + decode(k) reproduces prefill(N+k) bit for bit when N >= window
(tested); for shorter prompts in layers with visible compressed entries (ratio 4, S >= 4) the
official prefill and decode layouts put those entries into different blocks, so the two paths
differ by bf16 ulps exactly as the official code's do (amplified by FP8 activation quantisation
and top-k choices, see below). Padding the prefill window part to ``window`` columns is NOT
neutral and is not offered.

Composition choices where the spec leaves room (see also the kernel modules' own lists):
1. Prefill index-list layout: the official one (above, ``attention.prefill_index_list``); offsets
   of compressed entries = S (prefill, rows after the S local KV rows; the indexer gets the same
   offset, official ``offset = kv.size(1)``) and ``window`` (decode, cache slot window + i).
2. Prefill indexer: q/weights of all S tokens against the S//4 entries emitted by the indexer's own
   prefill compressor; causal mask u >= (t+1)//4 -> -inf; k = min(index_topk, S//4); masked picks
   -> -1 (they may appear in rows with fewer than k visible entries). Runs before the main
   compressor (which does not influence it anyway). Decode: compressor step first, so an entry
   completed at this position is scored and attended at once.
3. Positions: token t of a call sits at start_pos + t for q, window KV, indexer q and the inverse
   RoPE; compressed entry i at i*r (the compressor module). Ratio-4/128 layers use
   compress_rope_theta + YaRN for all of these (YaRN whenever original_seq_len > 0, even when
   max_position_embeddings < original_seq_len, as in the toy config); ratio-0 layers rope_theta.
4. bf16 rounding points between kernels: embedding rows; hc_pre output; every RMSNorm output; every
   quantised-linear output; q after the head norm and after RoPE; kv after RoPE and after the FP8
   simulation; sparse_attn output; de-rotated output; each wo_a group output; wo_b output; the
   MoE combine; hc_post output (the residual). f32 (not rounded): hc mixes/pre/post/comb, gate
   scores and routing weights, SwiGLU intermediate until its bf16 cast, compressor K/Z/states,
   logits.
5. hc_head / final norm / head are evaluated for the last position only (they are per token).
6. Shared experts: ``n_shared_experts`` > 1 is one expert of width n_shared * moe_inter_dim
   (checkpoint layout); hash layers are the first ``n_hash_layers`` layers and route by the id of
   the token at that position.
7. Decode requires a prefix (start_pos > 0); chunked prefill (start_pos > 0, S > 1) is rejected.

Diagnostics: ``Model(..., diagnostics=True)`` fills ``m.diag`` after every prefill/decode with
the last position's residual after each block (``layer_out`` [L, 4, dim]), the final-norm output
(``final_norm`` [dim]), the MoE selection (``moe_idx``/``moe_w`` [L, k], ascending expert id) and
the indexer selection of ratio-4 layers (``index_idx`` [L, index_topk], entry numbers ascending,
-1 padded; rows of other layers stay -1).

Sensitivity (measured on the toy checkpoint): a bf16-ulp change of one activation is usually
absorbed, but when it flips an e4m3 rounding of an FP8 GEMM input (a 2^-4 relative step), an
indexer top-k choice (bf16 scores, index_topk 8 of up to 75 entries) or a MoE routing choice, the
logits move by O(0.01-1). Replacing the exact (order-independent) sums by plain f32 BLAS sums and
f32 exp in hc_pre mixes and sparse_attn — what a C++ port does — leaves 1- and 7-token prompts
bit-identical but moves 130/300-token logits by ~5 % relative RMS, with occasional steps at ~45 %
after a top-k flip.
"""
import math
import pathlib

import numpy as np

from . import attention as AT
from . import compressor as CP
from . import formats as FM
from . import indexer as IX
from . import mhc as HC
from . import moe as MO
from . import norms_rope as NR
from .safetensors_np import SafeTensors, load_config

F32 = np.float32
F64 = np.float64

__all__ = ["Model", "LayerState"]

REVISIONS = ("current", "initial")


def _bf16_vals(bits):
    return FM.bf16_bits_to_f32(bits)


# ------------------------------------------------------------------------------------------------
# weights
# ------------------------------------------------------------------------------------------------
class _Weights:
    """Checkpoint access with decoded / dequantised caches (bounded by ``cache_bytes``)."""

    def __init__(self, st, cache_bytes):
        self.st = st
        self.budget = int(cache_bytes)
        self.cache = {}

    def _cached(self, key, make):
        if key in self.cache:
            return self.cache[key]
        v = make()
        if v.nbytes <= self.budget:
            self.cache[key] = v
            self.budget -= v.nbytes
        return v

    def has(self, name):
        return name in self.st

    def raw(self, name):
        return self.st.get(name)

    def f32(self, name):
        """F32 tensor as a float32 array."""
        if self.st.dtype(name) != "F32":
            raise ValueError(f"{name}: expected F32, got {self.st.dtype(name)}")
        return self._cached(("f32", name), lambda: np.array(self.st.get(name), dtype=F32))

    def bf16(self, name):
        """BF16 tensor as float32 values (exact)."""
        if self.st.dtype(name) != "BF16":
            raise ValueError(f"{name}: expected BF16, got {self.st.dtype(name)}")
        return self._cached(("bf16", name), lambda: _bf16_vals(self.st.get(name)))

    def fp8(self, base):
        """FP8 block-scaled weight ``base.weight`` / ``base.scale`` -> float64 [N, K] (exact)."""
        w, s = base + ".weight", base + ".scale"
        if self.st.dtype(w) != "F8_E4M3" or self.st.dtype(s) != "F8_E8M0":
            raise ValueError(f"{base}: expected F8_E4M3 + F8_E8M0")
        return self._cached(("fp8", base), lambda: FM.fp8_dequant(self.st.get(w), self.st.get(s)))

    def fp8_bf16(self, base):
        """FP8 weight dequantised to bf16 (the official wo_a load-time conversion), float32."""
        return self._cached(("fp8_bf16", base),
                            lambda: FM.bf16_round(self.fp8(base).astype(F32)).astype(F32))

    def fp4(self, base):
        """FP4 (I8-packed) weight with per-32 E8M0 scales -> float64 [N, K] (exact)."""
        w, s = base + ".weight", base + ".scale"
        if self.st.dtype(w) != "I8" or self.st.dtype(s) != "F8_E8M0":
            raise ValueError(f"{base}: expected I8 (packed FP4) + F8_E8M0")
        return self._cached(("fp4", base), lambda: FM.fp4_dequant(self.st.get(w), self.st.get(s)))


# ------------------------------------------------------------------------------------------------
# per-layer state
# ------------------------------------------------------------------------------------------------
class LayerState:
    """Everything one layer keeps between calls for one sequence (spec §5.5)."""

    def __init__(self, ratio, head_dim, window, index_head_dim):
        self.ratio = ratio
        self.head_dim = head_dim
        self.window = window
        self.index_head_dim = index_head_dim
        self.reset()

    def reset(self):
        self.ring = np.zeros((self.window, self.head_dim), dtype=F32)     # bf16 values
        self.comp = np.zeros((0, self.head_dim), dtype=F32)               # compressed entries
        self.comp_state = CP.CompressorState(self.ratio, self.head_dim) if self.ratio else None
        self.index = IX.IndexerState(self.index_head_dim) if self.ratio == 4 else None


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------
class Model:
    """DeepSeek-V4 main-model forward (no MTP) over one sequence at a time.

    Parameters: ``path`` checkpoint directory (config.json + safetensors); ``revision`` "current"
    (default) / "initial"; ``kv_fp8_sim`` / ``shared_clamp`` override the revision's switches;
    ``cache_bytes`` bounds the cache of dequantised float64 weights (default 4 GiB; everything
    fits for the toy checkpoint; larger models dequantise the rest on use); ``diagnostics``
    fills ``self.diag`` after every call (module doc).
    """

    def __init__(self, path, revision="current", kv_fp8_sim=None, shared_clamp=None,
                 cache_bytes=4 << 30, diagnostics=False):
        if revision not in REVISIONS:
            raise ValueError(f"revision must be one of {REVISIONS}")
        self.path = pathlib.Path(path)
        self.cfg = load_config(self.path)
        self.keep_diag = bool(diagnostics)
        self.w = _Weights(SafeTensors(self.path), cache_bytes)
        self.kv_fp8_sim = revision if kv_fp8_sim is None else kv_fp8_sim
        if self.kv_fp8_sim not in REVISIONS:
            raise ValueError(f"kv_fp8_sim must be one of {REVISIONS}")
        self.shared_clamp = (revision == "current") if shared_clamp is None else bool(shared_clamp)
        c = self.cfg
        if c["score_func"] != "sqrtsoftplus":
            raise NotImplementedError(f"score_func {c['score_func']}")
        if c["rope_head_dim"] != NR.ROPE_DIM:
            raise NotImplementedError("the kernel references assume rope_head_dim = 64")
        if any(r == 4 for r in c["compress_ratios"][:c["n_layers"]]) and \
                c["index_head_dim"] != IX.INDEX_HEAD_DIM:
            raise NotImplementedError("the indexer reference assumes index_head_dim = 128")
        if c["hc_mult"] != HC.HC:
            raise NotImplementedError("the mHC reference assumes hc_mult = 4")
        if (c["n_heads"] * c["head_dim"]) % c["o_groups"]:
            raise ValueError("n_heads * head_dim not divisible by o_groups")
        self.scale = F32(1.0 / math.sqrt(c["head_dim"]))
        self.freqs = {r: NR.rope_freqs_for_layer(r, c) for r in set(c["compress_ratios"])}
        self.layers = []
        for l in range(c["n_layers"]):
            r = c["compress_ratios"][l]
            self.layers.append(LayerState(r, c["head_dim"], c["window_size"], c["index_head_dim"]))
        self.pos = 0
        self.diag = None           # per-call diagnostics of the last position (see forward)
        self.final_streams = None  # H [S, 4, dim] (bf16) of the last call, before hc_head

    # -------------------------------------------------------------------------------------------
    def reset(self):
        for st in self.layers:
            st.reset()
        self.pos = 0

    def embed(self, ids):
        E = self.w.raw("embed.weight")
        return _bf16_vals(E[np.asarray(ids, dtype=np.int64)])

    # -------------------------------------------------------------------------------------------
    # attention (spec §4)
    # -------------------------------------------------------------------------------------------
    def _note_index(self, l, row, offset):
        """Diagnostics: the indexer's selection for the last query, as sorted entry numbers."""
        if self.diag is not None and l < self.cfg["n_layers"]:
            sel = np.sort(row[row >= 0].astype(np.int64) - offset)
            self.diag["index_idx"][l, :sel.size] = sel

    def _fp8_linear(self, x, base):
        return MO.quant_linear(x, self.w.fp8(base))

    def _indexer_params(self, P):
        w = self.w
        return dict(wq_b=w.raw(P + "indexer.wq_b.weight"), wq_b_scale=w.raw(P + "indexer.wq_b.scale"),
                    weights_proj=w.bf16(P + "indexer.weights_proj.weight"),
                    comp_wkv=w.bf16(P + "indexer.compressor.wkv.weight"),
                    comp_wgate=w.bf16(P + "indexer.compressor.wgate.weight"),
                    comp_ape=w.f32(P + "indexer.compressor.ape"),
                    comp_norm_w=w.bf16(P + "indexer.compressor.norm.weight"),
                    freqs=self.freqs[4])

    def _compressor_args(self, P, ratio):
        w = self.w
        return (w.bf16(P + "compressor.wkv.weight"), w.bf16(P + "compressor.wgate.weight"),
                w.f32(P + "compressor.ape"), w.bf16(P + "compressor.norm.weight"), ratio,
                self.cfg["head_dim"], self.freqs[ratio], False)

    def block_prefix(self, l):
        """Tensor prefix of block l in the official numbering: main layers 0..n_layers-1, then the
        MTP blocks (official ``MTPBlock(n_layers + j)``, tensors ``mtp.{j}.``)."""
        n = self.cfg["n_layers"]
        return f"layers.{l}." if l < n else f"mtp.{l - n}."

    def attention(self, l, x, start_pos, st=None):
        """Attention of block l on x = attn_norm output, bf16 [S, dim]; start_pos 0 (prefill, any S)
        or > 0 with S = 1 (decode). Updates the layer state ``st`` (default: main layer l's).
        Returns bf16 [S, dim]."""
        c, w = self.cfg, self.w
        st = self.layers[l] if st is None else st
        P = self.block_prefix(l) + "attn."
        S = x.shape[0]
        H, hd, win, r = c["n_heads"], c["head_dim"], c["window_size"], st.ratio
        nope = hd - c["rope_head_dim"]
        freqs = self.freqs[r]
        pos = start_pos + np.arange(S)
        decode = start_pos > 0
        if decode and S != 1:
            raise NotImplementedError("chunked prefill (start_pos > 0 with S > 1) is not REF behaviour")

        # 1-2: q path
        qr = NR.rmsnorm(self._fp8_linear(x, P + "wq_a"), w.bf16(P + "q_norm.weight"), c["norm_eps"])
        q = self._fp8_linear(qr, P + "wq_b").reshape(S, H, hd)
        q = NR.q_head_norm(q, c["norm_eps"])
        q = NR.rope_apply(q, pos, freqs)
        # 3: kv path
        kv = NR.rmsnorm(self._fp8_linear(x, P + "wkv"), w.bf16(P + "kv_norm.weight"), c["norm_eps"])
        kv = NR.rope_apply(kv, pos, freqs)
        kv[:, :nope] = FM.act_quant_sim(kv[:, :nope], 64, revision=self.kv_fp8_sim)

        if not decode:
            # ---------------- prefill (start_pos = 0) ----------------
            st.reset()
            sel = None
            if r == 4:
                res = IX.indexer_prefill(st.index, x, qr, self._indexer_params(P), offset=S,
                                         topk=c["index_topk"])
                sel = res["idx"]
                self._note_index(l, sel[-1], S)
            idx = AT.prefill_index_list(S, r, win, sel)
            st.ring = AT.window_cache_write_prefill(st.ring, kv, win)
            kv_all = kv
            if r:
                st.comp = CP.compressor_prefill(st.comp_state, x, *self._compressor_args(P, r),
                                                fp8_sim_revision=self.kv_fp8_sim)
                kv_all = np.concatenate([kv, st.comp], axis=0)
        else:
            # ---------------- decode (one token at position p) ----------------
            p = int(start_pos)
            parts = [AT.window_indices_decode(p, win)[None, :]]
            if r == 4:                                    # indexer (its compressor first)
                res = IX.indexer_decode(st.index, x[0], qr[0], p, self._indexer_params(P),
                                        offset=win, topk=c["index_topk"])
                parts.append(res["idx"])
                self._note_index(l, res["idx"][-1], win)
            elif r:
                parts.append(AT.compressed_indices_decode(p, r, win)[None, :])
            st.ring[p % win] = kv[0]                      # window slot
            if r:                                         # main compressor
                e = CP.compressor_decode(st.comp_state, x[0], p, *self._compressor_args(P, r),
                                         fp8_sim_revision=self.kv_fp8_sim)
                if e is not None:
                    st.comp = np.concatenate([st.comp, e[None]], axis=0)
                if st.comp.shape[0] != (p + 1) // r:
                    raise RuntimeError(f"layer {l}: {st.comp.shape[0]} compressed entries at "
                                       f"position {p}, expected {(p + 1) // r}")
            kv_all = np.concatenate([st.ring, st.comp], axis=0)
            idx = np.concatenate(parts, axis=1)

        # 8: sparse attention (sink in the denominator only), 9: inverse RoPE with query positions
        o = AT.sparse_attention(q, kv_all, idx, w.f32(P + "attn_sink"), self.scale)
        o = AT.output_derope(o, pos, freqs)
        # 10: grouped wo_a (bf16 weights x bf16 activations, f32 accumulate, bf16), then wo_b
        G, R = c["o_groups"], c["o_lora_rank"]
        Wa = w.fp8_bf16(P + "wo_a").reshape(G, R, H * hd // G)
        og = o.reshape(S, G, H * hd // G).astype(F64)
        u = np.einsum("sgk,grk->sgr", og, Wa.astype(F64)).astype(F32)
        u = FM.bf16_round(u).astype(F32).reshape(S, G * R)
        return self._fp8_linear(u, P + "wo_b")

    # -------------------------------------------------------------------------------------------
    # MoE (spec §8)
    # -------------------------------------------------------------------------------------------
    def moe(self, l, x, ids):
        """MoE of block l on x = ffn_norm output bf16 [T, dim], token ids [T]. Returns bf16."""
        c, w = self.cfg, self.w
        P = self.block_prefix(l) + "ffn."
        lim = c["swiglu_limit"]
        scores = MO.gate_scores(x, w.bf16(P + "gate.weight"))
        if l < c["n_hash_layers"]:
            idx, wts = MO.route(scores, None, w.raw(P + "gate.tid2eid"), ids,
                                c["n_activated_experts"], c["route_scale"])
        else:
            idx, wts = MO.route(scores, w.f32(P + "gate.bias"), None, None,
                                c["n_activated_experts"], c["route_scale"])
        if self.diag is not None and l < c["n_layers"]:
            self.diag["moe_idx"][l] = idx[-1]
            self.diag["moe_w"][l] = wts[-1]
        y = np.zeros(x.shape, dtype=F32)
        for e in np.unique(idx):                           # ascending expert id
            rows, k = np.nonzero(idx == e)
            E = P + f"experts.{int(e)}."
            xe = x[rows]
            a = MO.quant_linear(xe, w.fp4(E + "w1"))
            b = MO.quant_linear(xe, w.fp4(E + "w3"))
            h = MO.swiglu(a, b, lim, wts[rows, k])
            out = MO.quant_linear(FM.bf16_round(h), w.fp4(E + "w2"))
            y[rows] = (y[rows] + out).astype(F32)
        if c["n_shared_experts"]:
            S = P + "shared_experts."
            a = MO.quant_linear(x, w.fp8(S + "w1"))
            b = MO.quant_linear(x, w.fp8(S + "w3"))
            h = MO.swiglu(a, b, lim if self.shared_clamp else None)
            sh = MO.quant_linear(FM.bf16_round(h), w.fp8(S + "w2"))
            y = (y + sh).astype(F32)
        return FM.bf16_round(y).astype(F32)

    # -------------------------------------------------------------------------------------------
    # blocks and head
    # -------------------------------------------------------------------------------------------
    def block(self, l, H, ids, start_pos, st=None):
        """Block l (official layer id) on the residual streams H bf16 [S, 4, dim]; ``st`` its state
        (default: main layer l's). Returns the new streams."""
        c, w = self.cfg, self.w
        P = self.block_prefix(l)
        it, he, ne = c["hc_sinkhorn_iters"], c["hc_eps"], c["norm_eps"]
        R = H
        y, post, comb, _ = HC.hc_pre(H, w.f32(P + "hc_attn_fn"), w.f32(P + "hc_attn_scale"),
                                     w.f32(P + "hc_attn_base"), it, he, ne)
        y = NR.rmsnorm(y, w.bf16(P + "attn_norm.weight"), ne)
        y = self.attention(l, y, start_pos, st)
        H = HC.hc_post(y, R, post, comb)
        R = H
        y, post, comb, _ = HC.hc_pre(H, w.f32(P + "hc_ffn_fn"), w.f32(P + "hc_ffn_scale"),
                                     w.f32(P + "hc_ffn_base"), it, he, ne)
        y = NR.rmsnorm(y, w.bf16(P + "ffn_norm.weight"), ne)
        y = self.moe(l, y, ids)
        return HC.hc_post(y, R, post, comb)

    def head(self, H_last, prefix=""):
        """hc_head -> final norm -> f32 logits for ONE position (H_last bf16 [4, dim]). ``prefix``
        selects the hc_head / norm tensors (an MTP block's own: "mtp.0."); head.weight is shared."""
        c, w = self.cfg, self.w
        y = HC.hc_head(H_last[None], w.f32(prefix + "hc_head_fn"), w.f32(prefix + "hc_head_scale"),
                       w.f32(prefix + "hc_head_base"), c["hc_eps"], c["norm_eps"])
        z = NR.rmsnorm(y, w.bf16(prefix + "norm.weight"), c["norm_eps"])[0].astype(F64)
        Wh = w.raw("head.weight")
        V = Wh.shape[0]
        out = np.empty(V, dtype=F32)
        step = max(1, (1 << 26) // max(1, Wh.shape[1] * 8))    # row chunks of <= 64 MiB float64
        for r0 in range(0, V, step):
            out[r0:r0 + step] = (_bf16_vals(Wh[r0:r0 + step]).astype(F64) @ z).astype(F32)
        if self.diag is not None and not prefix:
            self.diag["final_norm"] = z.astype(F32)
        return out

    def forward(self, ids, start_pos):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        V = self.cfg["vocab_size"]
        if ids.size == 0 or ids.min() < 0 or ids.max() >= V:
            raise ValueError(f"token ids must be non-empty and in [0, {V})")
        if start_pos + ids.size > self.cfg["max_seq_len"]:
            raise ValueError("sequence longer than max_position_embeddings")
        c = self.cfg
        self.diag = None if not self.keep_diag else dict(
            layer_out=np.zeros((c["n_layers"], c["hc_mult"], c["dim"]), F32),
            moe_idx=np.zeros((c["n_layers"], c["n_activated_experts"]), np.int32),
            moe_w=np.zeros((c["n_layers"], c["n_activated_experts"]), F32),
            index_idx=np.full((c["n_layers"], c["index_topk"]), -1, np.int32))
        x = self.embed(ids)
        H = np.repeat(x[:, None, :], self.cfg["hc_mult"], axis=1)
        for l in range(self.cfg["n_layers"]):
            H = self.block(l, H, ids, start_pos)
            if self.diag is not None:
                self.diag["layer_out"][l] = H[-1]
        self.pos = start_pos + ids.size
        self.final_streams = H
        return self.head(H[-1])

    def prefill(self, ids):
        """Start a new sequence: reset all state, run ids (any length >= 1) at positions 0..S-1,
        return the f32 logits [vocab] of the last position (official prefill layout)."""
        self.reset()
        return self.forward(ids, 0)

    def decode(self, token):
        """Append one token at position ``self.pos`` (> 0, after a prefill); returns f32 logits."""
        if self.pos == 0:
            raise RuntimeError("decode needs a prefix: call prefill first")
        return self.forward(np.array([int(token)]), self.pos)
