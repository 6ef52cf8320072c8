#!/usr/bin/env bash
# benchmarks/gpu_check.sh - issue #6: dlrmprof's CUDA path measured on a real GPU, in one call.
#
# On a lent H100/H200 (the `device` tool's `run`), from the repository root, exactly:
#   command:   bash benchmarks/gpu_check.sh
#   timeout_s: 570          (the script keeps itself to GPU_CHECK_BUDGET_S=480 s)
#   carry:     none         (the image has torch, numba, numba-cuda, pytest, setuptools)
# It writes under $OUT (at most 8 files, flat): summary.txt, gpu_check.log, ceilings.json,
# kernels_check.json, launch_graph.json, embedding_bench.json, embedding_bench.md,
# reports.tar.gz; the last
# lines it prints are the summary table.  After fetching, copy the small ones into
# reports/examples/ (see docs/gpu.md).  A rerun of some steps on the still-warm machine:
#   command:   GPU_CHECK_STEPS="bench" GPU_CHECK_BUDGET_S=200 bash benchmarks/gpu_check.sh
#
# Here, without a GPU (about 2-3 min; every CUDA step prints "SKIP: no GPU"):
#   OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh --cpu-dry-run
#
# Steps (each time-boxed with `timeout`, each independent: a failing step does not stop the
# others; exit code 0 when no step FAILed or TIMEd OUT):
#   setup      pip install --no-deps --no-build-isolation --no-index -e . (offline; PYTHONPATH
#              is set anyway, and every command is `python3 -m dlrmprof`)
#   versions   python, torch (+ CUDA build, card), numba, numba-cuda, numpy; nvidia-smi -L
#   ceilings   dlrmprof host --probe --refresh --json  -> ceilings.json (CPU roofs, CUDA copy
#              and fp32/bf16 GEMM with CUDA events); the runs' verdicts use this cache
#   gen-trace  dlrmprof gen-trace --from kaggle (bundled Criteo sample, 65536 samples,
#              1e6 rows per table), in the background while the tests run
#   pytest     python3 -m pytest -q -m cuda tests/
#   check      numba-cuda and torch-on-CUDA kernels vs the float64 reference, fresh random
#              inputs (benchmarks/gpu_check_kernels.py check) -> kernels_check.json
#   graphs     CUDA graphs and the lean numba-cuda launch (benchmarks/gpu_graph_check.py):
#              graph step == eager step over 50 steps (torch, numba-cuda; per table, fused;
#              train, infer), kaggle batch-128 samples/s eager vs graph in interleaved
#              rounds, numba-cuda call overhead old vs lean path -> launch_graph.json
#   runs       dlrmprof run --device cuda for the kaggle and terabyte presets (train and
#              infer, torch; train with numba-cuda; steps as CUDA graphs, the default, and
#              kaggle torch with --no-cuda-graph beside them), a CPU report of the same
#              configs, and dlrmprof compare CPU vs GPU -> reports.tar.gz
#   bench      embedding-bag forward + fused backward GB/s vs the measured copy bandwidth,
#              D 16-256, L 1/20/100, 1e6/1e7 rows, uniform/Zipf(1.1), B 2048-65536, checked
#              before timing (benchmarks/gpu_check_kernels.py bench; the steps before it
#              leave it >= 120 s; it stops starting cells at its deadline and says which
#              were left) -> embedding_bench.{json,md}
#   summary    summary.txt, printed last
#
# Environment: OUT (default reports/gpu_check), GPU_CHECK_BUDGET_S (480 on a GPU, 190 for the
# dry run), GPU_CHECK_STEPS (subset of: ceilings pytest check graphs runs bench; default all),
# GPU_CHECK_RUNS (a bash regex: only the runs whose name matches, e.g. "numba-cuda"),
# GPU_CHECK_KEEP_WORK=1 keeps the scratch folder (traces, per-step logs), PYTHON (python3).

set -uo pipefail

DRY=0
for a in "$@"; do
  case "$a" in
    --cpu-dry-run) DRY=1 ;;
    -h|--help) sed -n '2,48p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $a (expected --cpu-dry-run)" >&2; exit 2 ;;
  esac
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${CUDA_HOME:-}" ]; then     # where numba-cuda looks for NVVM / libdevice
  if [ -d /usr/local/cuda ]; then export CUDA_HOME=/usr/local/cuda
  elif command -v nvcc >/dev/null 2>&1; then CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")"); export CUDA_HOME
  fi
fi
if [ "$DRY" = 1 ]; then export CUDA_VISIBLE_DEVICES=""; fi   # the dry run sees no GPU at all

OUT=${OUT:-$REPO/reports/gpu_check}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
# our own outputs only (a stale file would be read by the summary)
rm -f "$OUT"/{summary.txt,gpu_check.log,ceilings.json,kernels_check.json,launch_graph.json,embedding_bench.json,embedding_bench.md,reports.tar.gz}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
mkdir -p "$WORK/logs" "$WORK/reports" "$WORK/traces" "$WORK/cache"
export DLRMPROF_CACHE_DIR="$WORK/cache"      # fresh ceilings, probed once by the ceilings step
: > "$WORK/steps.tsv"

HAVE_GPU=0
if [ "$DRY" = 0 ] && "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  HAVE_GPU=1
fi
if [ "$HAVE_GPU" = 1 ]; then
  MODE=gpu
  BUDGET=${GPU_CHECK_BUDGET_S:-480}
  TRACE_LEN=65536; TABLE_ROWS=1000000; ITERS=100; WARMUP=10
  NCPU=$(nproc 2>/dev/null || echo 1); CPU_THREADS=$(( NCPU < 16 ? NCPU : 16 ))
  JOBS=$(( NCPU / 4 > 1 ? NCPU / 4 : 1 ))
else
  MODE=$([ "$DRY" = 1 ] && echo cpu-dry-run || echo no-gpu)
  BUDGET=${GPU_CHECK_BUDGET_S:-190}
  TRACE_LEN=4096; TABLE_ROWS=100000; ITERS=10; WARMUP=2; CPU_THREADS=1; JOBS=1
fi
STEPS=${GPU_CHECK_STEPS:-ceilings pytest check graphs runs bench}
RESERVE=25                     # seconds kept for packing and the summary
HOLD=0                         # seconds kept for the bench while the steps before it run
if [[ " $STEPS " == *" bench "* ]]; then HOLD=$([ "$HAVE_GPU" = 1 ] && echo 120 || echo 20); fi
T0=$SECONDS
TRACE="$WORK/traces/kaggle.npz"
REPORTS="$WORK/reports"

want() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
left() { echo $(( BUDGET - (SECONDS - T0) - RESERVE - HOLD )); }
banner() { printf '\n==== [%s] %s (t=%ss)\n' "$1" "$2" "$((SECONDS - T0))"; }
record() {  # name status seconds note
  local note=${4//$'\t'/ }
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${note:0:90}" >> "$WORK/steps.tsv"
  printf -- '---- [%s] %s (%ss) %s\n' "$1" "$2" "$3" "$4"
}

# step NAME MAX_S MIN_S [--skip-rc N] [--gpu] [--note REGEX] -- CMD...
#   runs CMD under `timeout` (at most MAX_S, never past the budget; skipped if under MIN_S
#   would be left), output to the log and WORK/logs/NAME.log.  --skip-rc N: that exit code
#   means "nothing to do here" (no GPU) -> SKIP.  --gpu: the step needs a GPU; without one
#   a clean run is recorded as SKIP (no GPU).  The note is the last line matching REGEX
#   (default: the last line).  Sets STEP_RC.
step() {
  local name=$1 max=$2 min=$3; shift 3
  local skip_rc=-1 gpu=0 note_re='.'
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in
      --skip-rc) skip_rc=$2; shift 2 ;;
      --gpu) gpu=1; shift ;;
      --note) note_re=$2; shift 2 ;;
      *) echo "step: bad option $1" >&2; return 2 ;;
    esac
  done
  shift
  local l; l=$(left)
  local t=$(( max < l ? max : l ))
  if (( t < min )); then
    banner "$name" "skipped"
    record "$name" SKIP 0 "time budget: ${l}s left, needs ${min}s"
    STEP_RC=-1; return 0
  fi
  banner "$name" "timeout ${t}s: $*"
  local s=$SECONDS log="$WORK/logs/$name.log"
  timeout -k 10 "$t" "$@" 2>&1 | tee "$log"
  STEP_RC=${PIPESTATUS[0]}
  local dt=$(( SECONDS - s )) st note
  note=$(grep -E -- "$note_re" "$log" | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c1-150)
  if [ "$STEP_RC" = 0 ]; then
    st=OK
    if [ "$gpu" = 1 ] && [ "$HAVE_GPU" = 0 ]; then st=SKIP; note="no GPU: $note"; fi
  elif [ "$STEP_RC" = "$skip_rc" ]; then st=SKIP
  elif [ "$STEP_RC" = 124 ] || [ "$STEP_RC" = 137 ]; then st=TIMEOUT; note="killed after ${t}s; $note"
  else st=FAIL; note="exit $STEP_RC: $note"
  fi
  record "$name" "$st" "$dt" "$note"
}

main() {
  echo "dlrmprof GPU check: mode $MODE, budget ${BUDGET}s, steps: $STEPS"
  echo "repo $REPO ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo 'no git')), OUT $OUT, scratch $WORK"
  if [ "$MODE" != gpu ]; then
    echo "no GPU here: CUDA steps print 'SKIP: no GPU'; CPU steps run at dry-run sizes" \
         "(trace ${TRACE_LEN} samples, ${TABLE_ROWS} rows per table, ${ITERS} iterations)"
  fi

  # -- setup: install offline without touching the image's torch ----------------------------
  local pipargs=(install --no-deps --no-build-isolation --no-index -q -e .)
  [ "$MODE" = gpu ] || pipargs=(install --no-deps --no-build-isolation --no-index --dry-run -e .)
  step setup 90 10 --note 'dlrmprof|Successfully|Would install|ERROR|error' -- "$PY" -m pip "${pipargs[@]}"
  if [ "$STEP_RC" != 0 ]; then
    echo "(pip could not install the repo offline; every command runs as \`$PY -m dlrmprof\` with PYTHONPATH=$REPO)"
    sed -i '$ s/\tFAIL\t/\tWARN\t/' "$WORK/steps.tsv"
  fi
  step import 60 5 --note '^Usage' -- "$PY" -m dlrmprof --help

  # -- versions -------------------------------------------------------------------------------
  SMI="nvidia-smi not found"
  if command -v nvidia-smi >/dev/null 2>&1; then
    SMI=$(nvidia-smi -L 2>&1 | head -n 2 | tr '\n' ' ')
  fi
  step versions 60 5 --note "^numba [0-9]" -- "$PY" benchmarks/gpu_check_summary.py versions --out "$WORK/versions.json"
  echo "nvidia-smi -L: $SMI"
  echo "CUDA_HOME=${CUDA_HOME:-unset}; nvcc: $(command -v nvcc >/dev/null 2>&1 && nvcc --version | tail -n 2 | head -n 1 || echo 'not found')"
  if command -v nvidia-smi >/dev/null 2>&1; then   # read-only queries
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,temperature.gpu,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit --format=csv 2>&1 | head -n 3
  fi

  # -- ceilings -------------------------------------------------------------------------------
  if want ceilings; then
    step ceilings 180 30 -- bash -c "\"$PY\" -m dlrmprof host --probe --refresh --json > \"$OUT/ceilings.json\" && echo \"wrote $OUT/ceilings.json\""
    step ceilings-show 40 5 --note 'CUDA' -- "$PY" -m dlrmprof host
  fi

  # -- gen-trace, in the background (CPU work while the GPU tests run) ------------------------
  local gen_pid=""
  if want runs; then
    banner gen-trace "background: kaggle trace, ${TRACE_LEN} samples, ${TABLE_ROWS} rows per table, ${JOBS} jobs"
    local gt; gt=$(left); gt=$(( gt < 300 ? gt : 300 )); gt=$(( gt > 20 ? gt : 20 ))
    ( s=$SECONDS
      timeout -k 10 "$gt" "$PY" -m dlrmprof gen-trace --from kaggle --length "$TRACE_LEN" \
        --table-rows "$TABLE_ROWS" --jobs "$JOBS" --out "$TRACE" > "$WORK/logs/gen-trace.log" 2>&1
      echo "$? $(( SECONDS - s ))" > "$WORK/gen-trace.rc" ) &
    gen_pid=$!
  fi

  # -- CUDA tests -----------------------------------------------------------------------------
  if want pytest; then
    step pytest-cuda 240 30 --gpu --note 'passed|failed|skipped|error' -- \
      "$PY" -m pytest -q -m cuda -p no:cacheprovider tests/
  fi

  # -- kernels vs the reference on fresh random inputs ----------------------------------------
  if want check; then
    step kernels-check 120 20 --skip-rc 3 --note 'kernel check' -- \
      "$PY" benchmarks/gpu_check_kernels.py check --out "$OUT/kernels_check.json"
    if [ "$MODE" != gpu ]; then
      step kernels-check-selftest 60 10 --note 'kernel check' -- \
        "$PY" benchmarks/gpu_check_kernels.py check --device cpu --trials 4 --out "$OUT/kernels_check.json"
    fi
  fi

  # -- CUDA graphs and the numba-cuda launch (issue 22) ---------------------------------------
  if want graphs; then
    step graphs 200 "$([ "$MODE" = gpu ] && echo 40 || echo 5)" --skip-rc 3 --note 'graph check' -- \
      "$PY" benchmarks/gpu_graph_check.py --out "$OUT/launch_graph.json" --rows "$TABLE_ROWS"
    if [ "$MODE" != gpu ]; then
      step graphs-selftest 90 10 --note 'graph check' -- \
        "$PY" benchmarks/gpu_graph_check.py --device cpu --config tiny --rows 1000 --steps 6 \
          --rounds 2 --round-steps 3 --out "$OUT/launch_graph.json"
    fi
  fi

  # -- dlrmprof run on the GPU, a CPU report of the same config, compare ----------------------
  if want runs; then
    banner gen-trace "waiting for the background trace"
    wait "$gen_pid"
    cat "$WORK/logs/gen-trace.log"
    local grc=1 gdt=0
    [ -f "$WORK/gen-trace.rc" ] && read -r grc gdt < "$WORK/gen-trace.rc"
    if [ "$grc" = 0 ] && [ -f "$TRACE" ]; then
      record gen-trace OK "$gdt" "$(grep -E '^wrote' "$WORK/logs/gen-trace.log" | tail -n 1 | cut -c1-90)"
    else
      record gen-trace "$( { [ "$grc" = 124 ] || [ "$grc" = 137 ]; } && echo TIMEOUT || echo FAIL)" "$gdt" "exit $grc: $(tail -n 1 "$WORK/logs/gen-trace.log")"
    fi
    if [ -f "$TRACE" ]; then
      runs_and_compare
    else
      record runs SKIP 0 "no trace file"
    fi
  fi

  # -- embedding-bag bandwidth (last: it fits itself into what is left) ----------------------
  if want bench; then
    HOLD=0
    local l; l=$(left)
    # without a GPU the helper only says so (exit 3): it needs no 40 s there, and a dry run
    # that compiled every kernel cold had left 39 s and skipped it for time
    step bench "$l" "$([ "$MODE" = gpu ] && echo 40 || echo 5)" --skip-rc 3 \
      --note 'embedding-bag bench' -- \
      "$PY" benchmarks/gpu_check_kernels.py bench --out "$OUT/embedding_bench.json" \
        --md "$OUT/embedding_bench.md" --deadline-s "$(( l > 60 ? l - 30 : l / 2 ))"
    if [ "$MODE" != gpu ]; then
      step bench-selftest 60 10 --note 'embedding-bag bench' -- \
        "$PY" benchmarks/gpu_check_kernels.py bench --device cpu --grid tiny \
          --out "$OUT/embedding_bench.json" --md "$OUT/embedding_bench.md"
    fi
  fi

  # -- pack and summarise ---------------------------------------------------------------------
  banner pack "reports -> $OUT/reports.tar.gz"
  if [ -n "$(ls -A "$REPORTS")" ]; then
    tar czf "$OUT/reports.tar.gz" -C "$WORK" reports
    if [ "$(stat -c %s "$OUT/reports.tar.gz")" -gt $(( 15 * 1024 * 1024 )) ]; then
      tar czf "$OUT/reports.tar.gz" --exclude='*.png' -C "$WORK" reports   # the 16 MiB limit
      echo "(reports.tar.gz without PNGs: over 15 MiB with them)"
    fi
    tar tzvf "$OUT/reports.tar.gz" | awk '{print "  " $3 "  " $6}'
  else
    echo "(no reports to pack)"
  fi
  banner summary ""
  "$PY" benchmarks/gpu_check_summary.py summary --work "$WORK" --out "$OUT" --mode "$MODE" \
    --smi "$SMI" || { echo "(summary helper failed; the step table:)"; cat "$WORK/steps.tsv"; }
}

# run_one NAME DEVICE BACKEND PRESET MODE [RUN OPTIONS...]: one `dlrmprof run` into
# REPORTS/NAME.json
run_one() {
  local name=$1 device=$2 backend=$3 preset=$4 mode=$5
  shift 5
  if ! [[ $name =~ ${GPU_CHECK_RUNS:-.} ]]; then return 0; fi
  local extra=(--threads 1 --no-cache-study "$@")  # GPU: host-side threads; CPU caches irrelevant
  [ "$device" = cpu ] && extra=(--threads "$CPU_THREADS" "$@")
  step "run-$name" 150 20 --note 'end to end|Error|error' -- \
    "$PY" -m dlrmprof run --device "$device" --backend "$backend" --trace "$TRACE" \
      --config "$preset" --max-rows "$TABLE_ROWS" --mode "$mode" --iters "$ITERS" \
      --warmup "$WARMUP" "${extra[@]}" --out "$REPORTS/$name.json"
}

# compare_reports NAME LABEL=FILE...: dlrmprof compare of the reports that exist (>= 2)
compare_reports() {
  local name=$1; shift
  local files=() labels=()
  for lf in "$@"; do
    if [ -f "$REPORTS/${lf#*=}.json" ]; then files+=("$REPORTS/${lf#*=}.json"); labels+=(--label "${lf%%=*}"); fi
  done
  if [ "${#files[@]}" -lt 2 ]; then
    record "compare-$name" SKIP 0 "fewer than 2 reports"
    return
  fi
  step "compare-$name" 60 10 -- "$PY" -m dlrmprof compare "${files[@]}" "${labels[@]}" \
    --md "$REPORTS/compare-$name.md" --png "$REPORTS/compare-$name.png"
  [ -f "$REPORTS/compare-$name.md" ] && cat "$REPORTS/compare-$name.md"
}

runs_and_compare() {
  if [ "$MODE" = gpu ]; then
    # steps as CUDA graphs (run's default on cuda); -eager: the same with --no-cuda-graph
    run_one gpu-kaggle-train-torch cuda torch kaggle train
    run_one gpu-kaggle-train-torch-eager cuda torch kaggle train --no-cuda-graph
    run_one gpu-kaggle-train-numba-cuda cuda numba-cuda kaggle train
    # all 26 tables in one kernel call (TBE layout): at batch 128 a GPU step is launch-bound
    run_one gpu-kaggle-train-torch-fused cuda torch kaggle train --fused-tables
    run_one gpu-kaggle-train-torch-fused-eager cuda torch kaggle train --fused-tables --no-cuda-graph
    run_one gpu-kaggle-train-numba-cuda-fused cuda numba-cuda kaggle train --fused-tables
    run_one cpu-kaggle-train-numba cpu numba kaggle train
    compare_reports kaggle-train cpu-numba=cpu-kaggle-train-numba \
      gpu-torch=gpu-kaggle-train-torch gpu-numba-cuda=gpu-kaggle-train-numba-cuda
    # compare refuses to set a one-call-for-all-tables run beside per-table runs: apart
    compare_reports kaggle-train-fused gpu-torch-fused=gpu-kaggle-train-torch-fused \
      gpu-numba-cuda-fused=gpu-kaggle-train-numba-cuda-fused
    run_one gpu-kaggle-infer-torch cuda torch kaggle infer
    run_one gpu-kaggle-infer-torch-eager cuda torch kaggle infer --no-cuda-graph
    run_one gpu-terabyte-train-torch cuda torch terabyte train
    run_one gpu-terabyte-train-numba-cuda cuda numba-cuda terabyte train
    run_one cpu-terabyte-train-numba cpu numba terabyte train
    compare_reports terabyte-train cpu-numba=cpu-terabyte-train-numba \
      gpu-torch=gpu-terabyte-train-torch gpu-numba-cuda=gpu-terabyte-train-numba-cuda
    run_one gpu-terabyte-infer-torch cuda torch terabyte infer
  else
    # `run --device cuda` must refuse cleanly (one line, exit 2) where there is no GPU
    banner run-gpu "dlrmprof run --device cuda (expected: a one-line refusal, exit 2)"
    local s=$SECONDS msg rc
    msg=$(timeout 60 "$PY" -m dlrmprof run --device cuda --trace "$TRACE" --config kaggle \
          --max-rows "$TABLE_ROWS" --out "$REPORTS/gpu-refused.json" 2>&1)
    rc=$?
    echo "$msg"
    if [ "$rc" = 2 ] && [ "$(printf '%s\n' "$msg" | wc -l)" = 1 ] && printf '%s' "$msg" | grep -q 'no CUDA GPU'; then
      record run-gpu SKIP $((SECONDS - s)) "no GPU: run --device cuda refused cleanly (exit 2, one line)"
    else
      record run-gpu FAIL $((SECONDS - s)) "exit $rc: expected a one-line 'no CUDA GPU' refusal"
    fi
    run_one cpu-kaggle-train-numba cpu numba kaggle train
    run_one cpu-kaggle-train-torch cpu torch kaggle train
    run_one cpu-terabyte-train-numba cpu numba terabyte train
    # the dry run has no GPU report: CPU torch stands in for it, to exercise compare
    compare_reports kaggle-train cpu-numba=cpu-kaggle-train-numba \
      cpu-torch-standin=cpu-kaggle-train-torch
  fi
}

main 2>&1 | tee "$OUT/gpu_check.log"
bad=$(awk -F'\t' '$2 == "FAIL" || $2 == "TIMEOUT"' "$WORK/steps.tsv" | wc -l)
if [ "${GPU_CHECK_KEEP_WORK:-0}" = 1 ]; then echo "scratch kept: $WORK"; else rm -rf "$WORK"; fi
exit $(( bad > 0 ? 1 : 0 ))
