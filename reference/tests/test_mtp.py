"""Tests of the MTP block reference (dsv4_ref/mtp.py) on the toy checkpoint.

Run: DSV4_TOY_MODEL=DIR /usr/bin/python3 -m unittest discover -s reference/tests
(DIR from ``reference/make_checkpoint.py --preset toy --out DIR``; skipped without it).

The MTP block of V4-Flash has ratio 0 (window only). Its prefill rows list the window in
min(S, window) columns and its decode rows the ring slots; for ratio 0 both put position i in
column i while i < window and the masked columns after the valid ones, so prefill(N) + decode(k)
must equal prefill(N + k) bit for bit for EVERY N (not only N >= window as for the main model).
"""
import os
import pathlib
import sys
import tempfile
import unittest

import numpy as np

HERE = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

TOY = os.environ.get("DSV4_TOY_MODEL")
HAVE_TOY = bool(TOY) and (pathlib.Path(TOY) / "config.json").exists()


@unittest.skipUnless(HAVE_TOY, "set DSV4_TOY_MODEL to a toy checkpoint directory")
class TestMTP(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from dsv4_ref.forward import Model
        from dsv4_ref.mtp import MTP
        import make_forward_goldens as MFG
        cls.Model, cls.MTP = Model, MTP
        cls.m = Model(TOY, diagnostics=True)
        cls.V, cls.D = cls.m.cfg["vocab_size"], cls.m.cfg["dim"]
        cls.ids = MFG.master_ids(cls.V, 200)
        assert cls.m.cfg["n_mtp_layers"] == 1, "the toy checkpoint should carry one MTP block"

    def _main_streams(self, n):
        """The main model's final streams at positions 0..n-1 (one prefill)."""
        self.m.prefill(self.ids[:n])
        return self.m.final_streams

    def test_block_kind(self):
        # official MTPBlock(layer_id = n_layers): ratio compress_ratios[n_layers], score routing
        mtp = self.MTP(self.m)
        c = self.m.cfg
        self.assertEqual(mtp.layer, c["n_layers"])
        self.assertEqual(mtp.state.ratio, c["compress_ratios"][c["n_layers"]])
        self.assertEqual(mtp.state.ratio, 0)
        self.assertTrue(self.m.w.has("mtp.0.ffn.gate.bias"))
        self.assertFalse(self.m.w.has("mtp.0.ffn.gate.tid2eid"))
        with self.assertRaises(ValueError):
            self.MTP(self.m, 1)

    def test_final_streams_are_last_block_output(self):
        self.m.prefill(self.ids[:9])
        H = self.m.final_streams
        self.assertEqual(H.shape, (9, 4, self.D))
        np.testing.assert_array_equal(H[-1], self.m.diag["layer_out"][-1])

    def test_prefill_then_decode_equals_longer_prefill(self):
        # 126 + 4 crosses the 128-slot ring wrap of the block's own window
        for N, k in [(1, 3), (6, 2), (126, 4)]:
            with self.subTest(N=N, k=k):
                H = self._main_streams(N + k)
                nxt = self.ids[1:N + k + 1]
                mtp = self.MTP(self.m)
                mtp.prefill(H[:N], nxt[:N])
                for t in range(k):
                    got = mtp.decode(H[N + t], nxt[N + t])
                out_dec = mtp.streams[-1]
                ref = mtp.prefill(H, nxt)
                np.testing.assert_array_equal(got, ref)
                np.testing.assert_array_equal(out_dec, mtp.streams[-1])

    def test_input_streams(self):
        mtp = self.MTP(self.m)
        H = self._main_streams(5)
        x = mtp.input_streams(H, self.ids[1:6])
        self.assertEqual(x.shape, H.shape)
        # e_proj is broadcast, h_proj per stream: identical streams in, identical streams out
        same = np.repeat(H[:, :1], 4, axis=1)
        xs = mtp.input_streams(same, self.ids[1:6])
        for k in range(1, 4):
            np.testing.assert_array_equal(xs[:, k], xs[:, 0])
        # hnorm normalises each stream on its own: scaling one stream by 8 barely changes the
        # result (only through eps and act_quant), a norm over all four streams would not
        scaled = same.copy()
        scaled[:, 2] *= 8
        xk = mtp.input_streams(scaled, self.ids[1:6])
        rel = np.abs(xk[:, 2] - xs[:, 2]).max() / np.abs(xs[:, 2]).max()
        self.assertLess(rel, 0.05)
        # the next ids enter: another token changes every stream
        xo = mtp.input_streams(H, self.ids[2:7])
        self.assertTrue(np.all(np.any(xo != x, axis=2)))

    def test_own_state_leaves_main_model_alone(self):
        ids = self.ids
        self.m.prefill(ids[:20])
        plain = self.m.decode(ids[20])
        self.m.prefill(ids[:20])
        mtp = self.MTP(self.m)
        mtp.prefill(self.m.final_streams, ids[1:21])
        self.assertEqual(mtp.pos, 20)
        with_mtp = self.m.decode(ids[20])
        np.testing.assert_array_equal(plain, with_mtp)

    def test_logits_finite_and_not_degenerate(self):
        mtp = self.MTP(self.m)
        lg = mtp.prefill(self._main_streams(12), self.ids[1:13])
        self.assertEqual(lg.shape, (self.V,))
        self.assertTrue(np.all(np.isfinite(lg)))
        self.assertGreater(float(np.std(lg)), 0.1)
        with self.assertRaises(RuntimeError):
            self.MTP(self.m).decode(self.m.final_streams[-1], 3)

    def test_goldens(self):
        import make_forward_goldens as MFG
        from dsv4_ref.golden_writer import GoldenWriter
        with tempfile.TemporaryDirectory() as tmp:
            w = GoldenWriter(pathlib.Path(tmp), "forward")
            MFG.MTP_CASES, saved = ((5, 3),), MFG.MTP_CASES
            try:
                MFG.write_mtp_goldens(w, self.m, self.ids, {}, lambda a: a, log=lambda *a: None)
            finally:
                MFG.MTP_CASES = saved
            w.finish()
            root = pathlib.Path(tmp) / "forward" / "mtp_S5_steps3"

            def load(name):
                return np.load(root / f"{name}.npy")
            self.assertEqual(load("H").shape, (8, 4, self.D))
            self.assertEqual(load("mtp_in").shape, (8, 4, self.D))
            self.assertEqual(load("mtp_out").shape, (4, 4, self.D))
            lg = load("logits")
            self.assertEqual(lg.shape, (4, self.V))
            # the last row equals one MTP prefill over all 8 positions
            from dsv4_ref import formats as FM
            H = FM.bf16_bits_to_f32(load("H"))
            mtp = self.MTP(self.m)
            np.testing.assert_array_equal(mtp.prefill(H, self.ids[1:9]), lg[-1])
            np.testing.assert_array_equal(FM.f32_to_bf16_bits(mtp.inputs), load("mtp_in"))


if __name__ == "__main__":
    unittest.main()
