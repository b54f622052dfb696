#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: installs dependencies, builds, fetches the
# real model, shows what mnemo reads from it, generates, and holds a three-turn stateful chat.
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
