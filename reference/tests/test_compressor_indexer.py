"""Self-checks of the compressor (spec §5) and indexer (spec §6) references.

Run: /usr/bin/python3 -m unittest discover -s reference/tests   (or run this file directly)
"""
import pathlib
import sys
import unittest

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from dsv4_ref.compressor import (CompressorState, compressor_decode, compressor_postprocess,  # noqa: E402
                                 compressor_prefill, compressor_project, compressor_run,
                                 golden_params)
from dsv4_ref.formats import bf16_round, fp4_act_quant_sim  # noqa: E402
from dsv4_ref.indexer import (IndexerState, _comp_args, indexer_decode, indexer_prefill,  # noqa: E402
                              indexer_scores, indexer_scores_exact, indexer_select_decode,
                              indexer_select_prefill, prefill_mask, small_params, topk_indices)
from dsv4_ref.norms_rope import hadamard  # noqa: E402

F32 = np.float32


def _args(P):
    return (P["wkv"], P["wgate"], P["ape"], P["norm_w"], P["ratio"], P["head_dim"], P["freqs"],
            P["rotate"])


def _live_slots(ratio, n_tokens):
    """Slots whose content is defined by the last tokens (others may hold stale rows)."""
    r = ratio
    rem = n_tokens % r
    if r == 4:
        full = list(range(r)) if n_tokens >= r else []
        return full + [r + j for j in range(rem)]
    return list(range(rem))


class CompressorPrefillDecode(unittest.TestCase):
    def test_prefill_then_decode_equals_token_by_token(self):
        for kind, N, ks in [("c4_main", 0, 13), ("c4_main", 3, 9), ("c4_main", 8, 6),
                            ("c4_main", 127, 6), ("c4_indexer", 5, 11), ("c4_indexer", 128, 4),
                            ("c128_main", 1, 130), ("c128_main", 200, 60), ("c128_main", 256, 3)]:
            with self.subTest(kind=kind, N=N, k=ks):
                P = golden_params(kind)
                x = P["x"][:N + ks]
                a, sa = compressor_run(x, N, *_args(P))          # prefill N, then decode
                b, sb = compressor_run(x, 0, *_args(P))          # decode only, from p = 0
                self.assertEqual(a.shape, ((N + ks) // P["ratio"], P["head_dim"]))
                np.testing.assert_array_equal(a, b)
                live = _live_slots(P["ratio"], N + ks)
                np.testing.assert_array_equal(sa.kv_state[live], sb.kv_state[live])
                np.testing.assert_array_equal(sa.score_state[live], sb.score_state[live])

    def test_prefill_prefix_consistent_and_equal_to_decode(self):
        for kind in ["c4_main", "c4_indexer", "c128_main"]:
            P = golden_params(kind)
            st = CompressorState(P["ratio"], P["head_dim"])
            full = compressor_prefill(st, P["x"][:300], *_args(P))
            for S in [1, 3, 4, 5, 9, 127, 128, 129, 255]:
                with self.subTest(kind=kind, S=S):
                    st2 = CompressorState(P["ratio"], P["head_dim"])
                    e = compressor_prefill(st2, P["x"][:S], *_args(P))
                    np.testing.assert_array_equal(e, full[:S // P["ratio"]])
                    tok, _ = compressor_run(P["x"][:S], 0, *_args(P))
                    np.testing.assert_array_equal(e, tok)

    def test_state_reset_between_sequences(self):
        P = golden_params("c4_main")
        st = CompressorState(4, 512)
        compressor_prefill(st, P["x"][100:107], *_args(P))     # another sequence first
        e1 = compressor_prefill(st, P["x"][:6], *_args(P))
        st2 = CompressorState(4, 512)
        e2 = compressor_prefill(st2, P["x"][:6], *_args(P))
        np.testing.assert_array_equal(e1, e2)
        np.testing.assert_array_equal(st.kv_state, st2.kv_state)
        np.testing.assert_array_equal(st.score_state, st2.score_state)
        self.assertTrue(np.all(np.isneginf(st.score_state[6:])))

    def test_pooling_matches_naive_definition(self):
        """§5.1 per channel, straight from the definition (float64, explicit loops over slots)."""
        for kind in ["c4_main", "c128_main", "c4_indexer"]:
            P = golden_params(kind)
            r, d = P["ratio"], P["head_dim"]
            S = 3 * r
            K, Z = compressor_project(P["x"][:S], P["wkv"], P["wgate"], P["ape"], np.arange(S))
            K = K.astype(np.float64)
            Z = Z.astype(np.float64)
            pooled = np.zeros((S // r, d))
            for i in range(S // r):
                if r == 4:
                    toks = [(t, slice(0, d)) for t in range(4 * (i - 1), 4 * i) if t >= 0] + \
                           [(t, slice(d, 2 * d)) for t in range(4 * i, 4 * i + 4)]
                else:
                    toks = [(t, slice(0, d)) for t in range(r * i, r * i + r)]
                zs = np.stack([Z[t, h] for t, h in toks])
                ks = np.stack([K[t, h] for t, h in toks])
                wts = np.exp(zs - zs.max(axis=0))
                wts /= wts.sum(axis=0)
                pooled[i] = (wts * ks).sum(axis=0)
            ref = compressor_postprocess(pooled.astype(F32), np.arange(S // r) * r, P["norm_w"],
                                         P["freqs"], P["rotate"])
            st = CompressorState(r, d)
            got = compressor_prefill(st, P["x"][:S], *_args(P))
            with self.subTest(kind=kind):
                # summation order differs from the library path: allow rare 1-step flips
                self.assertGreater(np.mean(got == ref), 0.995)
                scale = np.abs(ref).max()
                self.assertLess(np.abs(got - ref).max(), 0.15 * scale)

    def test_overlap_state_layout(self):
        P = golden_params("c4_main")
        st = CompressorState(4, 512)
        compressor_prefill(st, P["x"][:10], *_args(P))
        K, Z = compressor_project(P["x"][:10], P["wkv"], P["wgate"], P["ape"], np.arange(10))
        np.testing.assert_array_equal(st.kv_state[:4], K[4:8])
        np.testing.assert_array_equal(st.score_state[:4], Z[4:8])
        np.testing.assert_array_equal(st.kv_state[4:6], K[8:10])
        self.assertTrue(np.all(st.kv_state[6:] == 0) and np.all(np.isneginf(st.score_state[6:])))

    def test_decode_returns_none_off_boundary(self):
        P = golden_params("c128_main")
        st = CompressorState(128, 512)
        for p in range(128):
            e = compressor_decode(st, P["x"][p], p, *_args(P))
            self.assertEqual(e is None, p != 127)


def _fwht(x):
    """Iterative butterfly Walsh-Hadamard transform (natural order) in float64, unnormalised."""
    y = np.array(x, dtype=np.float64)
    n = y.shape[-1]
    h = 1
    while h < n:
        y = y.reshape(y.shape[:-1] + (n // (2 * h), 2, h))
        a = y[..., 0, :].copy()
        b = y[..., 1, :].copy()
        y[..., 0, :] = a + b
        y[..., 1, :] = a - b
        y = y.reshape(y.shape[:-3] + (n,))
        h *= 2
    return y


class HadamardCheck(unittest.TestCase):
    def test_hadamard_vs_explicit_matrix(self):
        n = 128
        H = np.array([[1.0]])
        while H.shape[0] < n:                                   # Sylvester construction
            H = np.block([[H, H], [H, -H]])
        i = np.arange(n)
        pc = np.vectorize(lambda v: bin(v).count("1"))(i[:, None] & i[None, :])
        np.testing.assert_array_equal(H, np.where(pc % 2 == 0, 1.0, -1.0))
        np.testing.assert_array_equal(H @ H.T, n * np.eye(n))
        rng = np.random.default_rng(1)
        x = bf16_round(rng.standard_normal((64, n)).astype(F32))
        expect = bf16_round(((x.astype(np.float64) @ H).astype(F32) * F32(n ** -0.5)).astype(F32))
        got = hadamard(x)
        np.testing.assert_array_equal(got, expect)
        np.testing.assert_array_equal((_fwht(x)).astype(F32), (x.astype(np.float64) @ H).astype(F32))
        # orthonormal: applying it twice gives x back up to bf16 rounding
        np.testing.assert_allclose(hadamard(got), x, atol=0.02 * np.abs(x).max())


class TopK(unittest.TestCase):
    def _check(self, s, k):
        s = np.asarray(s, dtype=F32)
        got = topk_indices(s, k)
        ref = np.argsort(-s, axis=-1, kind="stable")[..., :k]
        np.testing.assert_array_equal(got, ref)
        self.assertEqual(got.dtype, np.int32)

    def test_topk_vs_full_stable_sort(self):
        rng = np.random.default_rng(5)
        for T in [1, 7, 600, 4096]:
            for k in sorted({0, 1, min(8, T), min(512, T), T}):
                with self.subTest(T=T, k=k):
                    self._check(rng.standard_normal((3, T)), k)
                    self._check(bf16_round(rng.standard_normal((3, T)).astype(F32)), k)
                    self._check(rng.integers(0, 5, size=(3, T)).astype(F32), k)
                    self._check(np.zeros((2, T)), k)
        m = bf16_round(rng.standard_normal((4, 600)).astype(F32))
        m[0, :] = -np.inf
        m[1, 10:] = -np.inf
        m[2, ::2] = -np.inf
        m[3, 5] = 0.0
        m[3, 6] = -0.0
        self._check(m, 512)
        self._check(bf16_round(rng.standard_normal((1, 262144)).astype(F32)), 512)

    def test_ties_prefer_lower_index(self):
        np.testing.assert_array_equal(topk_indices(np.array([[1, 3, 3, 2, 3]], F32), 2), [[1, 2]])
        np.testing.assert_array_equal(topk_indices(np.full((1, 9), 2.0, F32), 4), [[0, 1, 2, 3]])


class IndexerChecks(unittest.TestCase):
    def test_scores_close_to_exact(self):
        rng = np.random.default_rng(9)
        q = fp4_act_quant_sim(hadamard(bf16_round(rng.standard_normal((3, 64, 128)).astype(F32))), 32)
        k = fp4_act_quant_sim(hadamard(bf16_round(rng.standard_normal((50, 128)).astype(F32))), 32)
        w = bf16_round((rng.standard_normal((3, 64)) / np.sqrt(8192)).astype(F32))
        s = indexer_scores(q, w, k)
        e = indexer_scores_exact(q, w, k)
        self.assertLess(np.abs(s - e).max(), 0.02 * np.abs(e).max())
        self.assertTrue(np.array_equal(s, bf16_round(s)))

    def test_select_prefill_mask_and_counts(self):
        rng = np.random.default_rng(3)
        for S in [3, 4, 35, 36, 100]:
            T = S // 4
            sc = bf16_round(rng.standard_normal((S, T)).astype(F32))
            idx = indexer_select_prefill(sc, offset=S, topk=8)
            self.assertEqual(idx.shape, (S, min(8, T)))
            mask = prefill_mask(S, T)
            for t in range(S):
                vis = (t + 1) // 4
                valid = idx[t][idx[t] >= 0] - S
                self.assertEqual(valid.size, min(8, vis))
                self.assertTrue(np.all(valid < vis))
                self.assertFalse(np.any(mask[t, valid]))
                if valid.size:
                    self.assertGreaterEqual(sc[t, valid].min(), np.sort(sc[t, :vis])[::-1][valid.size - 1])

    def test_prefill_last_row_equals_decode(self):
        P = small_params()
        rng = np.random.default_rng(11)
        X = bf16_round(rng.standard_normal((140, 256)).astype(F32))
        QR = bf16_round(rng.standard_normal((140, 256)).astype(F32))
        for S in [36, 64, 129]:
            with self.subTest(S=S):
                a = indexer_prefill(IndexerState(), X[:S], QR[:S], P, offset=S, topk=8)
                st = IndexerState()
                st.kidx = compressor_prefill(st.comp, X[:S - 1], *_comp_args(P))
                d = indexer_decode(st, X[S - 1], QR[S - 1], S - 1, P, offset=128, topk=8)
                np.testing.assert_array_equal(a["kidx"], d["kidx"])
                np.testing.assert_array_equal(a["scores"][-1:], d["scores"])
                np.testing.assert_array_equal(a["idx"][-1:] - S, d["idx"] - 128)
                np.testing.assert_array_equal(
                    indexer_select_decode(d["scores"], 128, 8), d["idx"])


if __name__ == "__main__":
    unittest.main()
