#!/usr/bin/env bash
# The GPU cost table in one short run (about 8 minutes, set-up included), every step bounded by `timeout`, so
# that any GPU hour can refresh it.  Results go to OUT (default benchmarks/results):
#   jacobian_dispatch_cuda.json  operators and host synchronisations per step (jacobian_cost.py --dispatch-only)
#   epoch_time_cuda.json         train.py epoch seconds, plain against the penalty (epoch_time.py)
#   jacobian_cost_cuda_time.json the time ratio per case (jacobian_cost.py --time-only: no reference checks, whose set-up
#                                took minutes a case on the GPU), case by case
# It needs jacinv's dependencies in PYTHON's environment (pip install -e . , or wheels carried to a machine
# without network); jacinv itself is taken from src/.
#     bash benchmarks/gpu_table.sh [OUT]
set -u
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
out=${1:-benchmarks/results}
py=${PYTHON:-python}
mkdir -p "$out"
timeout 60 "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU here')" || exit 1
timeout 90 "$py" benchmarks/jacobian_cost.py --device cuda --dispatch-only --methods jacinv jacinv-lazy \
    --out "$out/jacobian_dispatch_cuda.json"
timeout 150 "$py" benchmarks/epoch_time.py --device cuda --epochs 4 --out "$out/epoch_time_cuda.json"
for case in fc-cs unrolled-cs varnet-mri-4x dncnn5-identity dncnn5-blur-x2; do   # the likeliest to matter first
    timeout 50 "$py" benchmarks/jacobian_cost.py --device cuda --time-only --cases "$case" \
        --methods plain jacinv jacinv-lazy --update --out "$out/jacobian_cost_cuda_time.json"
done
