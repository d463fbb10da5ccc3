"""The multi-token-prediction (MTP) block of DeepSeek-V4-Flash (spec §9), NumPy only.

    m = Model(path)                       # dsv4_ref/forward.py
    mtp = MTP(m)                          # block j = 0 (tensors mtp.0.*), its own per-sequence state
    m.prefill(ids)                        # the main model over ids[0..S)
    lg = mtp.prefill(m.final_streams, next_ids)   # next_ids[t] = ids[t+1], the last one sampled
    m.decode(tok); lg = mtp.decode(m.final_streams[-1], next_tok)

Official semantics (inference/model.py, commit 0825add, class MTPBlock, M 739-767; Transformer
M 786-794):
* ``MTPBlock(layer_id = n_layers + j)`` is a ``Block``: it has its own hc_attn_* / hc_ffn_* (hc_pre
  and hc_post as every layer), attention with ratio ``compress_ratios[n_layers + j]`` (0 for
  V4-Flash: window only) and a MoE whose gate is score routed (``layer_id >= n_hash_layers``: bias,
  no tid2eid). Its attention keeps its own KV cache, so it needs its own per-sequence state.
* forward(x = H [b,s,4,dim] (the main model's residual streams after the last block, before
  hc_head), start_pos, input_ids): ``e = enorm(embed(input_ids))`` (the embedding is the main
  model's); ``x = hnorm(x)`` is an RMSNorm over dim of EVERY stream separately; then
  ``x = e_proj(e).unsqueeze(2) + h_proj(x)``: e_proj once per token broadcast over the 4 streams,
  h_proj per stream (both FP8 linears with bf16 outputs, the sum a bf16 add); then the Block
  forward at ``start_pos`` with ``input_ids`` (used only by hash gates), then
  ``head(x, mtp.hc_head_fn/scale/base, mtp.norm)``: the MTP block's own hc_head and final norm,
  the shared head weight, logits of the last position.
* Alignment: the official code never calls the MTP block outside its ``__main__`` smoke test, and
  generate.py does no speculative decoding. The standard (DeepSeek-V3 MTP) alignment is used: at
  position t the block takes H_t (the main model's streams at t) and the embedding of token t+1,
  and predicts token t+2; it runs at the same position t (start_pos of its call = the main
  model's position of its first H row), so its window ring and RoPE follow the main sequence.
* Chaining (drafting more than one token with one MTP block): the next call takes the block's
  own output streams (``streams[-1]``, before its hc_head) as H, the standard scheme.

Precision: as dsv4_ref/forward.py; the two projections are ``moe.quant_linear`` (act_quant per
128 of each row: one row per token for e_proj, one per token and stream for h_proj), the sum
``bf16(f32(e) + f32(h))``.
"""
import numpy as np

from . import formats as FM
from . import moe as MO
from . import norms_rope as NR
from .forward import LayerState

F32 = np.float32

__all__ = ["MTP"]


class MTP:
    """MTP block ``j`` of ``model``'s checkpoint over one sequence (its own window / KV state)."""

    def __init__(self, model, j=0):
        c = model.cfg
        if not 0 <= j < c["n_mtp_layers"]:
            raise ValueError(f"MTP block {j}: the checkpoint has {c['n_mtp_layers']}")
        self.m = model
        self.layer = c["n_layers"] + j          # official layer id (compress ratio, gate kind)
        self.prefix = f"mtp.{j}."
        self.state = LayerState(c["compress_ratios"][self.layer], c["head_dim"], c["window_size"],
                                c["index_head_dim"])
        self.pos = 0
        self.inputs = None      # the block's input streams of the last call [S, 4, dim] (bf16)
        self.streams = None     # its output streams of the last call [S, 4, dim] (bf16)

    def reset(self):
        self.state.reset()
        self.pos = 0

    def input_streams(self, H, next_ids):
        """``e_proj(enorm(embed(next_ids)))`` broadcast over the streams + ``h_proj(hnorm(H))``."""
        c, w, P = self.m.cfg, self.m.w, self.prefix
        S, hc, D = H.shape
        e = NR.rmsnorm(self.m.embed(next_ids), w.bf16(P + "enorm.weight"), c["norm_eps"])
        h = NR.rmsnorm(H.reshape(S * hc, D), w.bf16(P + "hnorm.weight"), c["norm_eps"])
        ep = MO.quant_linear(e, w.fp8(P + "e_proj"))
        hp = MO.quant_linear(h, w.fp8(P + "h_proj")).reshape(S, hc, D)
        return FM.bf16_round((ep[:, None, :] + hp).astype(F32)).astype(F32)

    def forward(self, H, next_ids, start_pos):
        """The block over H bf16 [S, 4, dim] (main-model streams at positions start_pos..) and the
        ids of the tokens that follow them; returns the f32 logits [vocab] of the last position."""
        H = np.asarray(H, dtype=F32)
        next_ids = np.asarray(next_ids, dtype=np.int64).reshape(-1)
        if H.ndim != 3 or H.shape[0] != next_ids.size:
            raise ValueError("H must be [S, hc, dim] with one next id per row")
        if start_pos + next_ids.size > self.m.cfg["max_seq_len"]:
            raise ValueError("sequence longer than max_position_embeddings")
        x = self.input_streams(H, next_ids)
        out = self.m.block(self.layer, x, next_ids, start_pos, self.state)
        self.inputs, self.streams = x, out
        self.pos = start_pos + next_ids.size
        return self.m.head(out[-1], self.prefix)

    def prefill(self, H, next_ids):
        """Start the block's sequence over: positions 0..S-1 (official prefill path)."""
        self.reset()
        return self.forward(H, next_ids, 0)

    def decode(self, H_row, next_id):
        """One position (``self.pos`` > 0): H_row bf16 [4, dim], the id of the token after it."""
        if self.pos == 0:
            raise RuntimeError("MTP decode needs a prefix: call prefill first")
        return self.forward(np.asarray(H_row)[None], [int(next_id)], self.pos)
