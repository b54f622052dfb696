#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs dependencies, fetches the
# real models, builds with warnings as errors (CUDA sources too when nvcc is present) and
# runs every test. Long fuzz runs are separate: tools/fuzz.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash tools/setup.sh
bash tools/check-format.sh
bash tools/fetch-model.sh
bash tools/build.sh -DMNEMO_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
BUILD="${MNEMO_BUILD_DIR:-$ROOT/build}"
ctest --test-dir "$BUILD" --output-on-failure -j "$(nproc)"
