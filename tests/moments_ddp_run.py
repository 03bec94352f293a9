"""``python -m torch.distributed.run --nproc_per_node=K moments_ddp_run.py REF OUT METRICS``:
`evalkit.score` of ``test_generate:tiny_generator`` (120 samples, the tiny test encoder,
D = 48) on K CPU processes (gloo); rank 0 writes the record to OUT. For
tests/test_generate.py: fd alone streams each rank's shards to running sums, merged on rank 0.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import TINY  # noqa: E402  (registers the tiny test encoder)
from test_generate import tiny_generator  # noqa: E402

import evalkit  # noqa: E402

if __name__ == "__main__":
    ref, out, metrics = sys.argv[1], sys.argv[2], sys.argv[3]
    evalkit.score(generator=tiny_generator, num_samples=120, ref=ref, metrics=metrics, seed=3,
                  encoder=TINY, device="cpu", workers=0, quiet=True, use_cache=False,
                  batch_size=6, out=out)
