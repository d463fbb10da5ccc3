"""Golden family `gemv`: quantised and plain GEMV/GEMM against exact float64 results
(spec §1.4, §2.2, §2.5, §4 step 10, §8.2). See reference/README.md, "Golden families: codec, gemv".

Every y_exact is the correctly rounded float64 value of the exact sum of the exact products
(products of these formats are exact in float64; the sum uses math.fsum). y_abs is the sum of the
absolute products (float64 BLAS, relative error ~1e-13), meant for error bounds such as
|y - y_exact| <= c * 2^-24 * K * y_abs.
"""
import math

import numpy as np

from . import formats as F

SEED = 0x6E3F
FP8_CODES = np.array([c for c in range(256) if c not in (0x7F, 0xFF)], dtype=np.uint8)
E2M1_RMS = math.sqrt(float(np.mean(F.E2M1_MAGNITUDES.astype(np.float64) ** 2)))


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def exact_matmul(a, w):
    """a [M,K], w [N,K] float64 with exactly representable products -> (y_exact, y_abs) [M,N]."""
    a = np.asarray(a, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    M, N = a.shape[0], w.shape[0]
    y = np.empty((M, N), dtype=np.float64)
    for m in range(M):
        prods = (w * a[m]).tolist()
        y[m] = [math.fsum(r) for r in prods]
    yabs = np.abs(a) @ np.abs(w).T
    return y, yabs


def bf16_round_f64(v):
    """Single RNE rounding of float64 values to bf16 (no double rounding through f32),
    returned as float32. Overflow past the bf16 max -> inf."""
    v = np.asarray(v, dtype=np.float64)
    _, e = np.frexp(np.where(v == 0, 1.0, v))               # |v| = f * 2^e, f in [0.5, 1)
    q = np.maximum(e.astype(np.int64) - 8, -133)             # bf16 quantum (8 significant bits)
    r = np.ldexp(np.rint(np.ldexp(v, -q)), q)
    r = np.where(v == 0, v, r)
    big = np.abs(r) >= 2.0 ** 128
    with np.errstate(over="ignore"):
        return np.where(big, np.copysign(np.inf, v), r).astype(np.float32)


def bf16_activations(rng, M, K, lo=-2.0, hi=2.0):
    """Random-normal bf16 rows; per-row magnitude 10^u, u uniform in [lo, hi]."""
    mag = 10.0 ** rng.uniform(lo, hi, size=M)
    return F.bf16_round((rng.normal(size=(M, K)) * mag[:, None]).astype(np.float32))


def fp4_weights(rng, N, K, scale_lo=119, scale_hi=127):
    w = rng.integers(0, 256, size=(N, K // 2), dtype=np.uint8)
    s = rng.integers(scale_lo, scale_hi + 1, size=(N, K // 32)).astype(np.uint8)
    return w, s


def fp8_weights(rng, N, K, scale_lo=107, scale_hi=122):
    w = rng.choice(FP8_CODES, size=(N, K))
    s = rng.integers(scale_lo, scale_hi + 1, size=(-(-N // 128), -(-K // 128))).astype(np.uint8)
    return w.astype(np.uint8), s


def quantised_activation_case(x):
    codes, scales = F.act_quant(x, 128)
    return codes, scales, F.act_dequant(codes, scales, 128)


def _check_normal_f32(y, yabs, what):
    ay = np.abs(y)
    assert np.all(ay >= 2.0 ** -126) and np.all(yabs < 2.0 ** 127), \
        f"{what}: result not normal/finite in f32 ({ay.min()}, {yabs.max()})"


# ----------------------------------------------------------------------------------------------
# case writers
# ----------------------------------------------------------------------------------------------
def _fp4_case(writer, name, x, w, ws, check_normal=False):
    a_codes, a_scales, a = quantised_activation_case(x)
    y, yabs = exact_matmul(a, F.fp4_dequant(w, ws))
    if check_normal:
        _check_normal_f32(y, yabs, name)
    writer.case(name, x=F.f32_to_bf16_bits(x), a_codes=a_codes, a_scales=a_scales,
                w=w, w_scale=ws, y_exact=y, y_abs=yabs)


def _fp8_case(writer, name, x, w, ws, check_normal=False):
    a_codes, a_scales, a = quantised_activation_case(x)
    y, yabs = exact_matmul(a, F.fp8_dequant(w, ws))
    if check_normal:
        _check_normal_f32(y, yabs, name)
    writer.case(name, x=F.f32_to_bf16_bits(x), a_codes=a_codes, a_scales=a_scales,
                w=w, w_scale=ws, y_exact=y, y_abs=yabs)


def write_fp4(writer, rng):
    shapes = {"1x128x1": (1, 128, 1), "7x256x3": (7, 256, 3), "129x512x5": (129, 512, 5),
              "300x1024x1": (300, 1024, 1), "33x4096x17": (33, 4096, 17),
              "64x2048x64": (64, 2048, 64), "5x128x2": (5, 128, 2)}
    for name, (N, K, M) in shapes.items():
        w, ws = fp4_weights(rng, N, K)
        x = bf16_activations(rng, M, K)
        _fp4_case(writer, f"fp4_{name}", x, w, ws)
    # extreme scales: rows all E8M0 0 (2^-127, f32 subnormal weights) with large activations,
    # and rows all 254 (2^127: the dequantised weight |e2m1| >= 2 exceeds the f32 range, so scales
    # must be combined before they are applied) with small activations. One case per end: a
    # shared activation cannot make both ends normal (|sum| would need to be both >= 2 and < 2).
    N, K, M = 8, 256, 2
    for tag, rows, x_exp in (("lo", [0, 0, 0, 0, 0, 0, 1, 2], 14), ("hi", [254] * 6 + [253, 252], -14)):
        for _ in range(1000):
            w = rng.integers(0, 256, size=(N, K // 2), dtype=np.uint8)
            ws = np.repeat(np.array(rows, dtype=np.uint8)[:, None], K // 32, axis=1)
            x = F.bf16_round((rng.normal(size=(M, K)) * 2.0 ** x_exp).astype(np.float32))
            _, _, a = quantised_activation_case(x)
            y, yabs = exact_matmul(a, F.fp4_dequant(w, ws))
            if np.all(np.abs(y) >= 2.0 ** -118) and np.all(yabs < 2.0 ** 126):
                break
        _fp4_case(writer, f"fp4_extreme_scales_{tag}", x, w, ws, check_normal=True)


def write_fp8(writer, rng):
    shapes = {"128x128x1": (128, 128, 1), "130x256x2": (130, 256, 2), "1x128x1": (1, 128, 1),
              "257x384x3": (257, 384, 3), "256x1024x16": (256, 1024, 16), "64x512x64": (64, 512, 64)}
    for name, (N, K, M) in shapes.items():
        w, ws = fp8_weights(rng, N, K)
        x = bf16_activations(rng, M, K)
        _fp8_case(writer, f"fp8_{name}", x, w, ws)
    # extreme scales (see FP4): N=130 gives two 128-row scale blocks (the second partial); the
    # first block row is all 0 (lo) / all 254 (hi), the second all 1 / all 253.
    N, K, M = 130, 256, 2
    for tag, srows, x_exp in (("lo", [0, 1], 12), ("hi", [254, 253], -19)):
        for _ in range(1000):
            w = rng.choice(FP8_CODES, size=(N, K)).astype(np.uint8)
            ws = np.repeat(np.array(srows, dtype=np.uint8)[:, None], K // 128, axis=1)
            x = F.bf16_round((rng.normal(size=(M, K)) * 2.0 ** x_exp).astype(np.float32))
            _, _, a = quantised_activation_case(x)
            y, yabs = exact_matmul(a, F.fp8_dequant(w, ws))
            if np.all(np.abs(y) >= 2.0 ** -118) and np.all(yabs < 2.0 ** 126):
                break
        _fp8_case(writer, f"fp8_extreme_scales_{tag}", x, w, ws, check_normal=True)


def write_bf16(writer, rng):
    shapes = {"1x1x1": (1, 1, 1), "7x33x3": (7, 33, 3), "256x4096x1": (256, 4096, 1),
              "24x1000x2": (24, 1000, 2), "100x100x64": (100, 100, 64), "129x64x5": (129, 64, 5)}
    for name, (N, K, M) in shapes.items():
        wmag = 10.0 ** rng.uniform(-3, 1, size=N)
        w = F.bf16_round((rng.normal(size=(N, K)) * wmag[:, None]).astype(np.float32))
        xmag = 10.0 ** rng.uniform(-2, 2, size=M)
        x = (rng.normal(size=(M, K)) * xmag[:, None]).astype(np.float32)
        y, yabs = exact_matmul(x, w)
        writer.case(f"bf16_{name}", w=F.f32_to_bf16_bits(w), x=x, y_exact=y, y_abs=yabs)


def write_f32(writer, rng):
    shapes = {"24x16384x2": (24, 16384, 2), "4x16384x1": (4, 16384, 1), "17x31x3": (17, 31, 3),
              "64x256x64": (64, 256, 64)}
    for name, (N, K, M) in shapes.items():
        wmag = 10.0 ** rng.uniform(-3, 1, size=N)
        w = (rng.normal(size=(N, K)) * wmag[:, None]).astype(np.float32)
        xmag = 10.0 ** rng.uniform(-2, 2, size=M)
        x = (rng.normal(size=(M, K)) * xmag[:, None]).astype(np.float32)
        y, yabs = exact_matmul(x, w)
        writer.case(f"f32_{name}", w=w, x=x, y_exact=y, y_abs=yabs)


def write_fp8_grouped(writer, rng):
    shapes = {"8x128x256x1": (8, 128, 256, 1), "8x128x256x4": (8, 128, 256, 4),
              "2x256x128x3": (2, 256, 128, 3)}
    for name, (G, Ng, Kg, M) in shapes.items():
        w, ws = fp8_weights(rng, G * Ng, Kg)
        x = bf16_activations(rng, M, G * Kg)
        wd = F.fp8_dequant(w, ws)
        y = np.empty((M, G * Ng))
        yabs = np.empty((M, G * Ng))
        for g in range(G):
            yg, ag = exact_matmul(x[:, g * Kg:(g + 1) * Kg], wd[g * Ng:(g + 1) * Ng])
            y[:, g * Ng:(g + 1) * Ng] = yg
            yabs[:, g * Ng:(g + 1) * Ng] = ag
        writer.case(f"fp8_grouped_{name}", groups=np.array([G], dtype=np.int64),
                    x=F.f32_to_bf16_bits(x), w=w, w_scale=ws, y_exact=y, y_abs=yabs)


def swiglu_routed(y1_exact, y3_exact, route_weight, limit):
    """Spec §8.2 from exact GEMM results: a = bf16(y1), b = bf16(y3) (single rounding each), then
    in f32: a = min(a, limit); b = clamp(b, -limit, limit); h = rw * (silu(a) * b),
    silu(a) = a / (1 + exp(-a))."""
    a = bf16_round_f64(y1_exact)
    b = bf16_round_f64(y3_exact)
    lim = np.float32(limit)
    a = np.minimum(a, lim)
    b = np.clip(b, -lim, lim)
    one = np.float32(1)
    silu = (a / (one + np.exp(-a))).astype(np.float32)
    return (np.float32(route_weight) * (silu * b)).astype(np.float32)


def write_gate_up(writer, rng):
    shapes = {"64x256x1": (64, 256, 1), "96x512x4": (96, 512, 4), "33x128x16": (33, 128, 16)}
    rw = np.float32(0.37)
    limit = np.float32(10.0)
    for name, (N, K, M) in shapes.items():
        x = bf16_activations(rng, M, K, lo=-0.3, hi=0.3)
        a_codes, a_scales, a = quantised_activation_case(x)
        # target std(y) ~ 12 so that |y| reaches ~30 and part of the outputs exceed the limit
        xrms = float(np.sqrt(np.mean(a ** 2)))
        base = 127 + int(round(math.log2(12.0 / (math.sqrt(K) * E2M1_RMS * xrms))))
        outs = {}
        for tag in ("1", "3"):
            w = rng.integers(0, 256, size=(N, K // 2), dtype=np.uint8)
            ws = (base + rng.integers(-1, 2, size=(N, K // 32))).astype(np.uint8)
            y, yabs = exact_matmul(a, F.fp4_dequant(w, ws))
            outs[tag] = (w, ws, y, yabs)
        y1, y3 = outs["1"][2], outs["3"][2]
        assert (y1 > limit).any() and (np.abs(y3) > limit).any(), name
        h = swiglu_routed(y1, y3, rw, limit)
        writer.case(f"fp4_gate_up_{name}", x=F.f32_to_bf16_bits(x), a_codes=a_codes,
                    a_scales=a_scales, w1=outs["1"][0], w3=outs["3"][0],
                    w1_scale=outs["1"][1], w3_scale=outs["3"][1],
                    route_weight=np.array([rw], dtype=np.float32),
                    limit=np.array([limit], dtype=np.float32),
                    y1_exact=y1, y3_exact=y3, y1_abs=outs["1"][3], y3_abs=outs["3"][3],
                    h_from_exact=h)


def write_goldens(writer):
    rng = np.random.default_rng(SEED)
    write_fp4(writer, rng)
    write_fp8(writer, rng)
    write_bf16(writer, rng)
    write_f32(writer, rng)
    write_fp8_grouped(writer, rng)
    write_gate_up(writer, rng)
