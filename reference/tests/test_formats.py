"""Spec facts for reference/dsv4_ref/formats.py (spec §1.4, §2.1-§2.3).

Run: /usr/bin/python3 -m unittest discover -s reference/tests
"""
import pathlib
import sys
import unittest

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from dsv4_ref import formats as F  # noqa: E402


def f32(bits):
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


class TestE4M3(unittest.TestCase):
    def test_named_codes(self):
        d = F.e4m3_decode(np.arange(256, dtype=np.uint8))
        self.assertEqual(d[0x7E], 448.0)
        self.assertEqual(d[0xFE], -448.0)
        self.assertTrue(np.isnan(d[0x7F]) and np.isnan(d[0xFF]))
        self.assertEqual(np.isnan(d).sum(), 2)
        self.assertEqual(d[0x80], 0.0)
        self.assertTrue(np.signbit(d[0x80]))
        self.assertEqual(d[0x38], 1.0)                       # E=7, m=0
        self.assertEqual(d[0x08], 2.0 ** -6)                 # smallest normal
        self.assertEqual(d[0x07], 7 * 2.0 ** -9)             # largest subnormal

    def test_subnormal_step(self):
        d = F.e4m3_decode(np.arange(8, dtype=np.uint8))
        np.testing.assert_array_equal(d, np.arange(8) * 2.0 ** -9)

    def test_formula_all_codes(self):
        for c in range(256):
            s = -1.0 if c & 0x80 else 1.0
            E, m = (c >> 3) & 15, c & 7
            v = F.e4m3_decode(np.uint8(c))
            if E == 15 and m == 7:
                self.assertTrue(np.isnan(v))
            elif E == 0:
                self.assertEqual(v, s * m * 2.0 ** -9)
            else:
                self.assertEqual(v, s * 2.0 ** (E - 7) * (1 + m / 8))

    def test_encode_roundtrip_and_ties(self):
        codes = np.array([c for c in range(256) if c not in (0x7F, 0xFF)], dtype=np.uint8)
        np.testing.assert_array_equal(F.e4m3_encode(F.e4m3_decode(codes)), codes)
        # ties to even
        self.assertEqual(F.e4m3_encode(np.float32(2.0 ** -10)), 0x00)        # 0.5 step -> 0
        self.assertEqual(F.e4m3_encode(np.float32(3 * 2.0 ** -10)), 0x02)    # 1.5 steps -> 2
        self.assertEqual(F.e4m3_encode(np.float32(7.5 * 2.0 ** -9)), 0x08)   # -> 2^-6 (even)
        self.assertEqual(F.e4m3_encode(np.float32(1.0625)), 0x38)            # 1 vs 1.125 -> 1
        self.assertEqual(F.e4m3_encode(np.float32(1.1875)), 0x3A)            # 1.125 vs 1.25 -> 1.25
        self.assertEqual(F.e4m3_encode(np.float32(1.9375)), 0x40)            # carry -> 2.0
        self.assertEqual(F.e4m3_encode(np.float32(-1.9375)), 0xC0)
        self.assertEqual(F.e4m3_encode(np.float32(432.0)), 0x7E)             # 416 vs 448 -> 448

    def test_encode_saturation_and_sign(self):
        for v in (448.0, 449.0, 464.0, 480.0, 1e6, 3e38):
            self.assertEqual(F.e4m3_encode(np.float32(v)), 0x7E)
            self.assertEqual(F.e4m3_encode(np.float32(-v)), 0xFE)
        self.assertEqual(F.e4m3_encode(np.float32(-0.0)), 0x80)
        self.assertEqual(F.e4m3_encode(np.float32(0.0)), 0x00)
        self.assertEqual(F.e4m3_encode(np.float32(-1e-30)), 0x80)


class TestE2M1(unittest.TestCase):
    def test_all_16(self):
        mags = [0, 0.5, 1, 1.5, 2, 3, 4, 6]
        d = F.e2m1_decode(np.arange(16, dtype=np.uint8))
        np.testing.assert_array_equal(d[:8], mags)
        np.testing.assert_array_equal(d[8:], [-m for m in mags])
        self.assertTrue(np.signbit(d[8]))
        # bit layout: bit3 sign, bits2-1 exponent (bias 1), bit0 mantissa
        for c in range(8):
            e, m = c >> 1, c & 1
            v = m * 0.5 if e == 0 else 2.0 ** (e - 1) * (1 + m / 2)
            self.assertEqual(d[c], v)

    def test_tie_table(self):
        ties = {0.25: 0.0, 0.75: 1.0, 1.25: 1.0, 1.75: 2.0, 2.5: 2.0, 3.5: 4.0, 5.0: 4.0}
        for t, want in ties.items():
            self.assertEqual(F.e2m1_decode(F.e2m1_encode(np.float32(t))), want, t)
            self.assertEqual(F.e2m1_decode(F.e2m1_encode(np.float32(-t))), -want, -t)

    def test_roundtrip_saturation_sign(self):
        c = np.arange(16, dtype=np.uint8)
        np.testing.assert_array_equal(F.e2m1_encode(F.e2m1_decode(c)), c)
        self.assertEqual(F.e2m1_encode(np.float32(7.0)), 7)
        self.assertEqual(F.e2m1_encode(np.float32(-1e9)), 15)
        self.assertEqual(F.e2m1_encode(np.float32(-0.0)), 8)
        self.assertEqual(F.e2m1_encode(np.float32(-0.1)), 8)
        self.assertEqual(F.e2m1_encode(np.float32(0.26)), 1)
        self.assertEqual(F.e2m1_encode(np.float32(4.99)), 6)
        self.assertEqual(F.e2m1_encode(np.float32(5.01)), 7)


class TestE8M0(unittest.TestCase):
    def test_values(self):
        d = F.e8m0_decode(np.arange(256, dtype=np.uint8))
        self.assertEqual(d[0], np.float32(2.0 ** -127))
        self.assertGreater(d[0], 0.0)                      # subnormal, not flushed
        self.assertEqual(d[0].view(np.uint32), 0x00400000)
        self.assertEqual(d[127], 1.0)
        self.assertEqual(d[254], np.float32(2.0 ** 127))
        self.assertTrue(np.isnan(d[255]))
        for e in range(255):
            self.assertEqual(float(d[e]), 2.0 ** (e - 127))


class TestBF16(unittest.TestCase):
    def test_rne(self):
        b = F.f32_to_bf16_bits
        self.assertEqual(b(f32(0x3F808000)), 0x3F80)         # tie, kept LSB even -> down
        self.assertEqual(b(f32(0x3F818000)), 0x3F82)         # tie, kept LSB odd -> up
        self.assertEqual(b(f32(0x3F808001)), 0x3F81)
        self.assertEqual(b(f32(0x3F7FFFFF)), 0x3F80)         # into next binade
        self.assertEqual(b(f32(0x7F7F8000)), 0x7F80)         # overflow to inf
        self.assertEqual(b(f32(0x7F7F7FFF)), 0x7F7F)
        self.assertEqual(b(f32(0x00008000)), 0x0000)         # f32 subnormal tie -> 0
        self.assertEqual(b(f32(0x00018000)), 0x0002)
        self.assertEqual(b(f32(0x80000000)), 0x8000)
        self.assertEqual(b(f32(0x7F800001)), 0x7FC0)         # sNaN stays NaN
        self.assertEqual(b(f32(0xFFFFFFFF)), 0xFFC0)
        self.assertTrue(np.isnan(F.bf16_round(f32(0x7F800001))))

    def test_roundtrip_all(self):
        c = np.arange(65536, dtype=np.uint16)
        v = F.bf16_bits_to_f32(c)
        ok = ~np.isnan(v)
        np.testing.assert_array_equal(F.f32_to_bf16_bits(v)[ok], c[ok])

    def test_fp16(self):
        self.assertEqual(F.fp16_bits_to_f32(np.uint16(0x3C00)), 1.0)
        self.assertEqual(F.fp16_bits_to_f32(np.uint16(0x0001)), 2.0 ** -24)
        self.assertEqual(F.fp16_bits_to_f32(np.uint16(0x7BFF)), 65504.0)
        self.assertTrue(np.isinf(F.fp16_bits_to_f32(np.uint16(0xFC00))))


class TestScaleRule(unittest.TestCase):
    def s(self, amax, q, floor):
        s, e = F.pow2_scale(np.float32(amax), q, floor)
        self.assertEqual(float(s), 2.0 ** (int(e) - 127))
        return float(s)

    def test_examples(self):
        fl8, fl4 = F.FP8_AMAX_FLOOR, F.FP4_AMAX_FLOOR
        self.assertEqual(self.s(448.0, 448, fl8), 1.0)           # f32(1/448) rounds up: t = 1 exactly
        self.assertEqual(self.s(448.0 * 2 ** 5, 448, fl8), 32.0)
        self.assertEqual(self.s(450.0, 448, fl8), 2.0)           # just above -> next power
        self.assertEqual(self.s(446.0, 448, fl8), 1.0)
        self.assertEqual(self.s(1.0, 448, fl8), 2.0 ** -8)       # 1/448 in (2^-9, 2^-8]
        self.assertEqual(self.s(0.0, 448, fl8), 2.0 ** -22)      # floor 1e-4: 2.23e-7 -> 2^-22
        self.assertEqual(self.s(1e-30, 448, fl8), 2.0 ** -22)
        self.assertEqual(self.s(6.0, 6, fl4), 1.0)
        self.assertEqual(self.s(6.5, 6, fl4), 2.0)
        self.assertEqual(self.s(3.0, 6, fl4), 0.5)
        self.assertEqual(self.s(0.0, 6, fl4), 2.0 ** -126)       # floor 6*2^-126 -> exactly 2^-126
        self.assertEqual(self.s(4.0, 6, fl4), 1.0)

    def test_multiply_not_divide(self):
        # t = f32(a * f32(1/Q)), ceil via the mantissa bits: check against an explicit bit model
        rng = np.random.default_rng(5)
        a = F.bf16_round((np.exp(rng.uniform(-30, 30, 2000))).astype(np.float32))
        for q, fl in ((448.0, F.FP8_AMAX_FLOOR), (6.0, F.FP4_AMAX_FLOOR)):
            s, e = F.pow2_scale(a, q, fl)
            t = (np.maximum(a, fl) * (np.float32(1) / np.float32(q))).astype(np.float32)
            self.assertTrue(np.all(s >= t))
            self.assertTrue(np.all(s / 2 < t))
            np.testing.assert_array_equal(s, np.ldexp(np.float32(1), e.astype(np.int64) - 127))


class TestActQuant(unittest.TestCase):
    def test_fp8_round_trip(self):
        rng = np.random.default_rng(1)
        x = F.bf16_round((rng.normal(size=(4, 256)) * 3).astype(np.float32))
        codes, scales = F.act_quant(x, 128)
        self.assertEqual(codes.shape, x.shape)
        self.assertEqual(scales.shape, (4, 2))
        sim = F.act_quant_sim(x, 128)
        deq = F.e4m3_decode(codes) * np.repeat(F.e8m0_decode(scales), 128, axis=1)
        np.testing.assert_array_equal(sim, F.bf16_round(deq))
        np.testing.assert_array_equal(F.act_quant_sim(x, 128, "initial"), x)
        # block amax maps into (224, 448]
        q = np.abs(x) / np.repeat(F.e8m0_decode(scales), 128, axis=1)
        amax = q.reshape(4, 2, 128).max(-1)
        self.assertTrue(np.all((amax > 224) & (amax <= 448)))
        self.assertTrue(np.all(np.abs(sim - x) <= np.abs(x) * 2.0 ** -4 + 2.0 ** -9 * 8))

    def test_fp8_zero_block(self):
        codes, scales = F.act_quant(np.zeros((1, 64), np.float32), 64)
        self.assertTrue(np.all(codes == 0))
        self.assertEqual(scales[0, 0], 127 - 22)

    def test_fp4(self):
        x = np.zeros((1, 64), np.float32)
        x[0, :8] = [6, -3, 0.25, 0.75, 1.25, -1.75, 2.5, 5]       # amax 6 -> scale 1
        x[0, 32] = 12.0                                              # second block scale 2
        x[0, 33] = 1.0                                               # 0.5 at scale 2
        packed, scales = F.fp4_act_quant(x)
        self.assertEqual(packed.shape, (1, 32))
        np.testing.assert_array_equal(scales[0], [127, 128])
        self.assertEqual(packed[0, 0], 0x7 | (0xD << 4))              # low nibble = element 0
        sim = F.fp4_act_quant_sim(x)
        np.testing.assert_array_equal(sim[0, :8], [6, -3, 0, 1, 1, -2, 2, 4])
        self.assertEqual(sim[0, 32], 12.0)
        self.assertEqual(sim[0, 33], 1.0)

    def test_weight_dequant(self):
        packed = np.array([[0x21] * 16 + [0xF7] * 16], dtype=np.uint8)   # K = 64
        scales = np.array([[127, 128]], dtype=np.uint8)
        w = F.fp4_dequant(packed, scales)
        self.assertEqual(w.shape, (1, 64))
        np.testing.assert_array_equal(w[0, :2], [0.5, 1.0])
        np.testing.assert_array_equal(w[0, 32:34], [12.0, -12.0])
        codes = np.full((130, 256), 0x38, dtype=np.uint8)                # 1.0
        s = np.array([[127, 0], [254, 130]], dtype=np.uint8)
        w8 = F.fp8_dequant(codes, s)
        self.assertEqual(w8[0, 0], 1.0)
        self.assertEqual(w8[0, 200], 2.0 ** -127)
        self.assertEqual(w8[129, 0], 2.0 ** 127)
        self.assertEqual(w8[128, 255], 8.0)


if __name__ == "__main__":
    unittest.main()
