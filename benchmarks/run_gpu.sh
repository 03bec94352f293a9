#!/usr/bin/env bash
# Everything a lent GPU machine measures, in ONE call of at most ~9 minutes (issue 9):
#
#   benchmarks/gpu_wheels.sh                     # here first: test packages as wheels in .whl/
#   run(command="benchmarks/run_gpu.sh", carry=[".whl"], timeout_s=570)
#
# 1. installs the carried wheels and evalkit (into /tmp, the machine's environment untouched);
# 2. writes N (20,000) PNGs 256² on all cores;
# 3. times, each in a fresh process on the same images and random weights, same workers and
#    batch size: the decode ceiling (evalkit's loader: read + sha256 + decode + copy to the GPU,
#    nothing else; with the fast PNG decoder and with PIL), evalkit Inception fp32 (strict) /
#    tf32 / bf16, pytorch-fid, torch-fidelity, DINOv2-L/14 bf16 end to end, its forward-only
#    ceiling (random uint8 batches already on the GPU: device resize + network) and timm's
#    DINOv2-L (SDPA attention) bf16 forward;
# 4. runs the CUDA tests (device resize and extraction on CUDA vs CPU, metrics, encoders);
# 5. prints one table (also in $OUT/summary.md).
#
# Dry run on a CPU machine (proves the script end to end):
#   DEVICE=cpu N=32 WORKERS=1 BATCH=16 DINO_ARCH=vits14 benchmarks/run_gpu.sh
# (INCEPTION_PIPES / DINO_PIPES / MEASURE_TIMEOUT / TEST_TIMEOUT shorten it further)
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
N=${N:-20000}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-12}
BATCH=${BATCH:-200}
DINO_ARCH=${DINO_ARCH:-vitl14}
TEST_TIMEOUT=${TEST_TIMEOUT:-150}
MEASURE_TIMEOUT=${MEASURE_TIMEOUT:-240}   # seconds per pipeline measurement
INCEPTION_PIPES=${INCEPTION_PIPES:-decode,decode+pil,evalkit,evalkit+tf32,evalkit+bf16,pytorch-fid,torch-fidelity}
DINO_PIPES=${DINO_PIPES:-evalkit+bf16,forward+bf16,timm-dinov2}
OUT=${OUT:-benchmarks/gpu-out}
DATA=${BENCH_DATA:-.bench-data}
mkdir -p "$OUT" "$DATA"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ "$DEVICE" != cpu ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
if [ "$DEVICE" != cpu ]; then  # on the dev machine evalkit is already installed (editable)
  $PY -m pip install -q --no-deps --no-build-isolation --no-index --no-compile --upgrade \
    --target /tmp/evalkit-site . >/dev/null || exit 1
  export PYTHONPATH=/tmp/evalkit-site:${PYTHONPATH:-}
fi
{ nvidia-smi -L 2>/dev/null; echo "cpus $(nproc)"
  $PY -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])"
  $PY -c "import pyspng; print('pyspng', pyspng.__version__)" 2>&1 | tail -1
} 2>&1 | tee "$OUT/machine.txt"

BENCH=($PY benchmarks/bench_extract.py --device "$DEVICE" --n "$N" --size 256
       --workers "$WORKERS" --batch-size "$BATCH" --no-profile --timeout "$MEASURE_TIMEOUT" --data-dir "$DATA")
# Inception: decode ceilings first (they also write the images, on all cores), then the pipelines
"${BENCH[@]}" --encoders inception --pipelines "$INCEPTION_PIPES" \
  --out "$OUT/inception.md" 2>&1 | tee "$OUT/inception.log" \
  | grep --line-buffered -E "^round|images:|FAILED"
echo "inception done at $(( $(date +%s) - T0 )) s"
"${BENCH[@]}" --encoders dinov2 --dinov2-arch "$DINO_ARCH" \
  --pipelines "$DINO_PIPES" \
  --out "$OUT/dinov2.md" 2>&1 | tee "$OUT/dinov2.log" | grep --line-buffered -E "^round|FAILED"
echo "dinov2 done at $(( $(date +%s) - T0 )) s"

# CUDA tests: device resize / extraction on CUDA vs CPU, and the metric + encoder suites with
# CUDA visible. pytorch-fid 0.3.0's sqrtm(disp=False) fails with the image's newer scipy: those
# tests are deselected (an anchor/scipy incompatibility, not an evalkit result).
timeout "$TEST_TIMEOUT" $PY -m pytest -q -p no:cacheprovider -k "not pytorch_fid" \
  tests/test_resize.py tests/test_extract_device.py tests/test_metrics_moments.py \
  tests/test_metrics_knn.py tests/test_encoders.py 2>&1 | tee "$OUT/tests_cuda.log" | tail -15
echo "tests done at $(( $(date +%s) - T0 )) s"

{ echo "## run_gpu.sh: $(head -1 "$OUT/machine.txt"), N=$N, batch $BATCH, $WORKERS workers"
  echo
  for f in inception dinov2; do
    [ -f "$OUT/$f.md" ] && sed -n '/^| encoder/,/^$/p' "$OUT/$f.md"
  done
  echo "CUDA tests: $(grep -E "passed|failed|error" "$OUT/tests_cuda.log" | tail -1 \
    || echo "no summary (timed out after $TEST_TIMEOUT s?)")"
  echo "total $(( $(date +%s) - T0 )) s"
} > "$OUT/summary.md"
cat "$OUT/summary.md"
