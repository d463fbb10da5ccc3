"""Unit tests of dsv4_ref.norms_rope against the spec (§3). Run: /usr/bin/python3 -m unittest discover reference/tests"""
import math
import pathlib
import sys
import unittest

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from dsv4_ref import norms_rope as nr  # noqa: E402
from dsv4_ref.formats import bf16_round  # noqa: E402

F32 = np.float32


def rand_bf16(rng, shape, sigma=1.0):
    return bf16_round((rng.standard_normal(shape) * sigma).astype(F32)).astype(F32)


class FrequencyTable(unittest.TestCase):
    def test_compressed_vectors(self):
        f = nr.rope_freqs_for_layer(128)
        self.assertEqual(f.dtype, np.float32)
        self.assertEqual(f.shape, (32,))
        # spec §3.2 test vectors, f32
        for i, v in ((0, 1.0), (1, 0.68765604), (15, 0.0036355385), (16, 0.0022656249),
                     (25, 5.3723124e-06), (31, 5.6805294e-07)):
            self.assertEqual(f[i], F32(v), f"f_{i}")
        np.testing.assert_array_equal(f, nr.rope_freqs_for_layer(4))

    def test_ratio0_vectors(self):
        f = nr.rope_freqs_for_layer(0)
        self.assertEqual(f[0], F32(1.0))
        for i, v in ((1, 0.74989420), (16, 0.0099999998), (31, 1.3335215e-04)):
            self.assertEqual(f[i], F32(v), f"f_{i}")
        np.testing.assert_array_equal(f, nr.rope_freqs(10000.0))

    def test_yarn_range(self):
        self.assertEqual(nr.yarn_correction_range(160000.0, 64, 65536, 32, 1), (15, 25))

    def test_yarn_shape(self):
        plain = nr.rope_freqs(160000.0)
        yarn = nr.rope_freqs_for_layer(128)
        np.testing.assert_array_equal(yarn[:16], plain[:16])           # i <= lo untouched
        np.testing.assert_array_equal(yarn[25:], plain[25:] / F32(16))  # i >= hi divided by 16
        r = yarn[16:25] / plain[16:25]
        self.assertTrue(np.all(np.diff(r) < 0) and np.all(r < 1) and np.all(r > 1 / 16))

    def test_no_mscale(self):
        c, s = nr.rope_cos_sin(nr.rope_freqs_for_layer(128), np.arange(0, 1 << 20, 4099))
        np.testing.assert_allclose(c.astype(np.float64) ** 2 + s.astype(np.float64) ** 2, 1.0, atol=1e-6)


class Rope(unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(1)
        self.pos = np.array([0, 1, 127, 128, 65535, 65536, 1048575], dtype=np.int64)

    def test_forward_inverse_identity(self):
        for ratio in (0, 128):
            f = nr.rope_freqs_for_layer(ratio)
            for D in (512, 128, 64):
                x = rand_bf16(self.rng, (self.pos.size, D))
                y = nr.rope_apply(x, self.pos, f)
                z = nr.rope_apply(y, self.pos, f, inverse=True)
                np.testing.assert_array_equal(y[:, :D - 64], x[:, :D - 64])
                # two bf16 roundings: |z - x| <= ~2 half-ulps of the pair magnitude
                mag = np.repeat(np.hypot(x[:, D - 64::2], x[:, D - 63::2]), 2, axis=1)
                self.assertTrue(np.all(np.abs(z[:, D - 64:] - x[:, D - 64:]) <= mag * 2 ** -7 + 1e-30))

    def test_position_zero_is_identity(self):
        x = rand_bf16(self.rng, (3, 512))
        f = nr.rope_freqs_for_layer(128)
        np.testing.assert_array_equal(nr.rope_apply(x, np.zeros(3, np.int64), f), x)

    def test_matches_complex_float64(self):
        f = nr.rope_freqs_for_layer(128)
        x = rand_bf16(self.rng, (self.pos.size, 128))
        y = nr.rope_apply(x, self.pos, f)
        th = (self.pos.astype(F32)[:, None] * f[None, :]).astype(F32).astype(np.float64)
        c = (x[:, 64::2] + 1j * x[:, 65::2]) * np.exp(1j * th)
        ref = np.empty((self.pos.size, 64))
        ref[:, 0::2], ref[:, 1::2] = c.real, c.imag
        mag = np.repeat(np.abs(c), 2, axis=1)
        self.assertTrue(np.all(np.abs(y[:, 64:] - ref) <= mag * 2 ** -8 + 1e-30))

    def test_interleaved_pairs(self):
        # a single nonzero "re" rotates into its own "im" neighbour, nothing else changes
        f = nr.rope_freqs_for_layer(0)
        x = np.zeros((1, 64), F32)
        x[0, 2] = 1.0                       # pair 1, re
        y = nr.rope_apply(x, np.array([1]), f)
        nz = set(np.nonzero(y[0])[0].tolist())
        self.assertEqual(nz, {2, 3})
        self.assertAlmostEqual(float(y[0, 2]), math.cos(float(f[1])), delta=2 ** -8)
        self.assertAlmostEqual(float(y[0, 3]), math.sin(float(f[1])), delta=2 ** -8)

    def test_heads_broadcast(self):
        f = nr.rope_freqs_for_layer(128)
        x = rand_bf16(self.rng, (self.pos.size, 3, 512))
        y = nr.rope_apply(x, self.pos, f, inverse=True)
        for h in range(3):
            np.testing.assert_array_equal(y[:, h], nr.rope_apply(x[:, h], self.pos, f, inverse=True))


class Hadamard(unittest.TestCase):
    def test_matrix(self):
        H = nr.hadamard_matrix(128)
        np.testing.assert_array_equal(H @ H.T, 128 * np.eye(128))
        np.testing.assert_array_equal(H, H.T)
        np.testing.assert_array_equal(H[1, :4], [1, -1, 1, -1])      # natural (Sylvester) order
        np.testing.assert_array_equal(H[3, :4], [1, -1, -1, 1])
        np.testing.assert_array_equal(nr.hadamard_matrix(2), [[1, 1], [1, -1]])

    def test_orthonormal(self):
        rng = np.random.default_rng(2)
        x = rand_bf16(rng, (64, 128))
        y = nr.hadamard(x)
        np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=4e-3)
        z = nr.hadamard(y)                                               # H/sqrt(n) is an involution
        np.testing.assert_allclose(z, x, atol=np.abs(x).max() * 2 ** -6)
        ones = np.ones((1, 128), F32)
        e0 = np.zeros((1, 128), F32)
        e0[0, 0] = bf16_round(F32(math.sqrt(128)))
        np.testing.assert_array_equal(nr.hadamard(ones), e0)


class Norms(unittest.TestCase):
    def test_rmsnorm_close_to_float64(self):
        rng = np.random.default_rng(3)
        for n in (7, 512, 4096):
            x = rand_bf16(rng, (5, n), 3.0)
            w = rand_bf16(rng, (n,))
            y = nr.rmsnorm(x, w)
            xd = x.astype(np.float64)
            ref = w * xd / np.sqrt((xd ** 2).mean(-1, keepdims=True) + 1e-6)
            self.assertTrue(np.all(np.abs(y - ref) <= np.abs(ref) * 2 ** -8 * 1.01 + 1e-30))
            np.testing.assert_array_equal(y, bf16_round(y))

    def test_rmsnorm_zero_row(self):
        y = nr.rmsnorm(np.zeros((1, 16), F32), np.ones(16, F32))
        np.testing.assert_array_equal(y, 0.0)

    def test_rms_factor_f32(self):
        x = np.random.default_rng(4).standard_normal((2, 16384)).astype(F32)
        r = nr.rms_factor_f32(x)
        self.assertEqual(r.shape, (2, 1))
        ref = 1 / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6)
        np.testing.assert_allclose(r, ref, rtol=3e-7)
        np.testing.assert_allclose(nr.rmsnorm_f32(x), x * ref, rtol=5e-7)

    def test_q_head_norm(self):
        rng = np.random.default_rng(5)
        q = rand_bf16(rng, (3, 8, 512)) * F32(7.0)
        y = nr.q_head_norm(q)
        np.testing.assert_array_equal(y, bf16_round(y))
        qd = q.astype(np.float64)
        ref = qd / np.sqrt((qd ** 2).mean(-1, keepdims=True) + 1e-6)
        # bf16 arithmetic: a few bf16 ulps from the exact value
        np.testing.assert_allclose(y, ref, rtol=2 ** -6, atol=1e-30)
        np.testing.assert_array_equal(nr.q_head_norm(np.zeros((1, 1, 64), F32)), 0.0)


if __name__ == "__main__":
    unittest.main()
