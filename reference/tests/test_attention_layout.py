"""The official prefill / decode index-list layout (spec §4 steps 4-5; dsv4_ref/attention.py).

Official inference/model.py: get_window_topk_idxs(window, bsz, S, 0) has min(S, window) columns;
Attention.forward concatenates the compressed part (get_compress_topk_idxs or the indexer's top-k,
both offset by kv.size(1) = S in prefill and by window in decode) right after it.
Run: /usr/bin/python3 -m unittest discover -s reference/tests
"""
import pathlib
import sys
import unittest

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from dsv4_ref import attention as AT  # noqa: E402
from dsv4_ref.formats import bf16_round  # noqa: E402

F32 = np.float32


def _official_window_prefill(S, win):
    """Literal transcription of get_window_topk_idxs for start_pos 0 (model.py 262-264)."""
    base = np.arange(S)[:, None]
    m = np.clip(base - win + 1, 0, None) + np.arange(min(S, win))[None, :]
    return np.where(m > base, -1, m)


def _official_compress_prefill(ratio, S, offset):
    """Literal transcription of get_compress_topk_idxs for start_pos 0 (model.py 273-275)."""
    m = np.tile(np.arange(S // ratio), (S, 1))
    mask = m >= (np.arange(1, S + 1)[:, None] // ratio)
    return np.where(mask, -1, m + offset)


class TestWindowAndCompressedLists(unittest.TestCase):
    def test_window_prefill_matches_official(self):
        for win in (128, 64, 256, 96):
            for S in (1, 2, 5, 63, 64, 65, 127, 128, 129, 300):
                with self.subTest(win=win, S=S):
                    got = AT.window_indices_prefill(S, win)
                    self.assertEqual(got.shape, (S, min(S, win)))
                    self.assertEqual(got.dtype, np.int32)
                    np.testing.assert_array_equal(got, _official_window_prefill(S, win))

    def test_compressed_prefill_matches_official(self):
        for ratio in (4, 128):
            for S in (1, 3, 4, 5, 100, 127, 128, 129, 300, 1000):
                with self.subTest(ratio=ratio, S=S):
                    got = AT.compressed_indices_prefill(S, ratio, S)
                    self.assertEqual(got.shape, (S, S // ratio))
                    np.testing.assert_array_equal(got, _official_compress_prefill(ratio, S, S))

    def test_decode_window_has_window_columns(self):
        for win in (128, 64):
            for p in (1, 5, win - 2, win - 1, win, 3 * win + 7):
                e = AT.window_indices_decode(p, win)
                self.assertEqual(e.shape, (win,))
                valid = e[e >= 0]
                self.assertEqual(valid.size, min(p + 1, win))
                # oldest -> newest: slot of position x is x mod win
                want = np.arange(max(0, p - win + 1), p + 1) % win
                np.testing.assert_array_equal(valid, want)


class TestPrefillIndexList(unittest.TestCase):
    def test_row_is_window_then_compressed_short_prompt(self):
        # S < 128 with compressed entries present: row t is exactly
        # [window part (S columns) | compressed part], compressed starting at column S.
        S = 100
        # ratio 4: a fake indexer selection (any values; visible ones offset by S)
        k = min(8, S // 4)
        rng = np.random.default_rng(3)
        sel = np.full((S, k), -1, dtype=np.int32)
        for t in range(S):
            vis = (t + 1) // 4
            pick = rng.permutation(vis)[:min(k, vis)]
            sel[t, :pick.size] = pick + S
        idx = AT.prefill_index_list(S, 4, 128, sel)
        self.assertEqual(idx.shape, (S, S + k))
        for t in range(S):
            want_win = [j if j <= t else -1 for j in range(S)]
            np.testing.assert_array_equal(idx[t], np.array(want_win + list(sel[t]), dtype=np.int32))
        # ratio 128 with S < 128: no compressed entries, just the window part
        self.assertEqual(AT.prefill_index_list(S, 128).shape, (S, S))
        # ratio 0: just min(S, 128) window columns
        np.testing.assert_array_equal(AT.prefill_index_list(S, 0), AT.window_indices_prefill(S))

    def test_row_is_window_then_compressed_every_ratio(self):
        for S in (1, 3, 4, 7, 64, 127, 128, 129, 300):
            w = min(S, 128)
            with self.subTest(S=S):
                i0 = AT.prefill_index_list(S, 0)
                self.assertEqual(i0.shape, (S, w))
                np.testing.assert_array_equal(i0, _official_window_prefill(S, 128))
                i128 = AT.prefill_index_list(S, 128)
                np.testing.assert_array_equal(
                    i128, np.concatenate([_official_window_prefill(S, 128),
                                          _official_compress_prefill(128, S, S)], axis=1))
                k = min(8, S // 4)
                sel = np.where(np.arange(k)[None, :] < (np.arange(S)[:, None] + 1) // 4,
                               np.arange(k)[None, :] + S, -1).astype(np.int32)
                i4 = AT.prefill_index_list(S, 4, 128, sel)
                self.assertEqual(i4.shape, (S, w + k))
                np.testing.assert_array_equal(i4[:, :w], _official_window_prefill(S, 128))
                np.testing.assert_array_equal(i4[:, w:], sel)

    def test_other_window_sizes(self):
        S, win = 40, 32
        idx = AT.prefill_index_list(S, 4, win, np.full((S, 2), -1, np.int32))
        self.assertEqual(idx.shape, (S, win + 2))
        np.testing.assert_array_equal(idx[:, :win], _official_window_prefill(S, win))

    def test_argument_checks(self):
        with self.assertRaises(ValueError):
            AT.prefill_index_list(8, 4)                                  # no indexer selection
        with self.assertRaises(ValueError):
            AT.prefill_index_list(8, 4, 128, np.zeros((7, 2), np.int32))
        with self.assertRaises(ValueError):
            AT.prefill_index_list(8, 128, 128, np.zeros((8, 2), np.int32))
        with self.assertRaises(ValueError):
            AT.prefill_index_list(8, 0, 128, np.zeros((8, 2), np.int32))


class TestPaddingIsNotNeutral(unittest.TestCase):
    def test_padding_moves_bits(self):
        # The same set of valid indices, once in the official layout (compressed part at column S)
        # and once with the window part padded to 128 columns (compressed part at column 128):
        # the online softmax over 64-column blocks rounds weights to bf16 against a different
        # running maximum, so some outputs differ; mathematically both are the same attention.
        rng = np.random.default_rng(11)
        S, H, D, n_c = 60, 8, 64, 15
        kv = bf16_round(rng.standard_normal((S + n_c, D)).astype(F32)).astype(F32)
        q = bf16_round((rng.standard_normal((S, H, D)) * 3).astype(F32)).astype(F32)
        sink = rng.standard_normal(H).astype(F32)
        sel = np.where(np.arange(n_c)[None, :] < (np.arange(S)[:, None] + 1) // 4,
                       np.arange(n_c)[None, :] + S, -1).astype(np.int32)
        official = AT.prefill_index_list(S, 4, 128, sel)
        padded = np.concatenate([AT.window_indices_prefill(S), np.full((S, 128 - S), -1, np.int32),
                                 sel], axis=1)
        a = AT.sparse_attention(q, kv, official, sink, F32(0.125))
        b = AT.sparse_attention(q, kv, padded, sink, F32(0.125))
        ex = AT.sparse_attention_exact(q, kv, official, sink, F32(0.125))
        np.testing.assert_allclose(a, ex, rtol=0, atol=0.02 * np.abs(ex).max())
        np.testing.assert_allclose(b, ex, rtol=0, atol=0.02 * np.abs(ex).max())
        self.assertFalse(np.array_equal(a, b))
        # rows whose valid indices all sit in block 0 in both layouts are identical
        np.testing.assert_array_equal(a[:3], b[:3])


if __name__ == "__main__":
    unittest.main()
