"""Unit tests of the NumPy reference for mHC (spec §7) and MoE (spec §8).

Run: /usr/bin/python3 -m unittest discover -s reference/tests
Set DSV4_SLOW_TESTS=1 to also regenerate the `moe` golden family (about 5 s).
"""
import os
import pathlib
import sys
import tempfile
import unittest

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from dsv4_ref import formats as FM  # noqa: E402
from dsv4_ref import mhc, moe  # noqa: E402
from dsv4_ref.golden_writer import GoldenWriter  # noqa: E402

F32 = np.float32


def bf16(x):
    return FM.bf16_round(np.asarray(x, dtype=F32))


def sigmoid64(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def sinkhorn64(L, iters, eps=1e-6):
    """Independent float64 loop version of spec §7 step 3 (C[j][k]: row j, column k)."""
    L = np.asarray(L, dtype=np.float64)
    C = np.zeros((4, 4))
    for j in range(4):
        ex = np.exp(L[j] - L[j].max())
        for k in range(4):
            C[j, k] = ex[k] / ex.sum() + eps
    for it in range(iters):
        if it > 0:
            for j in range(4):
                C[j, :] = C[j, :] / (C[j, :].sum() + eps)
        for k in range(4):
            C[:, k] = C[:, k] / (C[:, k].sum() + eps)
    return C


class TestSinkhorn(unittest.TestCase):
    def test_doubly_stochastic_after_20(self):
        rng = np.random.default_rng(1)
        C = mhc.sinkhorn(rng.normal(0.0, 1.0, (500, 4, 4)).astype(F32), 20)
        self.assertTrue(np.all(C > 0))
        self.assertLess(np.abs(C.sum(-2) - 1).max(), 3e-6)     # last step is a column step
        self.assertLess(np.abs(C.sum(-1) - 1).max(), 1e-3)

    def test_matches_loop_version_and_orientation(self):
        rng = np.random.default_rng(2)
        for iters in (1, 2, 4, 20):
            L = rng.normal(0.0, 2.0, (4, 4)).astype(F32)
            ref = sinkhorn64(L, iters)
            got = mhc.sinkhorn(L, iters).astype(np.float64)
            np.testing.assert_allclose(got, ref, rtol=2e-6, atol=1e-9)
            # transposed orientation (softmax over j, first step over rows) gives something else
            self.assertGreater(np.abs(sinkhorn64(L.T, iters).T - ref).max(), 1e-5)

    def test_iters1_is_softmax_plus_column_step(self):
        L = np.array([[3.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0], [-1.0, 0, 2.0, 0]], F32)
        C = mhc.sinkhorn(L, 1).astype(np.float64)
        self.assertLess(np.abs(C.sum(0) - 1).max(), 3e-6)      # columns normalised
        self.assertGreater(np.abs(C.sum(1) - 1).max(), 0.1)    # rows are not

    def test_eps_added_after_softmax_and_to_denominators(self):
        # zero logits: softmax 1/4, + eps, column step divides by (4 (1/4 + eps) + eps)
        C = mhc.sinkhorn(np.zeros((4, 4), F32), 1).astype(np.float64)
        p = 0.25 + 1e-6
        np.testing.assert_allclose(C, p / (4 * p + 1e-6), rtol=1e-7)
        self.assertNotAlmostEqual(float(C[0, 0]), 0.25, delta=1e-7)
        # saturated one-hot rows all in column 0: the empty columns hold only eps
        L = np.zeros((4, 4), F32)
        L[:, 0] = 1e4
        C = mhc.sinkhorn(L, 1).astype(np.float64)
        np.testing.assert_allclose(C[:, 1:], 1e-6 / (4e-6 + 1e-6), rtol=1e-6)     # = 0.2
        np.testing.assert_allclose(C[:, 0], (1 + 1e-6) / (4 * (1 + 1e-6) + 1e-6), rtol=1e-6)
        C20 = mhc.sinkhorn(L, 20)
        self.assertTrue(np.all(np.isfinite(C20)))

    def test_iters_zero_rejected(self):
        with self.assertRaises(ValueError):
            mhc.sinkhorn(np.zeros((4, 4), F32), 0)


class TestHcPre(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(3)
        self.rng = rng
        self.d = 64
        self.H = bf16(rng.standard_normal((3, 4, self.d)))
        self.fn = (rng.standard_normal((24, 4 * self.d)) * 0.1).astype(F32)
        self.scale = np.array([0.7, 0.5, 1.3], F32)
        self.base = rng.normal(0, 1, 24).astype(F32)

    def test_split_eps_placement(self):
        pre, post, comb = mhc.hc_split(np.zeros((1, 24), F32), np.ones(3, F32), np.zeros(24, F32))
        self.assertEqual(pre.dtype, F32)
        np.testing.assert_array_equal(pre, F32(0.5) + F32(1e-6))   # eps after the sigmoid
        np.testing.assert_array_equal(post, F32(1.0))              # 2*sigmoid(0), no eps
        np.testing.assert_allclose(comb[0], 0.25 * np.ones((4, 4)), rtol=1e-5)

    def test_against_float64_formula(self):
        y, post, comb, pre, mix = mhc.hc_pre(self.H, self.fn, self.scale, self.base, return_mix=True)
        v = self.H.reshape(3, -1).astype(np.float64)
        r = 1.0 / np.sqrt((v * v).mean(1, keepdims=True) + 1e-6)
        mix64 = (v @ self.fn.astype(np.float64).T) * r
        np.testing.assert_allclose(mix, mix64, rtol=1e-5, atol=1e-6)
        s, b = self.scale.astype(np.float64), self.base.astype(np.float64)
        np.testing.assert_allclose(pre, sigmoid64(mix64[:, :4] * s[0] + b[:4]) + 1e-6, rtol=1e-5)
        np.testing.assert_allclose(post, 2 * sigmoid64(mix64[:, 4:8] * s[1] + b[4:8]), rtol=1e-5)
        for t in range(3):
            L = (mix64[t, 8:] * s[2] + b[8:]).reshape(4, 4)       # C[j][k] = mix[8+4j+k]
            np.testing.assert_allclose(comb[t], sinkhorn64(L, 20), rtol=2e-5, atol=1e-7)
        # y = bf16(sum_j pre_j H_j), exact sum then one rounding
        yref = bf16(np.einsum("tj,tjd->td", pre.astype(np.float64), self.H.astype(np.float64)))
        np.testing.assert_array_equal(y, yref)

    def test_iters_parameter(self):
        outs = [mhc.hc_pre(self.H, self.fn, self.scale, self.base, iters=i)[2] for i in (1, 4, 20)]
        self.assertGreater(np.abs(outs[0] - outs[2]).max(), 1e-4)
        self.assertGreater(np.abs(outs[1] - outs[2]).max(), 0)

    def test_rms_eps_inside_sqrt(self):
        H = bf16(self.rng.standard_normal((1, 4, self.d)) * 3e-4)
        mix = mhc.hc_mixes(H, self.fn)
        v = H.reshape(1, -1).astype(np.float64)
        ms = (v * v).mean()
        inside = (v @ self.fn.astype(np.float64).T) / np.sqrt(ms + 1e-6)
        outside = (v @ self.fn.astype(np.float64).T) / (np.sqrt(ms) + 1e-6)
        np.testing.assert_allclose(mix, inside, rtol=1e-5)
        self.assertGreater(np.abs(outside / inside).min(), 2.0)

    def test_zero_input_and_scale_invariance(self):
        y, post, comb, pre = mhc.hc_pre(np.zeros((1, 4, self.d), F32), self.fn, self.scale, self.base)
        self.assertTrue(np.all(y == 0))
        for a in (post, comb, pre):
            self.assertTrue(np.all(np.isfinite(a)))
        m1 = mhc.hc_mixes(self.H, self.fn)
        m2 = mhc.hc_mixes(self.H * 4, self.fn)                  # exact scaling by a power of two
        np.testing.assert_allclose(m1, m2, rtol=1e-5, atol=1e-6)

    def test_large_mixes_finite(self):
        fn = (self.fn * 3e4).astype(F32)
        y, post, comb, pre, mix = mhc.hc_pre(self.H, fn, np.ones(3, F32), self.base, return_mix=True)
        self.assertGreater(np.abs(mix).max(), 1e3)
        for a in (y, post, comb, pre):
            self.assertTrue(np.all(np.isfinite(a)))
        self.assertTrue(np.all((pre >= F32(1e-6)) & (pre <= F32(1) + F32(1e-6))))
        self.assertTrue(np.all((post >= 0) & (post <= 2)))


class TestHcPostHead(unittest.TestCase):
    def test_hc_post_contracts_first_index(self):
        rng = np.random.default_rng(4)
        T, d = 2, 32
        y = bf16(rng.standard_normal((T, d)))
        H = bf16(rng.standard_normal((T, 4, d)))
        post = (2 * mhc.sigmoid_f32(rng.standard_normal((T, 4)))).astype(F32)
        comb = mhc.sinkhorn(rng.normal(0, 2, (T, 4, 4)).astype(F32), 20)
        out = mhc.hc_post(y, H, post, comb)
        ref = np.zeros((T, 4, d))
        for t in range(T):
            for k in range(4):
                ref[t, k] = post[t, k] * y[t].astype(np.float64)
                for j in range(4):
                    ref[t, k] += comb[t, j, k] * H[t, j].astype(np.float64)
        np.testing.assert_array_equal(out, bf16(ref))
        wrong = mhc.hc_post(y, H, post, np.swapaxes(comb, 1, 2))
        self.assertTrue(np.any(wrong != out))

    def test_hc_head(self):
        rng = np.random.default_rng(5)
        H = bf16(rng.standard_normal((3, 4, 16)))
        y, pre, mix = mhc.hc_head(H, np.zeros((4, 64), F32), np.ones(1, F32), np.zeros(4, F32),
                                  return_aux=True)
        np.testing.assert_array_equal(pre, F32(0.5) + F32(1e-6))   # eps after the sigmoid
        np.testing.assert_array_equal(y, bf16(H.astype(np.float64).sum(1) * np.float64(pre[0, 0])))
        fn = (rng.standard_normal((4, 64)) * 0.3).astype(F32)
        base = rng.normal(0, 1, 4).astype(F32)
        y, pre, mix = mhc.hc_head(H, fn, np.array([0.8], F32), base, return_aux=True)
        v = H.reshape(3, -1).astype(np.float64)
        mix64 = (v @ fn.T.astype(np.float64)) / np.sqrt((v * v).mean(1, keepdims=True) + 1e-6)
        np.testing.assert_allclose(pre, sigmoid64(mix64 * 0.8 + base) + 1e-6, rtol=1e-5)


class TestMhcGoldens(unittest.TestCase):
    def test_family_generates_and_is_consistent(self):
        with tempfile.TemporaryDirectory() as tmp:
            w = GoldenWriter(pathlib.Path(tmp), "mhc")
            mhc.write_goldens(w)
            w.finish()
            root = pathlib.Path(tmp) / "mhc"
            cases = (root / "cases.txt").read_text().split()
            for c in ("hc_pre_d4096_t3", "hc_pre_d64_iters1", "hc_pre_d64_iters4",
                      "hc_pre_d64_iters20", "hc_pre_large_mixes", "hc_post_d4096", "hc_post_d64",
                      "hc_head_d4096", "hc_head_d64"):
                self.assertIn(c, cases)
            g = {p.stem: np.load(p) for p in (root / "hc_pre_d4096_t3").glob("*.npy")}
            H = FM.bf16_bits_to_f32(g["H"])
            y, post, comb, pre = mhc.hc_pre(H, g["fn"], g["scale"], g["base"], int(g["iters"][0]))
            np.testing.assert_array_equal(FM.f32_to_bf16_bits(y), g["y"])
            np.testing.assert_array_equal(comb, g["comb"])
            self.assertLess(np.abs(g["comb"].sum(-2) - 1).max(), 3e-6)
            g = {p.stem: np.load(p) for p in (root / "hc_pre_large_mixes").glob("*.npy")}
            self.assertGreater(np.abs(g["mix"]).max(), 1e3)
            for k in ("post", "comb", "pre"):
                self.assertTrue(np.all(np.isfinite(g[k])))


# ----------------------------------------------------------------------------------------------
# MoE
# ----------------------------------------------------------------------------------------------
class TestGate(unittest.TestCase):
    def test_softplus_threshold(self):
        s = moe.softplus_f32(np.array([25.0, 20.5, 0.0, -30.0, -100.0], F32))
        self.assertEqual(s[0], F32(25.0))
        self.assertEqual(s[1], F32(20.5))
        self.assertEqual(s[2], F32(np.log(2.0)))
        np.testing.assert_allclose(s[3], np.log1p(np.exp(-30.0)), rtol=1e-6)
        self.assertGreater(s[4], 0)                   # log1p(exp(-100)) ~ 3.7e-44, f32 subnormal

    def test_scores_sqrt_softplus(self):
        rng = np.random.default_rng(6)
        x = bf16(rng.standard_normal((3, 64)))
        w = bf16(rng.standard_normal((8, 64)) * 0.5)
        l = x.astype(np.float64) @ w.astype(np.float64).T
        np.testing.assert_allclose(moe.gate_scores(x, w), np.sqrt(np.log1p(np.exp(l))), rtol=2e-6)

    def test_weights_sum_to_route_scale(self):
        rng = np.random.default_rng(7)
        s = np.abs(rng.standard_normal((50, 16))).astype(F32)
        bias = rng.normal(0, 0.5, 16).astype(F32)
        idx, w = moe.route(s, bias)
        self.assertEqual(idx.dtype, np.int32)
        np.testing.assert_allclose(w.astype(np.float64).sum(-1), 1.5, rtol=1e-6)
        self.assertTrue(np.all(np.diff(idx, axis=-1) > 0))      # ascending, distinct

    def test_bias_for_selection_only(self):
        s = np.array([[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]], F32)
        bias = np.zeros(8, F32)
        bias[7] = 1.0                                    # pulls expert 7 in, pushes 5 out
        idx, w = moe.route(s, bias)
        np.testing.assert_array_equal(idx[0], [0, 1, 2, 3, 4, 7])
        g = s[0, idx[0]].astype(np.float64)
        np.testing.assert_allclose(w[0], g / g.sum() * 1.5, rtol=1e-6)   # unbiased scores

    def test_ties_lower_id_first(self):
        idx, w = moe.route(np.ones((1, 16), F32), np.zeros(16, F32))
        np.testing.assert_array_equal(idx[0], np.arange(6))
        np.testing.assert_allclose(w[0], 0.25, rtol=1e-7)
        s = np.tile(np.array([0.1, 0.5, 0.9, 0.3], F32), 4)[None]   # expert e has value of e % 4
        idx, _ = moe.route(s, None)
        np.testing.assert_array_equal(idx[0], [1, 2, 5, 6, 10, 14])

    def test_hash_routing(self):
        t2e = np.array([[5, 1, 9, 3, 0, 7], [2, 4, 6, 8, 10, 12]], np.int64)
        s = np.linspace(0.1, 1.6, 16, dtype=F32)[None].repeat(3, 0)
        idx, w = moe.route(s, None, t2e, np.array([1, 0, 1]))
        np.testing.assert_array_equal(idx, [[2, 4, 6, 8, 10, 12], [0, 1, 3, 5, 7, 9],
                                            [2, 4, 6, 8, 10, 12]])
        g = s[1, idx[1]].astype(np.float64)
        np.testing.assert_allclose(w[1], g / g.sum() * 1.5, rtol=1e-6)
        with self.assertRaises(ValueError):
            moe.route(s, np.zeros(16, F32), t2e, np.array([0, 0, 0]))
        with self.assertRaises(ValueError):
            moe.route(s, None, np.array([[1, 1, 2, 3, 4, 5]]), np.array([0, 0, 0]))


def _fp4_weights(rng, N, K, std):
    return moe.quantize_fp4_weight((rng.standard_normal((N, K)) * std).astype(F32))


class TestExperts(unittest.TestCase):
    def test_swiglu_clamp_order(self):
        a = np.array([20.0, -20.0, 5.0, 11.0], F32)
        b = np.array([20.0, -20.0, 3.0, -11.0], F32)
        h = moe.swiglu(a, b, 10.0).astype(np.float64)
        silu = lambda z: z * sigmoid64(z)  # noqa: E731
        ref = np.array([silu(10.0) * 10, silu(-20.0) * -10, silu(5.0) * 3, silu(10.0) * -10])
        np.testing.assert_allclose(h, ref, rtol=1e-6)
        self.assertLess(abs(h[1]), 1e-6)            # gate NOT clamped from below (silu(-10)*-10 = 4.5e-4)
        h0 = moe.swiglu(a, b, None).astype(np.float64)
        np.testing.assert_allclose(h0[0], silu(20.0) * 20, rtol=1e-6)
        hg = moe.swiglu(a, b, 10.0, g=np.float32(0.3))
        np.testing.assert_array_equal(hg, (F32(0.3) * moe.swiglu(a, b, 10.0)).astype(F32))

    def test_quant_linear_is_exact_fp8_product(self):
        rng = np.random.default_rng(8)
        x = bf16(rng.standard_normal((3, 256)) * 2)
        w, ws = _fp4_weights(rng, 32, 256, 0.2)
        W = FM.fp4_dequant(w, ws)
        xs = FM.act_quant_sim(x, 128).astype(np.float64)        # exact dequantised FP8 activations
        ref = bf16((xs @ W.T).astype(F32))
        np.testing.assert_array_equal(moe.quant_linear(x, W), ref)

    def test_routed_expert_pipeline_and_g_before_w2(self):
        rng = np.random.default_rng(9)
        D, I = 256, 128
        x = bf16(rng.standard_normal((5, D)))
        w1, w1s = _fp4_weights(rng, I, D, 0.5)
        w3, w3s = _fp4_weights(rng, I, D, 0.5)
        w2, w2s = _fp4_weights(rng, D, I, 0.1)
        g = np.array([0.3, 0.17, 0.41, 0.05, 0.29], F32)
        out = moe.routed_expert(x, w1, w1s, w3, w3s, w2, w2s, g)
        a = moe.quant_linear(x, FM.fp4_dequant(w1, w1s))
        b = moe.quant_linear(x, FM.fp4_dequant(w3, w3s))
        self.assertTrue((a > 10).any() and (np.abs(b) > 10).any())
        h = (g[:, None] * moe.swiglu(a, b, 10.0)).astype(F32)
        ref = moe.quant_linear(bf16(h), FM.fp4_dequant(w2, w2s))
        np.testing.assert_array_equal(out, ref)
        late = bf16(g[:, None] * moe.routed_expert(x, w1, w1s, w3, w3s, w2, w2s, np.ones(5, F32)))
        self.assertTrue(np.any(late != out))
        self.assertEqual(out.dtype, F32)
        np.testing.assert_array_equal(out, bf16(out))

    def test_shared_expert_clamp_switch(self):
        rng = np.random.default_rng(10)
        D, I = 256, 128
        x = bf16(rng.standard_normal((4, D)))
        sw1, s1 = moe.quantize_fp8_weight((rng.standard_normal((I, D)) * 0.6).astype(F32))
        sw3, s3 = moe.quantize_fp8_weight((rng.standard_normal((I, D)) * 0.6).astype(F32))
        sw2, s2 = moe.quantize_fp8_weight((rng.standard_normal((D, I)) * 0.1).astype(F32))
        self.assertEqual(s1.shape, (1, 2))
        y1 = moe.shared_expert(x, sw1, s1, sw3, s3, sw2, s2, clamp=True)
        y0 = moe.shared_expert(x, sw1, s1, sw3, s3, sw2, s2, clamp=False)
        self.assertTrue(np.any(y0 != y1))
        a = moe.quant_linear(x, FM.fp8_dequant(sw1, s1))
        b = moe.quant_linear(x, FM.fp8_dequant(sw3, s3))
        ref = moe.quant_linear(bf16(moe.swiglu(a, b, None)), FM.fp8_dequant(sw2, s2))
        np.testing.assert_array_equal(y0, ref)


class TestMoeForward(unittest.TestCase):
    def test_combine_order_and_shared(self):
        rng = np.random.default_rng(11)
        D, I, E, T = 128, 128, 8, 5
        x = bf16(rng.standard_normal((T, D)))
        W = moe._make_moe_weights(rng, D, I, E, std_in=0.4, std_out=0.1)
        gw = bf16(rng.standard_normal((E, D)) * 0.3)
        bias = rng.normal(0, 0.3, E).astype(F32)
        args = (W["w1"], W["w1_scale"], W["w3"], W["w3_scale"], W["w2"], W["w2_scale"],
                W["sw1"], W["sw1_scale"], W["sw3"], W["sw3_scale"], W["sw2"], W["sw2_scale"])
        y, aux = moe.moe_forward(x, np.arange(T), gw, bias, None, *args, return_aux=True)
        scores = moe.gate_scores(x, gw)
        idx, wts = moe.route(scores, bias)
        np.testing.assert_array_equal(aux["idx"], idx)
        sh = moe.shared_expert(x, *args[6:], clamp=True)
        for t in range(T):
            acc = np.zeros(D, F32)
            for p in np.argsort(idx[t]):                      # ascending expert id
                e = idx[t, p]
                out = moe.routed_expert(x[t:t + 1], W["w1"][e], W["w1_scale"][e], W["w3"][e],
                                        W["w3_scale"][e], W["w2"][e], W["w2_scale"][e],
                                        wts[t, p:p + 1])
                acc = (acc + out[0]).astype(F32)
            acc = (acc + sh[t]).astype(F32)
            np.testing.assert_array_equal(y[t], bf16(acc))
        np.testing.assert_allclose(aux["y_routed_f64"] + aux["y_shared_f64"], y, rtol=1e-2, atol=0.05)

    def test_hash_forward_runs(self):
        rng = np.random.default_rng(12)
        D, I, E, T = 128, 128, 8, 3
        W = moe._make_moe_weights(rng, D, I, E, std_in=0.4, std_out=0.1)
        t2e = np.stack([rng.permutation(E)[:6] for _ in range(10)])
        x = bf16(rng.standard_normal((T, D)))
        x[2] = x[0]                                   # same token id and activations as row 0
        y, aux = moe.moe_forward(x, np.array([3, 7, 3]),
                                 bf16(rng.standard_normal((E, D)) * 0.3), None, t2e,
                                 W["w1"], W["w1_scale"], W["w3"], W["w3_scale"], W["w2"],
                                 W["w2_scale"], W["sw1"], W["sw1_scale"], W["sw3"],
                                 W["sw3_scale"], W["sw2"], W["sw2_scale"], return_aux=True)
        np.testing.assert_array_equal(aux["idx"][0], np.sort(t2e[3]))
        np.testing.assert_array_equal(y[0], y[2])


@unittest.skipUnless(os.environ.get("DSV4_SLOW_TESTS"), "set DSV4_SLOW_TESTS=1")
class TestMoeGoldens(unittest.TestCase):
    def test_family_generates(self):
        with tempfile.TemporaryDirectory() as tmp:
            w = GoldenWriter(pathlib.Path(tmp), "moe")
            moe.write_goldens(w)
            w.finish()
            root = pathlib.Path(tmp) / "moe"
            g = {p.stem: np.load(p) for p in (root / "gate_ties").glob("*.npy")}
            idx, wts = moe.route(g["scores"], g["bias"])
            np.testing.assert_array_equal(idx, g["idx"])
            np.testing.assert_allclose(g["weights"].sum(-1), 1.5, rtol=1e-6)


if __name__ == "__main__":
    unittest.main()
