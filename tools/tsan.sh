#!/usr/bin/env bash
# Builds mnemo with ThreadSanitizer (-DMNEMO_TSAN=ON: CPU only, no benchmarks) into
# build-tsan/ (or $MNEMO_BUILD_DIR) and runs the engine tests under it: engine_test.cc and
# the multi-threaded stress test engine_stress_test.cc. Fails on any TSan report.
#
#   tools/tsan.sh [GTEST_FILTER]     default: the Engine tests (*Engine*) without the
#                                    SmolLM2 one (a real 135M model is slow under TSan)
#
# Environment: MNEMO_STRESS_SCALE=N makes the stress test N times longer; TSAN_OPTIONS
# given by the caller are appended to the defaults below (later options win).
# tools/tsan.supp holds the one suppression (races seen through uninstrumented oneTBB) and
# says why; in this build the tests run kernels on one thread (testing::TestKernelThreads).
# Debian's Abseil is not instrumented either, which is why the engine loop and its queues
# use std::mutex / std::condition_variable (TOOLCHAIN.md). docs/testing.md has the details.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${MNEMO_BUILD_DIR:-$ROOT/build-tsan}"
FILTER="${1:-*Engine*:-*SmolLm2*}"
export CCACHE_BASEDIR="$ROOT" CCACHE_NOHASHDIR=1

cmake -S "$ROOT" -B "$BUILD" -G Ninja -DMNEMO_TSAN=ON -DMNEMO_WERROR=ON \
  -DMNEMO_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$BUILD" -j "$(nproc)" --target mnemo_tests

# halt_on_error=0: report every race of the run, then exit 66 (TSan's exit code on
# reports). second_deadlock_stack: both stacks of a lock-order inversion.
export TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 \
suppressions=$ROOT/tools/tsan.supp print_suppressions=0 ${TSAN_OPTIONS:-}"
echo "tsan.sh: $BUILD/tests/mnemo_tests --gtest_filter=$FILTER"
"$BUILD/tests/mnemo_tests" --gtest_filter="$FILTER"
