#!/usr/bin/env bash
# The published comparison on the built-in model: 1000 edits of world:test, every editor on the
# same stream in the same order. Two processes (one per core): the recursive editors and the
# baselines; each writes its own results.json / summary.md / plots.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/results/world-test-1000}
mkdir -p runs "$out"
edits=${EDITS:-1000}
editscope bench --model builtin --data world:test --editors scopeedit,more --edits "$edits" \
    --checkpoints 1,10,100,1000 --threads 1 --quiet --out "$out/recursive" > "runs/bench-recursive.log" 2>&1 &
editscope bench --model builtin --data world:test --editors lora,ft,grace,none --edits "$edits" \
    --checkpoints 1,10,100,1000 --threads 1 --quiet --out "$out/baselines" > "runs/bench-baselines.log" 2>&1 &
wait
editscope bench-merge "$out/recursive/results.json" "$out/baselines/results.json" --out "$out/merged"
