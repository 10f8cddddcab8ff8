#!/usr/bin/env bash
# The GPU checks in one command, for a machine with CUDA (none has run yet: no session had a
# GPU). Run from the repository root with the project's environment active:
#     bash scripts/gpu_check.sh [output folder]
# 1. the GPU-marked tests (2-GPU ones skip themselves on one GPU) and the fast-path tests on CUDA;
# 2. a CUDA run started by torchrun (1 process: the torchrun entry point on the GPU; the
#    NCCL process group itself needs 2 GPUs, which the 2-GPU test in step 1 covers);
# 3. scripts/bench_gpu.py's table (train vs a hand-written loop, images/s), into bench_gpu.md.
# Every step runs even when an earlier one fails (a failing test must not cost the table);
# the exit status is non-zero when any step failed.
set -uo pipefail
out="${1:-${OUT:-gpu_check}}"
mkdir -p "$out"
export PYTHONPATH="$(pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
failed=0
step() {  # step <name> <command...>: run it, keep going, remember a failure
    local name="$1"
    shift
    "$@" || { echo "step '$name' failed (exit $?)" | tee -a "$out/failed.txt"; failed=1; }
}
step gpu-info bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee '$out/gpu.txt'"
step tests bash -c "python -m pytest -q -m gpu tests/ 2>&1 | tail -5 | tee '$out/tests.txt'"
step torchrun bash -c "python -m torch.distributed.run --standalone --nproc-per-node=1 -m trainer_cli \
    experiment=synthetic_bench epochs=2 trainer.device=cuda trainer.precision=bf16 'hydra.run.dir=$out/ddp_smoke' \
    2>&1 | tail -12 | tee '$out/ddp_smoke.txt'"
step bench bash -c "python scripts/bench_gpu.py --epochs 3 --num-train 25000 2>&1 | grep -E '^\||torch|Error' \
    | tee '$out/bench_gpu.md'"
exit "$failed"
