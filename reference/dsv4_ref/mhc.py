"""mHC hyper-connections: hc_pre (with the Sinkhorn split), hc_post and hc_head (spec §7, §10.3 1-2).

Golden family `mhc`; see reference/README.md, section "Golden families: mhc, moe".

Shapes: the residual state of one token is H [hc=4, d] (d = 4096 in V4-Flash); functions take
H [T, 4, d] as bf16 values (float32 arrays whose elements are exact bf16). `fn` is [24, 4d] for
hc_pre and [4, 4d] for hc_head, flattened stream-major (element j*d + i is stream j, channel i).

Precision (same convention as norms_rope.py): every elementwise op is one f32 operation (NumPy
float32, one IEEE rounding); reductions (the 4d-long dot products, the 4-term Sinkhorn row/column
sums, the stream combinations) are evaluated in float64 and rounded once to f32; transcendental
functions (exp, sigmoid) are evaluated in float64 from their f32 argument and rounded to f32
(correctly rounded). A C++ kernel that sums in f32 in another order or uses a different exp differs
by f32-ulp amounts: compare f32 outputs with a relative tolerance of a few 1e-6 and bf16 outputs
with 1 bf16 ulp.
"""
import numpy as np

from .formats import bf16_round, f32_to_bf16_bits
from .norms_rope import rms_factor_f32

F32 = np.float32
F64 = np.float64

HC = 4                       # hc_mult
MIX_HC = (2 + HC) * HC       # 24 mixes: 4 pre, 4 post, 16 comb
SINKHORN_ITERS = 20          # hc_sinkhorn_iters
HC_EPS = 1e-6                # hc_eps
NORM_EPS = 1e-6              # norm_eps
SEED = 0x3C7


# ----------------------------------------------------------------------------------------------
# f32 helpers
# ----------------------------------------------------------------------------------------------
def _f32(x):
    return np.asarray(x, dtype=F32)


def _bf16_in(x):
    return bf16_round(_f32(x)).astype(F32)


def _sum_f32(a, axis, keepdims=False):
    """Sum in float64, rounded once to f32."""
    return np.sum(np.asarray(a, dtype=F64), axis=axis, keepdims=keepdims).astype(F32)


def sigmoid_f32(z):
    """sigmoid of an f32 argument, evaluated in float64 (overflow-free form) and rounded to f32.
    Saturates cleanly: sigmoid(-1e4) = 0, sigmoid(1e4) = 1."""
    z = _f32(z).astype(F64)
    e = np.exp(-np.abs(z))                              # in (0, 1], never overflows
    s = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return s.astype(F32)


def exp_f32(z):
    """exp of an f32 argument, float64 evaluation rounded to f32 (arguments here are <= 0)."""
    with np.errstate(over="ignore", under="ignore"):
        return np.exp(_f32(z).astype(F64)).astype(F32)


# ----------------------------------------------------------------------------------------------
# §7 step 1-2: RMS-normalised mixes
# ----------------------------------------------------------------------------------------------
def hc_mixes(H, fn, norm_eps=NORM_EPS):
    """mix = (v . fn^T) * r with v = f32(flatten(H)) [T, 4d], r = rsqrt(mean(v^2) + norm_eps).

    r is the plain f32 RMS factor (eps INSIDE the sqrt, spec §3.1/§10.3-1); the dot product is
    evaluated in float64 and rounded once to f32; mix = f32(dot * r). Returns float32 [T, M].
    """
    H = _bf16_in(H)
    T = H.shape[0]
    v = H.reshape(T, -1)
    fn = _f32(fn)
    if fn.ndim != 2 or fn.shape[1] != v.shape[1]:
        raise ValueError(f"fn shape {fn.shape} does not match flattened H width {v.shape[1]}")
    r = rms_factor_f32(v, norm_eps)                    # [T, 1] f32
    dot = (v.astype(F64) @ fn.astype(F64).T).astype(F32)
    return (dot * r).astype(F32)


# ----------------------------------------------------------------------------------------------
# §7 step 3: split + Sinkhorn
# ----------------------------------------------------------------------------------------------
def sinkhorn(logits, iters=SINKHORN_ITERS, eps=HC_EPS):
    """Sinkhorn normalisation of [..., 4, 4] comb logits C[j][k] (row j, column k), f32.

    C = softmax over k (the LAST index, max-subtracted) + eps;
    C /= (sum_j C + eps)                                  (column step);
    repeat iters-1 times: C /= (sum_k C + eps) (row), C /= (sum_j C + eps) (column).
    eps is always ADDED (to the softmax output and to every denominator), never max()'d.
    Totals for iters=20: 1 softmax, 19 row + 20 column normalisations, the last step a column step,
    so columns sum to 1 - O(eps) and rows to 1 only approximately.
    """
    if int(iters) < 1:
        raise ValueError("sinkhorn needs iters >= 1 (the softmax and first column step are fixed)")
    eps = F32(eps)
    C = _f32(logits)
    C = (C - C.max(axis=-1, keepdims=True)).astype(F32)
    C = exp_f32(C)
    C = (C / _sum_f32(C, axis=-1, keepdims=True) + eps).astype(F32)
    C = (C / (_sum_f32(C, axis=-2, keepdims=True) + eps)).astype(F32)
    for _ in range(int(iters) - 1):
        C = (C / (_sum_f32(C, axis=-1, keepdims=True) + eps)).astype(F32)
        C = (C / (_sum_f32(C, axis=-2, keepdims=True) + eps)).astype(F32)
    return C


def hc_split(mix, scale, base, iters=SINKHORN_ITERS, hc_eps=HC_EPS):
    """Kernel hc_split_sinkhorn (spec §7 step 3), all f32. mix [T, 24] -> (pre [T,4], post [T,4],
    comb [T,4,4]).

    pre_j  = sigmoid(mix_j * scale0 + base_j) + hc_eps          (eps after the sigmoid)
    post_j = 2 * sigmoid(mix_{4+j} * scale1 + base_{4+j})       (no eps)
    C[j][k] = mix_{8+4j+k} * scale2 + base_{8+4j+k}, then sinkhorn(C, iters, hc_eps).
    """
    mix = _f32(mix)
    scale = _f32(scale).reshape(-1)
    base = _f32(base).reshape(-1)
    if mix.shape[-1] != MIX_HC or scale.shape != (3,) or base.shape != (MIX_HC,):
        raise ValueError("hc_split expects mix [..., 24], scale [3], base [24]")
    eps = F32(hc_eps)
    pre = (sigmoid_f32((mix[..., 0:4] * scale[0]).astype(F32) + base[0:4]) + eps).astype(F32)
    post = (F32(2.0) * sigmoid_f32((mix[..., 4:8] * scale[1]).astype(F32) + base[4:8])).astype(F32)
    logits = ((mix[..., 8:24] * scale[2]).astype(F32) + base[8:24]).astype(F32)
    comb = sinkhorn(logits.reshape(mix.shape[:-1] + (HC, HC)), iters, hc_eps)
    return pre, post, comb


def _combine_streams(weights, H):
    """y = bf16( sum_j weights_j * f32(H_j) ): float64 sum of the 4 products, one f32 rounding,
    one bf16 rounding. weights [T, 4] f32, H [T, 4, d] -> [T, d] bf16 values."""
    acc = np.einsum("tj,tjd->td", _f32(weights).astype(F64), _f32(H).astype(F64))
    return bf16_round(acc.astype(F32)).astype(F32)


def hc_pre(H, fn, scale, base, iters=SINKHORN_ITERS, hc_eps=HC_EPS, norm_eps=NORM_EPS,
           return_mix=False):
    """Block.hc_pre (spec §7). H [T, 4, d] bf16 values, fn [24, 4d], scale [3], base [24].

    Returns (y [T, d] bf16 values (float32), post [T, 4] f32, comb [T, 4, 4] f32 with
    comb[t, j, k] = C[j][k], pre [T, 4] f32); with return_mix=True also the f32 mixes [T, 24].
    """
    H = _bf16_in(H)
    if H.ndim != 3 or H.shape[1] != HC:
        raise ValueError(f"H must be [T, {HC}, d], got {H.shape}")
    mix = hc_mixes(H, fn, norm_eps)
    pre, post, comb = hc_split(mix, scale, base, iters, hc_eps)
    y = _combine_streams(pre, H)
    if return_mix:
        return y, post, comb, pre, mix
    return y, post, comb, pre


def hc_post(y_sub, H, post, comb):
    """Block.hc_post (spec §7): H'[t, k] = bf16( post[t,k] * f32(y[t]) + sum_j comb[t,j,k] * f32(H[t,j]) ).

    The contraction runs over the FIRST comb index (H' = post (x) y + C^T . H). f32 math (float64
    sum of the 5 products, rounded once to f32), one bf16 rounding. Returns [T, 4, d] bf16 values.
    """
    y = _bf16_in(y_sub).astype(F64)
    H = _bf16_in(H).astype(F64)
    post = _f32(post).astype(F64)
    comb = _f32(comb).astype(F64)
    acc = post[:, :, None] * y[:, None, :] + np.einsum("tjk,tjd->tkd", comb, H)
    return bf16_round(acc.astype(F32)).astype(F32)


def hc_head(H, fn, scale, base, hc_eps=HC_EPS, norm_eps=NORM_EPS, return_aux=False):
    """Final / MTP hc_head (spec §7): mix = (v . fn^T) * r (4 values), pre_j = sigmoid(mix_j *
    scale0 + base_j) + hc_eps, y = bf16(sum_j pre_j H_j). No post, no Sinkhorn.

    fn [4, 4d], scale [1], base [4]. Returns y [T, d] bf16 values; with return_aux=True returns
    (y, pre [T, 4] f32, mix [T, 4] f32).
    """
    H = _bf16_in(H)
    scale = _f32(scale).reshape(-1)
    base = _f32(base).reshape(-1)
    if H.ndim != 3 or H.shape[1] != HC or base.shape != (HC,) or scale.shape[0] < 1:
        raise ValueError("hc_head expects H [T, 4, d], fn [4, 4d], scale [1], base [4]")
    mix = hc_mixes(H, fn, norm_eps)
    pre = (sigmoid_f32((mix * scale[0]).astype(F32) + base) + F32(hc_eps)).astype(F32)
    y = _combine_streams(pre, H)
    if return_aux:
        return y, pre, mix
    return y


# ----------------------------------------------------------------------------------------------
# goldens
# ----------------------------------------------------------------------------------------------
def _bits(x):
    return f32_to_bf16_bits(_f32(x))


def _residual(rng, T, d, tiny_token=None, zero_token=None, embed_token=None):
    """Random residual streams [T, 4, d] as bf16 values: per-stream magnitudes differ, optional
    token with 4 identical streams (as right after the embedding), a tiny-magnitude token (the
    norm eps dominates) and an all-zero token."""
    mags = np.exp(rng.uniform(np.log(0.05), np.log(3.0), size=(T, HC, 1)))
    H = rng.standard_normal((T, HC, d)) * mags
    if embed_token is not None:
        H[embed_token] = H[embed_token, 0:1] * np.ones((HC, 1))
    if tiny_token is not None:
        H[tiny_token] = rng.standard_normal((HC, d)) * 3e-4       # mean(v^2) ~ 1e-7 < norm_eps
    if zero_token is not None:
        H[zero_token] = 0.0
    return _bf16_in(H)


def _hc_params(rng, d, n_mix, mix_std):
    """fn with entries N(0, mix_std^2 / (4d)), so that mixes of RMS-normalised inputs have std
    ~mix_std; f32."""
    fn = (rng.standard_normal((n_mix, HC * d)) * (mix_std / np.sqrt(HC * d))).astype(F32)
    return fn


def _pre_params(rng):
    scale = np.array([0.8, 0.6, 1.7], dtype=F32)
    base = np.concatenate([
        rng.normal(0.0, 1.0, 4),                                   # pre
        rng.normal(0.0, 1.0, 4),                                   # post
        (2.0 * np.eye(HC) + rng.normal(0.0, 0.7, (HC, HC))).reshape(-1),   # comb, non-symmetric
    ]).astype(F32)
    return scale, base


def _write_hc_pre(writer, name, H, fn, scale, base, iters):
    y, post, comb, pre, mix = hc_pre(H, fn, scale, base, iters=iters, return_mix=True)
    for a in (y, post, comb, pre):
        assert np.all(np.isfinite(a)), name
    writer.case(f"hc_pre_{name}", H=_bits(H), fn=_f32(fn), scale=_f32(scale), base=_f32(base),
                iters=np.array([iters], dtype=np.int64), y=_bits(y), post=post, comb=comb, pre=pre,
                mix=mix.astype(F64))
    return mix


def write_goldens(writer):
    rng = np.random.default_rng(SEED)

    # hc_pre, real width: d = 4096, T = 3 (token 0 = 4 identical streams as after the embedding)
    d = 4096
    H = _residual(rng, 3, d, embed_token=0)
    fn = _hc_params(rng, d, MIX_HC, mix_std=1.5)
    scale, base = _pre_params(rng)
    _write_hc_pre(writer, "d4096_t3", H, fn, scale, base, 20)

    # hc_pre, d = 64, T = 5 (token 3 tiny: norm eps matters; token 4 all zero), iters 1, 4, 20
    d = 64
    H = _residual(rng, 5, d, embed_token=1, tiny_token=3, zero_token=4)
    fn = _hc_params(rng, d, MIX_HC, mix_std=2.0)
    scale, base = _pre_params(rng)
    for iters in (1, 4, 20):
        _write_hc_pre(writer, f"d64_iters{iters}", H, fn, scale, base, iters)

    # hc_pre with mixes of magnitude 1e3..1e4: saturated sigmoid (pre -> eps or 1+eps, post -> 0
    # or 2) and one-hot softmax rows; everything must stay finite.
    H = _residual(rng, 5, d, embed_token=2)
    fn = _hc_params(rng, d, MIX_HC, mix_std=5000.0)
    scale = np.array([1.0, 1.0, 1.0], dtype=F32)
    base = rng.normal(0.0, 1.0, MIX_HC).astype(F32)
    mix = _write_hc_pre(writer, "large_mixes", H, fn, scale, base, 20)
    am = np.abs(mix)
    assert am.max() >= 1e3 and np.median(am) >= 3e2, (am.min(), np.median(am), am.max())

    # hc_post: comb = Sinkhorn output of strongly non-symmetric logits, post in (0, 2)
    for d, T in ((4096, 3), (64, 5)):
        H = _residual(rng, T, d)
        y = _bf16_in(rng.standard_normal((T, d)) * 0.7)
        post = (2.0 * sigmoid_f32(rng.normal(0.0, 1.5, (T, HC)))).astype(F32)
        comb = sinkhorn(rng.normal(0.0, 2.0, (T, HC, HC)).astype(F32), 20)
        out = hc_post(y, H, post, comb)
        writer.case(f"hc_post_d{d}", y=_bits(y), H=_bits(H), post=post, comb=comb, out=_bits(out))

    # hc_head
    for d, T in ((4096, 2), (64, 5)):
        if d == 64:
            H = _residual(rng, T, d, embed_token=0, tiny_token=3, zero_token=4)
        else:
            H = _residual(rng, T, d, embed_token=1)
        fn = _hc_params(rng, d, HC, mix_std=2.0)
        scale = np.array([0.9], dtype=F32)
        base = rng.normal(0.0, 1.0, HC).astype(F32)
        y, pre, mix = hc_head(H, fn, scale, base, return_aux=True)
        writer.case(f"hc_head_d{d}", H=_bits(H), fn=fn, scale=scale, base=base, y=_bits(y),
                    pre=pre, mix=mix.astype(F64))
