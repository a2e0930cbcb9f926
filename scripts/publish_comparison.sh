#!/usr/bin/env bash
# The published comparison on the built-in model: world:test, every editor on the same stream in
# the same order. One process per editor (JOBS at a time, one torch thread each); each writes its
# own results.json / summary.md / plots under OUT/<editor>, then bench-merge joins them in OUT/merged.
#   EDITS=1000 JOBS=2 scripts/publish_comparison.sh docs/results/world-test-1000
# EDITORS picks the editors (variants NAME@TAG included); EDITOR_CONFIG, a YAML file of per-editor
# overrides, is passed to every run; MERGE_ALSO lists results.json files of earlier runs of the same
# stream to merge in (editors not re-run).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/results/world-test-1000}
edits=${EDITS:-1000}
jobs=${JOBS:-2}
editors=${EDITORS:-scopeedit more lora ft grace none}
checkpoints=1,10,100,1000
extra=${EDITOR_CONFIG:+--editor-config $EDITOR_CONFIG}
mkdir -p runs "$out"
printf '%s\n' $editors | xargs -P "$jobs" -I{} sh -c \
    "editscope bench --model builtin --data world:test --editors {} --edits $edits --checkpoints $checkpoints \
     --threads 1 --quiet $extra --out '$out/{}' > 'runs/publish-{}.log' 2>&1 || { echo '{} failed, see runs/publish-{}.log'; exit 255; }"
editscope bench-merge $(printf "$out/%s/results.json " $editors) ${MERGE_ALSO:-} --out "$out/merged"
