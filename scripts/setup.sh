#!/usr/bin/env bash
# Creates .venv and installs siamese-lab into it. `--dev` adds the test and lint tools.
# torch is installed first and pinned to the CPU build that this project's machines carry;
# on a machine with CUDA, install a CUDA build of torch>=2.10 into .venv before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
.venv/bin/python -m pip install --quiet -e ".${extras}"
