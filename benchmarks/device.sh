#!/usr/bin/env bash
# The GPU checks of docs/performance.md, as one prepared run for a session that is lent a GPU machine.
#
#   bash benchmarks/device.sh prepare   # here, after `make demo`: fills .devdata/ (git-ignored)
#   bash benchmarks/device.sh run       # there, from the repo root, carrying .devdata; ~10 minutes on an H100
#   bash benchmarks/device.sh run toy   # the same at toy size, to try the script on a CPU first
#
# That machine has torch, transformers, pandas, pyarrow, scikit-learn and pyyaml, but not pydantic (lmc_ray's
# config) nor Ray: `prepare` downloads pydantic's wheels for its Python (3.12, x86-64) at the versions this
# checkout's .venv runs, and copies the data and the demo's finetuned models the three benchmarks read.
# Each benchmark has its own time limit, so one that runs long leaves the others their turn, and all three fit
# one 600-second device call; their output lands in $OUT (the device tool brings it back) or ./device-out.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.devdata

prepare() {
    test -d results/demo/models || { echo "device.sh: no results/demo/models (run \`make demo\` first)"; exit 2; }
    mkdir -p $KIT/whl $KIT/demo
    cp -r ../shared/data/mnli ../shared/data/hans $KIT/
    cp -r results/demo/models results/demo/data $KIT/demo/
    pins=$(.venv/bin/python -m pip list --format=freeze 2>/dev/null |
           grep -iE '^(pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|typing[-_]extensions)==')
    rm -f $KIT/whl/*.whl
    # DEVICE_PYTHON: the Python there (3.12 on the lent H200s); another to try `run toy` in a Python here
    # shellcheck disable=SC2086 # one argument per pinned package
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${DEVICE_PYTHON:-3.12}" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d $KIT/whl $pins
    du -sh $KIT
}

run() {
    out=${OUT:-device-out}
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $KIT/whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    # toy: the sizes tests/test_benchmarks.py runs on a CPU
    model=() gpu=() tune=() lines=()
    if [ "${1:-}" = toy ]; then
        model=(--layers 2 --hidden 64 --heads 2) gpu=(--examples 32 --repeat 1 --models 3)
        tune=(--examples 256 --steps 8) lines=(--max-examples 32)
    fi
    status=0
    timeout 320 python3 benchmarks/gpu.py --data-dir $KIT "${model[@]}" "${gpu[@]}" 2>&1 | tee "$out/gpu.txt" || status=1
    timeout 140 python3 benchmarks/gpu_finetune.py --data-dir $KIT "${model[@]}" "${tune[@]}" 2>&1 |
        tee "$out/gpu_finetune.txt" || status=1
    # padded batches: five sweeps each compiling FlexAttention anew would not fit the time left
    timeout 110 python3 benchmarks/dtype_error.py --models $KIT/demo/models --data $KIT/demo/data/validation.jsonl \
        --packing false "${lines[@]}" 2>&1 | tee "$out/dtype_error.txt" || status=1
    exit $status
}

case "${1:-}" in
    prepare) prepare ;;
    run) run "${2:-}" ;;
    *) echo "usage: bash benchmarks/device.sh prepare|run"; exit 2 ;;
esac
