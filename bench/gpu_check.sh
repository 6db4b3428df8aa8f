#!/usr/bin/env bash
# One prepared device check: the gpu tests, then the trainer against the plain seed-style
# loop at batch 32 (and at a large batch), side by side, then the tracking overhead on CUDA.
# Prints everything; writes nothing outside temp folders.
# Usage on a machine with CUDA and a CUDA build of torch>=2.10 in `python`:
#   bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
"$PY" -m pytest -q -m gpu tests/siamese/test_cuda.py 2>&1 | tail -5
"$PY" bench/bench_train.py --device cuda --pairs 16384 --epochs 2 --batch-size 32 --rounds 3
"$PY" bench/bench_train.py --device cuda --pairs 65536 --epochs 2 --batch-size 1024 --rounds 2
# What tracking costs when training leaves the CPU idle (warm, one process).
"$PY" bench/bench_tracking.py --device cuda --rounds 3
