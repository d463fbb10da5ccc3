#!/usr/bin/env python3
"""Write whole-model golden logits (family `forward`) for a checkpoint, normally the toy one.

Usage:
    python3 reference/make_checkpoint.py --preset toy --out build/toy        # seed 0
    python3 reference/make_forward_goldens.py --model build/toy --out build/goldens

Layout: OUT/forward/cases.txt and OUT/forward/<case>/<array>.npy (dsv4_ref/golden_writer.py).
One master token sequence (seed PROMPT_SEED, BOS id first, the rest uniform in [2, vocab)) is
used everywhere: every prompt is a prefix of it and the teacher-forced decode tokens continue it.

Cases (V = vocab, L = layers, k = experts per token, K = index_topk, D = hidden size):
* ``prefill_S{1,7,130,300}``: ``ids`` i64[S]; ``logits`` f32[1,V] (last position). 130 and 300
  cross the 128-token window and both compression boundaries (entries of ratio 4 and 128).
* ``decode_S300_steps64``: ``ids`` i64[364] (prompt + teacher-forced tokens), ``prompt_len``
  i64[1] = 300; ``prefill_logits`` f32[1,V] (= prefill_S300); ``logits`` f32[64,V]: row j = the
  logits returned by decoding ids[300+j] at position 300+j (i.e. predicting token 301+j).
* ``greedy_S7_steps16``, ``greedy_S300_steps8``: ``ids`` = the prompt, ``tokens`` i64[n] greedy
  continuation, ``logits`` f32[n,V]: row 0 = prefill logits, tokens[j] = argmax(logits[j])
  (lowest id on ties), row j>0 = logits after decoding tokens[j-1].
* ``prefill_S130_initial``: as prefill_S130 with the *initial* official revision (KV FP8
  simulation off, shared expert unclamped; spec §10.1). ``revision`` says which (1 = current).
* ``mtp_S{7,126,130}_steps{4,6,2}`` (checkpoints with an MTP block, dsv4_ref/mtp.py): the main model
  prefills ids[:P] (``prompt_len`` = P) and decodes ids[P..P+n) teacher-forced; the MTP block
  prefills (H[0..P), ids[1..P+1)) and then decodes (H[P+j], ids[P+j+1]) at position P+j.
  ``ids`` i64[P+n+1]; ``H`` u16[P+n,4,D] the main model's final streams (bf16 bits, before hc_head:
  the MTP input, so a port can test the block alone); ``mtp_in`` u16[P+n,4,D] the block's input
  streams e_proj(enorm(embed)) + h_proj(hnorm(H)); ``mtp_out`` u16[1+n,4,D] its output streams at
  the last position of each call; ``logits`` f32[1+n,V] (row 0: the prefill), ``margin``.
  P = 126 puts the decode steps across the 128-slot ring wrap, P = 130 the prefill past it.
These cases carry no other diagnostics. Every other case also holds, per returned logits row: ``margin`` f32 (top1 - top2 logit),
``final_norm`` u16[.,D] (bf16 bits of the final RMSNorm output), ``layer_out`` u16[.,L,4,D]
(bf16 residual streams after each block, last position), ``moe_idx`` i32[.,L,k] /
``moe_w`` f32[.,L,k] (routing of the last position, ascending expert id), ``index_idx``
i32[.,L,K] (indexer selection of the last position in ratio-4 layers as ascending entry numbers,
-1 padded; -1 rows for other layers), ``revision`` i64[1], ``weights_crc32`` i64[1] (crc32 over
all tensors' raw bytes in sorted-name order: identifies the checkpoint).

Index-list layout: every prefill uses the official one (dsv4_ref/forward.py, attention.prefill_index_list):
min(S,128) window columns, the compressed part right after them. For S < 128 this differs from the
decode layout (128 window columns) in ratio-4 layers: prefill_S7 and row 0 of greedy_S7_steps16 put
the compressed column at column 7; a port that pads the prefill window part to 128 columns
differs from these logits.

Comparing a C++ run (see dsv4_ref/forward.py "Sensitivity"): the reference sums exactly, so a port
that accumulates in f32 differs by ulps that FP8 activation quantisation and top-k / routing
choices amplify. 1- and 7-token prompts (and greedy_S7) are expected to match to ~1e-2 absolute;
for the long cases compare relative RMS error per row, not bits.
"""
import argparse
import pathlib
import sys
import time
import zlib

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from dsv4_ref.formats import f32_to_bf16_bits  # noqa: E402
from dsv4_ref.forward import Model  # noqa: E402
from dsv4_ref.golden_writer import GoldenWriter  # noqa: E402
from dsv4_ref.mtp import MTP  # noqa: E402

PROMPT_SEED = 20250521
PREFILL_LENS = (1, 7, 130, 300)
DECODE_PROMPT, DECODE_STEPS = 300, 64
GREEDY = ((7, 16), (300, 8))
MTP_CASES = ((7, 4), (126, 6), (130, 2))


def master_ids(vocab, n, bos=0, seed=PROMPT_SEED):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, vocab, size=n, dtype=np.int64)
    ids[0] = bos
    return ids


def weights_crc32(model):
    st = model.w.st
    crc = 0
    for name in st.keys():
        crc = zlib.crc32(np.ascontiguousarray(st.get(name)).tobytes(), crc)
    return crc


class _Rows:
    """Collects logits + diagnostics row by row."""

    def __init__(self):
        self.rows = []

    def add(self, logits, diag):
        self.rows.append((np.asarray(logits, np.float32), {k: np.array(v) for k, v in diag.items()}))

    def arrays(self):
        lg = np.stack([r[0] for r in self.rows]).astype(np.float32)
        srt = np.sort(lg, axis=1)
        d = {k: np.stack([r[1][k] for r in self.rows]) for k in self.rows[0][1]}
        return dict(
            logits=lg,
            margin=(srt[:, -1] - srt[:, -2]).astype(np.float32),
            final_norm=f32_to_bf16_bits(d["final_norm"]),
            layer_out=f32_to_bf16_bits(d["layer_out"]),
            moe_idx=d["moe_idx"].astype(np.int32),
            moe_w=d["moe_w"].astype(np.float32),
            index_idx=d["index_idx"].astype(np.int32),
        )


def write_goldens(writer, model_dir, log=print):
    t0 = time.time()
    cur = Model(model_dir, diagnostics=True)
    V = cur.cfg["vocab_size"]
    bos = int(cur.cfg["raw"].get("bos_token_id", 0) or 0)
    n_master = max(max(PREFILL_LENS), DECODE_PROMPT + DECODE_STEPS)
    ids = master_ids(V, n_master, bos)
    common = dict(weights_crc32=np.array([weights_crc32(cur)], np.int64))
    rev_cur = np.array([1], np.int64)

    def check(a):
        assert np.all(np.isfinite(a["logits"])), "non-finite logits"
        return a

    for S in PREFILL_LENS:
        t = time.time()
        r = _Rows()
        r.add(cur.prefill(ids[:S]), cur.diag)
        writer.case(f"prefill_S{S}", ids=ids[:S], revision=rev_cur, **check(r.arrays()), **common)
        log(f"  prefill_S{S}: {time.time() - t:.2f} s")

    t = time.time()
    pre = cur.prefill(ids[:DECODE_PROMPT])
    r = _Rows()
    for j in range(DECODE_STEPS):
        r.add(cur.decode(ids[DECODE_PROMPT + j]), cur.diag)
    writer.case(f"decode_S{DECODE_PROMPT}_steps{DECODE_STEPS}", ids=ids[:DECODE_PROMPT + DECODE_STEPS],
                prompt_len=np.array([DECODE_PROMPT], np.int64), prefill_logits=pre[None].astype(np.float32),
                revision=rev_cur, **check(r.arrays()), **common)
    log(f"  decode_S{DECODE_PROMPT}_steps{DECODE_STEPS}: {time.time() - t:.2f} s")

    for S, n in GREEDY:
        t = time.time()
        r = _Rows()
        lg = cur.prefill(ids[:S])
        toks = []
        for j in range(n):
            r.add(lg, cur.diag)
            toks.append(int(np.argmax(lg)))                 # lowest id on exact ties
            if j + 1 < n:
                lg = cur.decode(toks[-1])
        writer.case(f"greedy_S{S}_steps{n}", ids=ids[:S], tokens=np.array(toks, np.int64),
                    revision=rev_cur, **check(r.arrays()), **common)
        log(f"  greedy_S{S}_steps{n}: {time.time() - t:.2f} s")

    t = time.time()
    ini = Model(model_dir, revision="initial", diagnostics=True)
    r = _Rows()
    r.add(ini.prefill(ids[:130]), ini.diag)
    writer.case("prefill_S130_initial", ids=ids[:130], revision=np.array([0], np.int64),
                **check(r.arrays()), **common)
    log(f"  prefill_S130_initial: {time.time() - t:.2f} s")

    if cur.cfg["n_mtp_layers"]:
        write_mtp_goldens(writer, cur, ids, common, check, log)
    log(f"forward goldens: {len(writer.cases)} cases in {time.time() - t0:.1f} s")


def write_mtp_goldens(writer, model, ids, common, check, log=print):
    """The ``mtp_*`` cases (module doc) on a main model ``model`` (its state is reused)."""
    mtp = MTP(model)
    for P, n in MTP_CASES:
        t = time.time()
        model.prefill(ids[:P])
        H = [model.final_streams]
        lg = [mtp.prefill(H[0], ids[1:P + 1])]
        x_in, x_out = [mtp.inputs], [mtp.streams[-1:]]
        for j in range(n):
            model.decode(ids[P + j])
            H.append(model.final_streams)
            lg.append(mtp.decode(H[-1][-1], ids[P + j + 1]))
            x_in.append(mtp.inputs)
            x_out.append(mtp.streams[-1:])
        lg = np.stack(lg).astype(np.float32)
        srt = np.sort(lg, axis=1)
        writer.case(f"mtp_S{P}_steps{n}", ids=ids[:P + n + 1], prompt_len=np.array([P], np.int64),
                    H=f32_to_bf16_bits(np.concatenate(H)), mtp_in=f32_to_bf16_bits(np.concatenate(x_in)),
                    mtp_out=f32_to_bf16_bits(np.concatenate(x_out)),
                    **check(dict(logits=lg, margin=(srt[:, -1] - srt[:, -2]).astype(np.float32))), **common)
        log(f"  mtp_S{P}_steps{n}: {time.time() - t:.2f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="checkpoint directory (make_checkpoint.py --preset toy)")
    ap.add_argument("--out", required=True, help="output directory (OUT/forward/... is written)")
    args = ap.parse_args()
    w = GoldenWriter(pathlib.Path(args.out), "forward")
    write_goldens(w, args.model)
    w.finish()
    print(f"goldens: forward: {len(w.cases)} cases -> {w.root}")


if __name__ == "__main__":
    main()
