#!/usr/bin/env bash
# The GPU check of docs/performance.md, as one prepared call on a GPU machine that has neither Ray nor pydantic
# and may reach nothing outside (a batch GPU node, a borrowed accelerator).
#
#   bash benchmarks/device.sh prepare    # here: fills .devdata/ (git-ignored, ~10 MB)
#   bash benchmarks/device.sh run        # there, from the repo root, carrying .devdata: under 6 minutes on an H200 (gpu.py, then adapters.py)
#   bash benchmarks/device.sh run toy    # the same at toy size, to try it on a CPU first
#   bash benchmarks/device.sh finetune   # there, a second call if time is left: gpu_finetune.py, dtype_error.py
#
# That machine has torch, transformers, pandas, pyarrow, scikit-learn and pyyaml, but not pydantic (lmc_ray's
# config) nor Ray nor PEFT, and maybe neither pip nor psutil: `prepare` downloads pydantic's wheels for Python
# 3.10–3.13 and PEFT's and accelerate's (pure Python; adapters.py writes its adapters with PEFT) at the versions this
# checkout's .venv runs, and `run` unpacks those of the Python it finds (a wheel is a zip file) instead of
# installing them. Every line of gpu.py is flushed as measured and tee'd to $OUT (the device tool
# brings it back) or ./device-out, so a time-out keeps what was done; gpu.py skips its optional rows past its
# own budget, inside the time limit here.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.devdata
PYTHONS=(3.10 3.11 3.12 3.13)

prepare() {
    mkdir -p $KIT/whl $KIT/mnli $KIT/hans $KIT/cola
    cp ../shared/data/mnli/dev_matched.tsv $KIT/mnli/
    cp ../shared/data/cola/in_domain_dev.tsv $KIT/cola/
    cp ../shared/data/hans/heuristics_evaluation_set.regenerated.tsv $KIT/hans/
    if [ -d results/demo/data ]; then  # for `finetune`'s dtype_error.py (after `make demo`)
        mkdir -p $KIT/demo && cp -r lmc_ray/demo_population $KIT/demo/models && cp -r results/demo/data $KIT/demo/
    fi
    pins=$(.venv/bin/python -m pip list --format=freeze 2>/dev/null |
           grep -iE '^(pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|typing[-_]extensions)==')
    lora=$(.venv/bin/python -m pip list --format=freeze 2>/dev/null | grep -iE '^(peft|accelerate)==')
    for v in "${PYTHONS[@]}"; do
        dir=$KIT/whl/cp${v/./}
        rm -rf "$dir" && mkdir -p "$dir"
        # shellcheck disable=SC2086 # one argument per pinned package
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$v" --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$dir" $pins
        # shellcheck disable=SC2086
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$v" -d "$dir" $lora 2>/dev/null ||
            echo "device.sh: no $lora for Python $v (adapters.py will say so there)"
    done
    du -sh $KIT
}

site() {
    py=$(python3 -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
    [ -d "$KIT/whl/$py" ] || { echo "device.sh: no wheels for $py in $KIT/whl (prepare makes ${PYTHONS[*]})"; exit 2; }
    rm -rf /tmp/site && mkdir -p /tmp/site
    for w in "$KIT/whl/$py"/*.whl; do python3 -m zipfile -e "$w" /tmp/site; done
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
}

run() {
    out=${OUT:-device-out}
    mkdir -p "$out"
    site
    # toy: the sizes tests/test_benchmarks.py runs on a CPU
    toy=() lm=(--layers 6 --hidden 512 --heads 8 --texts 512)
    [ "${1:-}" = toy ] && toy=(--layers 2 --hidden 64 --heads 2 --examples 32 --repeat 1 --full-hans 2000 --batch-tokens 2048) \
        lm=(--models 4 --pairs 2 --texts 8)
    status=0
    timeout 225 python3 benchmarks/gpu.py --data-dir $KIT --budget 190 "${toy[@]}" 2>&1 | tee "$out/gpu.txt" || status=1
    timeout 110 python3 benchmarks/adapters.py --data-dir $KIT "${lm[@]}" 2>&1 | tee "$out/adapters.txt" || status=1
    exit $status
}

finetune() {
    out=${OUT:-device-out}
    mkdir -p "$out"
    site
    status=0
    timeout 140 python3 benchmarks/gpu_finetune.py --data-dir $KIT 2>&1 | tee "$out/gpu_finetune.txt" || status=1
    timeout 110 python3 benchmarks/dtype_error.py --models $KIT/demo/models --data $KIT/demo/data/validation.jsonl \
        --packing false 2>&1 | tee "$out/dtype_error.txt" || status=1
    exit $status
}

case "${1:-}" in
    prepare) prepare ;;
    run) run "${2:-}" ;;
    finetune) finetune ;;
    *) echo "usage: bash benchmarks/device.sh prepare|run [toy]|finetune"; exit 2 ;;
esac
