#!/usr/bin/env python3
"""Writes tests/data/pretokenizer_goldens.json: how Hugging Face `tokenizers` splits test
strings under each byte-level BPE pre-tokenizer family mnemo supports, built exactly as the
published tokenizer.json files define them:

  gpt2    ByteLevel(add_prefix_space=False, use_regex=True)              (GPT-2)
  llama3  Sequence[Split(Regex(LLAMA3), "isolated"),                      (Meta-Llama-3-8B)
                   ByteLevel(add_prefix_space=False, use_regex=False)]
  qwen2   Sequence[Split(Regex(QWEN2), "isolated"),                       (Qwen2-7B)
                   ByteLevel(add_prefix_space=False, use_regex=False)]
  smollm  Sequence[Digits(individual_digits=True),                        (SmolLM2)
                   ByteLevel(add_prefix_space=False, use_regex=True)]

Only the pre-tokenizers are compared: normalizers (Qwen2's NFC) are not part of them.
`tokenizers` returns pieces spelled in GPT-2's byte letters; they are mapped back to raw
bytes so that they compare to mnemo's PreTokenizer::Split, which returns views into the
original text. Texts and pieces are stored hex-encoded UTF-8. All texts are well-formed
UTF-8 (the pre-tokenizer's precondition; invalid bytes are split off before it).

Usage: pip install tokenizers
       tools/make_pretokenizer_goldens.py [--out PATH]
"""

import argparse
import json
import os
import random
import sys

import tokenizers
from tokenizers import Regex, pre_tokenizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The Split patterns of the published tokenizer.json files (llama.cpp's convert_hf_to_gguf
# maps these to tokenizer.ggml.pre "llama-bpe" and "qwen2").
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                  r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def families():
    """family name -> (description, pre-tokenizer)."""
    return {
        "gpt2": ("ByteLevel(add_prefix_space=False, use_regex=True)",
                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)),
        "llama3": ("Sequence[Split(Regex(Llama 3), isolated), ByteLevel(use_regex=False)]",
                   pre_tokenizers.Sequence([
                       pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated",
                                            invert=False),
                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                   ])),
        "qwen2": ("Sequence[Split(Regex(Qwen2), isolated), ByteLevel(use_regex=False)]",
                  pre_tokenizers.Sequence([
                      pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated",
                                           invert=False),
                      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                  ])),
        "smollm": ("Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)]",
                   pre_tokenizers.Sequence([
                       pre_tokenizers.Digits(individual_digits=True),
                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
                   ])),
    }


# (label, text).
CASES = [
    ("word", "Hello"),
    ("sentence", "Once upon a time, there was a little girl named Lily."),
    ("leading space", " Hello"),
    ("leading spaces", "   Hello world"),
    ("trailing spaces", "Hello world   "),
    ("only spaces", "     "),
    ("single space", " "),
    ("inner space runs", "a  b   c    d"),
    ("newline", "Hello\nworld"),
    ("newline runs", "\n\n\n"),
    ("newlines around", "\nHello\n\nworld\n"),
    ("crlf", "line one\r\nline two\r\n"),
    ("lone cr", "a\rb\r\rc"),
    ("tabs", "\tindented\t\ttext\t"),
    ("space newline mix", "a \n b  \n\n  c"),
    ("spaces before newline", "end   \n  \n\tnext"),
    ("tab newline space", "x\t \n \t\ny"),
    ("digits 1", "7"),
    ("digits 2", "42"),
    ("digits 3", "123"),
    ("digits 4", "2024"),
    ("digits 5", "12345"),
    ("digits 6", "123456"),
    ("digits 7", "1234567"),
    ("digits in text", "I have 3 apples and 42 pears, 1000000 in total."),
    ("space digits", " 1  22   333"),
    ("letters digits", "abc123def4567g"),
    ("decimal", "3.14"),
    ("decimals", "pi=3.14159, e=2.71828; 1,234,567.89 and 0x1F -0.5"),
    ("date time", "On 2024-05-17 at 12:30:45"),
    ("other numerals", "x\u00b2 \u00bd \u2167 \u0661\u0662\u0663\u0664 \u0967\u0968 \uff11\uff12"),
    ("contractions", "don't can't won't I'm you're we've they'll he'd it's"),
    ("contractions upper", "I'LL DON'T WE'VE SHE'S THEY'RE HE'D I'M"),
    ("contractions mixed case", "it'S we'Ve they'lL"),
    ("apostrophe alone", "' 's '' 'x 'sx rock'n'roll"),
    ("apostrophe spaced", "John 's book and Mary' s"),
    ("curly apostrophe", "don\u2019t it\u2019s"),
    ("punctuation runs", "Wait... what?!?! (yes) [no] {maybe} --- *** ///"),
    ("punctuation newline", "end.\n\nNext!!\n(a)\r\n"),
    ("space punctuation", "a ,b  .c   !d"),
    ("quotes", "\"Hello,\" she said. 'Fine.'"),
    ("code python", "def f(x):\n    return x ** 2  # square\n\nprint(f(3))\n"),
    ("code c", "int main() { for (int i = 0; i < 10; ++i) printf(\"%d\\n\", i); }"),
    ("code indent", "if x:\n\tif y:\n\t\treturn [1,2,3]\n        pass"),
    ("json", "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\"}}"),
    ("url", "https://example.com/path?q=1&r=two#frag"),
    ("markdown", "## Title\n\n- item **bold** _it_\n```\ncode\n```"),
    ("chinese", "你好，世界！今天天气很好。"),
    ("japanese", "こんにちは、世界。カタカナとひらがなと漢字。"),
    ("korean", "안녕하세요 세계"),
    ("arabic", "مرحبا بالعالم، كيف حالك؟ ١٢٣"),
    ("hindi", "नमस्ते दुनिया। हिन्दी १२३"),
    ("cyrillic", "Привет, мир! Съешь же ещё этих мягких французских булок."),
    ("greek", "Γειά σου Κόσμε, αβγδε ΑΒΓΔΕ"),
    ("hebrew", "שלום עולם"),
    ("thai", "สวัสดีชาวโลก"),
    ("accents", "café naïve résumé façade Ångström"),
    ("combining marks", "cafe\u0301 n\u0303 a\u0308\u0304 Z\u0351\u0352\u0353"),
    ("combining after space", "a \u0301b \u0308\u0308c"),
    ("combining after digit", "1\u0301 2\u20e3"),
    ("emoji", "I love 🦙 and 🚀!"),
    ("emoji zwj", "family: 👨\u200d👩\u200d👧\u200d👦 and 🧑\u200d💻"),
    ("emoji flags", "🇺🇸🇫🇷🇯🇵"),
    ("emoji skin tone", "👍🏽👋🏿"),
    ("emoji only", "😀😃😄😁"),
    ("emoji keycap", "1\ufe0f\u20e3 #\ufe0f\u20e3"),
    ("math symbols", "∀x ∈ ℝ: x² ≥ 0 ⇒ √(x²) = |x|"),
    ("currency", "$5 €10 £3 ¥100 ₹50"),
    ("fullwidth", "ＡＢＣ１２３！？"),
    ("next line", "a\u0085b\u0085\u0085c \u0085 d\u0085"),
    ("no-break space", "a\u00a0b\u00a0\u00a0c \u00a0d"),
    ("ideographic space", "日本\u3000語\u3000\u3000です"),
    ("unicode spaces", "a\u2000b\u2009c\u202fd\u205fe\u1680f"),
    ("line separators", "a\u2028b\u2029c\x0bd\x0ce\x1cf"),
    ("space then nbsp word", " \u00a0word \u3000word"),
    ("newline then nel", "x\n\u0085y\u0085\nz"),
    ("zero width", "zero\u200bwidth\ufeffbom\u200cnj"),
    ("ascii controls", "bell\x07 esc\x1b del\x7f nul\x00 end"),
    ("special token text", "<|im_start|>user\nHello<|im_end|>\n"),
    ("long word", "Supercalifragilisticexpialidocious antidisestablishmentarianism"),
    ("repeated spaces long", "x" + " " * 40 + "y"),
    ("long digits", "3141592653589793238462643383279"),
    ("empty", ""),
    ("long whitespace run", "start" + " " * 1000 + "\n" * 100 + "end " + "\t" * 200),
    ("long letter run", "a" * 1000 + " b"),
    ("case folding contractions", "it'\u017fx he'\u212aLL she'\u0130s x'S'\u017f"),
    ("letter kinds", "\u01c5ab \u02b0x \u3005\u3006 \u1e9e\u00df"),
    ("not white space", "a\u180eb\u200bc\u2060d\ufeffe\x1df\x1eg\x1fh"),
    # Each candidate between a space and a symbol: a space joins a following symbol run,
    # while white space splits off.
    ("white space or not", "x \u0085! x \u00a0! x \u3000! x \u2028! x \u1680! x \u180e! "
                           "x \u200b! x \u2060! x \ufeff! x \x1c! x \x1f! x \x0b! x \x0c!"),
    ("white space runs before symbols", "a\u0085\u0085!b \u00a0\u00a0?c\u3000 \u3000#"),
    ("unassigned and private", "a\ue000b \U0010fffd \ufffd\uffff \U000e0001x"),
    ("astral letters digits", "\U0001d400\U0001d401 \U0001d7ce\U0001d7cf \U00020000"),
]

# Fragments the random texts are built from: the tricky categories above.
FRAGMENTS = [" ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "\r", "\u0085", "\u00a0", "\u3000",
             "\u2009", "'s", "'S", "'ll", "'LL", "'t", "'Re", "'", "1", "12", "123", "1234",
             "12345", "1234567", "3.14", "0.5", ",", ".", "...", "!?", "()", "{}", "==", "->",
             "#", "\"", "\u0301", "\u0308", "\u200d", "\ufe0f", "\u20e3", "🦙", "👨", "🚀",
             "🏽", "🇺", "🇸", "你好", "世界", "مرحبا", "١٢", "नमस्ते", "१", "Привет", "мир",
             "Hello", "world", "THE", "x", "²", "½", "Ⅷ", "ＡＢ", "１"]


def random_cases(count=40, seed=20240517):
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(2, 30)))
        cases.append(("random %d" % i, text))
    return cases


def byte_letters_inverse():
    """GPT-2's byte letters (code point -> byte)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data",
                                                  "pretokenizer_goldens.json"))
    args = ap.parse_args()
    to_byte = byte_letters_inverse()
    cases = CASES + random_cases()
    labels = [label for label, _ in cases]
    assert len(set(labels)) == len(labels), "duplicate labels"
    doc = {
        "comment": "Generated by tools/make_pretokenizer_goldens.py; do not edit. Texts and "
                   "pieces are hex-encoded UTF-8; pieces are raw bytes (GPT-2 byte letters "
                   "mapped back).",
        "implementation": "tokenizers %s" % tokenizers.__version__,
        "families": [],
    }
    for name, (description, pre) in families().items():
        out = []
        for label, text in cases:
            pieces = [bytes(to_byte[c] for c in piece).hex()
                      for piece, _ in pre.pre_tokenize_str(text)]
            joined = b"".join(bytes.fromhex(p) for p in pieces)
            assert joined == text.encode("utf-8"), (name, label)
            out.append({"label": label, "text_hex": text.encode("utf-8").hex(), "pieces": pieces})
        doc["families"].append({"family": name, "pre_tokenizer": description, "cases": out})
        print("%s: %d cases" % (name, len(out)), file=sys.stderr)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=True)
        f.write("\n")


if __name__ == "__main__":
    main()
