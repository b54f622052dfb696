#!/usr/bin/env bash
# Installs every build and test dependency of mnemo on a fresh Debian 12 machine.
# Idempotent: packages already present are skipped by apt. Run as root (or via sudo).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git python3 python3-venv unzip
  libtbb-dev libabsl-dev libflatbuffers-dev flatbuffers-compiler
  libgtest-dev libgmock-dev libbenchmark-dev
  libcpp-httplib-dev nlohmann-json3-dev libxxhash-dev libpcre2-dev
  libdnnl-dev ocl-icd-opencl-dev
  clang libclang-rt-14-dev clang-format
  python3-matplotlib
  bible-kjv bible-kjv-text
)

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  for attempt in 1 2 3; do
    if $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"; then
      break
    fi
    if [[ $attempt -eq 3 ]]; then echo "setup: apt-get failed" >&2; exit 1; fi
    sleep $((attempt * 5))
  done
else
  echo "setup: all packages present"
fi

# Python packages of the tests (the official OpenAI client, for tests/server/openai_client_test.py),
# in a virtual environment under .cache/ (git-ignored), pinned, with retries.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.cache/venv"
PY_PACKAGES=("openai==1.109.1")
if ! "$VENV/bin/python" -c "import openai" 2>/dev/null; then
  python3 -m venv "$VENV"
  for attempt in 1 2 3 4; do
    if "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"; then
      break
    fi
    if [[ $attempt -eq 4 ]]; then echo "setup: pip install ${PY_PACKAGES[*]} failed" >&2; exit 1; fi
    echo "setup: pip install failed, retrying ($attempt)" >&2
    sleep $((attempt * 5))
  done
fi
