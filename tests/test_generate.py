"""A generator as a source (:mod:`evalkit.features.generate`): sampled batches go straight to
the encoders and score exactly like the same images written as PNG files and scored as a
folder; seeds follow the shard plan, so 1 and 2 processes (gloo) sample the same images;
balanced labels give exactly N / classes per class; a killed 2-process run resumes only its
missing shards.

``tiny_generator`` is importable as ``test_generate:tiny_generator`` by the torchrun workers
(the tests folder is put on their ``PYTHONPATH``).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
SIZE = 20
CLASSES = 4
CALLS: list[tuple[int, int, list[int] | None]] = []  # (batch size, seed, labels) per call


class _TinyNet(torch.nn.Module):
    """A seeded conv net: noise 4×10×10 (+ a class embedding) -> 3×20×20 in [0, 1]."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(2024)
        self.emb = torch.nn.Embedding(CLASSES, 4)
        self.c1 = torch.nn.Conv2d(4, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 3, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.eval()

    @torch.no_grad()
    def forward(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is not None:
            z = z + self.emb(labels)[:, :, None, None]
        x = torch.nn.functional.interpolate(torch.relu(self.c1(z)), scale_factor=2)
        return torch.sigmoid(self.c2(x))


_NET = _TinyNet()


def tiny_generator(batch_size: int, *, seed: int, labels: torch.Tensor | None = None,
                   scale: float = 1.0) -> torch.Tensor:
    """B×3×20×20 float images in [0, 1] from a seeded conv net; ``scale`` is a generator arg."""
    CALLS.append((batch_size, seed, None if labels is None else labels.tolist()))
    if os.environ.get("TINY_GEN_LOG"):  # the torchrun workers' calls, for the resume test
        with open(os.environ["TINY_GEN_LOG"], "a") as fh:
            fh.write(f"{seed}\n")
    z = torch.randn(batch_size, 4, SIZE // 2, SIZE // 2,
                    generator=torch.Generator().manual_seed(seed)) * scale
    return _NET(z, labels)


tiny_generator.num_classes = CLASSES


def uint8_generator(batch_size: int, *, seed: int, labels=None) -> torch.Tensor:
    """The same images as uint8 (the other accepted dtype)."""
    return (tiny_generator(batch_size, seed=seed, labels=labels) * 255 + 0.5).to(torch.uint8)


from conftest import TINY  # noqa: E402

import evalkit  # noqa: E402
import evalkit.features.loader as pipeline  # noqa: E402
from evalkit.errors import InputError  # noqa: E402
from evalkit.features import distributed as dist  # noqa: E402
from evalkit.features.generate import GeneratedSource, batch_seed, draw_labels  # noqa: E402
from evalkit.features.options import ExtractOptions  # noqa: E402

METRICS = "fd,kd,precision,recall"


def _expected_images(n: int, batch_size: int, seed: int, labels=None) -> np.ndarray:
    """The documented sampling contract, spelt out: shards of the plan, batches from each
    shard's start, the batch at image i seeded by SeedSequence(seed, ("sample", i))."""
    out = []
    for shard in dist.shard_ranges(n):
        for lo in range(shard.start, shard.stop, batch_size):
            hi = min(shard.stop, lo + batch_size)
            lab = None if labels is None else torch.from_numpy(labels[lo:hi])
            x = tiny_generator(hi - lo, seed=batch_seed(seed, lo), labels=lab)
            out.append((x * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def _write_folder(images: np.ndarray, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:06d}.png")
    return folder


@pytest.fixture
def ref(tmp_path):
    from conftest import write_images

    write_images(tmp_path / "ref", 30, size=(22, 18), seed=3)
    return tmp_path / "ref"


def _opts(**kw):
    base = dict(encoder=TINY, device="cpu", workers=0, quiet=True, use_cache=False,
                batch_size=6)
    base.update(kw)
    return base


@pytest.mark.parametrize("fn", [tiny_generator, uint8_generator])
def test_generator_scores_like_the_same_images_in_a_folder(fn, ref, tmp_path, monkeypatch):
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "16")  # batches of 6 restart at each shard
    n, seed = 40, 7
    gen = evalkit.score(generator=fn, num_samples=n, ref=ref, metrics=METRICS, seed=seed,
                        **_opts())
    folder = _write_folder(_expected_images(n, 6, seed), tmp_path / "as_png")
    disk = evalkit.score(folder, ref, metrics=METRICS, seed=seed, **_opts())
    for key in ("features", "logits"):
        a, b = gen.scored.arrays[key], disk.scored.arrays[key]
        assert a.shape == b.shape == (n, {"features": 48, "logits": 5}[key])
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(b).max())
    for key, value in disk.metrics.items():
        assert gen.metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert gen.record["generator"]["num_samples"] == n and gen.record["samples"]["n"] == n
    assert gen.record["generator"]["seed"] == seed and gen.record["generator"]["labels"] is None
    assert gen.record["name"] == fn.__name__


def test_content_fingerprint_equals_the_same_images_as_an_array(tmp_path):
    n = 13
    images = _expected_images(n, 5, 0)
    np.savez(tmp_path / "imgs.npz", images)
    arr = pipeline.load_features(str(tmp_path / "imgs.npz"), ExtractOptions(**_opts()))
    src = GeneratedSource.make(tiny_generator, n, batch_size=5)
    gen = pipeline.load_generated(src, ExtractOptions(**_opts()))
    assert gen.meta["source"]["fingerprint"] == arr.meta["source"]["fingerprint"]
    np.testing.assert_allclose(gen.arrays["features"], arr.arrays["features"], rtol=1e-6)


def test_seeds_and_batches_follow_the_shard_plan(monkeypatch):
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "10")
    src = GeneratedSource.make(tiny_generator, 25, seed=3, batch_size=4)
    assert list(src.batches(src.plan)) == [(0, 4), (4, 8), (8, 10), (10, 14), (14, 18),
                                           (18, 20), (20, 24), (24, 25)]
    # one shard alone is batched as inside the whole run: what makes ranks agree
    assert list(src.batches([src.plan[1]])) == [(10, 14), (14, 18), (18, 20)]
    CALLS.clear()
    src.sample(10, 14)
    ss = np.random.SeedSequence(3, spawn_key=(src_word("sample"), 10)).generate_state(2)
    assert CALLS == [(4, (int(ss[0]) << 31) ^ int(ss[1]), None)]
    assert batch_seed(3, 10) != batch_seed(3, 14) != batch_seed(4, 10)


def src_word(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def test_balanced_labels_give_exact_counts_and_reach_the_generator(ref, monkeypatch):
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "16")
    n = 40
    labels = draw_labels("balanced", n, CLASSES, seed=1)
    assert np.bincount(labels, minlength=CLASSES).tolist() == [10, 10, 10, 10]
    assert not np.array_equal(labels, np.sort(labels))  # shuffled, not class blocks
    CALLS.clear()
    res = evalkit.score(generator=tiny_generator, num_samples=n, ref=ref, metrics="fd",
                        seed=1, labels="balanced", **_opts())
    seen = [lab for _, _, batch in CALLS for lab in batch]
    assert seen == labels.tolist()  # every sample got its label, in order
    np.testing.assert_array_equal(res.scored.labels, labels)
    g = res.record["generator"]
    assert (g["labels"], g["num_classes"], g["per_class"]) == ("balanced", CLASSES, [10, 10])
    rnd = draw_labels("random", 1000, CLASSES, seed=1)
    assert set(rnd.tolist()) == set(range(CLASSES)) and np.bincount(rnd).std() > 0
    np.testing.assert_array_equal(rnd, draw_labels("random", 1000, CLASSES, seed=1))
    with pytest.raises(InputError, match="multiple of 4"):
        draw_labels("balanced", 42, CLASSES, seed=0)
    with pytest.raises(InputError, match="random or balanced"):
        draw_labels("uniform", 40, CLASSES, seed=0)


def test_bad_generator_output_is_an_input_error(ref):
    def wrong_range(batch_size, *, seed, labels=None):
        return torch.rand(batch_size, 3, 8, 8) * 2 - 1

    def wrong_count(batch_size, *, seed, labels=None):
        return torch.rand(batch_size + 1, 3, 8, 8)

    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        evalkit.score(generator=wrong_range, num_samples=4, ref=ref, metrics="fd", **_opts())
    with pytest.raises(InputError, match="asked for"):
        evalkit.score(generator=wrong_count, num_samples=4, ref=ref, metrics="fd", **_opts())
    with pytest.raises(InputError, match="--num-samples"):
        evalkit.score(generator=tiny_generator, ref=ref, **_opts())
    with pytest.raises(InputError, match="not both"):
        evalkit.score(str(ref), ref, generator=tiny_generator, num_samples=4, **_opts())
    with pytest.raises(InputError, match="cannot import"):
        evalkit.score(generator="no_such_module_x:fn", num_samples=4, ref=ref, **_opts())


def test_generator_args_reach_every_call_and_the_record(ref):
    CALLS.clear()
    a = evalkit.score(generator=tiny_generator, num_samples=8, ref=ref, metrics="fd",
                      generator_args={"scale": 0.0}, **_opts())
    assert a.record["generator"]["args"] == {"scale": 0.0}
    b = evalkit.score(generator=tiny_generator, num_samples=8, ref=ref, metrics="fd", **_opts())
    assert a.metrics["fd"] != pytest.approx(b.metrics["fd"])  # zero noise: other images


def test_save_samples_writes_a_grid_and_the_first_k(ref, tmp_path):
    res = evalkit.score(generator=tiny_generator, num_samples=12, ref=ref, metrics="fd",
                        save_samples=5, samples_dir=tmp_path / "s", **_opts())
    assert res is not None
    want = _expected_images(12, 6, 0)[:5]
    for i in range(5):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "s" / f"{i:06d}.png")),
                                      want[i])
    grid = np.asarray(Image.open(tmp_path / "s" / "grid.png"))
    assert grid.shape == (2 * SIZE, 3 * SIZE, 3)
    np.testing.assert_array_equal(grid[SIZE:, :SIZE], want[3])  # row 1, column 0


def test_several_encoders_sample_once(ref, tmp_path):
    CALLS.clear()
    both = evalkit.score(generator=tiny_generator, num_samples=12, ref=ref, metrics="fd",
                         **_opts(encoder=f"{TINY},pixel"))
    assert len(CALLS) == 2 and [r.record["encoder"]["name"] for r in both] == [TINY, "pixel"]
    alone = evalkit.score(generator=tiny_generator, num_samples=12, ref=ref, metrics="fd",
                          **_opts(encoder="pixel"))
    assert both[1].metrics["fd"] == pytest.approx(alone.metrics["fd"], rel=1e-6)
    assert both[1].record["generator"] == alone.record["generator"]


# -- the CLI, and two processes under torch.distributed.run ----------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(extra=None):
    env = dict(os.environ, EVALKIT_SHARD_SIZE="8", OMP_NUM_THREADS="1", **(extra or {}))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p)
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _run(args, cwd, procs=1, extra=None):
    head = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
             f"--master_port={_free_port()}", "-m", "evalkit"] if procs > 1
            else [sys.executable, "-m", "evalkit"])
    return subprocess.run([*head, *[str(a) for a in args]], cwd=cwd, env=_env(extra),
                          capture_output=True, text=True, timeout=240)


GEN_ARGS = ("--generator", "test_generate:tiny_generator", "--num-samples", "36",
            "--labels", "balanced", "--encoder", "pixel", "--device", "cpu", "--workers", "0",
            "--batch-size", "5", "--metrics", "fd,kd,precision,recall", "--seed", "4")


def test_two_processes_equal_one_and_a_killed_run_resumes(ref, tmp_path):
    # one process; it also caches the reference, so that the hook below stops the generator
    one = _run(["score", "--ref", ref, *GEN_ARGS, "--out", tmp_path / "r1.json", "--cache-dir",
                tmp_path / "c", "--quiet", "--generator-args", '{"scale": 0.9}'], tmp_path)
    assert one.returncode == 0, one.stdout + one.stderr
    args = ["score", "--ref", ref, *GEN_ARGS, "--out", tmp_path / "r2.json",
            "--cache-dir", tmp_path / "c", "--generator-args", '{"scale": 0.9}']
    dead = _run(args, tmp_path, procs=2, extra={dist.FAIL_AFTER_ENV: "1"})
    assert dead.returncode != 0 and "test hook" in dead.stdout + dead.stderr
    written = list((tmp_path / "c" / "features").glob("*.shard-*-of-00005.npz"))
    assert 1 <= len(written) <= 2 and not (tmp_path / "r2.json").exists()
    log = tmp_path / "calls.txt"
    two = _run(args, tmp_path, procs=2, extra={"TINY_GEN_LOG": str(log)})
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("precision") == 1, two.stdout  # rank 0 prints the table
    assert not list((tmp_path / "c" / "features").glob("*.shard-*"))  # shards removed
    assert len(list((tmp_path / "c" / "features").glob("*.npz"))) == 1  # the ref's entry only
    done = {int(p.name.split(".shard-")[1][:5]) for p in written}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(dist.SHARD_SIZE_ENV, "8")
        src = GeneratedSource.make(tiny_generator, 36, seed=4, batch_size=5)
        missing = [r for r in src.plan if r.index not in done]
        want = sorted(batch_seed(4, lo) for lo, _ in src.batches(missing))
    assert sorted(int(x) for x in log.read_text().split()) == want  # only the missing shards
    r1, r2 = (json.loads((tmp_path / f).read_text()) for f in ("r1.json", "r2.json"))
    assert r2["samples"]["fingerprint"] == r1["samples"]["fingerprint"]  # the same images
    assert r2["generator"] == r1["generator"] and r2["generator"]["per_class"] == [9, 9]
    for k, v in r1["metrics"].items():  # kd's subsets are drawn from the same rows
        assert r2["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-4 * r1["metrics"].get(
            f"{k}_std", 0) or 1e-12), k


def test_slurm_variables_stand_in_for_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")  # a batch script's own shell: no step, one process
    monkeypatch.delenv("SLURM_STEP_NUM_TASKS", raising=False)
    assert dist.slurm_env() == {} and dist.launch_env() == dist.LaunchEnv(0, 1, 0)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "gpu[07-08]")
    monkeypatch.setenv("SLURM_JOB_ID", "123456")
    assert dist.launch_env() == dist.LaunchEnv(3, 4, 1)
    assert dist.slurm_env()["MASTER_ADDR"] == "gpu07"
    assert dist.slurm_env()["MASTER_PORT"] == "23456"
    monkeypatch.setenv("RANK", "0")  # torchrun's own variables win
    assert dist.slurm_env() == {}
    assert [dist.first_host(t) for t in ("gpu[03-05,9],cpu1", "n1,n2", "a[7]", "x-y[01,02]")] \
        == ["gpu03", "n1", "a7", "x-y01"]


def test_two_srun_tasks_without_torchrun_equal_one_process(ref, tmp_path):
    """Two local processes with the variables ``srun -n 2`` sets, and no torchrun."""
    args = ["score", "--ref", ref, *GEN_ARGS, "--no-cache", "--quiet"]
    one = _run([*args, "--out", tmp_path / "r1.json"], tmp_path)
    assert one.returncode == 0, one.stdout + one.stderr
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = _env({"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": str(rank),
                    "SLURM_LOCALID": str(rank), "SLURM_STEP_NODELIST": "127.0.0.1",
                    "MASTER_PORT": port})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "evalkit", *[str(a) for a in args], "--out",
             tmp_path / "r2.json"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0].count("precision") == 1 and outs[1][0] == ""  # task 1 prints nothing
    r1, r2 = (json.loads((tmp_path / f).read_text()) for f in ("r1.json", "r2.json"))
    assert r2["samples"]["fingerprint"] == r1["samples"]["fingerprint"]
    for k, v in r1["metrics"].items():
        assert r2["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-4 * r1["metrics"].get(
            f"{k}_std", 0) or 1e-12), k


def test_cli_needs_samples_or_a_generator(ref):
    from click.testing import CliRunner

    from evalkit.cli import main

    res = CliRunner().invoke(main, ["score", "--ref", str(ref)])
    assert res.exit_code == 2 and "--generator" in res.output
    res = CliRunner().invoke(main, ["score", "--ref", str(ref), "--generator",
                                    "test_generate:tiny_generator", "--num-samples", "4",
                                    "--generator-args", "[1]"])
    assert res.exit_code == 2 and "JSON object" in res.output


def test_device_resize_path_matches_the_pil_path():
    """``resize_on="device"`` (what CUDA runs): the generated uint8 batch is resized by the
    engine's matrix resize instead of PIL per image; the same features to float rounding."""
    from conftest import TinyEncoder

    from evalkit.features.extract import assemble, extract

    src = GeneratedSource.make(tiny_generator, 20, seed=2, batch_size=6)
    got = {}
    for where in ("device", "workers"):
        shards = extract(src, TinyEncoder(), device="cpu", quiet=True, shards=src.plan,
                         resize_on=where)
        got[where] = assemble(src, shards)
    a, b = got["device"].arrays["features"], got["workers"].arrays["features"]
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 / 255)  # ≤ 1e-4 on 0-255 pixels
    assert got["device"].meta["content_fingerprint"] == got["workers"].meta["content_fingerprint"]


def test_moments_only_metrics_keep_no_rows_and_equal_the_kept_rows(tmp_path, monkeypatch):
    """fd alone: the samples stream to float64 running sums per shard (no rows kept) and
    score what the same images written as PNG files and scored with their rows score; fd
    with fd_inf, or too few samples (N <= 2·D), keep the rows."""
    from conftest import write_images

    ref = tmp_path / "ref"
    write_images(ref, 70, size=(22, 18), seed=3)
    # (more reference images than dimensions: a singular reference covariance would route
    # the rows path through another, equally exact, square-root algorithm)
    monkeypatch.setenv(dist.SHARD_SIZE_ENV, "32")  # several shards, the last one partial
    n, seed = 120, 3  # TINY features: D = 48, so N > 2·D streams
    gen = evalkit.score(generator=tiny_generator, num_samples=n, ref=ref, metrics="fd",
                        seed=seed, **_opts())
    assert not gen.scored.has_samples and gen.scored.n == n
    folder = _write_folder(_expected_images(n, 6, seed), tmp_path / "as_png")
    disk = evalkit.score(folder, ref, metrics="fd", seed=seed, **_opts())
    assert disk.scored.has_samples
    x = disk.scored.arrays["features"].astype(np.float64)  # the rows the stream never kept
    mu, cov = gen.scored.moments["features"]
    np.testing.assert_allclose(mu, x.mean(0), rtol=0, atol=1e-12 * np.abs(x).max())
    np.testing.assert_allclose(cov, np.cov(x, rowvar=False), rtol=0,
                               atol=1e-12 * np.abs(x).max() ** 2)
    # float64 round-off of an O(1) distance, far below any float32 feature difference
    assert gen.metrics["fd"] == pytest.approx(disk.metrics["fd"], rel=1e-10, abs=1e-12)
    both = evalkit.score(generator=tiny_generator, num_samples=n, ref=ref, metrics="fd,fd_inf",
                         seed=seed, **_opts())
    assert both.scored.has_samples and both.metrics["fd"] == pytest.approx(gen.metrics["fd"],
                                                                           rel=1e-10)
    assert both.record["samples"]["fingerprint"] == gen.record["samples"]["fingerprint"]
    few = evalkit.score(generator=tiny_generator, num_samples=90, ref=ref, metrics="fd",
                        seed=seed, **_opts())
    assert few.scored.has_samples


def test_streamed_moments_on_two_processes_equal_one(tmp_path):
    """fd alone under torchrun (2 CPU processes, gloo): each rank reduces its own shards to
    running sums, rank 0 merges them; the value equals one process's (and the kept-rows
    path's) to float64 round-off."""
    from conftest import write_images

    ref = tmp_path / "ref"
    write_images(ref, 70, size=(22, 18), seed=3)
    script = HERE / "moments_ddp_run.py"
    got = {}
    for procs, metrics in ((1, "fd"), (2, "fd"), (1, "fd,fd_inf")):
        out = tmp_path / f"r{procs}-{metrics.replace(',', '_')}.json"
        head = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}",
                 f"--master_port={_free_port()}"] if procs > 1 else [sys.executable])
        done = subprocess.run([*head, str(script), str(ref), str(out), metrics], cwd=tmp_path,
                              env=_env(), capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        got[procs, metrics] = json.loads(out.read_text())
    one, two, rows = got[1, "fd"], got[2, "fd"], got[1, "fd,fd_inf"]
    assert one["samples"].get("stats_only") and two["samples"].get("stats_only")
    assert not rows["samples"].get("stats_only")
    assert one["samples"]["fingerprint"] == two["samples"]["fingerprint"] == \
        rows["samples"]["fingerprint"]
    assert two["metrics"]["fd"] == pytest.approx(one["metrics"]["fd"], rel=1e-10, abs=1e-12)
    assert rows["metrics"]["fd"] == pytest.approx(one["metrics"]["fd"], rel=1e-10, abs=1e-12)
