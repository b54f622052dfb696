#!/usr/bin/env python3
"""End to end: the official `openai` Python package and curl against `mnemo serve`.

Starts `mnemo serve MODEL --port 0` on loopback (the real SmolLM2 model in CI), then checks
with the OpenAI client: chat completions (plain and streamed, with usage), completions, a
Responses chain of five turns through previous_response_id and a fork from its second turn
(each greedy reply equal to the full-history chat completion's), usage fields, an error; and
with curl the session API. Finally SIGTERM: the server drains and exits 0.

usage: openai_client_test.py MNEMO_BINARY MODEL   (run by ctest; python from .cache/venv)
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading

import openai
from openai import OpenAI

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}", flush=True)
    else:
        print(f"ok: {what}", flush=True)


def start_server(binary, model, state_dir):
    proc = subprocess.Popen(
        [binary, "serve", model, "--port", "0", "--threads", "2", "--state-dir", state_dir,
         "--model-name", "smollm2"],
        stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
        if m:
            # Keep reading the server's log so that it never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, int(m.group(1))
    raise SystemExit(f"mnemo serve did not start (exit {proc.wait()})")


def main():
    binary, model = sys.argv[1], sys.argv[2]
    state_dir = tempfile.mkdtemp(prefix="mnemo-openai-")
    proc, port = start_server(binary, model, state_dir)
    base = f"http://127.0.0.1:{port}"
    client = OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=300)
    greedy = dict(model="smollm2", temperature=0, max_tokens=12)
    try:
        models = client.models.list()
        check([m.id for m in models.data] == ["smollm2"], "models.list names the model")

        msgs = [{"role": "user", "content": "What is the capital of France?"}]
        plain = client.chat.completions.create(messages=msgs, **greedy)
        text = plain.choices[0].message.content
        check(isinstance(text, str) and len(text) > 0, "chat completion has text")
        check(plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens,
              "chat usage adds up")
        again = client.chat.completions.create(messages=msgs, **greedy)
        check(again.choices[0].message.content == text, "greedy chat is deterministic")
        check(again.usage.prompt_tokens_details.cached_tokens > 0,
              "a repeated prompt reuses cached prefix blocks")

        stream = client.chat.completions.create(messages=msgs, stream=True,
                                                stream_options={"include_usage": True}, **greedy)
        parts, usage = [], None
        for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            if chunk.usage is not None:
                usage = chunk.usage
        check("".join(parts) == text, "streamed chat equals the plain reply")
        check(usage is not None and usage.completion_tokens == plain.usage.completion_tokens,
              "the stream's usage chunk")

        comp = client.completions.create(model="smollm2", prompt="Once upon a time",
                                         temperature=0, max_tokens=10)
        check(len(comp.choices[0].text) > 0 and comp.usage.completion_tokens > 0,
              "completions answer")

        # A Responses chain of five turns; each greedy reply equals the full-history chat
        # completion's.
        questions = ["Name a color.", "Name a fruit of that color.", "How does it taste?",
                     "Where does it grow?", "Say goodbye."]
        history, chain, prev = [], [], None
        for i, q in enumerate(questions):
            r = client.responses.create(model="smollm2", input=q, previous_response_id=prev,
                                        temperature=0, max_output_tokens=12)
            history.append({"role": "user", "content": q})
            full = client.chat.completions.create(messages=history, **greedy)
            check(r.output_text == full.choices[0].message.content,
                  f"responses turn {i + 1} equals the full-history chat completion")
            if i > 0:
                check(r.usage.input_tokens_details.cached_tokens > 0,
                      f"responses turn {i + 1} reuses the session's KV")
            history.append({"role": "assistant", "content": r.output_text})
            chain.append(r)
            prev = r.id
        # Fork from the second response.
        fork = client.responses.create(model="smollm2", input="Name another one.",
                                       previous_response_id=chain[1].id, temperature=0,
                                       max_output_tokens=12)
        fork_history = history[:4] + [{"role": "user", "content": "Name another one."}]
        full = client.chat.completions.create(messages=fork_history, **greedy)
        check(fork.output_text == full.choices[0].message.content,
              "a fork from turn 2 equals the full-history chat completion")
        got = client.responses.retrieve(chain[4].id)
        check(got.output_text == chain[4].output_text, "responses.retrieve")

        try:
            client.chat.completions.create(messages=msgs, model="smollm2", temperature=7)
            check(False, "temperature 7 is refused")
        except openai.BadRequestError as e:
            check("temperature" in str(e), "temperature 7 is a 400 naming the field")

        # The session API with curl.
        def curl(method, path, body=None):
            cmd = ["curl", "-s", "-X", method, base + path, "-H", "Content-Type: application/json"]
            if body is not None:
                cmd += ["-d", json.dumps(body)]
            return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)

        s = curl("POST", "/v1/sessions", {"system_prompt": "You are brief."})
        sid = s.get("id", "")
        check(sid.startswith("sess_"), "curl: create a session")
        t1 = curl("POST", f"/v1/sessions/{sid}/messages",
                  {"messages": [{"role": "user", "content": "Hi!"}], "temperature": 0,
                   "max_tokens": 8})
        check(t1.get("choices", [{}])[0].get("message", {}).get("content", "") != "",
              "curl: a session turn")
        t2 = curl("POST", f"/v1/sessions/{sid}/messages",
                  {"messages": [{"role": "user", "content": "And?"}], "temperature": 0,
                   "max_tokens": 8})
        check(t2.get("usage", {}).get("prompt_tokens_details", {}).get("cached_tokens", 0) > 0,
              "curl: the second turn reuses the session")
        info = curl("GET", f"/v1/sessions/{sid}")
        check(info.get("turns", 0) >= 2, "curl: session info counts the turns")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    check(code == 0, f"SIGTERM drains and exits 0 (got {code})")
    if FAILURES:
        print(f"{len(FAILURES)} failures", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
