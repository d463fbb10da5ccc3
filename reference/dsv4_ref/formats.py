"""Element formats and activation quantisers (spec §1.4, §2.1-§2.3), NumPy only.

Conventions
-----------
* "bf16 values" are carried as float32 arrays whose values are exactly representable in bf16.
* All functions are vectorised over arbitrary shapes; blocks run along the last axis.
* Rounding is IEEE round-to-nearest-even (RNE) everywhere. Nothing flushes subnormals.

Public functions
----------------
bf16_round, f32_to_bf16_bits, bf16_bits_to_f32, fp16_bits_to_f32,
e4m3_decode, e4m3_encode, e2m1_decode, e2m1_encode, e8m0_decode,
pow2_scale, act_quant, act_quant_sim, fp4_act_quant, fp4_act_quant_sim,
fp4_dequant, fp8_dequant.
"""
import numpy as np

__all__ = [
    "bf16_round", "f32_to_bf16_bits", "bf16_bits_to_f32", "fp16_bits_to_f32",
    "e4m3_decode", "e4m3_encode", "e2m1_decode", "e2m1_encode", "e8m0_decode",
    "pow2_scale", "act_quant", "act_quant_sim", "fp4_act_quant", "fp4_act_quant_sim",
    "fp4_dequant", "fp8_dequant",
    "E4M3_MAX", "E2M1_MAX", "FP8_AMAX_FLOOR", "FP4_AMAX_FLOOR", "E2M1_MAGNITUDES",
]

E4M3_MAX = 448.0
E2M1_MAX = 6.0
FP8_AMAX_FLOOR = np.float32(1e-4)                      # spec §2.1 step 1 (K 79)
FP4_AMAX_FLOOR = np.float32(6.0 * 2.0 ** -126)         # spec §2.1 step 1 (K 163), exact in f32
E2M1_MAGNITUDES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], dtype=np.float32)


def _view(a, src, dst):
    """Reinterpret the bits of `a` (cast to dtype `src` first) as dtype `dst`, keeping the shape."""
    a = np.asarray(a).astype(src)
    return np.ascontiguousarray(a).reshape(-1).view(dst).reshape(a.shape)


# ----------------------------------------------------------------------------------------------
# bf16 / fp16
# ----------------------------------------------------------------------------------------------
def f32_to_bf16_bits(x):
    """RNE float32 -> bf16 bit pattern (uint16). Input is cast to float32 first.

    Finite values that round past the largest bf16 become +-inf (0x7F80/0xFF80), as RNE dictates.
    NaN (any payload, quiet or signalling) -> 0x7FC0 with the input's sign bit kept (0xFFC0 for
    negative NaN); callers that compare NaNs should only check the NaN class.
    """
    u = _view(np.asarray(x, dtype=np.float32), np.float32, np.uint32).astype(np.int64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    out = np.where(nan, ((u >> 16) & 0x8000) | 0x7FC0, rounded)
    return out.astype(np.uint16)


def bf16_bits_to_f32(bits):
    """bf16 bit pattern (uint16) -> float32 (exact)."""
    b = (np.asarray(bits).astype(np.uint16).astype(np.uint32) << np.uint32(16)).astype(np.uint32)
    return _view(b, np.uint32, np.float32)


def bf16_round(x):
    """RNE float32 -> bf16, returned as float32 values. NaN stays NaN, overflow -> +-inf."""
    return bf16_bits_to_f32(f32_to_bf16_bits(x))


def fp16_bits_to_f32(bits):
    """IEEE half bit pattern (uint16) -> float32 (exact, subnormals included)."""
    return _view(bits, np.uint16, np.float16).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# FP8 e4m3fn
# ----------------------------------------------------------------------------------------------
def _e4m3_table():
    t = np.empty(256, dtype=np.float64)
    for c in range(256):
        s = -1.0 if c & 0x80 else 1.0
        e = (c >> 3) & 0xF
        m = c & 7
        if e == 0xF and m == 7:
            t[c] = np.nan
        elif e == 0:
            t[c] = s * m * 2.0 ** -9
        else:
            t[c] = s * 2.0 ** (e - 7) * (1.0 + m / 8.0)
    return t.astype(np.float32)


_E4M3_TABLE = _e4m3_table()


def e4m3_decode(codes):
    """e4m3fn byte -> float32. 0x7F/0xFF -> NaN, 0x80 -> -0.0, subnormal step 2^-9."""
    return _E4M3_TABLE[np.asarray(codes).astype(np.uint8)]


def e4m3_encode(x):
    """float -> e4m3fn byte, RNE, saturating to +-448 (0x7E/0xFE). Sign always kept (-0 -> 0x80,
    negative values that round to zero -> 0x80). NaN input is unspecified (not used)."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    neg = np.signbit(x)
    v = np.minimum(np.abs(x), E4M3_MAX)
    v = np.where(np.isnan(v), 0.0, v)
    # subnormal range |v| < 2^-6: integer multiple of 2^-9 (a result of 8 is exactly code 8 = 2^-6)
    sub = np.rint(v * 2.0 ** 9)
    # normal range: E = floor(log2 v), mantissa rounded to 3 bits
    _, ex = np.frexp(np.where(v > 0, v, 1.0))          # v = f * 2^ex, f in [0.5, 1)
    E = ex.astype(np.int64) - 1
    mant = np.rint(np.ldexp(v, -(E - 3)))               # in [8, 16]
    carry = mant >= 16
    E = np.where(carry, E + 1, E)
    mant = np.where(carry, 8, mant)
    normal_code = ((E + 7) << 3) | (mant.astype(np.int64) - 8)
    code = np.where(v < 2.0 ** -6, sub.astype(np.int64), normal_code)
    code = np.minimum(code, 0x7E)                       # cannot trigger after the clamp; safety
    return (code | np.where(neg, 0x80, 0)).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# FP4 e2m1
# ----------------------------------------------------------------------------------------------
_E2M1_TABLE = np.concatenate([E2M1_MAGNITUDES, -E2M1_MAGNITUDES]).astype(np.float32)


def e2m1_decode(nibbles):
    """e2m1 nibble (0..15) -> float32. 8 -> -0.0."""
    return _E2M1_TABLE[np.asarray(nibbles).astype(np.uint8) & 0xF]


def e2m1_encode(x):
    """float -> e2m1 nibble (uint8 0..15), RNE on the e2m1 grid, saturating to +-6, sign kept
    (-0 and negative values rounding to zero -> 8). Ties go to the even code:
    0.25->0, 0.75->1, 1.25->1, 1.75->2, 2.5->2, 3.5->4, 5->4 (spec §2.3)."""
    x = np.asarray(x, dtype=np.float32).astype(np.float64)
    neg = np.signbit(x)
    v = np.minimum(np.abs(x), E2M1_MAX)
    v = np.where(np.isnan(v), 0.0, v)
    grid = E2M1_MAGNITUDES.astype(np.float64)
    d = np.abs(v[..., None] - grid)                     # exact in float64
    best = d.min(axis=-1, keepdims=True)
    cand = d == best
    parity = np.arange(8) & 1
    # among the (at most two) nearest codes choose the even one
    code = np.argmin(np.where(cand, parity, 2), axis=-1)
    return (code | np.where(neg, 8, 0)).astype(np.uint8)


# ----------------------------------------------------------------------------------------------
# E8M0
# ----------------------------------------------------------------------------------------------
def e8m0_decode(codes):
    """E8M0 byte -> float32: 2^(e-127); e=0 -> 2^-127 (fp32 subnormal); 255 -> NaN."""
    c = np.asarray(codes).astype(np.uint8).astype(np.int64)
    v = np.ldexp(np.float64(1.0), np.minimum(c, 254) - 127).astype(np.float32)
    return np.where(c == 255, np.float32(np.nan), v).astype(np.float32)


def _e8m0_to_f64(codes):
    c = np.asarray(codes).astype(np.uint8).astype(np.int64)
    return np.where(c == 255, np.nan, np.ldexp(np.float64(1.0), c - 127))


# ----------------------------------------------------------------------------------------------
# Scale rule and activation quantisers
# ----------------------------------------------------------------------------------------------
def pow2_scale(amax, qmax, floor):
    """Spec §2.1. Returns (scale float32 = 2^e, e8m0 uint8 = e + 127).

    a = max(f32(amax), f32(floor)); t = f32(a * f32(1/qmax)) (f32 multiply, not a divide);
    e = biased_exponent(t) - 127, +1 if t's mantissa bits are non-zero; s = 2^e from bits.
    (For a subnormal t the biased exponent field is 0; the same bit rule is applied. With the
    spec's floors t is always normal.)
    """
    a = np.maximum(np.asarray(amax, dtype=np.float32), np.float32(floor))
    recip = np.float32(1.0) / np.float32(qmax)          # f32(1/Q), correctly rounded
    t = np.asarray(a * recip, dtype=np.float32)          # f32 product, RNE
    bits = _view(t, np.float32, np.uint32).astype(np.int64)
    e = ((bits >> 23) & 0xFF) - 127
    e = e + ((bits & 0x7FFFFF) != 0).astype(np.int64)
    scale = _view((e + 127) << 23, np.uint32, np.float32)
    return scale, (e + 127).astype(np.uint8)


def _blocks(x, block):
    x = np.asarray(x, dtype=np.float32)
    C = x.shape[-1]
    if C % block:
        raise ValueError(f"last dim {C} not a multiple of block {block}")
    return x.reshape(x.shape[:-1] + (C // block, block))


def _quant_blocks(x, block, qmax, floor):
    xb = _blocks(x, block)
    amax = np.abs(xb).max(axis=-1)
    scale, code = pow2_scale(amax, qmax, floor)
    with np.errstate(under="ignore"):
        q = xb / scale[..., None]                        # f32; exact (power-of-two divisor)
    q = np.clip(q, -np.float32(qmax), np.float32(qmax)).astype(np.float32)
    return xb, q, scale, code


def act_quant(x, block):
    """FP8 GEMM-input quantisation (spec §2.2, inplace=False).

    x: float32 array of bf16 values, blocks of `block` along the last axis.
    Returns (codes uint8 same shape as x, scales uint8 E8M0 [..., C/block]).
    """
    x = np.asarray(x, dtype=np.float32)
    _, q, _, code = _quant_blocks(x, block, E4M3_MAX, FP8_AMAX_FLOOR)
    return e4m3_encode(q).reshape(x.shape), code


def act_quant_sim(x, block, revision="current"):
    """FP8 in-place simulation (spec §2.2, inplace=True), returns float32 bf16 values.

    current: bf16(e4m3(q) * s) computed in f32 (can overflow to inf only for |x| near bf16 max).
    initial: the official initial revision's no-op, returns bf16(x) == x.
    """
    x = np.asarray(x, dtype=np.float32)
    if revision == "initial":
        return bf16_round(x)
    if revision != "current":
        raise ValueError(f"unknown revision {revision!r}")
    _, q, scale, _ = _quant_blocks(x, block, E4M3_MAX, FP8_AMAX_FLOOR)
    with np.errstate(over="ignore"):
        y = e4m3_decode(e4m3_encode(q)) * scale[..., None]
    return bf16_round(y.astype(np.float32)).reshape(x.shape)


def fp4_act_quant(x, block=32):
    """FP4 e2m1 quantisation (spec §2.3): returns (packed uint8 [..., C/2], scales uint8 [..., C/block]).
    Packing: byte k holds element 2k in the low nibble, element 2k+1 in the high nibble (§1.4)."""
    x = np.asarray(x, dtype=np.float32)
    _, q, _, code = _quant_blocks(x, block, E2M1_MAX, FP4_AMAX_FLOOR)
    nib = e2m1_encode(q).reshape(x.shape)
    packed = (nib[..., 0::2] | (nib[..., 1::2] << 4)).astype(np.uint8)
    return packed, code


def fp4_act_quant_sim(x, block=32):
    """FP4 simulation (spec §2.3): bf16(e2m1(q) * s), float32 bf16 values."""
    x = np.asarray(x, dtype=np.float32)
    _, q, scale, _ = _quant_blocks(x, block, E2M1_MAX, FP4_AMAX_FLOOR)
    with np.errstate(over="ignore"):
        y = e2m1_decode(e2m1_encode(q)) * scale[..., None]
    return bf16_round(y.astype(np.float32)).reshape(x.shape)


def unpack_fp4(packed):
    """[..., K/2] bytes -> [..., K] nibbles (low nibble first)."""
    p = np.asarray(packed).astype(np.uint8)
    out = np.empty(p.shape[:-1] + (p.shape[-1] * 2,), dtype=np.uint8)
    out[..., 0::2] = p & 0xF
    out[..., 1::2] = p >> 4
    return out


# ----------------------------------------------------------------------------------------------
# Weight dequantisation (exact, float64)
# ----------------------------------------------------------------------------------------------
def fp4_dequant(packed, scales):
    """FP4 weights: packed uint8 [N, K/2], scales E8M0 uint8 [N, K/32] -> float64 [N, K]
    with w[n,k] = e2m1(W[n,k]) * 2^(S[n, k//32] - 127) (spec §1.4)."""
    vals = e2m1_decode(unpack_fp4(packed)).astype(np.float64)
    N, K = vals.shape
    s = _e8m0_to_f64(scales)
    if s.shape != (N, K // 32):
        raise ValueError(f"fp4 scale shape {s.shape} != {(N, K // 32)}")
    return vals * np.repeat(s, 32, axis=1)


def fp8_dequant(w_codes, scales):
    """FP8 weights: e4m3 codes uint8 [N, K], scales E8M0 uint8 [ceil(N/128), ceil(K/128)]
    -> float64 [N, K] with w[n,k] = e4m3(W[n,k]) * 2^(S[n//128, k//128] - 127) (spec §1.4)."""
    vals = e4m3_decode(w_codes).astype(np.float64)
    N, K = vals.shape
    s = _e8m0_to_f64(scales)
    exp_shape = (-(-N // 128), -(-K // 128))
    if s.shape != exp_shape:
        raise ValueError(f"fp8 scale shape {s.shape} != {exp_shape}")
    full = np.repeat(np.repeat(s, 128, axis=0), 128, axis=1)[:N, :K]
    return vals * full


def act_dequant(codes, scales, block):
    """FP8 activations (act_quant output) -> float64 values code * 2^(S - 127)."""
    vals = e4m3_decode(codes).astype(np.float64)
    return vals * np.repeat(_e8m0_to_f64(scales), block, axis=-1)
