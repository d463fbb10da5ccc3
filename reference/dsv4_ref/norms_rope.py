"""RMSNorm, per-head q norm, RoPE (with YaRN) and the Hadamard rotation (spec §3).

Conventions (shared by the whole reference):
* "bf16 values" = a float32 array whose every element is exactly representable in bfloat16.
  Inputs documented as bf16 are passed through ``bf16_round`` first (a no-op for bf16 values).
* f32 arithmetic is emulated with NumPy float32 operations, one IEEE rounding per operation.
  Reductions (sums of squares, dot products) are computed in float64 and rounded once to f32,
  i.e. an order-independent "correctly rounded f32 sum". A C++ kernel that sums in f32 in some
  order differs from this by f32-ulp amounts, which can flip a final bf16 rounding on rare elements;
  compare kernel outputs against these goldens with a tolerance of 1 bf16 ulp (or a few f32 ulps
  for f32 outputs), not bitwise.
* ``rsqrt(v)`` in f32 = ``f32(1 / f32(sqrt(v)))`` (two roundings, what ``1.0f / std::sqrt(v)`` gives).
* ``cos``/``sin`` of an f32 angle are evaluated in float64 and rounded to f32 (correctly rounded).
"""
import math

import numpy as np

from .formats import bf16_round

F32 = np.float32

ROPE_DIM = 64
# V4-Flash configuration (spec §0)
ROPE_THETA = 10000.0
COMPRESS_ROPE_THETA = 160000.0
ROPE_FACTOR = 16.0
ORIGINAL_SEQ_LEN = 65536
BETA_FAST = 32
BETA_SLOW = 1
NORM_EPS = 1e-6


# ----------------------------------------------------------------------------------------------
# small f32 helpers
# ----------------------------------------------------------------------------------------------
def _f32_sum(a, axis=-1, keepdims=False):
    """Sum in float64, rounded once to f32."""
    return np.sum(np.asarray(a, dtype=np.float64), axis=axis, keepdims=keepdims).astype(F32)


def _f32_rsqrt(v):
    v = np.asarray(v, dtype=F32)
    return (F32(1.0) / np.sqrt(v).astype(F32)).astype(F32)


def _bf16_in(x):
    return bf16_round(np.asarray(x, dtype=F32)).astype(F32)


# ----------------------------------------------------------------------------------------------
# §3.1 norms
# ----------------------------------------------------------------------------------------------
def rmsnorm(x, w, eps=NORM_EPS):
    """Weighted RMSNorm over the last axis, official precision (spec §3.1).

    y = bf16( w_f32 * (x_f32 * rsqrt(mean(x_f32^2) + eps)) ): every op in f32, ONE bf16 rounding at
    the end. x, w: bf16 values (float32 arrays); w has shape [n] (broadcast over leading axes).
    Returns float32 bf16 values, same shape as x.
    """
    x = _bf16_in(x)
    w = _bf16_in(w)
    n = x.shape[-1]
    sq = (x * x).astype(F32)                       # exact: bf16*bf16 fits in f32
    mean = (_f32_sum(sq, keepdims=True) / F32(n)).astype(F32)
    r = _f32_rsqrt((mean + F32(eps)).astype(F32))
    xn = (x * r).astype(F32)
    return bf16_round((w * xn).astype(F32)).astype(F32)


def rms_factor_f32(x, eps=NORM_EPS):
    """Plain f32 ``rsqrt(mean(x^2) + eps)`` over the last axis, keepdims (mHC input norm, §7)."""
    x = np.asarray(x, dtype=F32)
    n = x.shape[-1]
    mean = (_f32_sum((x * x).astype(F32), keepdims=True) / F32(n)).astype(F32)
    return _f32_rsqrt((mean + F32(eps)).astype(F32))


def rmsnorm_f32(x, eps=NORM_EPS):
    """Plain f32 unweighted RMS normalisation over the last axis, no bf16 rounding (mHC, §3.1/§7).

    Returns ``f32(x * rms_factor_f32(x, eps))``. (For hc_pre the spec computes
    ``mix = (v . fn^T) * r``; use ``rms_factor_f32`` to get ``r`` alone.)
    """
    x = np.asarray(x, dtype=F32)
    return (x * rms_factor_f32(x, eps)).astype(F32)


def q_head_norm(q, eps=NORM_EPS):
    """Unweighted per-head RMS norm over the last axis in bf16 arithmetic (spec §3.1, §4 step 2).

    sq = bf16(q*q); m = bf16(f32(sum sq) / D) (f32 accumulate); v = bf16(m + eps);
    r = bf16(rsqrt_f32(v)); y = bf16(q * r). Returns float32 bf16 values.
    """
    q = _bf16_in(q)
    d = q.shape[-1]
    sq = bf16_round((q * q).astype(F32)).astype(F32)
    m = bf16_round((_f32_sum(sq, keepdims=True) / F32(d)).astype(F32)).astype(F32)
    v = bf16_round((m + F32(eps)).astype(F32)).astype(F32)
    r = bf16_round(_f32_rsqrt(v)).astype(F32)
    return bf16_round((q * r).astype(F32)).astype(F32)


# ----------------------------------------------------------------------------------------------
# §3.2 frequency table
# ----------------------------------------------------------------------------------------------
def yarn_correction_range(base, rope_dim=ROPE_DIM, original_seq_len=ORIGINAL_SEQ_LEN,
                          beta_fast=BETA_FAST, beta_slow=BETA_SLOW):
    """(lo, hi) of the YaRN ramp, computed in float64 as in §3.2 (lo=15, hi=25 for V4-Flash)."""
    d = rope_dim

    def corr(r):
        return d * math.log(original_seq_len / (2 * math.pi * r)) / (2 * math.log(base))

    lo = max(math.floor(corr(beta_fast)), 0)
    hi = min(math.ceil(corr(beta_slow)), d - 1)
    return lo, hi


def rope_freqs(base, rope_dim=ROPE_DIM, factor=None, original_seq_len=0,
               beta_fast=BETA_FAST, beta_slow=BETA_SLOW):
    """Per-pair inverse frequencies, float32 [rope_dim/2] (spec §3.2).

    f_i = f32(1 / f32(base^(2i/d))) with the power correctly rounded to f32; YaRN blend (in f32)
    f_i*(1-ramp_i) + (f_i/factor)*ramp_i when original_seq_len > 0. No mscale.
    """
    d = rope_dim
    e = (np.arange(0, d, 2, dtype=F32) / F32(d)).astype(F32)          # 2i/d, exact in f32
    powv = np.power(np.float64(F32(base)), e.astype(np.float64)).astype(F32)
    f = (F32(1.0) / powv).astype(F32)
    if original_seq_len and original_seq_len > 0:
        if factor is None:
            raise ValueError("YaRN needs a factor")
        lo, hi = yarn_correction_range(base, d, original_seq_len, beta_fast, beta_slow)
        lo_f, hi_f = float(lo), float(hi)
        if lo_f == hi_f:
            hi_f += 0.001
        i = np.arange(d // 2, dtype=F32)
        ramp = np.clip(((i - F32(lo_f)) / F32(hi_f - lo_f)).astype(F32), F32(0), F32(1)).astype(F32)
        one = F32(1.0)
        f = ((f * (one - ramp)).astype(F32) + ((f / F32(factor)).astype(F32) * ramp).astype(F32)).astype(F32)
    return f


def rope_freqs_for_layer(ratio, cfg=None):
    """Frequency table of a V4-Flash layer with compress ratio ``ratio`` (spec §3.2).

    ratio 0 (layers 0,1, MTP): base rope_theta=1e4, no YaRN. ratio 4/128: compress_rope_theta=160000
    with YaRN factor 16, original_seq_len 65536, beta 32/1. ``cfg`` (optional dict) may override
    rope_theta, compress_rope_theta, rope_factor, original_seq_len, beta_fast, beta_slow, rope_dim.
    """
    cfg = dict(cfg or {})
    d = cfg.get("rope_dim", cfg.get("rope_head_dim", ROPE_DIM))
    if ratio == 0:
        return rope_freqs(cfg.get("rope_theta", ROPE_THETA), d)
    return rope_freqs(cfg.get("compress_rope_theta", COMPRESS_ROPE_THETA), d,
                      factor=cfg.get("rope_factor", ROPE_FACTOR),
                      original_seq_len=cfg.get("original_seq_len", ORIGINAL_SEQ_LEN),
                      beta_fast=cfg.get("beta_fast", BETA_FAST),
                      beta_slow=cfg.get("beta_slow", BETA_SLOW))


def rope_cos_sin(freqs, positions):
    """cos/sin tables, float32 [P, len(freqs)]: theta = f32(f32(p) * f_i), then f32 cos/sin."""
    freqs = np.asarray(freqs, dtype=F32)
    pos = np.asarray(positions).reshape(-1)
    p32 = pos.astype(np.float64).astype(F32)      # exact for p < 2^24
    theta = (p32[:, None] * freqs[None, :]).astype(F32)
    t64 = theta.astype(np.float64)
    return np.cos(t64).astype(F32), np.sin(t64).astype(F32)


# ----------------------------------------------------------------------------------------------
# §3.3 applying RoPE
# ----------------------------------------------------------------------------------------------
def rope_apply(x, positions, freqs, inverse=False, rope_dim=ROPE_DIM):
    """Interleaved-pair RoPE on the LAST ``rope_dim`` dims of the last axis (spec §3.3).

    x: bf16 values [..., D]. positions: integer array whose shape is a prefix of x.shape[:-1]
    (e.g. [P] for x [P, D], [S] for x [S, H, D]: every head of token s uses positions[s]); it is
    broadcast over the remaining leading axes. Pair i = (x[D-64+2i], x[D-64+2i+1]) = (re, im):
    forward re' = re*cos - im*sin, im' = re*sin + im*cos; inverse re' = re*cos + im*sin,
    im' = -re*sin + im*cos; each product and the sum in f32, result rounded to bf16.
    Dims before D-64 are returned unchanged. Returns float32 bf16 values.
    """
    x = _bf16_in(x)
    D = x.shape[-1]
    if D < rope_dim:
        raise ValueError("last axis shorter than rope_dim")
    pos = np.asarray(positions)
    lead = x.shape[:-1]
    if pos.shape != lead[:pos.ndim]:
        raise ValueError(f"positions shape {pos.shape} is not a prefix of {lead}")
    cos, sin = rope_cos_sin(freqs, pos.reshape(-1))
    half = rope_dim // 2
    if cos.shape[-1] != half:
        raise ValueError("freqs length must be rope_dim/2")
    bshape = pos.shape + (1,) * (len(lead) - pos.ndim) + (half,)
    cos = cos.reshape(bshape)
    sin = sin.reshape(bshape)
    y = x.copy()
    r = x[..., D - rope_dim:]
    re = r[..., 0::2]
    im = r[..., 1::2]
    if not inverse:
        nre = ((re * cos).astype(F32) - (im * sin).astype(F32)).astype(F32)
        nim = ((re * sin).astype(F32) + (im * cos).astype(F32)).astype(F32)
    else:
        nre = ((re * cos).astype(F32) + (im * sin).astype(F32)).astype(F32)
        nim = ((im * cos).astype(F32) - (re * sin).astype(F32)).astype(F32)
    out = np.empty_like(r)
    out[..., 0::2] = nre
    out[..., 1::2] = nim
    y[..., D - rope_dim:] = bf16_round(out).astype(F32)
    return y


# ----------------------------------------------------------------------------------------------
# §3.4 Hadamard rotation
# ----------------------------------------------------------------------------------------------
def hadamard_matrix(n):
    """Sylvester / natural-order Hadamard matrix H[i][j] = (-1)^popcount(i&j), float64 [n, n]."""
    if n <= 0 or n & (n - 1):
        raise ValueError("n must be a power of two")
    i = np.arange(n)
    a = i[:, None] & i[None, :]
    pc = np.zeros_like(a)
    while np.any(a):
        pc += a & 1
        a >>= 1
    return np.where(pc % 2 == 0, 1.0, -1.0)


def hadamard(x):
    """rotate(x) = (x . H_n) * n^-1/2 along the last axis (n = x.shape[-1], 128 in V4-Flash).

    bf16 in/out, f32 internally: the transform sum (exact in float64 for bf16 inputs) is rounded
    to f32, multiplied in f32 by f32(n^-1/2), then rounded to bf16. Returns float32 bf16 values.
    """
    x = _bf16_in(x)
    n = x.shape[-1]
    H = hadamard_matrix(n)
    t = (x.astype(np.float64) @ H).astype(F32)       # H symmetric: x.H == H.x
    scale = F32(1.0 / math.sqrt(n))
    return bf16_round((t * scale).astype(F32)).astype(F32)
