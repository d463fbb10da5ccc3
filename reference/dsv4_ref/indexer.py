"""Lightning indexer of the ratio-4 layers (spec §6), NumPy only.

Conventions (same as formats.py / norms_rope.py / compressor.py): "bf16 values" are float32 arrays
holding bf16-exact values (uint16 inputs are decoded as bf16 bits); f32 sums/dot products are
computed in float64 and rounded once to f32 (order independent), then to bf16 where REF rounds.

Steps (spec §6):
1-2 ``indexer_query``: q = fp8_gemm(act_quant(qr, 128), wq_b) -> bf16 [S, H, 128]; RoPE on dims
    64..127 at each token's position; Hadamard (128); FP4 simulation (block 32, per head).
3   the indexer compressor is ``compressor.compressor_prefill/decode`` with d=128, r=4, rotate=True.
4   ``indexer_weights``: w = bf16( bf16(x . weights_proj^T) * f32(128^-1/2 * H^-1/2) ).
5   ``indexer_scores``: REF precision (bf16 per-head dot, relu and product with w in bf16, head sum
    in f32 rounded to bf16); ``indexer_scores_exact`` is the float64 value without any rounding.
6   ``indexer_select_prefill`` / ``indexer_select_decode``: causal mask, top-k, offsets.
Top-k order: descending score, ties broken by the LOWER index first (deterministic; REF's
torch.topk leaves ties unspecified, so compare selections from other implementations as sets).
"""
import numpy as np

from .compressor import CompressorState, compressor_decode, compressor_prefill
from .formats import (act_dequant, act_quant, bf16_bits_to_f32, bf16_round, e4m3_encode,
                      f32_to_bf16_bits, fp4_act_quant_sim, fp8_dequant)
from .norms_rope import hadamard, rope_apply, rope_freqs_for_layer

F32 = np.float32

INDEX_HEAD_DIM = 128
INDEX_TOPK = 512
RATIO = 4

__all__ = ["indexer_query", "indexer_weights", "indexer_weight_scale", "indexer_scores",
           "indexer_scores_exact", "topk_indices", "prefill_mask", "indexer_select_prefill",
           "indexer_select_decode", "indexer_prefill", "indexer_decode", "IndexerState",
           "write_goldens"]


def _bf16_vals(a):
    a = np.asarray(a)
    if a.dtype == np.uint16:
        return bf16_bits_to_f32(a)
    a = np.ascontiguousarray(a, dtype=F32)
    if not np.any(a.view(np.uint32) & np.uint32(0xFFFF)):   # already bf16 values (fast path)
        return a
    return bf16_round(a).astype(F32)


# ----------------------------------------------------------------------------------------------
# steps 1-2: query
# ----------------------------------------------------------------------------------------------
def fp8_linear(x, w_codes, w_scale):
    """FP8 GEMM of §2.5: act_quant(x, 128) (GEMM mode) times the block-scaled e4m3 weight.
    x: bf16 [S, K]; w_codes uint8 [N, K]; w_scale E8M0 uint8 [N/128, K/128]. The exact product sum
    (float64; every term is exact) is rounded to f32 (the f32 accumulator) and then to bf16.
    Returns float32 bf16 values [S, N]."""
    x = _bf16_vals(x)
    codes, scales = act_quant(x, 128)
    a = act_dequant(codes, scales, 128)                  # float64, exact
    w = fp8_dequant(w_codes, w_scale)                    # float64, exact
    return bf16_round((a @ w.T).astype(F32)).astype(F32)


def indexer_query(qr, wq_b, wq_b_scale, positions, freqs, head_dim=INDEX_HEAD_DIM,
                  return_intermediates=False):
    """Steps 1-2. qr: bf16 [S, q_lora]; wq_b: e4m3 codes uint8 [H*128, q_lora]; wq_b_scale: E8M0
    uint8 [H, q_lora/128]; positions: int [S] (absolute, start_pos + t); freqs: f32 [32] (the layer
    table: compress theta + YaRN). Returns q float32 bf16 values [S, H, 128]."""
    qr = _bf16_vals(qr)
    S = qr.shape[0]
    proj = fp8_linear(qr, wq_b, wq_b_scale)              # [S, H*128] bf16
    q = proj.reshape(S, -1, head_dim)
    q_rope = rope_apply(q, np.asarray(positions, dtype=np.int64).reshape(S), freqs)
    q_rot = hadamard(q_rope)
    q_out = fp4_act_quant_sim(q_rot, 32)
    if return_intermediates:
        return q_out, dict(q_proj=proj, q_rope=q_rope, q_rot=q_rot)
    return q_out


# ----------------------------------------------------------------------------------------------
# step 4: head weights
# ----------------------------------------------------------------------------------------------
def indexer_weight_scale(n_heads, head_dim=INDEX_HEAD_DIM):
    """f32(head_dim^-1/2 * n_heads^-1/2) (1/sqrt(8192) for V4-Flash); the product is formed in
    double precision and rounded to f32 once (a Python-float scalar applied to a bf16 tensor)."""
    return F32(head_dim ** -0.5 * n_heads ** -0.5)


def indexer_weights(x, weights_proj, head_dim=INDEX_HEAD_DIM):
    """Step 4. x: bf16 [S, D]; weights_proj: bf16 [H, D]. bf16 linear (f32 accumulate, bf16 out),
    then times f32 scale in f32, rounded to bf16. Returns float32 bf16 values [S, H]."""
    x = _bf16_vals(x).astype(np.float64)
    W = _bf16_vals(weights_proj).astype(np.float64)
    y = bf16_round((x @ W.T).astype(F32)).astype(F32)
    scale = indexer_weight_scale(W.shape[0], head_dim)
    return bf16_round((y * scale).astype(F32)).astype(F32)


# ----------------------------------------------------------------------------------------------
# step 5: scores
# ----------------------------------------------------------------------------------------------
def indexer_scores(q_idx, w, kidx):
    """Step 5 in REF precision. q_idx: bf16 [S, H, 128]; w: bf16 [S, H]; kidx: bf16 [T, 128].
    dot = bf16(f32(q_h . k_u)); r = relu(dot) (bf16, exact); prod = bf16(r * w) (the f32 product of
    two bf16 values is exact); score = bf16(f32(sum_h prod)). Returns float32 bf16 values [S, T]."""
    q = _bf16_vals(q_idx).astype(np.float64)
    w = _bf16_vals(w).astype(np.float64)
    k = _bf16_vals(kidx).astype(np.float64)
    S, H, _ = q.shape
    T = k.shape[0]
    out = np.empty((S, T), dtype=F32)
    for s in range(S):                                   # [H, T] at a time keeps memory small
        dot = bf16_round((q[s] @ k.T).astype(F32)).astype(np.float64)
        prod = bf16_round((np.maximum(dot, 0.0) * w[s][:, None]).astype(F32)).astype(np.float64)
        out[s] = bf16_round(prod.sum(axis=0).astype(F32))
    return out


def indexer_scores_exact(q_idx, w, kidx):
    """Step 5 without intermediate rounding: sum_h w[t,h] * relu(q[t,h] . k[u]) in float64."""
    q = _bf16_vals(q_idx).astype(np.float64)
    w = _bf16_vals(w).astype(np.float64)
    k = _bf16_vals(kidx).astype(np.float64)
    dot = np.einsum("shd,td->sht", q, k)
    return np.einsum("sh,sht->st", w, np.maximum(dot, 0.0))


# ----------------------------------------------------------------------------------------------
# step 6: top-k and selection
# ----------------------------------------------------------------------------------------------
def topk_indices(scores, k):
    """Indices of the k largest entries of every row of ``scores`` [..., T] (-inf allowed, NaN not),
    ordered by descending score, ties broken by LOWER index first. Returns int32 [..., k].
    Equal to ``np.argsort(-scores, kind="stable")[..., :k]`` (partition + tie fill, no full sort)."""
    s = np.asarray(scores)
    if np.isnan(s).any():
        raise ValueError("NaN scores")
    T = s.shape[-1]
    k = int(k)
    if not 0 <= k <= T:
        raise ValueError(f"k={k} outside [0, {T}]")
    flat = s.reshape(int(np.prod(s.shape[:-1], dtype=np.int64)), T)
    out = np.empty((flat.shape[0], k), dtype=np.int32)
    for i, row in enumerate(flat):
        if k == 0:
            continue
        v = np.partition(row, T - k)[T - k]             # the k-th largest value
        above = np.flatnonzero(row > v)
        ties = np.flatnonzero(row == v)[:k - above.size]
        sel = np.concatenate([above, ties])
        order = np.lexsort((sel, -row[sel].astype(np.float64)))
        out[i] = sel[order]
    return out.reshape(s.shape[:-1] + (k,))


def prefill_mask(S, T, ratio=RATIO):
    """bool [S, T]: True where entry u is NOT yet visible to query t, i.e. u >= (t+1) div ratio."""
    t = np.arange(S)[:, None]
    u = np.arange(T)[None, :]
    return u >= (t + 1) // ratio


def indexer_select_prefill(scores, offset, topk=INDEX_TOPK, ratio=RATIO):
    """Step 6, prefill (start_pos = 0). scores: [S, T] (T = S div 4); adds -inf where
    u >= (t+1) div 4, takes k = min(topk, T) (descending, lower index first on ties); masked picks
    become -1, others u + offset (offset = S in prefill). Returns int32 [S, k]."""
    sc = np.asarray(scores, dtype=F32)
    S, T = sc.shape
    mask = prefill_mask(S, T, ratio)
    masked = np.where(mask, F32(-np.inf), sc).astype(F32)
    k = min(int(topk), T)
    idx = topk_indices(masked, k).astype(np.int64)
    vis = (np.arange(S)[:, None] + 1) // ratio
    return np.where(idx >= vis, -1, idx + int(offset)).astype(np.int32)


def indexer_select_decode(scores, offset, topk=INDEX_TOPK):
    """Step 6, decode: scores [1, T] (or [T]) over all T = (p+1) div 4 visible entries, no mask;
    k = min(topk, T); returns int32 [1, k] of u + offset (offset = 128, the window size)."""
    sc = np.asarray(scores, dtype=F32).reshape(1, -1)
    k = min(int(topk), sc.shape[1])
    return (topk_indices(sc, k).astype(np.int64) + int(offset)).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# end-to-end helpers (one sequence, batch row)
# ----------------------------------------------------------------------------------------------
class IndexerState:
    """Indexer compressor state + its key cache (list of bf16 [128] entries)."""

    def __init__(self, head_dim=INDEX_HEAD_DIM):
        self.comp = CompressorState(RATIO, head_dim)
        self.kidx = np.zeros((0, head_dim), dtype=F32)


def _comp_args(P):
    return (P["comp_wkv"], P["comp_wgate"], P["comp_ape"], P["comp_norm_w"], RATIO,
            INDEX_HEAD_DIM, P["freqs"], True)


def indexer_prefill(state, x, qr, P, offset, topk=INDEX_TOPK):
    """Steps 1-6 for a prefill of S tokens (positions 0..S-1). P: dict with wq_b, wq_b_scale,
    weights_proj, comp_wkv, comp_wgate, comp_ape, comp_norm_w, freqs. Returns dict q, w, kidx,
    scores, mask, idx."""
    x = _bf16_vals(x)
    S = x.shape[0]
    q = indexer_query(qr, P["wq_b"], P["wq_b_scale"], np.arange(S), P["freqs"])
    state.kidx = compressor_prefill(state.comp, x, *_comp_args(P))
    w = indexer_weights(x, P["weights_proj"])
    scores = indexer_scores(q, w, state.kidx)
    idx = indexer_select_prefill(scores, offset, topk)
    return dict(q=q, w=w, kidx=state.kidx, scores=scores, mask=prefill_mask(S, state.kidx.shape[0]),
                idx=idx)


def indexer_decode(state, x_row, qr_row, p, P, offset=128, topk=INDEX_TOPK):
    """Steps 1-6 for one decode token at position p (compressor first, so an entry completed by
    this token is visible). Returns dict q, w, kidx, scores, idx."""
    x_row = _bf16_vals(x_row).reshape(1, -1)
    q = indexer_query(np.asarray(qr_row).reshape(1, -1), P["wq_b"], P["wq_b_scale"],
                      np.array([p]), P["freqs"])
    e = compressor_decode(state.comp, x_row[0], p, *_comp_args(P))
    if e is not None:
        state.kidx = np.concatenate([state.kidx, e[None]], axis=0)
    T = (p + 1) // RATIO
    if state.kidx.shape[0] != T:
        raise ValueError(f"indexer cache holds {state.kidx.shape[0]} entries, expected {T}")
    w = indexer_weights(x_row, P["weights_proj"])
    scores = indexer_scores(q, w, state.kidx)
    idx = indexer_select_decode(scores, offset, topk)
    return dict(q=q, w=w, kidx=state.kidx, scores=scores, idx=idx)


# ----------------------------------------------------------------------------------------------
# goldens
# ----------------------------------------------------------------------------------------------
SMALL = dict(D=256, q_lora=256, H=4, topk=8)


def _fp8_weight(rng, N, K, std=32.0):
    """Random e4m3 codes (values ~N(0, std^2), RNE-encoded, saturating) and E8M0 block scales."""
    codes = e4m3_encode((rng.standard_normal((N, K)) * std).astype(F32))
    scale = rng.integers(118, 121, size=(N // 128, K // 128)).astype(np.uint8)   # 2^-9 .. 2^-7
    return codes, scale


def small_params(seed=6001):
    """Deterministic small-config indexer parameters (D=256, q_lora=256, H=4 heads x 128)."""
    rng = np.random.default_rng(seed)
    D, QL, H = SMALL["D"], SMALL["q_lora"], SMALL["H"]
    wq_b, wq_b_scale = _fp8_weight(rng, H * INDEX_HEAD_DIM, QL)
    c = 2
    return dict(
        wq_b=wq_b, wq_b_scale=wq_b_scale,
        weights_proj=bf16_round((rng.standard_normal((H, D)) / np.sqrt(D)).astype(F32)),
        comp_wkv=bf16_round((rng.standard_normal((c * INDEX_HEAD_DIM, D)) / np.sqrt(D)).astype(F32)),
        comp_wgate=bf16_round((rng.standard_normal((c * INDEX_HEAD_DIM, D)) * (1.5 / np.sqrt(D)))
                              .astype(F32)),
        comp_ape=rng.standard_normal((RATIO, c * INDEX_HEAD_DIM)).astype(F32),
        comp_norm_w=bf16_round((1.0 + 0.25 * rng.standard_normal(INDEX_HEAD_DIM)).astype(F32)),
        freqs=rope_freqs_for_layer(RATIO),
    )


def _bits(P):
    b = f32_to_bf16_bits
    return dict(wq_b=P["wq_b"], wq_b_scale=P["wq_b_scale"], weights_proj=b(P["weights_proj"]),
                comp_wkv=b(P["comp_wkv"]), comp_wgate=b(P["comp_wgate"]), comp_ape=P["comp_ape"],
                comp_norm_w=b(P["comp_norm_w"]), freqs=P["freqs"])


def _i64(v):
    return np.array([v], dtype=np.int64)


def write_goldens(writer):
    b = f32_to_bf16_bits
    H64 = 64

    # --- step 5: scores (real head count 64, head dim 128) ---------------------------------
    rng = np.random.default_rng(7001)
    scale64 = indexer_weight_scale(H64)
    for S, T in [(1, 1), (4, 37), (8, 600), (1, 4096)]:
        q = fp4_act_quant_sim(hadamard(bf16_round(rng.standard_normal((S, H64, 128)).astype(F32))), 32)
        k = fp4_act_quant_sim(hadamard(bf16_round(rng.standard_normal((T, 128)).astype(F32))), 32)
        w = bf16_round((bf16_round(rng.standard_normal((S, H64)).astype(F32)) * scale64).astype(F32))
        writer.case(f"scores_S{S}_T{T}", q=b(q), w=b(w), kidx=b(k), scores=b(indexer_scores(q, w, k)),
                    scores_exact=indexer_scores_exact(q, w, k))

    # --- step 6: top-k ---------------------------------------------------------------------
    rng = np.random.default_rng(7002)
    K = INDEX_TOPK

    def topk_case(name, scores, k):
        scores = np.asarray(scores, dtype=F32)
        writer.case(f"topk_{name}", scores=scores, k=_i64(k), idx=topk_indices(scores, k))

    for T in (600, 4096):
        R = 4
        topk_case(f"random_T{T}", rng.standard_normal((R, T)), K)
        topk_case(f"ties_T{T}", bf16_round(rng.standard_normal((R, T)).astype(F32)), K)
        topk_case(f"coarse_T{T}", rng.integers(0, 8, size=(R, T)) * 0.25, K)
        topk_case(f"allequal_T{T}", np.full((R, T), 1.5), K)
    masked = bf16_round(rng.standard_normal((4, 600)).astype(F32))
    for i, nvis in enumerate([0, 100, 511, 550]):       # prefill-like rows with a -inf tail
        masked[i, nvis:] = -np.inf
    topk_case("masked_T600", masked, K)
    topk_case("full_T512", bf16_round(rng.standard_normal((2, 512)).astype(F32)), 512)
    topk_case("small_T10_k3", [[1, 3, 3, 2, 3, 0, 1, 3, 2, 2], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]], 3)
    topk_case("ties_T262144", bf16_round(rng.standard_normal((1, 262144)).astype(F32)), K)

    # --- steps 1-2: query (small config: q_lora 256, H = 4) -------------------------------
    P = small_params()
    bits = _bits(P)
    rng = np.random.default_rng(7003)
    QL = SMALL["q_lora"]
    qr_cases = {
        "prefill_S5": (rng.standard_normal((5, QL)), np.arange(5)),
        "decode_p1029": (rng.standard_normal((1, QL)), np.array([1029])),
        "farpos_S6": (rng.standard_normal((6, QL)) * 3.0,
                      np.array([65535, 65536, 100000, 262143, 1000000, 1048575])),
    }
    tiny = rng.standard_normal((3, QL)) * 1e-3
    tiny[0] = 0.0                                        # amax floor (1e-4) on both blocks
    tiny[1, :128] *= 1e-3                                # one block below the floor
    qr_cases["tiny_S3"] = (tiny, np.array([7, 8, 9]))
    for name, (qr, pos) in qr_cases.items():
        qr = bf16_round(qr.astype(F32))
        q, inter = indexer_query(qr, P["wq_b"], P["wq_b_scale"], pos, P["freqs"],
                                 return_intermediates=True)
        writer.case(f"query_{name}", qr=b(qr), wq_b=P["wq_b"], wq_b_scale=P["wq_b_scale"],
                    positions=pos.astype(np.int64), freqs=P["freqs"], q_proj=b(inter["q_proj"]),
                    q=b(q))

    # --- step 4: head weights ---------------------------------------------------------------
    rng = np.random.default_rng(7004)
    for H, S in [(64, 5), (4, 3)]:
        x = bf16_round(rng.standard_normal((S, SMALL["D"])).astype(F32))
        wp = bf16_round((rng.standard_normal((H, SMALL["D"])) / np.sqrt(SMALL["D"]) * 4).astype(F32))
        writer.case(f"weights_H{H}_S{S}", x=b(x), weights_proj=b(wp),
                    scale=np.array([indexer_weight_scale(H)], F32), w=b(indexer_weights(x, wp)))

    # --- step 6 end to end (small config, top-k 8) --------------------------------------------
    rng = np.random.default_rng(7005)
    NMAX = 256
    X = bf16_round(rng.standard_normal((NMAX, SMALL["D"])).astype(F32))
    QR = bf16_round(rng.standard_normal((NMAX, QL)).astype(F32))
    topk = SMALL["topk"]
    for S in [4, 8, 35, 36, 64, 129]:
        st = IndexerState()
        r = indexer_prefill(st, X[:S], QR[:S], P, offset=S, topk=topk)
        writer.case(f"select_prefill_S{S}", x=b(X[:S]), qr=b(QR[:S]), **bits, topk=_i64(topk),
                    offset=_i64(S), start_pos=_i64(0), q=b(r["q"]), w=b(r["w"]), kidx=b(r["kidx"]),
                    scores=b(r["scores"]), mask=r["mask"].astype(np.uint8), idx=r["idx"])
    for p in [3, 35, 36, 63, 130, 200]:
        st = IndexerState()
        if p > 0:
            st.kidx = compressor_prefill(st.comp, X[:p], *_comp_args(P))
        r = indexer_decode(st, X[p], QR[p], p, P, offset=128, topk=topk)
        writer.case(f"select_decode_p{p}", x=b(X[:p + 1]), qr=b(QR[p:p + 1]), **bits,
                    topk=_i64(topk), offset=_i64(128), start_pos=_i64(p), q=b(r["q"]),
                    w=b(r["w"]), kidx=b(r["kidx"]), scores=b(r["scores"]), idx=r["idx"])
