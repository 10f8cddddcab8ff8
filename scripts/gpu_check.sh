#!/usr/bin/env bash
# The GPU checks in one command, for a machine with CUDA (none has run yet: no session had a
# GPU). Run from the repository root with the project's environment active:
#     bash scripts/gpu_check.sh [output folder]
# 1. the GPU-marked tests (2-GPU ones skip themselves on one GPU) and the fast-path tests on CUDA;
# 2. a 1-GPU DDP smoke run through torchrun (NCCL, 1 process);
# 3. scripts/bench_gpu.py's table (train vs a hand-written loop, images/s), into bench_gpu.md.
set -euo pipefail
out="${1:-${OUT:-gpu_check}}"
mkdir -p "$out"
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python -m pytest -q -m gpu tests/ 2>&1 | tail -5 | tee "$out/tests.txt"
python -m torch.distributed.run --standalone --nproc-per-node=1 -m trainer_cli experiment=synthetic_bench \
    epochs=2 trainer.device=cuda trainer.precision=bf16 "hydra.run.dir=$out/ddp_smoke" 2>&1 | tail -12 | tee "$out/ddp_smoke.txt"
python scripts/bench_gpu.py --epochs 3 --num-train 25000 2>&1 | grep -E '^\||torch' | tee "$out/bench_gpu.md"
