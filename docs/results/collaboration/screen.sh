#!/usr/bin/env bash
# Issue 12, part 5: the 8-task screen (gsm_symbolic bundles of 2, seed 0, Qwen2.5-Coder-1.5B
# bf16, greedy, CPU), one evaluation after the other, each in its own directory because
# few-shot, check-in interval and redirects are settings of a whole directory.
# Resumable: rerun the script; finished units are kept, finished directories are skipped
# after a few seconds (the model loads, nothing is left to run).
# Usage: docs/results/collaboration/screen.sh [VARIANT ...]   (default: all, in this order)
# Environment: RUNS (default runs-collab), HOGWILD (default .venv/bin/hogwild).
set -u
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-runs-collab}
HW=${HOGWILD:-.venv/bin/hogwild}
COMMON=(--dataset gsm_symbolic --bundle 2 --seed 0 --model qwen2.5-coder-1.5b --dtype bfloat16
        --device cpu --limit 8 --budgets 256,512 --workers 2)
declare -A ARGS=(
    [screen-base]="--strategies single,early-stop,independent,hogwild-combined"
    [screen-nofewshot]="--strategies hogwild-combined --no-few-shot"
    [screen-checkin128]="--strategies hogwild-combined --check-in-every 128"
    [screen-patterns]="--strategies hogwild-orchestrated,hogwild-verified"
    [screen-layouts]="--strategies hogwild-interleaved,hogwild-contiguous"
    [screen-noredirect]="--strategies hogwild-combined --no-redirect-loops"
    [screen-nr10-nofewshot]="--strategies hogwild-combined --no-few-shot --no-repeat-ngram 10"
    [screen-nr10]="--strategies hogwild-combined --no-repeat-ngram 10"
)
ORDER=(screen-base screen-nofewshot screen-checkin128 screen-patterns screen-layouts screen-noredirect
       screen-nr10-nofewshot screen-nr10)
[ $# -gt 0 ] && ORDER=("$@")
for name in "${ORDER[@]}"; do
    [ -n "${ARGS[$name]+x}" ] || { echo "unknown variant $name (known: ${!ARGS[*]})"; exit 2; }
    # shellcheck disable=SC2086  # the arguments are words
    echo "=== $(date -u +%FT%TZ) $name: $HW eval ${COMMON[*]} ${ARGS[$name]} --out $RUNS/$name"
    "$HW" eval "${COMMON[@]}" ${ARGS[$name]} --out "$RUNS/$name" || echo "=== $name failed (rc $?)"
done
echo "=== $(date -u +%FT%TZ) screen done: ${ORDER[*]}"
