#!/usr/bin/env bash
# Configures and builds mnemo into build/ (or $MNEMO_BUILD_DIR). Extra arguments go to
# the CMake configure step, e.g. tools/build.sh -DMNEMO_SANITIZE=ON.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${MNEMO_BUILD_DIR:-$ROOT/build}"

# nvcc is installed under /usr/local/cuda on these machines but is not always on PATH.
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1

cmake -S "$ROOT" -B "$BUILD" -G Ninja "$@"
cmake --build "$BUILD" -j "$(nproc)"
