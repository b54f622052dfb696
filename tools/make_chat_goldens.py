#!/usr/bin/env python3
"""Renders the chat templates in tests/data/chat_templates/*.jinja with Python jinja2, the way
Hugging Face transformers' apply_chat_template does, over a fixed set of conversations, and
writes tests/data/chat_goldens.json. tests/engine/model/chat_template_test.cc checks that
mnemo's C++ renderers produce the same bytes (or fail where the template raises).

Usage: python3 tools/make_chat_goldens.py [--check]
  --check: exit 1 if the stored goldens differ from a fresh rendering (nothing is written).

The environment mirrors transformers (ImmutableSandboxedEnvironment, trim_blocks,
lstrip_blocks, loopcontrols, raise_exception, bos_token/eos_token). strftime_now is pinned to
PINNED_DATE so that templates reading the clock (Llama 3.2) render reproducibly; the golden
file records the pinned date for the C++ test.
"""

import argparse
import json
import os
import sys

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE_DIR = os.path.join(ROOT, "tests", "data", "chat_templates")
OUT = os.path.join(ROOT, "tests", "data", "chat_goldens.json")

PINNED_DATE = "02 Jan 2025"

# name -> (family mnemo must detect, bos_token, eos_token). Special-token texts are those of
# the published tokenizer configs ("" where the model has none).
TEMPLATES = {
    # HuggingFaceTB/SmolLM2-135M-Instruct, byte for byte from the GGUF in models/.
    "smollm2": ("chatml", "<|im_start|>", "<|im_end|>"),
    # Qwen/Qwen2-7B-Instruct (injects a default system prompt).
    "qwen2": ("chatml", "", "<|im_end|>"),
    # Qwen/Qwen2.5-7B-Instruct (tools branch; default system prompt in an else-branch).
    "qwen2_5": ("chatml", "", "<|im_end|>"),
    # teknium/OpenHermes-2.5-Mistral-7B; stored with Jinja "\n" escapes instead of raw
    # newlines inside string literals, to exercise both spellings.
    "chatml": ("chatml", "<s>", "<|im_end|>"),
    "llama3": ("llama3", "<|begin_of_text|>", "<|eot_id|>"),
    "llama3_1": ("llama3.1", "<|begin_of_text|>", "<|eot_id|>"),
    "llama3_2": ("llama3.1", "<|begin_of_text|>", "<|eot_id|>"),
    "llama2": ("llama2", "<s>", "</s>"),
    # mistralai/Mistral-7B-Instruct-v0.1 (original: "</s> " after each answer).
    "mistral_v0_1": ("mistral", "<s>", "</s>"),
    # mistralai/Mistral-7B-Instruct-v0.2 and Mixtral-8x7B-Instruct-v0.1 (original).
    "mistral_v0_2": ("mistral", "<s>", "</s>"),
    # Mistral-7B-Instruct-v0.1/v0.2 as updated in 2024: optional system in the first turn.
    "mistral_v0_1_system": ("mistral-system-first", "<s>", "</s>"),
    # mistralai/Mistral-7B-Instruct-v0.3: system prompt in the last user turn.
    "mistral_v0_3": ("mistral-v3", "<s>", "</s>"),
    # google/gemma-7b-it and gemma-2-*-it (same template).
    "gemma": ("gemma", "<bos>", "<eos>"),
    "gemma3": ("gemma3", "<bos>", "<eos>"),
    # HuggingFaceH4/zephyr-7b-beta (also TinyLlama-Chat).
    "zephyr": ("zephyr", "<s>", "</s>"),
    "phi3": ("phi3", "<s>", "<|endoftext|>"),
    "phi3_5": ("phi3", "<s>", "<|endoftext|>"),
}


def S(c):
    return {"role": "system", "content": c}


def U(c):
    return {"role": "user", "content": c}


def A(c):
    return {"role": "assistant", "content": c}


CONVERSATIONS = {
    "user": [U("Hello!")],
    "system_user": [S("You are terse."), U("Hi there")],
    "multi_turn": [U("What is 2+2?"), A("4"), U("And 3+3?"), A("6"), U("Thanks")],
    "system_multi_turn": [S("Answer in French."), U("Hello"), A("Bonjour"), U("How are you?")],
    "ends_with_assistant": [U("Ping"), A("Pong")],
    "system_ends_with_assistant": [S("Be brief."), U("Ping"), A("Pong")],
    "unicode": [
        S("Réponds en français 🙂"),
        U("日本語で答えて: 你好, мир, 👩‍👩‍👧, e\u0301"),
        A("こんにちは 🌸"),
        U("Ça va? ✓"),
    ],
    "whitespace": [
        S("  padded system \n"),
        U("\n  leading and trailing  \t\n"),
        A("  answer with spaces  "),
        U("\u3000ideographic\u00a0space\u00a0\u2029"),
        A("\x1c zero width stays\u200b"),
        U("\r\nwindows\r\n"),
    ],
    "empty_content": [U(""), A(""), U(" ")],
    "template_syntax": [
        U("{{ bos_token }} {% if x %}raw{% endif %} [INST] <|im_end|> <<SYS>>"),
        A("'single' \"double\" \\ backslash \\n"),
        U("</s><eos>"),
    ],
    "duplicate_user": [S("S"), U("same"), A("A"), U("same")],
    "system_only": [S("Only a system prompt.")],
    # Conversations some templates reject (raise_exception): the C++ renderer must fail too.
    "two_users": [U("one"), U("two")],
    "assistant_first": [A("I start"), U("ok")],
    "system_not_first": [U("Hi"), A("Hello"), S("Late system"), U("Again")],
    "system_second_user": [U("Hi"), S("Late system")],
}


def make_env():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def strftime_now(fmt):
        assert fmt == "%d %b %Y", fmt
        return PINNED_DATE

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render_all():
    env = make_env()
    on_disk = sorted(f[:-len(".jinja")] for f in os.listdir(TEMPLATE_DIR) if f.endswith(".jinja"))
    if on_disk != sorted(TEMPLATES):
        sys.exit(f"templates on disk {on_disk} != TEMPLATES {sorted(TEMPLATES)}")
    out = {"pinned_date": PINNED_DATE, "conversations": CONVERSATIONS, "templates": []}
    for name in sorted(TEMPLATES):
        family, bos, eos = TEMPLATES[name]
        with open(os.path.join(TEMPLATE_DIR, name + ".jinja"), encoding="utf-8") as f:
            source = f.read()
        template = env.from_string(source)
        cases = []
        for conv_name in CONVERSATIONS:
            for gen in (False, True):
                case = {"conversation": conv_name, "add_generation_prompt": gen}
                try:
                    case["output"] = template.render(
                        messages=CONVERSATIONS[conv_name], add_generation_prompt=gen,
                        bos_token=bos, eos_token=eos, unk_token="<unk>", pad_token="")
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
        out["templates"].append(
            {"name": name, "family": family, "bos": bos, "eos": eos, "cases": cases})
    return json.dumps(out, ensure_ascii=False, indent=1) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    text = render_all()
    if args.check:
        with open(OUT, encoding="utf-8") as f:
            if f.read() != text:
                sys.exit(f"{OUT} is stale: run tools/make_chat_goldens.py")
        return
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
