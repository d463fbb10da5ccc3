"""MoE: gate (sqrt-softplus scores, top-6 / hash routing), routed FP4 experts, FP8 shared expert and
the combine (spec §8, §2.4-§2.5, §10.3 3).

Golden family `moe`; see reference/README.md, section "Golden families: mhc, moe".

Inputs `x` are bf16 values (float32 arrays of exact bf16 numbers), [T, D] (D = 4096 in V4-Flash).
Weights are passed in their checkpoint encodings:
* routed expert e: w1/w3 packed FP4 uint8 [I, D/2] + E8M0 scales uint8 [I, D/32];
  w2 packed FP4 uint8 [D, I/2] + E8M0 scales [D, I/32] (moe_forward takes them stacked over E);
* shared expert: w1/w3 e4m3 uint8 [I, D] + E8M0 block scales [I/128, D/128]; w2 e4m3 [D, I] +
  scales [D/128, I/128];
* gate.weight: bf16 values [E, D]; bias f32 [E] (score layers) or tid2eid int [V, 6] (hash layers).

Precision (same convention as norms_rope.py / mhc.py):
* Quantised GEMMs (§2.5): the input is act_quant'ed (FP8 e4m3, block 128, E8M0 power-of-two
  scales), the product sum_k (a8*sa)(w*sw) is computed exactly in float64 (every term is exact),
  rounded to f32 and then to bf16 — the "single bf16 rounding of the f32 accumulator".
* Gate logits: float64 dot products rounded once to f32. softplus (torch form, threshold 20) and
  sigmoid/SiLU are evaluated in float64 from their f32 arguments and rounded to f32; every other
  elementwise op (sqrt, +bias, /sum, *route_scale, clamp, *, routing-weight multiply) is one f32
  operation.
* Combine: f32 accumulation of the bf16 expert outputs in ascending expert id, then the shared
  output, then one bf16 rounding — bit-exact, order fixed by the spec.
"""
import numpy as np

from . import formats as FM
from .formats import bf16_round, f32_to_bf16_bits

F32 = np.float32
F64 = np.float64

TOPK = 6                    # n_activated_experts
ROUTE_SCALE = 1.5           # route_scale
SWIGLU_LIMIT = 10.0         # swiglu_limit
SOFTPLUS_THRESHOLD = 20.0   # torch.nn.functional.softplus default (beta 1)
ACT_BLOCK = 128             # act_quant block of every GEMM input
SEED = 0x30E


def _f32(x):
    return np.asarray(x, dtype=F32)


def _bf16_in(x):
    return bf16_round(_f32(x)).astype(F32)


# ----------------------------------------------------------------------------------------------
# §8.1 gate
# ----------------------------------------------------------------------------------------------
def softplus_f32(l):
    """torch softplus (beta=1, threshold=20) of f32 input: l if l > 20 else log1p(exp(l));
    the log1p(exp()) branch evaluated in float64 and rounded to f32."""
    l = _f32(l)
    with np.errstate(over="ignore"):
        soft = np.log1p(np.exp(np.minimum(l.astype(F64), SOFTPLUS_THRESHOLD))).astype(F32)
    return np.where(l > F32(SOFTPLUS_THRESHOLD), l, soft).astype(F32)


def gate_logits(x, gate_w):
    """l = f32(x) . f32(gate.weight)^T -> [T, E] f32 (float64 dot, one f32 rounding)."""
    x = _bf16_in(x)
    w = _bf16_in(gate_w)
    return (x.astype(F64) @ w.astype(F64).T).astype(F32)


def gate_scores(x, gate_w_bf16):
    """sqrt-softplus routing scores s = sqrt(softplus(l)) [T, E] f32 (before any bias)."""
    return np.sqrt(softplus_f32(gate_logits(x, gate_w_bf16))).astype(F32)


def topk_desc_lower_id(v, k):
    """Indices of the k largest entries of each row of v; equal values are taken in ascending index
    order (lower expert id first). Returns the selection in selection order ([T, k] int64)."""
    v = _f32(v)
    order = np.argsort(-v, axis=-1, kind="stable")      # stable: ties keep ascending index
    return order[..., :k]


def route(scores, bias=None, tid2eid=None, token_ids=None, topk=TOPK, route_scale=ROUTE_SCALE):
    """Expert selection and routing weights (spec §8.1 steps 3-4).

    * score layers (tid2eid None): idx = top-k of f32(scores + bias) (bias may be None = 0); bias
      influences the SELECTION only; ties -> lower expert id first (documented choice, §10.3-10).
    * hash layers: idx = tid2eid[token_ids]; bias must be None. Each tid2eid row must name distinct
      experts (a duplicated expert would be applied once by the official combine but weighted twice
      in the normaliser; not modelled).
    Weights from the UNBIASED scores: g = s[idx]; g = f32(g / f32(sum g)); g = f32(g * route_scale)
    (no eps in the normaliser).
    Returns (idx int32 [T, k] sorted ascending, weights f32 [T, k] in the same order).
    """
    s = _f32(scores)
    if tid2eid is not None:
        if bias is not None:
            raise ValueError("hash routing uses no bias")
        if token_ids is None:
            raise ValueError("hash routing needs token_ids")
        idx = np.asarray(tid2eid, dtype=np.int64)[np.asarray(token_ids, dtype=np.int64)]
        if idx.shape[-1] != topk:
            raise ValueError(f"tid2eid rows have {idx.shape[-1]} experts, expected {topk}")
        if np.any(np.diff(np.sort(idx, axis=-1), axis=-1) == 0):
            raise ValueError("tid2eid row names an expert twice")
    else:
        sel = s if bias is None else (s + _f32(bias)[None, :]).astype(F32)
        idx = topk_desc_lower_id(sel, topk)
    idx = np.sort(idx, axis=-1)
    g = np.take_along_axis(s, idx, axis=-1).astype(F32)
    denom = np.sum(g.astype(F64), axis=-1, keepdims=True).astype(F32)
    w = (g / denom).astype(F32)
    w = (w * F32(route_scale)).astype(F32)
    return idx.astype(np.int32), w


# ----------------------------------------------------------------------------------------------
# §8.2 / §8.3 experts
# ----------------------------------------------------------------------------------------------
def quant_linear(x, w_deq):
    """Quantised linear (§2.5): bf16( sum_k act_quant(x,128) * w ) for dequantised float64 weights
    w_deq [N, K]; x [T, K] bf16 values. Returns [T, N] bf16 values (float32)."""
    x = _bf16_in(x)
    codes, sc = FM.act_quant(x, ACT_BLOCK)
    xa = FM.e4m3_decode(codes).astype(F64) * np.repeat(
        FM.e8m0_decode(sc).astype(F64), ACT_BLOCK, axis=-1)
    return bf16_round((xa @ w_deq.T).astype(F32)).astype(F32)


def silu_f32(a):
    """SiLU a*sigmoid(a) of f32 input, float64 evaluation rounded to f32 (overflow-free)."""
    a = _f32(a).astype(F64)
    e = np.exp(-np.abs(a))
    sig = np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return (a * sig).astype(F32)


def swiglu(a, b, limit=SWIGLU_LIMIT, g=None):
    """SwiGLU of the (bf16-valued) gate a = w1(x) and up b = w3(x), f32 (spec §8.2, §10.3-3).

    If limit > 0 (None / <= 0 disables the clamp): b = clamp(b, -limit, limit), a = min(a, limit)
    (gate clamped from ABOVE only) — before the SiLU. h = f32(silu(a) * b); if g is given (routing
    weight, scalar or [T]) h = f32(g * h) — before the bf16 cast / act_quant of the down input.
    Returns h f32 (NOT yet rounded to bf16).
    """
    a = _f32(a)
    b = _f32(b)
    if limit is not None and limit > 0:
        lim = F32(limit)
        b = np.clip(b, -lim, lim).astype(F32)
        a = np.minimum(a, lim).astype(F32)
    h = (silu_f32(a) * b).astype(F32)
    if g is not None:
        g = _f32(g)
        if g.ndim == 1:
            g = g[:, None]
        h = (g * h).astype(F32)
    return h


def _expert(x, W1, W3, W2, g, limit):
    a = quant_linear(x, W1)
    b = quant_linear(x, W3)
    h = swiglu(a, b, limit, g)
    return quant_linear(bf16_round(h), W2)


def routed_expert(x, w1, w1s, w3, w3s, w2, w2s, g, limit=SWIGLU_LIMIT):
    """Routed expert (spec §8.2), FP4 weights x FP8 activations.

    a = bf16(w1(x)), b = bf16(w3(x)); clamp; h = g * silu(a) * b (f32);
    out = bf16( w2( act_quant( bf16(h) ) ) ). x [T, D] bf16 values; g scalar or [T] f32 routing
    weights. Returns [T, D] bf16 values.
    """
    return _expert(x, FM.fp4_dequant(w1, w1s), FM.fp4_dequant(w3, w3s),
                   FM.fp4_dequant(w2, w2s), g, limit)


def shared_expert(x, sw1, sw1s, sw3, sw3s, sw2, sw2s, clamp=True, limit=SWIGLU_LIMIT):
    """Shared expert (spec §8.3), FP8 block-scaled weights, same SwiGLU without a routing weight.
    clamp=True: current official revision (same clamp as the routed experts); clamp=False: initial
    revision (no clamp at all). Returns [T, D] bf16 values."""
    return _expert(x, FM.fp8_dequant(sw1, sw1s), FM.fp8_dequant(sw3, sw3s),
                   FM.fp8_dequant(sw2, sw2s), None, limit if clamp else None)


# ----------------------------------------------------------------------------------------------
# §8.4 combine
# ----------------------------------------------------------------------------------------------
def moe_forward(x, token_ids, gate_w, bias, tid2eid, w1, w1s, w3, w3s, w2, w2s,
                sw1, sw1s, sw3, sw3s, sw2, sw2s, shared_clamp=True, route_scale=ROUTE_SCALE,
                limit=SWIGLU_LIMIT, topk=TOPK, return_aux=False):
    """MoE layer (spec §8). Routed weights stacked over experts: w1/w3 [E, I, D/2], w1s/w3s
    [E, I, D/32], w2 [E, D, I/2], w2s [E, D, I/32]. Exactly one of bias / tid2eid is used
    (bias may be None for score routing without bias).

    y = f32 zeros; for e = 0..E-1 ascending: y[rows selecting e] += f32(out_e); y += f32(shared(x));
    return bf16(y). With return_aux=True also returns a dict: scores [T,E] f32, idx [T,k] int32,
    weights [T,k] f32, y_routed_f64 [T,D] (exact float64 sum of the bf16 routed outputs),
    y_shared_f64 [T,D] (the bf16 shared output as float64).
    """
    x = _bf16_in(x)
    T, D = x.shape
    E = np.asarray(w1).shape[0]
    scores = gate_scores(x, gate_w)
    idx, wts = route(scores, bias, tid2eid, token_ids, topk, route_scale)
    y = np.zeros((T, D), dtype=F32)
    y_routed = np.zeros((T, D), dtype=F64)
    for e in range(E):
        rows, pos = np.nonzero(idx == e)
        if rows.size == 0:
            continue
        out = routed_expert(x[rows], w1[e], w1s[e], w3[e], w3s[e], w2[e], w2s[e],
                            wts[rows, pos], limit)
        y[rows] = (y[rows] + out).astype(F32)
        y_routed[rows] += out.astype(F64)
    sh = shared_expert(x, sw1, sw1s, sw3, sw3s, sw2, sw2s, shared_clamp, limit)
    y = (y + sh).astype(F32)
    out = bf16_round(y).astype(F32)
    if return_aux:
        return out, dict(scores=scores, idx=idx, weights=wts, y_routed_f64=y_routed,
                         y_shared_f64=sh.astype(F64))
    return out


# ----------------------------------------------------------------------------------------------
# goldens
# ----------------------------------------------------------------------------------------------
def _bits(x):
    return f32_to_bf16_bits(_f32(x))


def quantize_fp4_weight(w):
    """Float weights [..., N, K] -> (packed uint8 [..., N, K/2], E8M0 scales uint8 [..., N, K/32])
    with per-32 block power-of-two scale 2^ceil(log2(amax/6)) (the §2.1 rule, FP4 floor)."""
    w = _f32(w)
    if w.ndim == 3:                                       # one expert at a time (memory)
        parts = [FM.fp4_act_quant(w[e], 32) for e in range(w.shape[0])]
        return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])
    return FM.fp4_act_quant(w, 32)


def quantize_fp8_weight(w):
    """Float weights [N, K] (N, K multiples of 128) -> (e4m3 codes uint8 [N, K], E8M0 scales uint8
    [N/128, K/128]) with one power-of-two scale per 128x128 block (§2.1 rule, Q=448)."""
    w = _f32(w)
    N, K = w.shape
    blk = w.reshape(N // 128, 128, K // 128, 128)
    amax = np.abs(blk).max(axis=(1, 3))
    scale, code = FM.pow2_scale(amax, FM.E4M3_MAX, FM.FP8_AMAX_FLOOR)
    q = blk / scale[:, None, :, None]
    codes = FM.e4m3_encode(np.clip(q, -448, 448)).reshape(N, K)
    return codes, code


def _rand_weight(rng, shape, std):
    """Gaussian weights with per-row magnitudes spread over 2^-1..2^1 (varied block scales)."""
    row = 2.0 ** rng.uniform(-1.0, 1.0, size=shape[:-1] + (1,))
    return (rng.standard_normal(shape) * std * row).astype(F32)


def _make_moe_weights(rng, D, I, E, std_in, std_out):
    w1, w1s = quantize_fp4_weight(_rand_weight(rng, (E, I, D), std_in))
    w3, w3s = quantize_fp4_weight(_rand_weight(rng, (E, I, D), std_in))
    w2, w2s = quantize_fp4_weight(_rand_weight(rng, (E, D, I), std_out))
    sw1, sw1s = quantize_fp8_weight(_rand_weight(rng, (I, D), std_in))
    sw3, sw3s = quantize_fp8_weight(_rand_weight(rng, (I, D), std_in))
    sw2, sw2s = quantize_fp8_weight(_rand_weight(rng, (D, I), std_out))
    return dict(w1=w1, w1_scale=w1s, w3=w3, w3_scale=w3s, w2=w2, w2_scale=w2s,
                sw1=sw1, sw1_scale=sw1s, sw3=sw3, sw3_scale=sw3s, sw2=sw2, sw2_scale=sw2s)


def _x(rng, T, D):
    """ffn_norm-like activations: bf16 values, per-token rms between 0.5 and 2."""
    mag = 2.0 ** rng.uniform(-1.0, 1.0, size=(T, 1))
    return _bf16_in(rng.standard_normal((T, D)) * mag)


def _clamp_coverage(x, W, idx, shared=False):
    """Counts of SwiGLU inputs beyond the limit, for the generator's self-check."""
    if shared:
        a = quant_linear(x, FM.fp8_dequant(W["sw1"], W["sw1_scale"]))
        b = quant_linear(x, FM.fp8_dequant(W["sw3"], W["sw3_scale"]))
    else:
        a_l, b_l = [], []
        for e in np.unique(idx):
            rows = np.nonzero((idx == e).any(axis=-1))[0]
            a_l.append(quant_linear(x[rows], FM.fp4_dequant(W["w1"][e], W["w1_scale"][e])).ravel())
            b_l.append(quant_linear(x[rows], FM.fp4_dequant(W["w3"][e], W["w3_scale"][e])).ravel())
        a, b = np.concatenate(a_l), np.concatenate(b_l)
    lim = SWIGLU_LIMIT
    return dict(a_hi=int((a > lim).sum()), a_lo=int((a < -lim).sum()),
                b_hi=int((b > lim).sum()), b_lo=int((b < -lim).sum()), n=a.size)


def _gate_w(rng, E, D, logit_std, dup_groups=None):
    """bf16 gate rows with N(0, (logit_std^2)/D) entries (logits of unit-rms x have std ~logit_std).
    dup_groups=G: expert e gets row e % G (exact duplicates -> exact score ties)."""
    n = E if dup_groups is None else dup_groups
    rows = rng.standard_normal((n, D)) * (logit_std / np.sqrt(D))
    if dup_groups is not None:
        rows = rows[np.arange(E) % dup_groups]
    return _bf16_in(rows)


def _write_gate(writer, name, x, gate_w, bias=None, tid2eid=None, token_ids=None):
    scores = gate_scores(x, gate_w)
    idx, wts = route(scores, bias, tid2eid, token_ids)
    arrays = dict(x=_bits(x), gate_w=_bits(gate_w))
    if tid2eid is not None:
        arrays.update(tid2eid=np.asarray(tid2eid, np.int64), token_ids=np.asarray(token_ids, np.int64))
    else:
        arrays.update(bias=_f32(bias))
    arrays.update(scores=scores, idx=idx, weights=wts,
                  route_scale=np.array([ROUTE_SCALE], dtype=F32))
    writer.case(f"gate_{name}", **arrays)
    return scores, idx, wts


def _tid2eid(rng, V, E):
    """Hash table [V, 6] of distinct experts per token id, in random (unsorted) order."""
    return np.stack([rng.permutation(E)[:TOPK] for _ in range(V)]).astype(np.int64)


def _write_moe(writer, name, x, token_ids, gate_w, bias, tid2eid, W, shared_clamp=1,
               check_clamp=True):
    y, aux = moe_forward(x, token_ids, gate_w, bias, tid2eid, W["w1"], W["w1_scale"], W["w3"],
                         W["w3_scale"], W["w2"], W["w2_scale"], W["sw1"], W["sw1_scale"],
                         W["sw3"], W["sw3_scale"], W["sw2"], W["sw2_scale"],
                         shared_clamp=bool(shared_clamp), return_aux=True)
    assert np.all(np.isfinite(y)), name
    if check_clamp:
        cov = _clamp_coverage(x, W, aux["idx"])
        assert min(cov["a_hi"], cov["a_lo"], cov["b_hi"], cov["b_lo"]) > 0, (name, cov)
    arrays = dict(x=_bits(x), token_ids=np.asarray(token_ids, np.int64), gate_w=_bits(gate_w))
    if tid2eid is not None:
        arrays["tid2eid"] = np.asarray(tid2eid, np.int64)
    else:
        arrays["bias"] = _f32(bias)
    arrays.update(W)
    arrays.update(shared_clamp=np.array([int(shared_clamp)], dtype=np.int64),
                  route_scale=np.array([ROUTE_SCALE], dtype=F32),
                  limit=np.array([SWIGLU_LIMIT], dtype=F32),
                  y=_bits(y), y_routed_f64=aux["y_routed_f64"], y_shared_f64=aux["y_shared_f64"],
                  scores=aux["scores"], idx=aux["idx"], weights=aux["weights"])
    writer.case(f"moe_{name}", **arrays)
    return y, aux


def write_goldens(writer):
    rng = np.random.default_rng(SEED)

    # ---------------- gate ----------------
    D, E = 256, 16
    x = _x(rng, 8, D)
    gw = _gate_w(rng, E, D, logit_std=3.0)
    bias = rng.normal(0.0, 0.3, E).astype(F32)
    _write_gate(writer, "random", x, gw, bias)

    # exact ties: 4 distinct rows, expert e uses row e % 4, bias equal within a group -> every token
    # takes a whole group of 4 plus the 2 LOWEST ids of the runner-up group.
    gw = _gate_w(rng, E, D, logit_std=3.0, dup_groups=4)
    bias = np.tile(rng.normal(0.0, 0.3, 4), E // 4).astype(F32)
    _write_gate(writer, "ties", x, gw, bias)
    _write_gate(writer, "ties_nobias", x, gw, np.zeros(E, F32))

    # hash routing
    V = 64
    t2e = _tid2eid(rng, V, E)
    tok = rng.integers(0, V, size=8)
    tok[5] = tok[1]                                       # a repeated token id
    _write_gate(writer, "hash", x, _gate_w(rng, E, D, 3.0), tid2eid=t2e, token_ids=tok)

    # logits beyond +-20 (softplus threshold branch and a tiny-but-positive far-negative score)
    xl = _x(rng, 4, D)
    # (|l| kept below 80 so that softplus stays a normal f32: no FTZ/subnormal dependence)
    gw = _gate_w(rng, E, D, logit_std=15.0)
    bias = rng.normal(0.0, 0.3, E).astype(F32)
    l = gate_logits(xl, gw)
    assert (l > 20).sum() > 0 and (l < -20).sum() > 0 and np.abs(l).max() < 80, np.abs(l).max()
    _write_gate(writer, "large_logits", xl, gw, bias)

    # real shape: D = 4096, E = 256
    _write_gate(writer, "d4096_e256", _x(rng, 4, 4096), _gate_w(rng, 256, 4096, 3.0),
                rng.normal(0.0, 0.3, 256).astype(F32))

    # ---------------- moe (D=256, I=128, E=16) ----------------
    D, I, E = 256, 128, 16
    # std_in 0.4: gate/up outputs have std ~6, so some exceed +-10 (clamps exercised)
    W = _make_moe_weights(rng, D, I, E, std_in=0.4, std_out=1.0 / np.sqrt(I))
    gw = _gate_w(rng, E, D, logit_std=3.0)
    bias = rng.normal(0.0, 0.3, E).astype(F32)

    x = _x(rng, 1, D)
    _write_moe(writer, "decode", x, rng.integers(0, 1000, 1), gw, bias, None, W, check_clamp=False)

    x = _x(rng, 64, D)
    tok = rng.integers(0, 1000, 64)
    _write_moe(writer, "chunk", x, tok, gw, bias, None, W)

    # shared clamp off / on with identical inputs (the two outputs must differ)
    x = _x(rng, 8, D)
    tok = rng.integers(0, 1000, 8)
    y0, _ = _write_moe(writer, "shared_noclamp", x, tok, gw, bias, None, W, shared_clamp=0)
    y1, _ = _write_moe(writer, "shared_clamp", x, tok, gw, bias, None, W, shared_clamp=1)
    cov = _clamp_coverage(x, W, None, shared=True)
    assert min(cov["a_hi"], cov["b_hi"] + cov["b_lo"]) > 0, cov
    assert np.any(y0 != y1)

    # hash layer
    V = 64
    t2e = _tid2eid(rng, V, E)
    tok = rng.integers(0, V, 8)
    tok[6] = tok[2]
    _write_moe(writer, "hash", _x(rng, 8, D), tok, gw, None, t2e, W)

    # every token routed to experts 0..5 (bias strongly favours them): one expert sees all T rows
    bias_all = np.where(np.arange(E) < 6, 100.0, 0.0).astype(F32)
    _, aux = _write_moe(writer, "all_same_experts", _x(rng, 16, D), rng.integers(0, 1000, 16),
                        gw, bias_all, None, W)
    assert np.all(aux["idx"] == np.arange(6))

    # ties: duplicated gate rows (expert e uses row e % 4), equal bias within a group
    gw_t = _gate_w(rng, E, D, logit_std=3.0, dup_groups=4)
    bias_t = np.tile(rng.normal(0.0, 0.3, 4), E // 4).astype(F32)
    _write_moe(writer, "ties", _x(rng, 8, D), rng.integers(0, 1000, 8), gw_t, bias_t, None, W)

    # ---------------- moe at the real width D = 4096 (I = 256, E = 8) ----------------
    D, I, E = 4096, 256, 8
    W = _make_moe_weights(rng, D, I, E, std_in=0.11, std_out=1.0 / np.sqrt(I))
    _write_moe(writer, "d4096", _x(rng, 4, D), rng.integers(0, 1000, 4),
               _gate_w(rng, E, D, 3.0), rng.normal(0.0, 0.3, E).astype(F32), None, W)
