"""evalkit in a training loop, with the real libraries in offline modes: the Lightning callback
logging to a CSVLogger and a TensorBoardLogger (read back through the CSV and TensorBoard's
own event reader), Weights & Biases offline (the run's history file read back), MLflow with a
local file store (read back through its client); every logged value equals the record's.
The evaluator equals `evalkit.score(generator=...)` and its memory stays flat.
"""
from __future__ import annotations

import csv
import gc
import json
import os
import tracemalloc
from typing import Any

import numpy as np
import pytest
import torch
from conftest import TINY, write_images
from test_generate import tiny_generator

import evalkit
from evalkit.integrations import TrainingEvaluator
from evalkit.integrations.loggers import scalars

OPTS = dict(encoder=TINY, device="cpu", batch_size=8)
METRICS = "fd,kd,precision,recall"


@pytest.fixture
def ref(tmp_path):
    write_images(tmp_path / "ref", 40, size=(22, 18), seed=3)
    return tmp_path / "ref"


def test_training_evaluator_equals_score_with_the_generator(ref):
    ev = TrainingEvaluator(ref, metrics=METRICS, num_samples=24, seed=5, **OPTS)
    rec = ev.evaluate(tiny_generator, step=100)
    want = evalkit.score(generator=tiny_generator, num_samples=24, ref=ref, metrics=METRICS,
                         seed=5, workers=0, quiet=True, use_cache=False, **OPTS)
    assert rec["step"] == 100 and rec["generator"] == want.record["generator"]
    assert rec["samples"]["fingerprint"] == want.record["samples"]["fingerprint"]
    for k, v in want.metrics.items():
        assert rec["metrics"][k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


def _rss() -> int:
    """This process's resident memory now, in bytes (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_memory_is_flat_over_twenty_evaluations(ref):
    ev = TrainingEvaluator(ref, metrics="fd", num_samples=64, seed=0, encoder="pixel",
                           device="cpu", batch_size=16)
    for step in range(3):  # warm up: lazy imports, caches of the libraries
        ev.evaluate(tiny_generator, step=step)
    gc.collect()
    rss0 = _rss()
    for step in range(3, 23):  # resident memory, torch's allocations included
        ev.evaluate(tiny_generator, step=step)
    gc.collect()
    rss_grown = _rss() - rss0
    tracemalloc.start()  # then what Python and numpy allocate, exactly (not torch)
    try:
        base = tracemalloc.get_traced_memory()[0]
        for step in range(23, 33):
            ev.evaluate(tiny_generator, step=step)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # one evaluation's features alone are 64 x 3072 float32 = 786 kB: keeping them would
    # grow RSS 15.7 MB over 20 evaluations (allocator noise here: about ±2.5 MB), and the
    # traced memory 7.9 MB over 10
    assert rss_grown < 6 * 786_432, rss_grown
    assert grown < 400_000, grown
    assert [h["step"] for h in ev.history] == list(range(33))
    assert len({h["metrics"]["fd"] for h in ev.history}) == 1  # same seed, same model


def test_reference_is_read_once_and_its_moments_stay_on_the_device(tmp_path, monkeypatch):
    """fd only with N > 2·D: the reference is read once, reduced to float64 moments held on
    the evaluator's device (the same tensors at every evaluation, its rows dropped), the
    samples stream to running sums, and the values equal evalkit.score with the generator."""
    import evalkit.integrations.training as training

    big = tmp_path / "big_ref"
    write_images(big, 70, size=(22, 18), seed=3)  # 70 > D = 48: a non-singular reference
    reads = []
    real_load = training.load_source

    def counting(*args, **kwargs):
        reads.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(training, "load_source", counting)
    ev = TrainingEvaluator(big, metrics="fd", num_samples=100, seed=2, **OPTS)
    mu, cov = ev.real.moments["features"]
    assert not ev.real.has_samples and ev.streamed == ("features",)
    assert mu.device == cov.device == ev.device and cov.dtype == torch.float64
    for step in range(20):
        rec = ev.evaluate(tiny_generator, step=step)
        assert ev.real.moments["features"][1] is cov  # reused, not reloaded or copied
    assert reads == [big]
    assert rec["samples"]["stats_only"] and rec["samples"]["n"] == 100
    monkeypatch.undo()
    want = evalkit.score(generator=tiny_generator, num_samples=100, ref=big, metrics="fd,kd",
                         seed=2, workers=0, quiet=True, use_cache=False, **OPTS)
    assert want.scored.has_samples  # kd needs rows: this run kept them
    from evalkit.features.loader import load_features
    from evalkit.features.options import ExtractOptions

    x = load_features(str(big), ExtractOptions(encoder=TINY, device="cpu", workers=0, quiet=True,
                                               use_cache=False)).arrays["features"]
    x = x.astype(np.float64)
    scale = np.abs(x).max()
    np.testing.assert_allclose(mu.cpu().numpy(), x.mean(0), rtol=0, atol=1e-12 * scale)
    np.testing.assert_allclose(cov.cpu().numpy(), np.cov(x, rowvar=False), rtol=0,
                               atol=1e-12 * scale ** 2)
    # float64 round-off of an O(1) distance between the streamed and the kept-rows paths
    assert rec["metrics"]["fd"] == pytest.approx(want.metrics["fd"], rel=1e-10, abs=1e-12)


ROWS_METRICS = "fd,fd_inf,kd,precision,recall,density,coverage,realism,authpct"


def test_reference_rows_move_to_the_device_once_and_give_the_same_numbers(tmp_path, monkeypatch):
    """Metrics that need rows (kd, prdc, fd_inf, ...): the reference rows are converted to a
    tensor on the evaluator's device once, and every evaluation hands that same tensor to the
    metrics declaring ``device_rows`` (all of these); the values equal
    evalkit.score with the generator, which passes numpy arrays."""
    from evalkit.metrics._registry import MetricSpec
    from evalkit.scoring.run import ResidentRows

    big = tmp_path / "big_ref"
    write_images(big, 70, size=(22, 18), seed=3)  # 70 > D = 48: fd's moments path
    made = []
    real_init = ResidentRows.__init__

    def counting_init(self, *args, **kwargs):
        made.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(ResidentRows, "__init__", counting_init)
    given: dict[str, list] = {}
    real_call = MetricSpec.__call__

    def spying_call(self, **arrays):
        given.setdefault(self.name, []).append(arrays.get("real"))
        return real_call(self, **arrays)

    monkeypatch.setattr(MetricSpec, "__call__", spying_call)
    ev = TrainingEvaluator(big, metrics=ROWS_METRICS, num_samples=60, seed=4, **OPTS)
    host = ev.real.get("features")
    assert isinstance(host, np.ndarray) and ev.real.has_samples
    recs = [ev.evaluate(tiny_generator, step=step) for step in range(4)]
    assert len(made) == 1 and made[0].conversions == 1  # one array, converted once
    (held,) = made[0].tensors()
    assert isinstance(held, torch.Tensor) and held.device == ev.device
    assert held.dtype == torch.float32 and held.shape == host.shape
    if ev.device.type == "cpu":  # in host memory the tensor is the numpy array's own buffer
        assert held.data_ptr() == host.ctypes.data
    for name in ("fd", "fd_inf", "kd", "precision", "realism", "authpct"):
        assert len(given[name]) == 4, name
        assert all(r is held for r in given[name]), name  # the same tensor every evaluation
    monkeypatch.undo()
    want = evalkit.score(generator=tiny_generator, num_samples=60, ref=big, metrics=ROWS_METRICS,
                         seed=4, workers=0, quiet=True, use_cache=False, **OPTS)
    assert set(want.metrics) == set(recs[0]["metrics"])
    for rec in recs:
        for k, v in want.metrics.items():
            # the same operations on the same float32 values: equal up to float64 round-off
            # (identical in practice); kd ~ 1e-3 .. 1, fd ~ 1, shares exact
            assert rec["metrics"][k] == pytest.approx(v, rel=1e-12, abs=1e-15), k


def _device_rows_functions() -> list[str]:
    """One registry name per metric function declaring ``device_rows`` (read from the registry,
    so a metric flagged later is covered without editing this test)."""
    from evalkit.metrics import metric_specs

    names: dict[Any, str] = {}
    for spec in metric_specs():
        if spec.device_rows:
            names.setdefault(spec.fn, spec.name)
    return list(names.values())


class _NoHostTensor(torch.Tensor):
    """A tensor that refuses to become a numpy array (``np.asarray``, ``.numpy()``, also after
    a no-op ``.cpu()``): what a CUDA tensor does. Derived tensors are plain tensors."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("np.asarray on a resident tensor (fails on CUDA)")

    def numpy(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(".numpy() on a resident tensor (fails on CUDA)")


def _resident_sets() -> tuple[Any, Any, Any]:
    """Overlapping Gaussian reference, generated and held-out sets with labels: precision,
    recall, density and coverage strictly inside (0, 1), N > D, and 72-wide features so that
    ct takes its PCA path (D > 64)."""
    from evalkit.features.featureset import FeatureSet

    rng = np.random.default_rng(7)

    def fs(n: int, scale: float, shift: float, source: str) -> FeatureSet:
        return FeatureSet({"features": (rng.normal(size=(n, 72)) * scale + shift).astype(np.float32),
                           "embedding": (rng.normal(size=(n, 8)) + shift).astype(np.float32),
                           "spatial": rng.normal(size=(n, 12)).astype(np.float32)},
                          labels=np.arange(n) % 2, source=source)

    return fs(300, 1.0, 0.0, "real"), fs(200, 1.05, 0.05, "fake"), fs(150, 1.0, 0.0, "test")


@pytest.mark.parametrize("name", _device_rows_functions())
def test_resident_rows_give_every_device_rows_metric_the_numbers_of_numpy_rows(name):
    """score_set with the reference (and held-out) rows held as tensors (ResidentRows) equals
    score_set with the numpy rows bit for bit, for every metric function declaring
    ``device_rows``; both as ResidentRows makes them on CPU (sharing the numpy buffer) and as a
    separate copy that refuses any numpy conversion, as a CUDA tensor would."""
    from evalkit.metrics import get_metric
    from evalkit.scoring.plan import parse_metric_list
    from evalkit.scoring.run import ResidentRows, resident_kinds
    from evalkit.scoring.score import ScoreConfig, score_set

    real, fake, test = _resident_sets()
    spec = get_metric(name)
    config = ScoreConfig(metrics=parse_metric_list(",".join(spec.group or (name,))), seed=3,
                         device="cpu", progress=False)
    want = score_set(fake, real, test, config, name="x").values
    assert want and all(np.isfinite(v) for v in want.values())
    if "precision" in want:
        assert 0 < want["precision"] < 1 and 0 < want["coverage"] < 1

    resident = ResidentRows(real, resident_kinds([spec], real), "cpu",
                            test=test, test_kinds=resident_kinds([spec], test, role="test"))
    assert resident.conversions == 1 + spec.needs_test  # the reference's array (and test's)
    shared = score_set(fake, real, test, config, name="x", resident=resident).values
    assert shared == want  # the same float operations on the same values: identical

    for key, (arr, held) in list(resident._held.items()):  # copies, not views of the buffer
        copy = torch.tensor(arr).as_subclass(_NoHostTensor)
        assert copy.data_ptr() != held.data_ptr()
        resident._held[key] = (arr, copy)
    copied = score_set(fake, real, test, config, name="x", resident=resident).values
    assert copied == want


# -- Lightning ---------------------------------------------------------------------------------
pl = pytest.importorskip("lightning.pytorch")


from lightning_models import TinyGAN  # noqa: E402


def test_lightning_callback_logs_what_the_records_say(ref, tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from evalkit.integrations.lightning import EvalkitCallback

    cb = EvalkitCallback(ref, every_n_steps=2, num_samples=16, metrics="fd,kd",
                         out_dir=tmp_path / "records", **OPTS)
    csv_logger = CSVLogger(tmp_path / "csv", name="run")
    tb_logger = TensorBoardLogger(tmp_path / "tb", name="run")
    trainer = pl.Trainer(max_steps=6, callbacks=[cb], logger=[csv_logger, tb_logger],
                         accelerator="cpu", devices=1, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(TinyGAN())
    records = {r["step"]: r for r in cb.records}
    assert sorted(records) == [2, 4, 6]
    fds = [records[s]["metrics"]["fd"] for s in (2, 4, 6)]
    assert len(set(fds)) == 3  # the model moved between evaluations
    for s, r in records.items():  # a record per evaluation, with its step
        on_disk = json.loads((tmp_path / "records" / f"step-{s:08d}.json").read_text())
        assert on_disk["step"] == s and on_disk["metrics"] == r["metrics"]
    with open(csv_logger.experiment.metrics_file_path) as fh:
        rows = [row for row in csv.DictReader(fh) if row.get("evalkit/fd")]
    assert {int(row["step"]): float(row["evalkit/fd"]) for row in rows} == pytest.approx(
        {s: r["metrics"]["fd"] for s, r in records.items()}, rel=1e-12)
    acc = EventAccumulator(tb_logger.log_dir)
    acc.Reload()
    for key in ("fd", "kd"):
        events = acc.Scalars(f"evalkit/{key}")
        got = {e.step: e.value for e in events}
        want = {s: r["metrics"][key] for s, r in records.items()}
        assert got == pytest.approx(want, rel=1e-6)  # TensorBoard stores float32


# -- plain loggers -----------------------------------------------------------------------------
def _two_evaluations(ref, logger):
    ev = TrainingEvaluator(ref, metrics="fd,kd", num_samples=16, loggers=[logger],
                           log_images=4, **OPTS)
    recs = [ev.evaluate(tiny_generator, step=10)]
    recs.append(ev.evaluate(lambda b, *, seed, labels=None: tiny_generator(b, seed=seed,
                                                                           scale=0.5), step=20))
    logger.close()
    return recs


def test_tensorboard_logger_scalars_and_grid(ref, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from evalkit.integrations.loggers import TensorBoardLogger

    recs = _two_evaluations(ref, TensorBoardLogger(tmp_path / "tb"))
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    acc.Reload()
    got = {e.step: e.value for e in acc.Scalars("evalkit/fd")}
    assert got == pytest.approx({10: recs[0]["metrics"]["fd"], 20: recs[1]["metrics"]["fd"]},
                                rel=1e-6)
    (img,) = [e for e in acc.Images("evalkit/samples") if e.step == 10]
    assert (img.width, img.height) == (40, 40)  # 2×2 grid of 20×20 samples


def _wandb_history(path):
    """The history rows of an offline run's ``run-ID.wandb`` file: a LevelDB-style log
    (7-byte file header; 32 KiB blocks; per chunk crc32, length, type full/first/middle/last)
    of ``wandb_internal_pb2.Record`` protobufs, decoded with wandb's own message classes."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    pos, buf, block, rows = 7, b"", 32768, []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            if rec.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                             for i in rec.history.item})
    return rows


def test_wandb_offline_logger(ref, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from evalkit.integrations.loggers import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(mode="offline", dir=str(tmp_path), project="evalkit-test")
    recs = _two_evaluations(ref, logger)
    wandb.teardown()  # stops wandb's service process: the run file is complete
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    rows = _wandb_history(log)
    assert [row["_step"] for row in rows] == [10, 20]
    for row, rec in zip(rows, recs):
        for key in ("fd", "kd", "kd_std"):
            assert row[f"evalkit/{key}"] == rec["metrics"][key]  # JSON round trip: exact
    assert wandb.run is None  # finished


def test_mlflow_file_store_logger(ref, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: local files on request
    from evalkit.integrations.loggers import MLflowLogger

    uri = (tmp_path / "mlruns").as_uri()
    logger = MLflowLogger(tracking_uri=uri, experiment="evalkit-test")
    run_id = logger.run.info.run_id
    recs = _two_evaluations(ref, logger)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    for key in ("fd", "kd"):
        hist = client.get_metric_history(run_id, f"evalkit/{key}")
        assert {m.step: m.value for m in hist} == pytest.approx(
            {10: recs[0]["metrics"][key], 20: recs[1]["metrics"][key]}, rel=1e-12)
    assert client.list_artifacts(run_id, "samples")[0].path == "samples/step-00000010.png"
    assert scalars(recs[0])["evalkit/fd"] == recs[0]["metrics"]["fd"]
    assert np.isfinite(recs[1]["metrics"]["fd"])


def test_lightning_ddp_two_processes_equal_one(ref, tmp_path):
    """Lightning's ``ddp`` strategy, 2 CPU processes (gloo): every rank samples its shards
    (each batch exactly once over the two ranks), rank 0 scores, logs and writes the records,
    every rank gets the records, and the values equal a 1-process run (the model is the same
    at each step: the loss depends on the step only and DDP averages equal gradients)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent / "lightning_ddp_run.py"
    env = dict(os.environ, EVALKIT_SHARD_SIZE="4", PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    runs = {}
    for devices in (1, 2):
        out = tmp_path / f"d{devices}"
        done = subprocess.run([sys.executable, str(script), str(ref), str(out), str(devices)],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        runs[devices] = out
    one = json.loads((runs[1] / "rank-0.json").read_text())["records"]
    ranks = [json.loads((runs[2] / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert [r["step"] for r in one] == [2, 4]
    for rank in ranks:  # every rank returned rank 0's records, equal to one process's
        assert [r["step"] for r in rank["records"]] == [2, 4]
        for mine, single in zip(rank["records"], one):
            assert mine["samples"]["fingerprint"] == single["samples"]["fingerprint"]
            assert mine["metrics"] == pytest.approx(single["metrics"], rel=1e-12, abs=0)
    # both ranks sampled: 16 samples in shards of 4, batches of 4, shards dealt round-robin
    calls = [sorted((tmp_path / "d2" / f"calls-{r}.txt").read_text().split("\n")[:-1])
             for r in (0, 1)]
    single_calls = sorted((tmp_path / "d1" / "calls-0.txt").read_text().split("\n")[:-1])
    assert len(calls[0]) == len(calls[1]) == 4 and sorted(calls[0] + calls[1]) == single_calls
    # rank 0 alone wrote the records and the log
    assert not (runs[2] / "calls-1.txt").samefile(runs[2] / "calls-0.txt")
    on_disk = sorted(p.name for p in (runs[2] / "records").glob("*.json"))
    assert on_disk == ["step-00000002.json", "step-00000004.json"]
    with open(runs[2] / "csv" / "run" / "version_0" / "metrics.csv") as fh:
        rows = [row for row in csv.DictReader(fh) if row.get("evalkit/fd")]
    assert {int(r["step"]): float(r["evalkit/fd"]) for r in rows} == pytest.approx(
        {r["step"]: r["metrics"]["fd"] for r in one}, rel=1e-12)
    assert not list((runs[2] / "csv").glob("run/version_1"))  # no second logger directory
