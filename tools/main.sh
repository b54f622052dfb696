#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs dependencies, builds, fetches the
# real model, shows what mnemo reads from it, generates, holds a three-turn stateful chat,
# then serves the model over HTTP on loopback until Ctrl-C (SIGINT drains and stops).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash tools/setup.sh
bash tools/build.sh
bash tools/fetch-model.sh
BUILD="${MNEMO_BUILD_DIR:-$ROOT/build}"
"$BUILD/mnemo" inspect models/SmolLM2-135M-Instruct.Q4_1.gguf
echo
echo "== mnemo generate (greedy, chat template) =="
"$BUILD/mnemo" generate models/SmolLM2-135M-Instruct.Q4_1.gguf --chat --temperature 0 \
  --max-tokens 64 --prompt "What is the capital of France? Answer in one sentence."
echo
echo "== mnemo chat: three turns on one session (each turn computes only its new tokens) =="
printf '%s\n' "What is the capital of France?" "And of Italy?" "And of Spain?" |
  "$BUILD/mnemo" chat models/SmolLM2-135M-Instruct.Q4_1.gguf --temperature 0 --max-tokens 48
echo
echo "== mnemo serve: the OpenAI and session APIs on http://127.0.0.1:8080 (Ctrl-C drains and stops) =="
echo "   curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\"
echo "     -d '{\"model\": \"smollm2\", \"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}'"
echo "   (README.md, \"Serving\", has the openai client and session API examples)"
exec "$BUILD/mnemo" serve models/SmolLM2-135M-Instruct.Q4_1.gguf --model-name smollm2 \
  --state-dir "$ROOT/.cache/state" --port "${MNEMO_PORT:-8080}"
