#!/usr/bin/env bash
# Fails (listing the files) when a tracked C++/CUDA source is not clang-formatted
# (.clang-format: Google style, 100 columns). Fix with: clang-format -i FILE...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v clang-format >/dev/null || { echo "check-format: clang-format missing (tools/setup.sh)" >&2; exit 1; }
bad=()
while IFS= read -r f; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then bad+=("$f"); fi
done < <(git ls-files '*.cc' '*.h' '*.cu' '*.cuh')
if ((${#bad[@]})); then
  echo "check-format: not clang-formatted: ${bad[*]}" >&2
  exit 1
fi
echo "check-format: ok"
