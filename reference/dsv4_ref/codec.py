"""Golden family `codec`: element-format decoders/encoders and the activation quantisers
(spec §1.4, §2.1-§2.3). See reference/README.md, section "Golden families: codec, gemv"."""
import numpy as np

from . import formats as F

SEED = 0xC0DEC


def _f32_from_bits(u32):
    return np.asarray(u32, dtype=np.uint32).view(np.float32)


def _bf16_vals(x):
    return F.bf16_round(np.asarray(x, dtype=np.float32))


# ----------------------------------------------------------------------------------------------
# scalar encode inputs
# ----------------------------------------------------------------------------------------------
def bf16_encode_inputs(rng):
    parts = []
    parts.append(np.array([0x00000000, 0x80000000], dtype=np.uint32))              # +-0
    # normals, random bit patterns over the whole finite range
    e = rng.integers(1, 255, size=2000, dtype=np.uint32)
    m = rng.integers(0, 1 << 23, size=2000, dtype=np.uint32)
    s = rng.integers(0, 2, size=2000, dtype=np.uint32) << 31
    parts.append(s | (e << 23) | m)
    # values of moderate magnitude (the usual case)
    parts.append(rng.normal(size=500).astype(np.float32).view(np.uint32))
    # bf16 subnormals (exactly representable) and f32 values in the bf16-subnormal range
    hi = rng.integers(1, 0x80, size=300, dtype=np.uint32)
    parts.append(hi << 16)
    parts.append((hi << 16) | rng.integers(0, 1 << 16, size=300, dtype=np.uint32))
    parts.append(np.arange(1, 0x80, dtype=np.uint32) << 16 | 0x80000000)
    # f32 subnormals (exponent field 0), both signs, incl. the smallest and largest
    sub = rng.integers(1, 1 << 23, size=300, dtype=np.uint32)
    parts.append(sub)
    parts.append(sub | 0x80000000)
    parts.append(np.array([0x00000001, 0x80000001, 0x007FFFFF, 0x807FFFFF, 0x00008000, 0x00018000,
                           0x00007FFF, 0x0000FFFF, 0x007F8000, 0x007F7FFF, 0x007FFFFF], dtype=np.uint32))
    # exact ties (low 16 bits = 0x8000): kept LSB even (round down) and odd (round up)
    hi16 = rng.integers(0x0001, 0x7F7F, size=400, dtype=np.uint32)
    even, odd = hi16 & ~np.uint32(1), hi16 | 1
    for h in (even, odd):
        parts.append((h << 16) | 0x8000)
        parts.append((h << 16) | 0x8000 | 0x80000000)
        parts.append((h << 16) | 0x7FFF)          # just below the tie
        parts.append((h << 16) | 0x8001)          # just above the tie
    # rounding up into the next binade: mantissa 0x7F.. in the kept bits
    ex = np.arange(0, 254, dtype=np.uint32)
    for lo in (0x7F8000, 0x7FFFFF, 0x7F8001, 0x7F7FFF):
        parts.append((ex << 23) | lo)
        parts.append((ex << 23) | lo | 0x80000000)
    # overflow to inf and the largest finite survivors
    parts.append(np.array([0x7F7F8000, 0x7F7FFFFF, 0x7F7F8001, 0x7F7F7FFF, 0x7F7F0000, 0x7F7E8000,
                           0xFF7F8000, 0xFF7FFFFF, 0xFF7F7FFF, 0xFF7E8000], dtype=np.uint32))
    # infinities and NaNs (quiet, signalling, payloads that would "round" to inf, both signs)
    parts.append(np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001,
                           0x7F807FFF, 0x7F808000, 0x7FFFFFFF, 0xFFFFFFFF, 0x7FBFFFFF], dtype=np.uint32))
    return _f32_from_bits(np.concatenate(parts))


def _neighbours32(v):
    v = np.asarray(v, dtype=np.float32)
    return np.concatenate([np.nextafter(v, np.float32(np.inf)), np.nextafter(v, np.float32(-np.inf))])


def e4m3_encode_inputs(rng):
    codes = np.array([c for c in range(256) if c not in (0x7F, 0xFF)], dtype=np.uint8)
    vals = F.e4m3_decode(codes)                                   # every code's value (incl. -0)
    pos = np.sort(np.unique(F.e4m3_decode(np.arange(0x7F, dtype=np.uint8))))
    mids = ((pos[:-1].astype(np.float64) + pos[1:]) / 2).astype(np.float32)   # exact ties
    mids = np.concatenate([mids, -mids])
    near = _neighbours32(mids)
    around_codes = _neighbours32(vals[np.abs(vals) > 0])
    subn = (rng.uniform(-2.0 ** -6, 2.0 ** -6, size=300)).astype(np.float32)
    sat = np.array([448.0, 448.0001, 449, 450, 463.99, 464, 464.01, 480, 500, 1e4, 1e20, 3.4e38],
                   dtype=np.float32)
    sat = np.concatenate([sat, -sat])
    tiny = np.array([0.0, -0.0, 2.0 ** -10, -2.0 ** -10, 2.0 ** -11, 3 * 2.0 ** -10, -3 * 2.0 ** -10,
                     1e-30, -1e-30, 1e-45, -1e-45, 2.0 ** -126, 2.0 ** -149], dtype=np.float32)
    rnd = (rng.normal(size=1000) * np.exp(rng.uniform(-8, 6, size=1000))).astype(np.float32)
    return np.concatenate([vals, mids, near, around_codes, subn, sat, tiny, rnd]).astype(np.float32)


def e2m1_encode_inputs(rng):
    vals = F.e2m1_decode(np.arange(16, dtype=np.uint8))
    pos = F.E2M1_MAGNITUDES.astype(np.float64)
    mids = ((pos[:-1] + pos[1:]) / 2).astype(np.float32)          # 0.25 0.75 1.25 1.75 2.5 3.5 5
    mids = np.concatenate([mids, -mids])
    near = _neighbours32(mids)
    around = _neighbours32(vals[np.abs(vals) > 0])
    sat = np.array([6.0, 6.5, 7.0, 8.0, 100.0, 1e30, 3.4e38], dtype=np.float32)
    sat = np.concatenate([sat, -sat])
    tiny = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-45, -1e-45, 0.1, -0.1, 0.2499, -0.2499],
                    dtype=np.float32)
    rnd = rng.uniform(-7, 7, size=500).astype(np.float32)
    return np.concatenate([vals, mids, near, around, sat, tiny, rnd]).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# activation-quantiser inputs
# ----------------------------------------------------------------------------------------------
def random_rows(rng, R, C):
    """Rows of normals, per-row magnitude log-uniform over 1e-6..1e6, bf16 values."""
    mag = 10.0 ** np.linspace(-6, 6, R)
    rng.shuffle(mag)
    x = rng.normal(size=(R, C)) * mag[:, None]
    return _bf16_vals(x)


def _signs(rng, n):
    return np.where(rng.integers(0, 2, size=n) == 1, 1.0, -1.0)


def adversarial_blocks(rng, block, qmax):
    """List of blocks (float64 arrays of bf16-exact values, length `block`) hitting the edge cases
    of §2.1-§2.3 for a format with max `qmax` (448 -> e4m3, 6 -> e2m1)."""
    fp8 = qmax == 448.0
    dec = F.e4m3_decode if fp8 else F.e2m1_decode
    ncode = 0x7F if fp8 else 8
    grid = np.sort(np.unique(dec(np.arange(ncode, dtype=np.uint8)).astype(np.float64)))
    ties = (grid[:-1] + grid[1:]) / 2
    floor = float(F.FP8_AMAX_FLOOR if fp8 else F.FP4_AMAX_FLOOR)
    B = []

    def put_amax(b, amax):
        b = b.copy()
        b[rng.integers(0, block)] = amax * _signs(rng, 1)[0]
        return b

    B.append(np.zeros(block))                                          # all zero
    B.append(np.full(block, -0.0))                                     # all -0
    B.append(np.zeros(block) * _signs(rng, block))                     # mixed +-0
    # one huge value among tiny ones
    tiny = rng.normal(size=block) * 1e-30
    B.append(put_amax(tiny, 1e30))
    B.append(put_amax(rng.normal(size=block) * 1e-3, 3.0e4))
    # amax a bf16 subnormal (FP8: far below the 1e-4 floor; FP4: around the 6*2^-126 floor)
    sub = rng.integers(1, 0x80, size=block) * 2.0 ** -133 * _signs(rng, block)
    B.append(sub)
    B.append(put_amax(sub, 127 * 2.0 ** -133))
    # amax just around the floor
    # (the bf16 value nearest the f32 floor and its two bf16 neighbours)
    fb = int(F.f32_to_bf16_bits(np.float32(floor)))
    for bb in (fb - 1, fb, fb + 1):
        B.append(put_amax(rng.uniform(-1, 1, size=block) * floor / 4,
                          float(F.bf16_bits_to_f32(np.uint16(bb)))))
    # amax exactly a power of two
    for k in (-20, -3, 0, 1, 7, 40):
        B.append(put_amax(rng.uniform(-1, 1, size=block) * 2.0 ** k, 2.0 ** k))
    # amax exactly qmax * 2^k (scale 2^k, amax lands exactly on +-qmax) and the next bf16 above
    for k in (-12, -1, 0, 3, 30):
        base = rng.uniform(-0.98, 0.98, size=block) * qmax * 2.0 ** k
        B.append(put_amax(base, qmax * 2.0 ** k))
        up = float(F.bf16_bits_to_f32(F.f32_to_bf16_bits(np.float32(qmax * 2.0 ** k)) + 1))
        B.append(put_amax(base, up))
        dn = float(F.bf16_bits_to_f32(F.f32_to_bf16_bits(np.float32(qmax * 2.0 ** k)) - 1))
        B.append(put_amax(base, dn))
    # amax such that f32(amax * f32(1/Q)) is exactly a power of two (found by exhaustive search
    # over positive bf16 values; includes the ones other than qmax*2^k if any exist)
    bits = np.arange(0x0001, 0x7F80, dtype=np.uint16)
    a = F.bf16_bits_to_f32(bits)
    t = np.maximum(a, np.float32(floor)) * (np.float32(1) / np.float32(qmax))
    tb = t.view(np.uint32)
    exact = a[((tb & 0x7FFFFF) == 0) & (a >= floor)]
    pick = exact[np.linspace(0, len(exact) - 1, 6).astype(int)]
    for amax in pick:
        B.append(put_amax(rng.uniform(-1, 1, size=block) * amax, float(amax)))
    # bf16 max values (scale rounds up past 2^127/qmax; the FP8/FP4 round trip of the max
    # overflows to inf in the simulation, the GEMM-mode codes/scales stay finite)
    bmax = float(F.bf16_bits_to_f32(np.uint16(0x7F7F)))
    B.append(np.full(block, bmax) * _signs(rng, block))
    B.append(put_amax(rng.normal(size=block) * 1e37, bmax))
    # values on the format's rounding ties after scaling (scale forced to 2^k by amax = qmax*2^k)
    for k in (-5, 0, 9):
        tv = rng.choice(ties, size=block) * _signs(rng, block) * 2.0 ** k
        B.append(put_amax(tv, qmax * 2.0 ** k))
        # ties also with a non-trivial scale from an amax that is not qmax*2^k: amax = 2^(k+8)
        # gives s = 2^(k+8-floor(log2 qmax)) (power of two); ties scaled accordingly
    for k in (-2, 4):
        amax = 2.0 ** k
        s, _ = F.pow2_scale(np.float32(amax), qmax, floor)
        tv = rng.choice(ties[ties < amax / float(s)], size=block) * _signs(rng, block) * float(s)
        B.append(put_amax(tv, amax))
    # every code exactly (scale 1 via amax = qmax)
    g = np.concatenate([grid, -grid])
    B.append(put_amax(rng.choice(g, size=block), qmax))
    # mixture of signs around zero with subnormal e4m3 results
    B.append(put_amax(rng.normal(size=block) * 2.0 ** -7, qmax))
    out = []
    for b in B:
        v = _bf16_vals(b).astype(np.float64)
        assert np.all(np.isfinite(v)), "adversarial block not finite"
        out.append(v)
    return out


def adversarial_rows(rng, block, qmax, blocks_per_row=4):
    blocks = adversarial_blocks(rng, block, qmax)
    while len(blocks) % blocks_per_row:
        blocks.append(_bf16_vals(rng.normal(size=block)).astype(np.float64))
    x = np.concatenate(blocks).reshape(-1, blocks_per_row * block)
    return x.astype(np.float32)


def _fp8_case(writer, name, x, block):
    codes, scales = F.act_quant(x, block)
    sim = F.act_quant_sim(x, block, "current")
    writer.case(name, x=F.f32_to_bf16_bits(x), block=np.array([block], dtype=np.int64),
                codes=codes, scales=scales, sim=F.f32_to_bf16_bits(sim))


def _fp4_case(writer, name, x, block=32):
    codes, scales = F.fp4_act_quant(x, block)
    sim = F.fp4_act_quant_sim(x, block)
    writer.case(name, x=F.f32_to_bf16_bits(x), block=np.array([block], dtype=np.int64),
                codes=codes, scales=scales, sim=F.f32_to_bf16_bits(sim))


def write_goldens(writer):
    rng = np.random.default_rng(SEED)

    c = np.arange(256, dtype=np.uint8)
    writer.case("e4m3_decode", codes=c, values=F.e4m3_decode(c))
    c = np.arange(16, dtype=np.uint8)
    writer.case("e2m1_decode", codes=c, values=F.e2m1_decode(c))
    c = np.arange(256, dtype=np.uint8)
    writer.case("e8m0_decode", codes=c, values=F.e8m0_decode(c))
    c = np.arange(65536, dtype=np.uint16)
    writer.case("bf16_decode", codes=c, values=F.bf16_bits_to_f32(c))
    writer.case("fp16_decode", codes=c, values=F.fp16_bits_to_f32(c))

    x = bf16_encode_inputs(rng)
    writer.case("bf16_encode", x=x, codes=F.f32_to_bf16_bits(x))
    x = e4m3_encode_inputs(rng)
    writer.case("e4m3_encode", x=x, codes=F.e4m3_encode(x))
    x = e2m1_encode_inputs(rng)
    writer.case("e2m1_encode", x=x, codes=F.e2m1_encode(x))

    for block in (128, 64):
        _fp8_case(writer, f"act_quant_b{block}_random", random_rows(rng, 16, 4 * block), block)
        _fp8_case(writer, f"act_quant_b{block}_adversarial", adversarial_rows(rng, block, 448.0), block)

    _fp4_case(writer, "fp4_act_quant_b32_random", random_rows(rng, 16, 8 * 32))
    _fp4_case(writer, "fp4_act_quant_b32_adversarial", adversarial_rows(rng, 32, 6.0))
