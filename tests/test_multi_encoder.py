"""Several encoders, one decode (issue 10): `--encoder tiny_test,pixel` reads and decodes every
image once, caches each encoder's features under its own identity, and gives, per encoder,
the features and records that a separate one-encoder run gives."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_images

import evalkit
import evalkit.features.loader
from evalkit.cli import main
from evalkit.features.loader import load_features
from evalkit.features.options import ExtractOptions
from evalkit.images.sources import Source
from evalkit.results.leaderboard import build_tables

ENCODERS = ("tiny_test", "pixel")  # two different resize settings: 16×16 and 32×32
METRICS = "fd,kd,precision,recall"


@pytest.fixture
def folders(tmp_path):
    sets = {"real": 14, "fake": 10, "fake2": 10}
    for seed, (name, n) in enumerate(sets.items(), 1):
        write_images(tmp_path / name, n, size=(40, 36), seed=seed)
    return {name: tmp_path / name for name in sets} | {"tmp": tmp_path, "n": sets}


def _opts(tmp, encoder, cache="cache", **kw):
    return ExtractOptions(encoder=encoder, workers=0, quiet=True, batch_size=4,
                          cache_dir=str(tmp / cache), **kw)


def _score(folders, encoder, cache="cache", **kw):
    return evalkit.score([folders["fake"], folders["fake2"]], folders["real"], metrics=METRICS,
                         options=_opts(folders["tmp"], encoder, cache, **kw))


@pytest.fixture
def decodes(monkeypatch):
    """Counts Source.load_rgb calls (the read + decode of one image; workers=0 keeps them here)."""
    count = {"n": 0}
    original = Source.load_rgb

    def counted(self, i):
        count["n"] += 1
        return original(self, i)

    monkeypatch.setattr(Source, "load_rgb", counted)
    return count


def test_several_encoders_equal_separate_runs_and_decode_once(folders, decodes):
    together = _score(folders, ",".join(ENCODERS))
    n_images = sum(folders["n"].values())
    assert decodes["n"] == n_images  # each image once, for both encoders
    assert [r.record["encoder"]["name"] for r in together] == [e for e in ENCODERS
                                                               for _ in range(2)]
    assert [r.record["name"] for r in together] == ["fake", "fake2"] * 2
    for cache in ("alone-cache", None):  # the sharded cache path and a plain extraction
        for i, enc in enumerate(ENCODERS):
            kw = {"cache": cache} if cache else {"cache": "unused", "use_cache": False}
            alone = _score(folders, enc, **kw)
            for got, want in zip(together[2 * i:2 * i + 2], alone):
                np.testing.assert_array_equal(got.scored.arrays["features"],
                                              want.scored.arrays["features"])
                assert got.record["metrics"] == want.record["metrics"]
                assert got.record["encoder"] == want.record["encoder"]
                assert got.record["samples"] == want.record["samples"]
                assert got.record["reference"] == want.record["reference"]
    assert together[0].record["metrics"] != together[2].record["metrics"]


def test_each_encoder_is_cached_under_its_own_identity(folders, monkeypatch):
    _score(folders, list(ENCODERS))
    alone = {enc: load_features(str(folders["fake"]), _opts(folders["tmp"], enc, use_cache=False))
             for enc in ENCODERS}

    def no_extraction(*a, **k):
        raise AssertionError("extraction ran although every entry is cached")

    monkeypatch.setattr(evalkit.features.loader, "extract", no_extraction)
    for enc in ENCODERS:  # a one-encoder run reads the entry the shared pass stored
        hit = load_features(str(folders["fake"]), _opts(folders["tmp"], enc))
        assert hit.meta["cache_hit"] and hit.meta["encoder"]["name"] == enc
        np.testing.assert_array_equal(hit.arrays["features"], alone[enc].arrays["features"])
    again = _score(folders, ",".join(ENCODERS))  # and the several-encoder run too
    assert len(again) == 4


def test_only_the_encoders_that_missed_run(folders, monkeypatch):
    _score(folders, "tiny_test")
    seen = []
    original = evalkit.features.loader.extract

    def spy(source, encoders, **kw):
        seen.append([e.name for e in encoders])
        return original(source, encoders, **kw)

    monkeypatch.setattr(evalkit.features.loader, "extract", spy)
    _score(folders, "tiny_test,pixel")
    assert seen == [["pixel"]] * 3  # fake, fake2, real: the tiny entries came from the cache


def test_cli_records_and_leaderboard_keep_encoders_apart(folders):
    out = folders["tmp"] / "r.json"
    res = CliRunner().invoke(main, [
        "score", str(folders["fake"]), str(folders["fake2"]), "--ref", str(folders["real"]),
        "--encoder", "tiny_test,pixel", "--metrics", METRICS, "--out", str(out), "--quiet",
        "--workers", "0", "--cache-dir", str(folders["tmp"] / "cache")])
    assert res.exit_code == 0, res.output
    assert "encoder: tiny_test" in res.output and "encoder: pixel" in res.output
    records = json.loads(out.read_text())
    assert [(r["name"], r["encoder"]["name"]) for r in records] == [
        ("fake", "tiny_test"), ("fake2", "tiny_test"), ("fake", "pixel"), ("fake2", "pixel")]
    tables = build_tables(records)
    assert sorted(p["encoder"] for p, _ in tables) == sorted(ENCODERS)  # a protocol each
    assert [len(frame) for _, frame in tables] == [2, 2]


@pytest.mark.parametrize("extra, env, words", [
    (["--arch", "pool4"], {}, "--arch/--weights"),
    (["--protocol", "dgm-eval"], {}, "--protocol"),
    (["--per-sample", "x.csv"], {}, "--per-sample"),
    ([], {"WORLD_SIZE": "2"}, "torchrun"),
])
def test_unsupported_combinations_exit_2(folders, extra, env, words):
    res = CliRunner().invoke(main, [
        "score", str(folders["fake"]), "--ref", str(folders["real"]), "--encoder",
        "tiny_test,pixel", "--quiet", "--workers", "0", *extra], env=env)
    assert res.exit_code == 2, res.output
    assert words in res.output


def test_encoder_list_forms():
    from evalkit.api import encoder_list

    assert encoder_list("a, b,a") == ["a", "b"]
    assert encoder_list(["a", "b,c"]) == ["a", "b", "c"]
    with pytest.raises(evalkit.errors.InputError):
        encoder_list(" , ")


def test_evaluator_with_several_encoders_equals_one_evaluator_each(folders, monkeypatch):
    import torch

    from evalkit.images.sources import resolve_source

    src = resolve_source(str(folders["fake"]))
    images = torch.from_numpy(np.stack([src.load_rgb(i)[0] for i in range(len(src))]))
    images = images.permute(0, 3, 1, 2)
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(folders["tmp"] / "fresh-cache"))
    passes = []
    original = evalkit.features.loader.extract
    monkeypatch.setattr(evalkit.features.loader, "extract", lambda source, encoders, **kw: (
        passes.append([e.name for e in encoders]) or original(source, encoders, **kw)))
    ev = evalkit.Evaluator(encoder=list(ENCODERS), ref=str(folders["real"]), device="cpu",
                           metrics=METRICS)
    assert passes == [list(ENCODERS)]  # the reference folder: one pass for both encoders
    for batch in images.split(4):
        ev.update(batch)
    records = ev.compute()
    assert [r["encoder"]["name"] for r in records] == list(ENCODERS)
    for enc, rec, feats in zip(ENCODERS, records, ev.features()):
        one = evalkit.Evaluator(encoder=enc, ref=str(folders["real"]), device="cpu",
                                metrics=METRICS)
        for batch in images.split(4):
            one.update(batch)
        np.testing.assert_array_equal(feats.arrays["features"], one.features().arrays["features"])
        assert rec["metrics"] == one.compute()["metrics"]
        assert rec["encoder"] == one.compute()["encoder"]
