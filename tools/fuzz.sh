#!/usr/bin/env bash
# Builds a libFuzzer target with clang (-fsanitize=fuzzer,address,undefined, C++20, Debian's
# Abseil) into build-fuzz/ and runs it on its seed corpus. Not part of the CMake build.
#
#   tools/fuzz.sh [TARGET] [SECONDS] [-- LIBFUZZER_ARGS...]   fuzz TARGET (default gguf)
#                                                             for SECONDS (default 60)
#   tools/fuzz.sh --seeds [TARGET]        regenerate tests/fuzz/corpus/TARGET/ with the
#                                         target's seed generator (tests/fuzz/TARGET_seeds.cc)
#   tools/fuzz.sh --build [TARGET]        only build build-fuzz/TARGET_fuzz
#
# New inputs go to build-fuzz/corpus/TARGET/ (the checked-in seeds are only read); crashes
# to build-fuzz/artifacts/TARGET/. Reproduce one with: build-fuzz/TARGET_fuzz CRASH_FILE.
# Environment: CXX (default clang++), FUZZ_JOBS (parallel fuzzing processes, default 1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/build-fuzz"
CXX="${CXX:-clang++}"

mode=fuzz
case "${1:-}" in
  --seeds) mode=seeds; shift ;;
  --build) mode=build; shift ;;
  -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
esac
POSITIONAL=()
while (( $# > 0 )) && [[ "$1" != "--" ]]; do POSITIONAL+=("$1"); shift; done
(( $# > 0 )) && shift  # the "--"
EXTRA_ARGS=("$@")
TARGET="${POSITIONAL[0]:-gguf}"
SECONDS_TO_RUN="${POSITIONAL[1]:-60}"

# Sources each target needs besides tests/fuzz/TARGET_fuzz.cc.
case "$TARGET" in
  gguf) SRCS=(engine/model/gguf.cc engine/model/gguf_value.cc engine/model/gguf_builder.cc
              kernels/dtype.cc)
        ABSL=(absl_status absl_statusor absl_strings absl_str_format absl_flat_hash_map) ;;
  safetensors) SRCS=(engine/model/safetensors.cc engine/model/internal/file_io.cc kernels/dtype.cc)
        ABSL=(absl_status absl_statusor absl_strings absl_str_format) ;;
  state_manifest)
        SRCS=(cache/state_manifest.cc cache/state_store.cc cache/state_bundle.cc cache/file_ops.cc
              cache/internal/state_io.cc cache/session.cc cache/block_table.cc cache/block_pool.cc
              cache/block_hash.cc kernels/dtype.cc)
        ABSL=(absl_status absl_statusor absl_strings absl_str_format absl_flat_hash_map
              absl_hash absl_time libxxhash)
        FBS=(cache/state_format.fbs) ;;
  server_request)
        SRCS=(engine/server/request_fields.cc)
        ABSL=(absl_status absl_strings absl_str_format) ;;
  *) echo "fuzz.sh: unknown target '$TARGET' (known: gguf, safetensors, state_manifest, server_request)" >&2; exit 2 ;;
esac

command -v "$CXX" >/dev/null || { echo "fuzz.sh: $CXX not found (apt-get install clang)" >&2; exit 1; }
mkdir -p "$OUT"
cd "$ROOT"
LIBS=$(pkg-config --libs "${ABSL[@]}")
CXXFLAGS=(-std=c++20 -g -O1 -fno-omit-frame-pointer -I"$ROOT" -Wall -Wextra)
# FlatBuffers schemas the target reads: generated like the CMake build does (cache/CMakeLists.txt).
for fbs in ${FBS[@]+"${FBS[@]}"}; do
  command -v flatc >/dev/null || { echo "fuzz.sh: flatc not found (tools/setup.sh)" >&2; exit 1; }
  flatc --cpp --scoped-enums -o "$OUT/generated/$(dirname "$fbs")" "$fbs"
  CXXFLAGS+=(-isystem "$OUT/generated")
done

if [[ "$mode" == seeds ]]; then
  # The generator is an ordinary program (no fuzzer runtime) built from the same sources.
  gen="$OUT/${TARGET}_seeds"
  "$CXX" "${CXXFLAGS[@]}" -fsanitize=address,undefined "tests/fuzz/${TARGET}_seeds.cc" \
    "${SRCS[@]}" $LIBS -o "$gen"
  dir="tests/fuzz/corpus/$TARGET"
  rm -rf "$dir" && mkdir -p "$dir"
  stories="${MNEMO_STORIES_GGUF:-$ROOT/../shared/models/stories260K.gguf}"
  if [[ -f "$stories" ]]; then "$gen" "$dir" "$stories"; else "$gen" "$dir"; fi
  ls -l "$dir"
  exit 0
fi

bin="$OUT/${TARGET}_fuzz"
echo "fuzz.sh: building $bin"
"$CXX" "${CXXFLAGS[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  "tests/fuzz/${TARGET}_fuzz.cc" "${SRCS[@]}" $LIBS -o "$bin"
[[ "$mode" == build ]] && exit 0

work="$OUT/corpus/$TARGET"
artifacts="$OUT/artifacts/$TARGET"
mkdir -p "$work" "$artifacts"
args=(-max_total_time="$SECONDS_TO_RUN" -artifact_prefix="$artifacts/" -print_final_stats=1
      -timeout=10 -rss_limit_mb=2048)
[[ -f "tests/fuzz/$TARGET.dict" ]] && args+=(-dict="tests/fuzz/$TARGET.dict")
jobs="${FUZZ_JOBS:-1}"
if (( jobs > 1 )); then args+=(-jobs="$jobs" -workers="$jobs"); fi
echo "fuzz.sh: running $TARGET for ${SECONDS_TO_RUN}s (corpus $work + tests/fuzz/corpus/$TARGET)"
exec "$bin" "${args[@]}" ${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"} "$work" "tests/fuzz/corpus/$TARGET"
