#!/usr/bin/env bash
# One command for whoever first runs mnemo on a machine with an NVIDIA GPU (docs/cuda.md):
# builds with CUDA for this GPU, lists the devices, runs every GPU test, runs them again
# under compute-sanitizer (memcheck and racecheck), measures the GPU's ceilings, and prints
# a report (also written to $BUILD/gpu-check-report.md). Exit status 0 only when every
# step that ran passed.
#
# Usage: tools/gpu-check.sh            (build dir: build-gpu, or $MNEMO_BUILD_DIR)
#        GPU_CHECK_SKIP_SANITIZER=1 tools/gpu-check.sh   (the sanitizer runs take minutes)
#        GPU_CHECK_PREBUILT=1 MNEMO_BUILD_DIR=dir tools/gpu-check.sh   (binaries built
#          elsewhere, in the build tree's layout: dir/mnemo, dir/tests/mnemo_gpu_tests,
#          dir/bench/mnemo_cuda_ceiling_bench; for a GPU machine without the build's packages)
#        GPU_CHECK_STEP_TIMEOUT=seconds (default 1200) bounds each step.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${MNEMO_BUILD_DIR:-$ROOT/build-gpu}"
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi finds none); nothing to check" >&2
  exit 1
fi

# Compile for sm_80 and sm_90 as CI does, plus this GPU's own architecture.
cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n1 | tr -d ' .')"
archs="80-real;90-real"
if [[ -n "$cap" && "$cap" != 80 && "$cap" != 90 ]]; then archs="$archs;${cap}-real"; fi

declare -a steps=()
failed=0
record() {  # record NAME STATUS DETAIL
  steps+=("| $1 | $2 | $3 |")
  if [[ "$2" == FAIL ]]; then failed=1; fi
}

step_timeout="${GPU_CHECK_STEP_TIMEOUT:-1200}"
mkdir -p "$BUILD"
log="$BUILD/gpu-check.log"
: >"$log"
if [[ "${GPU_CHECK_PREBUILT:-0}" == 1 ]]; then
  record build PASS "prebuilt binaries in $BUILD"
elif echo "gpu-check: building into $BUILD (CUDA archs $archs); log: $log" &&
  MNEMO_BUILD_DIR="$BUILD" bash "$ROOT/tools/build.sh" -DMNEMO_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="$archs" >>"$log" 2>&1; then
  record build PASS "archs $archs"
else
  record build FAIL "see $log"
  printf '%s\n' "${steps[@]}"
  exit 1
fi

devices="$("$BUILD/mnemo" inspect --devices 2>&1 || true)"

gpu_tests="$BUILD/tests/mnemo_gpu_tests"
run_tests() {  # run_tests NAME [wrapper...]
  local name="$1"
  shift
  local out
  # Tests named ...WithoutADevice check the error path of a machine with no GPU; they skip
  # here by design. $filter narrows a step to some tests, $exclude leaves more out.
  out="$(timeout "$step_timeout" "$@" "$gpu_tests" --gtest_brief=1 \
    "--gtest_filter=${filter:-*}-*WithoutADevice${exclude:+:$exclude}" 2>&1)"
  local rc=$?
  echo "$out" >>"$log"
  local summary
  summary="$(echo "$out" | grep -E '^\[  (PASSED|FAILED|SKIPPED) ' | tr '\n' ' ')"
  if [[ $rc -eq 0 ]]; then
    # A GPU test that skipped here did not run: on a GPU machine that is a failure.
    if echo "$out" | grep -q '^\[  SKIPPED '; then
      record "$name" FAIL "tests skipped on a GPU machine: $summary"
    else
      record "$name" PASS "$summary"
    fi
  else
    record "$name" FAIL "exit $rc: $summary (see $log)"
  fi
}

run_tests "GPU tests" env
if [[ "${GPU_CHECK_SKIP_SANITIZER:-0}" != 1 ]]; then
  if command -v compute-sanitizer >/dev/null; then
    # API errors are not reported: some tests provoke them on purpose (an allocation larger
    # than the GPU), and the code checks every call's status itself.
    run_tests "compute-sanitizer memcheck" compute-sanitizer --tool memcheck \
      --report-api-errors no --error-exitcode 99
    # racecheck looks at shared memory, which only the attention and norm/softmax kernels
    # use; their tests at fewer shapes than the full sweeps, which would take it many minutes.
    filter='AttentionGpuTest.*:OpsGpuTest.*' exclude='AttentionGpuTest.MatchesReferenceOverShapes' \
      run_tests "compute-sanitizer racecheck" compute-sanitizer --tool racecheck \
      --error-exitcode 99
  else
    record "compute-sanitizer" FAIL "not on PATH (it ships with the CUDA toolkit)"
  fi
fi

ceilings_json="$BUILD/gpu-check-ceilings.json"
timeout "$step_timeout" "$BUILD/bench/mnemo_cuda_ceiling_bench" --benchmark_min_time=0.5 \
  --benchmark_out="$ceilings_json" --benchmark_out_format=json >>"$log" 2>&1
rc=$?
hbm=""     # bytes/s
tflops=""  # 1e12 flop/s
if [[ $rc -eq 0 && -s "$ceilings_json" ]]; then
  read -r hbm tflops < <(python3 -c '
import json, sys
b = {x["name"]: x for x in json.load(open(sys.argv[1]))["benchmarks"]}
hbm = max(x["bytes_per_second"] for n, x in b.items() if n.startswith("BM_Cuda_HbmRead"))
tf = max(x["TFLOP/s"] for n, x in b.items() if n.startswith("BM_Cuda_GemmBf16"))
print(hbm, tf)' "$ceilings_json")
  record "ceilings" PASS "HBM read $(python3 -c "print('%.0f GB/s' % ($hbm / 1e9))"); BF16 GEMM $(python3 -c "print('%.0f TFLOP/s' % $tflops)")"
else
  record "ceilings" FAIL "exit $rc (see $log)"
fi

# Decode and prefill on the GPU against the ceilings above: SmolLM2-135M-Instruct (the
# fetched model), BF16 weights on the device (2 bytes per parameter read per decoded token;
# 2 x parameters flops per prompt token).
model="$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [[ ! -f "$model" ]]; then
  record "decode/prefill on the GPU" FAIL "no $model (run tools/fetch-model.sh)"
else
  params="$("$BUILD/mnemo" inspect "$model" --json --no-tensors |
    python3 -c 'import json, sys; t = json.load(sys.stdin)["totals"]; print(t["params"] - t["by_dtype"].get("f32", {}).get("params", 0))')"
  text=/usr/share/common-licenses/GPL-3
  [[ -f "$text" ]] || text="$ROOT/docs/architecture.md"
  prompt="$(head -c 2600 "$text" | tr -s ' \n' ' ')"
  gen="$(timeout "$step_timeout" "$BUILD/mnemo" generate "$model" --device cuda --json --max-tokens 256 \
    --prompt "$prompt" 2>>"$log")"
  rc=$?
  echo "$gen" | head -c 2000 >>"$log"
  if [[ $rc -eq 0 ]]; then
    fractions="$(echo "$gen" | python3 -c '
import json, sys
t = json.load(sys.stdin)["timings"]
params, hbm, tflops = (float(a) if a else float("nan") for a in sys.argv[1:4])
dec, pre = t["generation_tokens_per_second"], t["prompt_tokens_per_second"]
print("decode %.1f tok/s = %.1f%% of the HBM bound; prefill of %d tokens %.0f tok/s = %.1f%% of"
      " the BF16 GEMM rate" % (dec, 100 * dec * 2 * params / hbm, t["prompt_tokens"], pre,
                               100 * pre * 2 * params / (tflops * 1e12)))
' "$params" "$hbm" "$tflops")"
    record "decode/prefill on the GPU" PASS "$fractions"
  else
    record "decode/prefill on the GPU" FAIL "mnemo generate --device cuda: exit $rc (see $log)"
  fi
  bench_out="$BUILD/gpu-check-bench"
  if timeout "$step_timeout" "$BUILD/mnemo" bench multiturn "$model" --device cuda --out "$bench_out" --workload chat \
    --conversations 4 --concurrency 2 --modes stateless,stateful --no-plots --quiet \
    >>"$log" 2>&1; then
    summary="$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print("; ".join("%s: %s prompt tokens computed, TTFT p50 %.0f ms" % (
    m["mode"], m["computed_tokens"], 1000 * m["ttft_seconds"]["p50"]) for m in r["modes"]))
' "$bench_out/result.json" 2>>"$log" || echo "see $bench_out/report.md")"
    record "mnemo bench on the GPU" PASS "$summary"
  else
    record "mnemo bench on the GPU" FAIL "see $log"
  fi
fi

report="$BUILD/gpu-check-report.md"
{
  echo "# mnemo gpu-check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
  echo
  echo '```'
  echo "$devices"
  echo '```'
  echo
  echo "| step | result | detail |"
  echo "|---|---|---|"
  printf '%s\n' "${steps[@]}"
} >"$report"
cat "$report"
echo
echo "gpu-check: report in $report, full output in $log"
exit "$failed"
