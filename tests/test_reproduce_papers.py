"""benchmarks/reproduce_papers.py end to end against a local 127.0.0.1 mirror with made-up
files: the sample batch download resumes after a dropped connection, the reference batch comes
through evalkit's catalog, the table prints evalkit vs published with the difference."""
from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from range_server import RangeServer

from evalkit.encoders import inception as I
from evalkit.encoders import weights as W

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_papers.py"


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    server = RangeServer()
    rng = np.random.default_rng(0)
    g = rng.standard_normal((2048, 16)).astype(np.float32)
    gs = rng.standard_normal((2023, 16)).astype(np.float32)
    ref = _npz(arr_0=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
               mu=np.zeros(2048), sigma=g @ g.T / 16, mu_s=np.zeros(2023), sigma_s=gs @ gs.T / 16)
    samples = _npz(arr_0=rng.integers(0, 256, (10, 40, 40, 3), dtype=np.uint8))
    server.files.update({"VIRTUAL_made_up32.npz": ref, "made_up_samples32.npz": samples})
    server.drop["made_up_samples32.npz"] = len(samples) // 3  # first transfer breaks off
    far = "http://unreachable.invalid/diffusion/jul-2021/ref_batches/"
    catalog = {"schema": "evalkit.catalog/1", "entries": [
        {"name": "madeup32", "kind": "images", "format": "adm-batch", "resolution": 32, "n": 6,
         "urls": [far + "VIRTUAL_made_up32.npz"],
         "stats": [{"encoder": "inception", "mu": "mu", "sigma": "sigma", "mu_s": "mu_s",
                    "sigma_s": "sigma_s", "made_by": "made up", "dim": 2048, "spatial_dim": 2023,
                    "resize": "tf1"}], "protocols": ["adm"]}]}
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    rows = {"made-up": {"reference": "madeup32", "url": far + "made_up_samples32.npz",
                        "published": {"fd": 1.5, "is": 1.0, "precision": 0.5}, "source": "test"}}
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    net = W.build_module(I.FIDInceptionV3, random_init=True, init=I._init_random, seed=1)
    torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")},
               tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setenv("EVALKIT_CATALOG", str(tmp_path / "catalog.json"))
    monkeypatch.setenv("EVALKIT_REF_DIR", str(tmp_path / "refs"))
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EVALKIT_REF_MIRROR", server.url)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    yield {"server": server, "tmp": tmp_path}
    server.close()


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_papers", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reproduce_papers_through_a_local_mirror(mirror, capsys):
    tmp = mirror["tmp"]
    rc = _script().main(["--rows-json", str(tmp / "rows.json"), "--weights",
                         str(tmp / "pt_inception-2015-12-05-6726825d.pth"), "--device", "cpu",
                         "--workers", "0", "--batch-size", "4", "--quiet", "--out",
                         str(tmp / "table.json")])
    assert rc == 0
    requests = mirror["server"].requests
    assert ("made_up_samples32.npz", None) in requests
    assert any(n == "made_up_samples32.npz" and r and r.startswith("bytes=") for n, r in requests)
    assert (tmp / "cache" / "papers" / "made_up_samples32.npz").is_file()  # resumed, complete
    assert any(n == "VIRTUAL_made_up32.npz" for n, _ in requests)  # through the catalog
    table = {r["metric"]: r for r in json.loads((tmp / "table.json").read_text())}
    assert set(table) == {"is", "fd", "sfid", "precision", "recall"}
    fd = table["fd"]
    assert fd["published"] == 1.5 and fd["difference"] == pytest.approx(fd["evalkit"] - 1.5)
    assert table["sfid"]["published"] is None and table["sfid"]["difference"] is None
    out = capsys.readouterr().out
    assert "| made-up | fd |" in out and "float16-borderline" in out
    # a second run finds the batch and downloads nothing
    before = len(requests)
    assert _script().main(["--rows-json", str(tmp / "rows.json"), "--list"]) == 0
    assert len(mirror["server"].requests) == before


def test_rows_are_well_formed():
    """The rows in benchmarks/paper_rows.json: every sample batch sits in its reference batch's
    folder of guided-diffusion's bucket (the catalog's URL), the numbers have no more digits
    than their source prints, and the full-digit README example rounds to the README table."""
    from evalkit.refs.catalog import load_catalog

    mod = _script()
    rows, catalog = mod.ROWS, load_catalog()
    assert rows["adm-g+u-256"]["published"]["fd"] == 3.9425574129223264
    assert len(rows) == 9 and json.loads(mod.ROWS_FILE.read_text())["source"]["repository"] \
        == "openai/guided-diffusion"
    for name, row in rows.items():
        assert row["url"].endswith(".npz") and set(row["published"]) <= set(mod.METRICS), name
        ref_url = catalog[row["reference"]].urls[0]
        assert ref_url.rsplit("/", 1)[0] == row["url"].rsplit("/", 1)[0], name  # same folder
        assert row["source"].startswith(("README.md", "evaluations/README.md")), name
        if row["decimals"] is not None:
            for value in row["published"].values():
                assert round(value, row["decimals"]) == value, name
        for where, values in row.get("rounded_in", {}).items():
            for key, value in values.items():
                digits = len(str(value).split(".")[1])
                assert round(row["published"][key], digits) == value, (name, where, key)


def test_rounding_column():
    mod = _script()
    row = {"published": {"fd": 2.07, "precision": 0.74}, "decimals": 2}
    got = {t[1]: t[-1] for t in mod.compare("r", row, {"fd": 2.0749, "precision": 0.7349})}
    assert got == {"fd": True, "precision": False, "is": None, "sfid": None, "recall": None}
