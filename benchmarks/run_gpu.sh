#!/usr/bin/env bash
# The GPU checks and benchmarks of a lent GPU machine, in two phases that fit one call each.
#
#   benchmarks/run_gpu.sh setup-and-inception [N]   # install, CUDA test run, Inception pipelines
#   benchmarks/run_gpu.sh dinov2 [N]                # CUDA tests (no pytorch-fid calls), Inception
#                                                   # tf32, DINOv2-L/14 bf16 and fp32
#
# Results go to $OUT (default benchmarks/gpu-out). Test packages missing on the machine can be
# brought as wheels in .whl/ (installed into /tmp/site); evalkit itself is installed from the
# checkout into /tmp/evalkit-site without touching the machine's environment.
set -uo pipefail
PHASE=${1:?phase: setup-and-inception | dinov2}
N=${2:-50000}
OUT=${OUT:-benchmarks/gpu-out}
DATA=${BENCH_DATA:-.bench-data}
mkdir -p "$OUT" "$DATA"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index --no-compile --upgrade \
  --target /tmp/evalkit-site . >/dev/null || exit 1
export PYTHONPATH=/tmp/evalkit-site:${PYTHONPATH:-}
BENCH=(python3 benchmarks/bench_extract.py --device cuda --n "$N" --size 256 --workers 12
       --batch-size 200 --no-profile --timeout 420 --data-dir "$DATA" ${UNIQUE:+--unique $UNIQUE})

case "$PHASE" in
  setup-and-inception)
    { nvidia-smi -L; nproc; python3 -c "import torch; print('torch', torch.__version__)"; } \
      2>&1 | tee "$OUT/machine.txt"
    # metric and encoder tests with CUDA visible: metrics default to device=cuda there
    timeout 150 pytest -q -x -p no:cacheprovider tests/test_metrics_moments.py \
      tests/test_metrics_knn.py tests/test_encoders.py 2>&1 | tee "$OUT/tests_cuda.log" | tail -25
    "${BENCH[@]}" --encoders inception \
      --pipelines evalkit,pytorch-fid,torch-fidelity,evalkit+bf16 \
      --out "$OUT/extract_inception.md" 2>&1 | tee "$OUT/extract_inception.log" | tail -40
    ;;
  dinov2)
    # pytorch-fid 0.3.0 passes scipy.linalg.sqrtm(disp=False), which newer scipy removed
    timeout 80 pytest -q -p no:cacheprovider -k "not pytorch_fid" tests/test_metrics_moments.py \
      tests/test_metrics_knn.py tests/test_encoders.py 2>&1 | tee "$OUT/tests_cuda.log" | tail -25
    "${BENCH[@]}" --encoders inception --pipelines evalkit+tf32 \
      --out "$OUT/extract_inception_tf32.md" 2>&1 | tee "$OUT/extract_inception_tf32.log" | tail -8
    "${BENCH[@]}" --encoders dinov2 --pipelines evalkit+bf16,evalkit \
      --out "$OUT/extract_dinov2.md" 2>&1 | tee "$OUT/extract_dinov2.log" | tail -30
    ;;
  *) echo "unknown phase $PHASE" >&2; exit 2 ;;
esac
