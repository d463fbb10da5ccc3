#!/usr/bin/env python3
"""Write tokenizer.json files in the official DeepSeek-V3/V4 structure, and their goldens.

Usage:
  make_tokenizer.py --out DIR                  train a byte-level BPE with Hugging Face `tokenizers`
                                               and write DIR/tokenizer.json + tokenizer_config.json
  make_tokenizer.py --goldens DIR              the same, plus the test corpus and the ids that
                                               `tokenizers` gives for it (DIR/tokenizer/goldens.jsonl)
                                               and for variants that exercise the other components
                                               (DIR/tokenizer/<variant>.json + <variant>.jsonl)
  make_tokenizer.py --toy DIR --vocab-size N   a small tokenizer.json without `tokenizers` (pure
                                               Python; what make_checkpoint.py puts in the toy)
  make_tokenizer.py --seeds DIR                fuzz seeds: the toy (vocab 300) and its variants

The structure is DeepSeek-V3's tokenizer.json (V4 keeps it): no normalizer (an empty Sequence),
a Sequence pre-tokenizer of three Isolated regex Splits (digit runs of at most 3, CJK/kana runs,
the word/punctuation/whitespace pattern) then ByteLevel without its own regex, a byte-level BPE
model, a ByteLevel decoder, and a TemplateProcessing post-processor that puts BOS first. Ids
0/1/2 are BOS/EOS/pad as in the real vocab; the chat tokens sit at DeepSeek-V3.1's ids (128798+)
with the placeholder tokens of the real vocab in between, and the V4 additions (｜DSML｜, the
latest-reminder and task tokens) after them: no V4 tokenizer.json was available to confirm
those ids, so they are assumptions.

Everything is deterministic: the corpus comes from seeded generators and BPE training is.
"""
import argparse
import json
import pathlib
import random
import sys

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"
# DeepSeek-V3.1 ids for the chat tokens (vocab size 129280); V4 additions follow.
CHAT_TOKENS = [
    ("<think>", 128798), ("</think>", 128799), ("<｜fim▁hole｜>", 128800), ("<｜fim▁begin｜>", 128801),
    ("<｜fim▁end｜>", 128802), ("<｜User｜>", 128803), ("<｜Assistant｜>", 128804), ("<|EOT|>", 128805),
    ("<｜tool▁calls▁begin｜>", 128806), ("<｜tool▁calls▁end｜>", 128807), ("<｜tool▁call▁begin｜>", 128808),
    ("<｜tool▁call▁end｜>", 128809), ("<｜tool▁outputs▁begin｜>", 128810), ("<｜tool▁outputs▁end｜>", 128811),
    ("<｜tool▁output▁begin｜>", 128812), ("<｜tool▁output▁end｜>", 128813), ("<｜tool▁sep｜>", 128814),
    ("｜DSML｜", 128815), ("<｜latest_reminder｜>", 128816), ("<｜action｜>", 128817), ("<｜query｜>", 128818),
    ("<｜authority｜>", 128819), ("<｜domain｜>", 128820), ("<｜title｜>", 128821), ("<｜read_url｜>", 128822),
]
FULL_VOCAB = 129280

# The pre-tokenizer Split patterns of DeepSeek-V3's tokenizer.json.
SPLIT_PATTERNS = [
    "\\p{N}{1,3}",
    "[一-龥\u3040-ゟ゠-ヿ]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
]


def byte_level_alphabet():
    """GPT-2's byte -> printable character map (the ByteLevel pre-tokenizer's)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def split(behavior="Isolated", regex=None, string=None, invert=False):
    return {"type": "Split", "pattern": {"Regex": regex} if regex is not None else {"String": string},
            "behavior": behavior, "invert": invert}


def byte_level(add_prefix_space=False, use_regex=False):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": True, "use_regex": use_regex}


def added_token(tid, content, special=True, lstrip=False, rstrip=False, single_word=False, normalized=False):
    return {"id": tid, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": normalized, "special": special}


def official_structure(vocab, merges, specials):
    """tokenizer.json in DeepSeek-V3's layout around a BPE vocab/merges and (token, id) specials."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token(i, t) for t, i in sorted(specials, key=lambda s: s[1])],
        "normalizer": {"type": "Sequence", "normalizers": []},
        "pre_tokenizer": {"type": "Sequence",
                          "pretokenizers": [split(regex=p) for p in SPLIT_PATTERNS] + [byte_level()]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": BOS, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {BOS: {"id": BOS, "ids": [0], "tokens": [BOS]}},
        },
        "decoder": byte_level(add_prefix_space=True, use_regex=True),
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def tokenizer_config(model_max_length):
    tok = lambda s: {"__type": "AddedToken", "content": s, "lstrip": False, "normalized": True,  # noqa: E731
                     "rstrip": False, "single_word": False}
    return {"add_bos_token": True, "add_eos_token": False, "bos_token": tok(BOS), "eos_token": tok(EOS),
            "pad_token": tok(EOS), "clean_up_tokenization_spaces": False, "legacy": True,
            "model_max_length": model_max_length, "sp_model_kwargs": {}, "unk_token": None,
            "tokenizer_class": "LlamaTokenizerFast"}


# ------------------------------------------------------------------------------------------------
# the toy tokenizer (pure Python)
# ------------------------------------------------------------------------------------------------
TOY_WORDS = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "with", "as", "was", "on", "model",
             "token", "hello", "world", "user", "assistant", "think", "deep", "seek", "int", "return", "def"]


def toy_tokenizer(vocab_size):
    """A small byte-level BPE in the official structure: BOS/EOS/pad, the 256 byte characters,
    merges that spell a few common words (with and without the leading space), the chat tokens
    at the top of the vocab. No training: a handful of merges in the real format is enough for
    the generator to turn text into ids the toy model accepts."""
    specials = [(BOS, 0), (EOS, 1), (PAD, 2)]
    chat = ["<think>", "</think>", "<｜User｜>", "<｜Assistant｜>", "｜DSML｜"]
    if vocab_size < 3 + 256 + len(chat):
        raise SystemExit(f"make_tokenizer: vocab size {vocab_size} too small for a byte-level tokenizer")
    alphabet = byte_level_alphabet()
    vocab = {t: i for t, i in specials}
    for b in range(256):
        vocab[alphabet[b]] = len(vocab)
    limit = vocab_size - len(chat)
    merges = []
    space = alphabet[ord(" ")]
    def merge(a, b):
        if a + b not in vocab and len(vocab) < limit:
            vocab[a + b] = len(vocab)
            merges.append([a, b])
        return a + b in vocab

    for word in TOY_WORDS:  # letters left to right, then the leading space onto the whole word
        cur = word[0]
        for ch in word[1:]:
            if not merge(cur, ch):
                break
            cur += ch
        if cur == word:
            merge(space, word)
    while len(vocab) < limit:  # the rest of the id range: unreachable filler tokens
        vocab[f"<｜place▁holder▁no▁{len(vocab)}｜>"] = len(vocab)
    for t in chat:
        specials.append((t, len(vocab)))
        vocab[t] = len(vocab)
    return official_structure(vocab, merges, specials)


def write_dir(out, tok_json, model_max_length):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(model_max_length), ensure_ascii=False,
                                                          indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------------
# the corpus: deterministic lines of every kind the pre-tokenizer distinguishes
# ------------------------------------------------------------------------------------------------
ENGLISH = ("the quick brown fox jumps over lazy dog it's we're they'll don't I'm you've she'd "
           "Hello World DeepSeek tokenizer encoding model weights attention expert routing cache "
           "McDonald's O'Neil e-mail self-contained state-of-the-art U.S.A. Dr. Mr. etc. ").split()
CODE = ["def f(x):\n    return x**2 + 1", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
        "if x != None and y >= 3:\n\tprint(f\"{x!r}\")", "#include <vector>\nint main() { return 0; }",
        "std::vector<int32_t> ids{1, 2, 3};", "  // comment with trailing spaces   ",
        "SELECT * FROM users WHERE id = 42;", "x=>x*2; a&&b||!c; p->q; ::ns::T<U>",
        "{\"key\": [1, 2.5, -3e10, true, null]}", "$ ls -la /usr/bin | grep py\n", "<div class=\"a\">b</div>"]
CJK = "中文分词测试深度求索模型你好世界的是了在有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质"
KANA = "ひらがなカタカナのテストですコンピューターアイウエオ"
HANGUL = "한국어토큰화테스트입니다"
EMOJI = ["😀", "🎉", "👍🏽", "👨‍👩‍👧‍👦", "🇯🇵", "❤️", "🤖", "🧑‍💻", "✨", "🔥🔥"]
COMBINING = ["e\u0301", "n\u0303", "a\u0308\u0304", "Tiếng Việt", "नमस्ते", "ক্ষ", "Z\u0351\u0364\u0300", "é",
             "\u0301lone", "o\u0338", "Å", "Å"]
DIGITS = ["٠١٢٣٤٥", "１２３４", "²³", "Ⅻ", "½", "৪২"]
SPACES = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000", "\u2003", "\u200b",
          "\u2028", "\u0085", " \t \n"]
SPECIALS = [BOS, EOS, "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "｜DSML｜", "<｜Use", "<think",
            "</think >", "<｜DSML｜invoke name=\"f\">", "<tool_result>", "  <tool_result>\n", "<｜pad_r｜>", "xbrown fox",
            "brown fox"]  # the last four: added tokens of the bytelevel_regex variant (lstrip/rstrip/single_word)
PUNCT = ["...", "!!!", "?!", "--", "—", "“quoted”", "«ok»", "(a)", "[b]", "{c}", "@user", "#tag", "a.b.c",
         "'s", "’s", "%", "$5", "¥100", "→", "∑", "©", "、", "。", "！"]


def random_codepoint(rng):
    """A random character from blocks whose assignments predate Unicode 14 (PCRE2 10.42's tables;
    `tokenizers` bundles an Oniguruma with newer ones: characters assigned since can pre-tokenize
    differently, see include/dsv4/text/regex.hpp). Unassigned code points are as likely as any."""
    block = rng.choice([(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
                        (0x900, 0x97F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x20A0, 0x22FF),
                        (0x3000, 0x30FF), (0x4E00, 0x9FFB), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF),
                        (0x1F300, 0x1F64F), (0x10000, 0x1007F), (0xE000, 0xE00F)])
    return chr(rng.randint(*block))


def corpus_line(rng):
    parts = []
    for _ in range(rng.randint(1, 8)):
        kind = rng.randrange(12)
        if kind <= 2:
            parts.append(" ".join(rng.choice(ENGLISH) for _ in range(rng.randint(1, 12))))
        elif kind == 3:
            parts.append(rng.choice(CODE))
        elif kind == 4:
            parts.append("".join(rng.choice(rng.choice([CJK, KANA, HANGUL])) for _ in range(rng.randint(1, 20))))
        elif kind == 5:
            parts.append("".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4))))
        elif kind == 6:
            parts.append(rng.choice(COMBINING))
        elif kind == 7:
            run = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 20)))
            parts.append(rng.choice([run, run + "." + run[:2], "-" + run, rng.choice(DIGITS), run + "px"]))
        elif kind == 8:
            parts.append(rng.choice(SPACES) * rng.randint(1, 3))
        elif kind == 9:
            parts.append(rng.choice(SPECIALS))
        elif kind == 10:
            parts.append(rng.choice(PUNCT))
        else:
            parts.append("".join(random_codepoint(rng) for _ in range(rng.randint(1, 6))))
    glue = rng.choice(["", " ", " ", "\n"])
    return glue.join(parts)


def corpus(seed, n):
    rng = random.Random(seed)
    lines = [corpus_line(rng) for _ in range(n)]
    # fixed edge cases first
    return ["", " ", "  ", "\n", "a", "1234567", "<｜User｜>", "<｜User｜><｜Assistant｜>", "x<think>y</think>z",
            "  leading and trailing  ", "tab\tseparated\tvalues", "\r\n\r\n", "🇯🇵🇯🇵", "e\u0301\u0301",
            # long pieces (the heap path of the C++ BPE)
            CJK * 3, KANA * 20, " " * 500 + "x", "a" * 300, "the" * 120, "ab" * 99 + "\n" * 70, "😀" * 80] + lines


# ------------------------------------------------------------------------------------------------
# training with `tokenizers`, the V4-structure tokenizer and its variants
# ------------------------------------------------------------------------------------------------
def need_tokenizers():
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        raise SystemExit("make_tokenizer: the Python package `tokenizers` is missing; run scripts/setup.sh "
                         "(it installs it into .venv) and configure with that .venv's python")
    return tokenizers


def train(vocab_size, seed=7, lines=20000):
    tk = need_tokenizers()
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    tok = tk.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(p), behavior="isolated") for p in SPLIT_PATTERNS]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = [line.replace(BOS, "").replace(EOS, "") for line in corpus(seed, lines)]
    tok.train_from_iterator(text, trainer=trainer)
    trained = json.loads(tok.to_str())
    vocab, merges = trained["model"]["vocab"], trained["model"]["merges"]
    # the real vocab's layout: placeholders up to the chat tokens, which keep their V3.1 ids
    while len(vocab) < CHAT_TOKENS[0][1]:
        vocab[f"<｜place▁holder▁no▁{len(vocab)}｜>"] = len(vocab)
    for t, i in CHAT_TOKENS:
        vocab[t] = i
    while len(vocab) < FULL_VOCAB:
        vocab[f"<｜place▁holder▁no▁{len(vocab)}｜>"] = len(vocab)
    return official_structure(vocab, merges, [(BOS, 0), (EOS, 1), (PAD, 2)] + CHAT_TOKENS)


def load(tok_json):
    tk = need_tokenizers()
    tok = tk.Tokenizer.from_str(json.dumps(tok_json, ensure_ascii=False))
    for t in tok_json["added_tokens"]:
        if tok.token_to_id(t["content"]) != t["id"]:
            raise SystemExit(f"make_tokenizer: {t['content']} got id {tok.token_to_id(t['content'])}, not {t['id']}")
    return tok


def variants(base):
    """Copies of `base` with the other components the C++ reader supports, each checked id for id."""
    def copy():
        return json.loads(json.dumps(base))
    out = {}
    v = copy()  # NFC, individual digits, merged-with-previous, merges in "a b" form
    v["normalizer"] = {"type": "NFC"}
    v["pre_tokenizer"]["pretokenizers"] = [{"type": "Digits", "individual_digits": True},
                                           split("MergedWithPrevious", regex=SPLIT_PATTERNS[2]), byte_level()]
    v["model"]["merges"] = [" ".join(m) for m in v["model"]["merges"]]
    out["nfc_digits"] = v
    v = copy()  # GPT-2 style: ByteLevel with its own regex and prefix space; stripping added tokens
    v["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "NFC"}]}
    v["pre_tokenizer"] = byte_level(add_prefix_space=True, use_regex=True)
    v["model"]["ignore_merges"] = True
    n = len(v["model"]["vocab"])
    v["added_tokens"] += [added_token(n, "<tool_result>", special=False, lstrip=True, rstrip=True),
                          added_token(n + 1, "brown fox", special=False, single_word=True),
                          added_token(n + 2, "Hello", special=False, normalized=True),
                          added_token(n + 3, "<｜pad_r｜>", rstrip=True)]
    for t in v["added_tokens"][-4:]:
        v["model"]["vocab"][t["content"]] = t["id"]
    out["bytelevel_regex"] = v
    v = copy()  # every Split behaviour, inverted patterns, contiguous digits, a literal pattern
    v["pre_tokenizer"]["pretokenizers"] = [
        split("Removed", string="  "), split("MergedWithNext", regex="\\p{P}"),
        split("Contiguous", regex="[\\p{L}\\p{M}]+", invert=True), split("Isolated", regex="\\s", invert=True),
        {"type": "Digits", "individual_digits": False}, byte_level()]
    out["behaviors"] = v
    return out


def write_goldens(out_dir, n_lines):
    out = pathlib.Path(out_dir) / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    base = train(6000)
    write_dir(out / "v4", base, 1048576)
    lines = corpus(2024, n_lines)
    sets = [("goldens", base, lines)] + [(name, v, lines[:2000]) for name, v in variants(base).items()]
    for name, tok_json, text in sets:
        if name != "goldens":
            (out / f"{name}.json").write_text(json.dumps(tok_json, ensure_ascii=False) + "\n", encoding="utf-8")
        tok = load(tok_json)
        encodings = tok.encode_batch(text, add_special_tokens=False)
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for line, enc in zip(text, encodings):
                f.write(json.dumps({"text": line, "ids": enc.ids}, ensure_ascii=False) + "\n")
        print(f"make_tokenizer: {name}: {len(text)} lines, {sum(len(e.ids) for e in encodings)} ids")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", help="write a trained tokenizer.json (+ tokenizer_config.json) into DIR")
    mode.add_argument("--goldens", help="write the test tokenizers and their ids under DIR/tokenizer/")
    mode.add_argument("--toy", help="write the pure-Python toy tokenizer into DIR")
    mode.add_argument("--seeds", help="fuzz seeds: small tokenizer.json files (toy + variants) in DIR")
    ap.add_argument("--vocab-size", type=int, default=6000, help="BPE vocab (trained) or total vocab (--toy)")
    ap.add_argument("--lines", type=int, default=12000, help="golden corpus lines")
    args = ap.parse_args()
    if args.toy:
        write_dir(args.toy, toy_tokenizer(args.vocab_size), 4096)
    elif args.seeds:
        out = pathlib.Path(args.seeds)
        out.mkdir(parents=True, exist_ok=True)
        toy = toy_tokenizer(300)
        for name, tok_json in [("toy", toy)] + sorted(variants(toy).items()):
            (out / f"{name}.json").write_text(json.dumps(tok_json, ensure_ascii=False) + "\n", encoding="utf-8")
    elif args.out:
        tok_json = train(args.vocab_size)
        load(tok_json)
        write_dir(args.out, tok_json, 1048576)
    else:
        write_goldens(args.goldens, args.lines)


if __name__ == "__main__":
    sys.exit(main())
