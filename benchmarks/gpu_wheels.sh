#!/usr/bin/env bash
# Download (on the development machine, which reaches PyPI) the wheels the lent GPU machine needs
# for benchmarks/run_gpu.sh: its image has torch 2.11 / Python 3.12 but no test packages, and no
# network. The run tool then carries the ignored .whl/ folder: run(..., carry=[".whl"]).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps -d .whl --python-version "${PYVER:-3.12}" \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 --only-binary=:all: \
  pyspng pytorch-fid==0.3.0 clean-fid torch-fidelity prdc==0.2 vendi-score timm \
  huggingface_hub safetensors open_clip_torch ftfy regex wcwidth
du -sh .whl
