"""Gated KV compressor (spec §5): prefill and decode state machines, NumPy only.

Conventions (same as formats.py / norms_rope.py):
* "bf16 values" are float32 arrays holding bf16-exact values; uint16 inputs are taken as bf16 bits.
* The f32 projections ``K = X.wkv^T`` and ``Z = X.wgate^T`` are computed per token row in float64
  (products of two bf16 values are exact) and rounded once to f32: an order-independent "correctly
  rounded f32 dot product". ``Z += ape[p mod r]`` is then a true f32 add.
* The per-channel softmax pooling is evaluated in float64 from the f32 state values and the pooled
  value rounded once to f32 (then to bf16, §5.4 step 1). Slots are accumulated one after another
  with elementwise ops, so prefill and decode give bit-identical entries.
* A kernel that does the f32 math in f32 differs by f32-ulp amounts; that can flip a bf16 rounding
  and then an e4m3 / e2m1 rounding of the FP8 / FP4 simulation on rare elements. Compare with a
  tolerance (see reference/README.md, "Golden families: compressor, indexer").

State layout (§5, §5.5): ``kv_state`` / ``score_state`` float32 [c*r, c*d], c = 2 (overlap) iff r == 4.
Overlap: slots 0..r-1 hold the previous complete window (full 2d width), slots r..2r-1 the current
window (token p in slot r + p mod r). Non-overlap: token p in slot p mod r. Initial values 0 / -inf.
Slots are never cleared, only overwritten (decode leaves stale rows, exactly like REF).
"""
import numpy as np

from .formats import (act_quant_sim, bf16_bits_to_f32, bf16_round, f32_to_bf16_bits,
                      fp4_act_quant_sim)
from .norms_rope import (NORM_EPS, ROPE_DIM, hadamard, rmsnorm, rope_apply,
                         rope_freqs_for_layer)

F32 = np.float32

__all__ = ["CompressorState", "compressor_prefill", "compressor_decode", "compressor_project",
           "compressor_pool", "compressor_postprocess", "write_goldens"]


def _bf16_vals(a):
    """uint16 -> bf16 bits decoded; anything else -> float32 rounded to bf16 (no-op for bf16 values)."""
    a = np.asarray(a)
    if a.dtype == np.uint16:
        return bf16_bits_to_f32(a)
    a = np.ascontiguousarray(a, dtype=F32)
    if not np.any(a.view(np.uint32) & np.uint32(0xFFFF)):   # already bf16 values (fast path)
        return a
    return bf16_round(a).astype(F32)


class CompressorState:
    """Per-sequence compressor state (one batch row). Reset at the start of every sequence."""

    def __init__(self, ratio, head_dim):
        if ratio <= 0:
            raise ValueError("compressor needs ratio > 0")
        self.ratio = int(ratio)
        self.head_dim = int(head_dim)
        self.overlap = self.ratio == 4
        self.c = 2 if self.overlap else 1
        self.reset()

    def reset(self):
        n, w = self.c * self.ratio, self.c * self.head_dim
        self.kv_state = np.zeros((n, w), dtype=F32)
        self.score_state = np.full((n, w), -np.inf, dtype=F32)

    def copy(self):
        s = CompressorState(self.ratio, self.head_dim)
        s.kv_state = self.kv_state.copy()
        s.score_state = self.score_state.copy()
        return s


# ----------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------
def compressor_project(x, wkv, wgate, ape, positions):
    """K = f32(X.wkv^T), Z = f32(X.wgate^T) + ape[p mod r] (f32 add). x: bf16 [S, D];
    wkv, wgate: bf16 [c*d, D]; ape: f32 [r, c*d]; positions: int [S]. Returns (K, Z) f32 [S, c*d].
    Each row is computed independently (float64 dot, one f32 rounding)."""
    X = _bf16_vals(x).astype(np.float64)
    if X.ndim == 1:
        X = X[None, :]
    Wkv = _bf16_vals(wkv).astype(np.float64)
    Wg = _bf16_vals(wgate).astype(np.float64)
    ape = np.asarray(ape, dtype=F32)
    r = ape.shape[0]
    pos = np.asarray(positions, dtype=np.int64).reshape(-1)
    S = X.shape[0]
    K = np.empty((S, Wkv.shape[0]), dtype=F32)
    Z = np.empty((S, Wg.shape[0]), dtype=F32)
    for t in range(S):                       # row by row: prefill and decode round identically
        K[t] = (Wkv @ X[t]).astype(F32)
        Z[t] = (Wg @ X[t]).astype(F32)
    Z = (Z + ape[pos % r]).astype(F32)
    return K, Z


def compressor_pool(Ks, Zs):
    """Per-channel softmax pooling over the slot axis. Ks, Zs: f32 [n, s, d] (Z may be -inf with
    K = 0 for empty slots). Returns f32 [n, d]: f32( sum_j softmax_j(Z)[j] * K[j] ), float64 inside."""
    K64 = np.asarray(Ks, dtype=F32).astype(np.float64)
    Z64 = np.asarray(Zs, dtype=F32).astype(np.float64)
    m = Z64.max(axis=1)                                  # finite: at least one slot is filled
    n, s, d = K64.shape
    den = np.zeros((n, d))
    num = np.zeros((n, d))
    for j in range(s):
        e = np.exp(Z64[:, j, :] - m)                     # -inf -> 0
        den += e
        num += e * K64[:, j, :]
    return (num / den).astype(F32)


def compressor_postprocess(pooled, positions, norm_w, freqs, rotate, fp8_sim_revision="current"):
    """§5.4: e = rmsnorm(bf16(pooled)); RoPE (last 64 dims) at ``positions``; then either
    Hadamard + FP4 simulation (block 32, ``rotate``) or FP8 simulation of dims 0..d-65 (block 64).
    Returns float32 bf16 values [n, d]."""
    e = bf16_round(np.asarray(pooled, dtype=F32)).astype(F32)
    e = rmsnorm(e, _bf16_vals(norm_w), NORM_EPS)
    e = rope_apply(e, np.asarray(positions, dtype=np.int64), np.asarray(freqs, dtype=F32))
    d = e.shape[-1]
    if rotate:
        e = fp4_act_quant_sim(hadamard(e), 32)
    else:
        e = e.copy()
        e[..., :d - ROPE_DIM] = act_quant_sim(e[..., :d - ROPE_DIM], 64, revision=fp8_sim_revision)
    return e.astype(F32)


def _check(state, ratio, head_dim, wkv):
    if state.ratio != ratio or state.head_dim != head_dim:
        raise ValueError("state ratio/head_dim mismatch")
    if np.asarray(wkv).shape[0] != state.c * head_dim:
        raise ValueError(f"wkv rows {np.asarray(wkv).shape[0]} != c*d = {state.c * head_dim}")


# ----------------------------------------------------------------------------------------------
# §5.2 prefill / §5.3 decode
# ----------------------------------------------------------------------------------------------
def compressor_prefill(state, x, wkv, wgate, ape, norm_w, ratio, head_dim, freqs, rotate,
                       fp8_sim_revision="current"):
    """Prefill (start_pos = 0) over x bf16 [S, D]. Resets ``state`` first (a prefill starts a
    sequence), emits entries 0..S//r-1 and leaves the state as REF does. Returns float32 bf16
    values [S//r, d] (shape [0, d] when S < r)."""
    _check(state, ratio, head_dim, wkv)
    state.reset()
    r, d = ratio, head_dim
    X = _bf16_vals(x)
    S = X.shape[0]
    K, Z = compressor_project(X, wkv, wgate, ape, np.arange(S))
    n = S // r
    cut = n * r
    rem = S - cut
    entries = np.zeros((0, d), dtype=F32)
    if n > 0:
        if state.overlap:
            Kw = K[:cut].reshape(n, r, 2 * d)
            Zw = Z[:cut].reshape(n, r, 2 * d)
            Ks = np.zeros((n, 2 * r, d), dtype=F32)
            Zs = np.full((n, 2 * r, d), -np.inf, dtype=F32)
            Ks[1:, :r] = Kw[:-1, :, :d]                 # A half of the previous window
            Zs[1:, :r] = Zw[:-1, :, :d]
            Ks[:, r:] = Kw[:, :, d:]                    # B half of the own window
            Zs[:, r:] = Zw[:, :, d:]
        else:
            Ks = K[:cut].reshape(n, r, d)
            Zs = Z[:cut].reshape(n, r, d)
        pooled = compressor_pool(Ks, Zs)
        entries = compressor_postprocess(pooled, np.arange(n) * r, norm_w, freqs, rotate,
                                         fp8_sim_revision)
        if state.overlap:
            state.kv_state[:r] = K[cut - r:cut]
            state.score_state[:r] = Z[cut - r:cut]
    if rem > 0:
        o = r if state.overlap else 0
        state.kv_state[o:o + rem] = K[cut:]
        state.score_state[o:o + rem] = Z[cut:]
    return entries


def compressor_decode(state, x_row, p, wkv, wgate, ape, norm_w, ratio, head_dim, freqs, rotate,
                      fp8_sim_revision="current"):
    """One decode token at absolute position p (bf16 [D] or [1, D]). p == 0 starts a sequence
    (state reset). Returns the entry completed by this token (float32 bf16 values [d], entry index
    (p+1)//r - 1, RoPE position p+1-r) or None."""
    _check(state, ratio, head_dim, wkv)
    r, d = ratio, head_dim
    p = int(p)
    if p == 0:
        state.reset()
    X = _bf16_vals(x_row).reshape(1, -1)
    K, Z = compressor_project(X, wkv, wgate, ape, np.array([p]))
    slot = (r if state.overlap else 0) + p % r
    state.kv_state[slot] = K[0]
    state.score_state[slot] = Z[0]
    if (p + 1) % r:
        return None
    if state.overlap:
        Ks = np.concatenate([state.kv_state[:r, :d], state.kv_state[r:, d:]], axis=0)
        Zs = np.concatenate([state.score_state[:r, :d], state.score_state[r:, d:]], axis=0)
    else:
        Ks, Zs = state.kv_state, state.score_state
    pooled = compressor_pool(Ks[None], Zs[None])
    if state.overlap:
        state.kv_state[:r] = state.kv_state[r:]
        state.score_state[:r] = state.score_state[r:]
    e = compressor_postprocess(pooled, np.array([p + 1 - r]), norm_w, freqs, rotate,
                               fp8_sim_revision)
    return e[0]


def compressor_run(x, start_len, wkv, wgate, ape, norm_w, ratio, head_dim, freqs, rotate,
                   fp8_sim_revision="current"):
    """Prefill the first ``start_len`` tokens (skipped when 0), decode the rest one by one.
    Returns (all entries in order, float32 [len(x)//r, d], final state)."""
    X = _bf16_vals(x)
    st = CompressorState(ratio, head_dim)
    args = (wkv, wgate, ape, norm_w, ratio, head_dim, freqs, rotate, fp8_sim_revision)
    out = []
    if start_len > 0:
        out.extend(compressor_prefill(st, X[:start_len], *args))
    for p in range(start_len, X.shape[0]):
        e = compressor_decode(st, X[p], p, *args)
        if e is not None:
            out.append(e)
    ent = np.array(out, dtype=F32).reshape(-1, head_dim)
    return ent, st


# ----------------------------------------------------------------------------------------------
# goldens
# ----------------------------------------------------------------------------------------------
GOLDEN_DIM = 256              # small model dim (real: 4096)
PREFILL_S = [1, 3, 4, 5, 127, 128, 129, 255, 300, 1030]
PREFILL_S_R128 = [1, 127, 128, 129, 255, 300, 1030]
DECODE = {                    # kind -> [(start_len, steps)]
    "c4_main": [(0, 9), (3, 6), (126, 7), (127, 6), (128, 5)],
    "c4_indexer": [(0, 9), (3, 6), (126, 7), (127, 6), (128, 5)],
    "c128_main": [(0, 130), (127, 3), (250, 10)],
}
KINDS = {                     # name -> (ratio, head_dim, rotate, seed)
    "c4_main": (4, 512, False, 4101),
    "c4_indexer": (4, 128, True, 4102),
    "c128_main": (128, 512, False, 12801),
}


def golden_params(kind, D=GOLDEN_DIM, max_tokens=1040):
    """Deterministic weights and inputs of one golden kind. Returns dict of bf16 values / f32."""
    ratio, d, rotate, seed = KINDS[kind]
    c = 2 if ratio == 4 else 1
    rng = np.random.default_rng(seed)
    x = bf16_round(rng.standard_normal((max_tokens, D)).astype(F32))
    wkv = bf16_round((rng.standard_normal((c * d, D)) / np.sqrt(D)).astype(F32))
    # gate logits with std ~1.5 (+ ape std 1): softmax weights far from uniform and from one-hot
    wgate = bf16_round((rng.standard_normal((c * d, D)) * (1.5 / np.sqrt(D))).astype(F32))
    ape = rng.standard_normal((ratio, c * d)).astype(F32)
    norm_w = bf16_round((1.0 + 0.25 * rng.standard_normal(d)).astype(F32))
    return dict(x=x, wkv=wkv, wgate=wgate, ape=ape, norm_w=norm_w, ratio=ratio, head_dim=d,
                rotate=rotate, freqs=rope_freqs_for_layer(ratio))


def write_goldens(writer):
    b = f32_to_bf16_bits
    for kind in ["c4_main", "c4_indexer", "c128_main"]:
        P = golden_params(kind)
        ratio, d, rotate = P["ratio"], P["head_dim"], P["rotate"]
        args = (P["wkv"], P["wgate"], P["ape"], P["norm_w"], ratio, d, P["freqs"], rotate)
        common = dict(wkv=b(P["wkv"]), wgate=b(P["wgate"]), ape=P["ape"], norm_w=b(P["norm_w"]),
                      ratio=np.array([ratio], np.int64), head_dim=np.array([d], np.int64),
                      rotate=np.array([int(rotate)], np.int64), freqs=P["freqs"])
        for S in (PREFILL_S_R128 if ratio == 128 else PREFILL_S):
            st = CompressorState(ratio, d)
            ent = compressor_prefill(st, P["x"][:S], *args)
            writer.case(f"{kind}_prefill_S{S}", x=b(P["x"][:S]), **common, entries=b(ent),
                        kv_state=st.kv_state, score_state=st.score_state)
        for s0, k in DECODE[kind]:
            ent, st = compressor_run(P["x"][:s0 + k], s0, *args)
            writer.case(f"{kind}_decode_from{s0}_steps{k}", x=b(P["x"][:s0 + k]), **common,
                        start_len=np.array([s0], np.int64), entries=b(ent),
                        kv_state=st.kv_state, score_state=st.score_state)
