#!/usr/bin/env bash
# GPU readiness run of issue #17, within 8 minutes of an H100/H200. Run from the repository root with the
# project installed:
#
#     bash bench/gpu.sh                                   # log in results/gpu/gpu.log
#     OFFICIAL=~/src/RAFT/core OUT=/tmp/gpu bash bench/gpu.sh
#
# Stages, each under `timeout` so that one cannot eat the others' time (the limits add up to 450 s):
#   gpu_check       bench/gpu_check.py: CUDA against the CPU, and bf16 against float32 (PASS/FAIL figures)
#   optimize-fp32   bench/optimize.py at the paper's 512×384, two RAFT proxies, 6 copies: the largest batch
#   optimize-bf16   the same under bf16 autocast
#   train-fp32      bench/train_step.py, RAFT and RAFT-small
#   train-bf16      the same under bf16 autocast
#   official        ours against the official RAFT (only with OFFICIAL, the core/ folder of a princeton-vl/RAFT checkout)
# It ends with one summary line, and exits 1 when a stage failed or ran out of time.
set -euo pipefail

PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-results/gpu}
STATUSES=()
# A stage killed by `timeout` must still leave what it printed in the log.
export PYTHONUNBUFFERED=1

# stage NAME LIMIT_S COMMAND...: run COMMAND under a time limit, print its wall seconds, record how it ended.
stage() {
    local name=$1 limit=$2 rc=0 start elapsed_ms elapsed
    shift 2
    echo
    echo "=== $name (limit ${limit} s): $*"
    start=$(date +%s%N)
    timeout -k 2 "$limit" "$@" || rc=$?
    elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
    elapsed=$(printf '%d.%d' $((elapsed_ms / 1000)) $((elapsed_ms % 1000 / 100)))
    case $rc in
        0) STATUSES+=("$name PASS") ;;
        124 | 137) STATUSES+=("$name TIMEOUT") ;;
        *) STATUSES+=("$name FAIL($rc)") ;;
    esac
    echo "=== $name: exit $rc after $elapsed s"
}

main() {
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $(uname -n)"
    nvidia-smi -L
    "$PYTHON" -c 'import sys, torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
sys.exit(None if torch.cuda.is_available() else "gpu.sh: error: torch sees no CUDA device, nothing to check")'

    stage gpu_check 90 "$PYTHON" bench/gpu_check.py --device cuda
    # Batch 1, then doubling until out of memory; the cap of 32 samples (× 6 copies) bounds the time on large cards.
    stage optimize-fp32 105 "$PYTHON" bench/optimize.py --device cuda --size 512x384 --model raft --copies 6 \
        --recipe-updates 100 --find-batch --max-batch 32
    stage optimize-bf16 85 "$PYTHON" bench/optimize.py --device cuda --size 512x384 --model raft --copies 6 \
        --recipe-updates 100 --find-batch --max-batch 32 --bf16
    # Inference figures are left to the official stage: each configuration starts a CUDA process of its own.
    stage train-fp32 45 "$PYTHON" bench/train_step.py --device cuda --no-inference
    stage train-bf16 45 "$PYTHON" bench/train_step.py --device cuda --no-inference --mixed-precision
    if [[ -n ${OFFICIAL:-} ]]; then
        stage official 80 "$PYTHON" bench/train_step.py --device cuda --official "$OFFICIAL"
    else
        echo
        echo "=== official: skipped (set OFFICIAL to the core/ folder of a princeton-vl/RAFT checkout to time it)"
        STATUSES+=("official SKIPPED")
    fi

    local failed=0 status summary
    for status in "${STATUSES[@]}"; do
        [[ $status == *" PASS" || $status == *" SKIPPED" ]] || failed=1
    done
    summary=$(printf '%s, ' "${STATUSES[@]}")
    echo
    echo "summary: ${summary%, }"
    return $failed
}

if [[ ! -f bench/gpu_check.py ]]; then
    echo "gpu.sh: error: run it from the repository root" >&2
    exit 2
fi
mkdir -p "$OUT"
main 2>&1 | tee "$OUT/gpu.log"
