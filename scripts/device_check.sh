#!/usr/bin/env bash
# Checks that need a GPU, run from the repository root on a CUDA machine:
#   1. the integration tests with every tiny model and the built-in model on cuda
#      (EDITSCOPE_TEST_DEVICE=cuda, see tests/tiny_models.py);
#   2. a short world:test bench of every editor with --device cuda, one process per editor,
#      joined by bench-merge (compare it with the same command run with --device cpu);
#   3. the README's store workflow with the store's model on cuda.
# Usage: scripts/device_check.sh OUTDIR [EDITS]   (the package need not be installed)
# DEVICE=cpu runs the same steps on the CPU (to check the script, or for the CPU figures);
# PYTEST_ARGS (default "-n 6", pytest-xdist) go to pytest; TESTS=0 skips step 1.
# Writes OUTDIR/{env.txt,pytest.txt,bench.txt,results.json,summary.md,store.txt}.
set -u
out=${1:?usage: scripts/device_check.sh OUTDIR [EDITS]}
edits=${2:-50}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}
work=$(mktemp -d)
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
es() { "$py" -m editscope.cli.main "$@"; }
cli=("$py" -m editscope.cli.main)

{ nvidia-smi -L; "$py" -c "import sys, torch, transformers; print(sys.version.split()[0], torch.__version__, transformers.__version__, torch.cuda.get_device_name(0))"; } >"$out/env.txt" 2>&1

# 1. integration tests on cuda (in the background while the benches run)
if [ "${TESTS:-1}" != 0 ]; then
    ( EDITSCOPE_TEST_DEVICE=$device timeout 400 "$py" -m pytest -q -p no:cacheprovider ${PYTEST_ARGS--n 6} \
        tests/integration >"$out/pytest.txt" 2>&1; echo "pytest exit $?" >>"$out/pytest.txt" ) &
fi

# 2. one bench process per editor
start=$(date +%s)
pids=()
for editor in scopeedit more lora ft grace none; do
    ( timeout 400 "${cli[@]}" bench --model builtin --data world:test --editors "$editor" --edits "$edits" \
        --checkpoints "1,10,$edits" --device "$device" --out "$work/bench-$editor" --quiet --threads 2 \
        >"$work/bench-$editor.log" 2>&1; echo "$editor exit $?" >>"$work/bench-$editor.log" ) &
    pids+=($!)
done
wait "${pids[@]}"
echo "benches: $(( $(date +%s) - start )) s" >"$out/bench.txt"
tail -n 3 "$work"/bench-*.log >>"$out/bench.txt" 2>&1
es bench-merge "$work"/bench-*/results.json --out "$work/merged" >>"$out/bench.txt" 2>&1
cp "$work/merged/results.json" "$work/merged/summary.md" "$out/" 2>>"$out/bench.txt"

# 3. the store workflow on cuda
(
    set -e
    cd "$work"
    es world make-edits --split test --out bench --n 3
    es init --store s --model builtin --device "$device"
    es edit --store s --image bench/images/test-0000-edit.png --prompt "When was this made? Give the year." --target "1835"
    printf '%s\n' '{"image": "bench/images/test-0001-edit.png", "prompt": "Name the maker of this.", "target": "Trawox and Sons"}' \
        '{"image": "bench/images/test-0002-edit.png", "prompt": "What year was this made?", "target": "1963"}' >more.jsonl
    es edit --store s --stream more.jsonl
    es snapshot --store s --name reviewed
    es query --store s --image bench/images/test-0001-edit.png --prompt "Name the maker of this."
    es audit --store s
    es revert 2 --store s
    es rollback --store s --to reviewed
    es export --store s --out deployed --merged
    echo "store workflow: ok"
) >"$out/store.txt" 2>&1 || echo "store workflow: FAILED" >>"$out/store.txt"

wait
rm -rf "$work"
