#!/usr/bin/env bash
# Issue 12, part 5: the screen and the 32-task comparison (gsm_symbolic bundles of 2, seed 0,
# Qwen2.5-Coder-1.5B bf16, greedy, CPU), one evaluation after the other, each in its own
# directory because few-shot, check-in interval and the loop responses are settings of a whole
# directory. The `screen1024-*` variants and `run32-1024` run with today's defaults (no
# few-shot, no repeated 10-grams, redirects on, check-in 1024) and change one setting each.
# The older directories (screen/screen-*, run32-nofewshot) were made by the code of their
# day with the commands in README.md (`git show 9d000bf:docs/results/collaboration/screen.sh`
# for the screen-* ones).
# Resumable: rerun the script; finished units are kept, finished directories are skipped
# after a few seconds (the model loads, nothing is left to run).
# Usage: docs/results/collaboration/screen.sh [VARIANT ...]   (default: the screen1024 ones, then run32-1024)
# Environment: RUNS (default runs-collab), HOGWILD (default .venv/bin/hogwild).
set -u
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-runs-collab}
HW=${HOGWILD:-.venv/bin/hogwild}
MODEL=(--dataset gsm_symbolic --bundle 2 --seed 0 --model qwen2.5-coder-1.5b --weights bf16 --device cpu
       --workers 2)
NEW=(--limit 8 --budgets 256,512,1024 --no-few-shot --concurrency 8)
BIG=(--limit 32 --budgets 256,512,1024 --no-few-shot --concurrency 16)
PATTERNS=single,early-stop,independent,hogwild-combined,hogwild-orchestrated,hogwild-verified
declare -A ARGS=(
    [screen1024-nofewshot]="NEW --strategies $PATTERNS"
    [screen1024-layouts]="NEW --strategies hogwild-interleaved,hogwild-contiguous"
    [screen1024-checkin128]="NEW --strategies hogwild-combined --check-in-every 128"
    [screen1024-fewshot]="NEW --strategies hogwild-combined --few-shot"
    [screen1024-noguard]="NEW --strategies hogwild-combined --no-redirect-loops --no-repeat-ngram 0"
    [run32-1024]="BIG --strategies single,early-stop,independent,hogwild-combined"
    [run32-interleaved]="BIG --strategies hogwild-interleaved"
)
ORDER=(screen1024-layouts screen1024-noguard screen1024-checkin128 screen1024-fewshot run32-1024 run32-interleaved)
[ $# -gt 0 ] && ORDER=("$@")
for name in "${ORDER[@]}"; do
    [ -n "${ARGS[$name]+x}" ] || { echo "unknown variant $name (known: ${!ARGS[*]})"; exit 2; }
    read -r set rest <<<"${ARGS[$name]}"
    declare -n SET=$set
    # shellcheck disable=SC2086  # the arguments are words
    echo "=== $(date -u +%FT%TZ) $name: $HW eval ${MODEL[*]} ${SET[*]} $rest --out $RUNS/$name"
    "$HW" eval "${MODEL[@]}" "${SET[@]}" $rest --out "$RUNS/$name" || echo "=== $name failed (rc $?)"
    unset -n SET
done
echo "=== $(date -u +%FT%TZ) screen done: ${ORDER[*]}"
