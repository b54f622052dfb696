#!/usr/bin/env python3
"""Writes tests/data/tokenizer_goldens.json: token ids of test strings under the tokenizers
of the real test models, computed by implementations independent of mnemo's.

  stories260K (SentencePiece-style, GGUF `llama`): a SentencePiece ModelProto (BPE model,
    byte fallback, dummy prefix, identity normalization without whitespace collapsing --
    the settings llama2.c trained it with) is built from the GGUF's pieces, scores and
    types, and the `sentencepiece` library encodes.
  SmolLM2-135M-Instruct (byte-level BPE, GGUF `gpt2`, pre `smollm`): a Hugging Face
    `tokenizers` BPE is built from the GGUF's vocabulary and merges, with pre-tokenizer
    Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False,
    use_regex=True)] and a ByteLevel decoder, and `tokenizers` encodes.

Texts are stored hex-encoded so that invalid UTF-8 survives JSON. Neither library accepts
invalid UTF-8 (Python strings cannot hold it; SentencePiece would turn it into U+FFFD), so
for those texts the rule mnemo documents is applied around the library: the text is split
into maximal well-formed runs and single invalid bytes; each run is encoded by the library,
each invalid byte is its byte token (<0xNN> for SentencePiece, GPT-2's byte letter for BPE).
For SentencePiece the dummy prefix then belongs to the first run, so those runs are
encoded with a second ModelProto without the dummy prefix, after prepending " " to the text.
The script checks that this composition agrees with the direct encoding on every valid text.

Usage: pip install gguf tokenizers sentencepiece protobuf
       tools/make_tokenizer_goldens.py [--stories PATH] [--smollm2 PATH] [--out PATH]
"""

import argparse
import json
import os
import sys

import gguf
import sentencepiece
import tokenizers
from sentencepiece import sentencepiece_model_pb2 as sp_pb2
from tokenizers import decoders, models, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (label, text). str texts are UTF-8 encoded; bytes texts are used as they are.
CASES = [
    ("empty", ""),
    ("word", "Hello"),
    ("sentence", "Once upon a time, there was a little girl named Lily."),
    ("leading space", " Hello"),
    ("leading spaces", "   Hello world"),
    ("trailing space", "Hello "),
    ("trailing spaces", "Hello world   "),
    ("only spaces", "     "),
    ("single space", " "),
    ("multiple inner spaces", "a  b   c    d"),
    ("newline", "Hello\nworld"),
    ("three newlines", "\n\n\n"),
    ("newlines around", "\nHello\n\nworld\n"),
    ("crlf", "line one\r\nline two\r\n"),
    ("tabs", "\tindented\t\ttext\t"),
    ("space newline mix", "a \n b  \n\n  c"),
    ("digits", "123456789"),
    ("digits in text", "I have 3 apples and 42 pears, 1000000 in total."),
    ("decimal", "3.14"),
    ("numbers mixed", "pi=3.14159, e=2.71828; 1,234,567.89 and 0x1F"),
    ("year and time", "On 2024-05-17 at 12:30:45"),
    ("punctuation runs", "Wait... what?!?! (yes) [no] {maybe} --- *** ///"),
    ("quotes", "\"Hello,\" she said. 'Fine.'"),
    ("contractions", "don't can't won't I'm you're we've they'll he'd it's"),
    ("contractions upper", "I'LL DON'T WE'VE SHE'S THEY'RE"),
    ("code", "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n"),
    ("code c", "int main() { for (int i = 0; i < 10; ++i) printf(\"%d\\n\", i); }"),
    ("json", "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}"),
    ("url", "https://example.com/path?q=1&r=two#frag"),
    ("chinese", "你好，世界！今天天气很好。"),
    ("japanese", "こんにちは、世界。カタカナとひらがなと漢字。"),
    ("korean", "안녕하세요 세계"),
    ("arabic", "مرحبا بالعالم"),
    ("hindi", "नमस्ते दुनिया"),
    ("cyrillic", "Привет, мир! Съешь же ещё этих мягких французских булок."),
    ("greek", "Γειά σου Κόσμε, αβγδε ΑΒΓΔΕ"),
    ("hebrew", "שלום עולם"),
    ("thai", "สวัสดีชาวโลก"),
    ("accents", "café naïve résumé façade Ångström"),
    ("combining marks", "cafe\u0301 n\u0303 a\u0308\u0304 Z\u0351\u0352\u0353"),
    ("emoji", "I love 🦙 and 🚀!"),
    ("emoji zwj", "family: 👨\u200d👩\u200d👧\u200d👦 and 🧑\u200d💻"),
    ("emoji flags", "🇺🇸🇫🇷🇯🇵"),
    ("emoji skin tone", "👍🏽👋🏿"),
    ("emoji only", "😀😃😄😁"),
    ("math symbols", "∀x ∈ ℝ: x² ≥ 0 ⇒ √(x²) = |x|"),
    ("currency", "$5 €10 £3 ¥100 ₹50"),
    ("fullwidth", "ＡＢＣ１２３"),
    ("rare whitespace", "a\u00a0b\u3000c\u2009d\u2028e\u0085f\x0bg\x0ch"),
    ("zero width", "zero\u200bwidth\ufeffbom"),
    ("ascii controls", "bell\x07 esc\x1b del\x7f nul\x00 end"),
    ("unrepresentable bytes", "eot\x04ack\x06dc3\x13"),
    ("lone space mark", "\u2581 literal block"),
    ("special token text", "<|im_start|>user\nHello<|im_end|>\n"),
    ("sentencepiece control text", "<s>hello</s> <unk>"),
    ("byte token text", "<0x41> <0xFF>"),
    ("long word", "Supercalifragilisticexpialidocious antidisestablishmentarianism"),
    ("repeated chars", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ("repeated spaces long", "x" + " " * 40 + "y"),
    ("story", "One day, Lily went to the park with her mom. She saw a big, red ball. "
              "\"Can I play with it?\" she asked. Her mom said, \"Yes, you can!\""),
    ("invalid lone continuation", b"abc\x80def"),
    ("invalid lead byte", b"\xffhello\xfe"),
    ("invalid truncated", b"truncated \xe4\xbd"),
    ("invalid overlong", b"over\xc0\xafslash"),
    ("invalid surrogate", b"sur\xed\xa0\x80rogate"),
    ("invalid mixed", b"\xe4\xbd\xa0\xe5\xa5 ok \xf0\x9f\xa6 \x99 end\xc3"),
    ("invalid only", b"\x80\x81\xfe\xff"),
    ("invalid start", b"\x9fstart"),
]


def random_cases(count=40, seed=1234):
    """Seeded random texts over many scripts, whitespace kinds, digits and emoji."""
    import random
    rng = random.Random(seed)
    ranges = [(0x61, 0x7A), (0x41, 0x5A), (0x30, 0x39), (0x20, 0x2F), (0x3A, 0x40), (0xA0, 0xFF),
              (0x100, 0x17F), (0x300, 0x36F), (0x391, 0x3C9), (0x410, 0x44F), (0x5D0, 0x5EA),
              (0x627, 0x64A), (0x660, 0x669), (0x905, 0x939), (0xE01, 0xE30), (0x2000, 0x206F),
              (0x3000, 0x303F), (0x3041, 0x3096), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
              (0xFF01, 0xFF5E), (0x1F300, 0x1F64F), (0x1F1E6, 0x1F1FF), (0x1F900, 0x1F9FF)]
    pieces = [" ", "  ", "\n", "\n\n", "\t", "\r\n", "\u200d", "'s", "'LL", "123", "3.14", "\u0085"]
    cases = []
    for i in range(count):
        out = []
        for _ in range(rng.randint(1, 60)):
            if rng.random() < 0.2:
                out.append(rng.choice(pieces))
            else:
                lo, hi = rng.choice(ranges)
                out.append(chr(rng.randint(lo, hi)))
        cases.append(("random %d" % i, "".join(out)))
    return cases


CASES += random_cases()


def split_runs(data: bytes):
    """Maximal valid UTF-8 runs (str) and single invalid bytes (int), in order."""
    out = []
    i = 0
    run_start = 0
    n = len(data)
    while i < n:
        length = utf8_len(data, i)
        if length > 0:
            i += length
            continue
        if i > run_start:
            out.append(data[run_start:i].decode("utf-8"))
        out.append(data[i])
        i += 1
        run_start = i
    if n > run_start:
        out.append(data[run_start:].decode("utf-8"))
    return out


def utf8_len(data: bytes, i: int) -> int:
    """Length of the well-formed UTF-8 sequence at data[i], or 0 (Unicode Table 3-7)."""
    b0 = data[i]
    if b0 < 0x80:
        return 1
    if 0xC2 <= b0 <= 0xDF:
        need, lo, hi = 2, 0x80, 0xBF
    elif 0xE0 <= b0 <= 0xEF:
        need, lo, hi = 3, (0xA0 if b0 == 0xE0 else 0x80), (0x9F if b0 == 0xED else 0xBF)
    elif 0xF0 <= b0 <= 0xF4:
        need, lo, hi = 4, (0x90 if b0 == 0xF0 else 0x80), (0x8F if b0 == 0xF4 else 0xBF)
    else:
        return 0
    for k in range(1, need):
        if i + k >= len(data):
            return 0
        b = data[i + k]
        if not ((lo if k == 1 else 0x80) <= b <= (hi if k == 1 else 0xBF)):
            return 0
    return need


def read_gguf(path):
    r = gguf.GGUFReader(path)

    def strings(key):
        f = r.fields.get(key)
        return None if f is None else [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def numbers(key):
        f = r.fields.get(key)
        return None if f is None else [f.parts[i][0].item() for i in f.data]

    def scalar(key):
        f = r.fields.get(key)
        return None if f is None else f.parts[f.data[0]][0].item()

    return {
        "tokens": strings("tokenizer.ggml.tokens"),
        "scores": numbers("tokenizer.ggml.scores"),
        "types": numbers("tokenizer.ggml.token_type"),
        "merges": strings("tokenizer.ggml.merges"),
        "bos": scalar("tokenizer.ggml.bos_token_id"),
        "unk": scalar("tokenizer.ggml.unknown_token_id"),
        "add_bos": scalar("tokenizer.ggml.add_bos_token"),
    }


def sentencepiece_processor(g, dummy_prefix):
    m = sp_pb2.ModelProto()
    for text, score, typ in zip(g["tokens"], g["scores"], g["types"]):
        p = m.pieces.add()
        p.piece = text
        p.score = score
        p.type = typ  # GGUF token types are SentencePiece's piece types
    m.trainer_spec.model_type = sp_pb2.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id = g["unk"]
    m.trainer_spec.bos_id = g["bos"]
    m.trainer_spec.eos_id = 2
    m.trainer_spec.pad_id = -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = dummy_prefix
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    sp = sentencepiece.SentencePieceProcessor()
    sp.LoadFromSerializedProto(m.SerializeToString())
    return sp


def stories_cases(path):
    g = read_gguf(path)
    sp = sentencepiece_processor(g, dummy_prefix=True)
    sp_bare = sentencepiece_processor(g, dummy_prefix=False)
    byte_id = {b: sp.piece_to_id("<0x%02X>" % b) for b in range(256)}

    def composed(data: bytes):
        if not data:
            return []
        ids = []
        for part in split_runs(b" " + data):
            ids += [byte_id[part]] if isinstance(part, int) else sp_bare.encode(part)
        return ids

    cases = []
    for label, text in CASES:
        data = text.encode("utf-8") if isinstance(text, str) else text
        case = {"label": label, "text_hex": data.hex()}
        if isinstance(text, str):
            case["ids"] = sp.encode(text)
            assert case["ids"] == composed(data), (label, case["ids"], composed(data))
            case["decoded_hex"] = sp.decode(case["ids"]).encode("utf-8").hex()
        else:
            case["ids"] = composed(data)
        cases.append(case)
    return {
        "name": "stories260K",
        "model": "stories",
        "implementation": "sentencepiece %s (BPE ModelProto from the GGUF)" % sentencepiece.__version__,
        "add_bos_default": True,  # not stored in the GGUF: SentencePiece's default
        "bos": g["bos"],
        "cases": cases,
    }


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def smollm2_cases(path):
    g = read_gguf(path)
    vocab = {t: i for i, t in enumerate(g["tokens"])}
    merges = [tuple(m.split(" ")) for m in g["merges"]]
    unk = g["tokens"][g["unk"]]
    tk = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=False))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    letters = bytes_to_unicode()

    def encode(s):
        return tk.encode(s, add_special_tokens=False).ids if s else []

    def composed(data: bytes):
        ids = []
        for part in split_runs(data):
            ids += [vocab.get(letters[part], g["unk"])] if isinstance(part, int) else encode(part)
        return ids

    cases = []
    for label, text in CASES:
        data = text.encode("utf-8") if isinstance(text, str) else text
        case = {"label": label, "text_hex": data.hex()}
        if isinstance(text, str):
            case["ids"] = encode(text)
            assert case["ids"] == composed(data), label
            if g["unk"] not in case["ids"]:
                case["decoded_hex"] = tk.decode(case["ids"]).encode("utf-8").hex()
        else:
            case["ids"] = composed(data)
        cases.append(case)
    return {
        "name": "SmolLM2-135M-Instruct",
        "model": "smollm2",
        "implementation": "tokenizers %s (BPE from the GGUF's vocabulary and merges; "
                          "Digits(individual) + ByteLevel pre-tokenizer)" % tokenizers.__version__,
        "add_bos_default": bool(g["add_bos"]),
        "bos": g["bos"],
        "cases": cases,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stories", default=os.path.join(ROOT, "..", "shared", "models",
                                                      "stories260K.gguf"))
    ap.add_argument("--smollm2", default=os.path.join(ROOT, "models",
                                                      "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data",
                                                  "tokenizer_goldens.json"))
    args = ap.parse_args()
    doc = {
        "comment": "Generated by tools/make_tokenizer_goldens.py; do not edit. Ids are the bare "
                   "encoding (no BOS/EOS, special-token text not parsed).",
        "models": [stories_cases(args.stories), smollm2_cases(args.smollm2)],
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=True)
        f.write("\n")
    for m in doc["models"]:
        print("%s: %d cases" % (m["name"], len(m["cases"])), file=sys.stderr)


if __name__ == "__main__":
    main()
