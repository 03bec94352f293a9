"""Third-party encoders arrive through the ``evalkit.encoders`` entry-point group.

A tiny plugin distribution (a module plus a ``*.dist-info`` folder with ``METADATA`` and
``entry_points.txt``) is written to a temporary folder and put on ``sys.path``; the registry's
plugin-loaded flag is reset so that the entry points are read again.
"""
from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
import torch

import evalkit.encoders as E
from evalkit.features.identity import identity_for
from evalkit.features.options import ExtractOptions

PLUGIN_MODULE = "evalkit_toyplugin_mod"
PLUGIN_SOURCE = textwrap.dedent('''
    import torch
    from evalkit.encoders import Encoder, EncoderSpec, Preprocess


    class MeanColour(Encoder):
        name = "toy_plugin"
        arch = "mean"
        weights_sha256 = None

        def __init__(self, resize="clean"):
            super().__init__()
            self.preprocess = Preprocess(size=8)
            self.outputs = {"features": 3}

        def forward(self, images):
            return {"features": images.float().mean(dim=(2, 3)) / 255.0}


    def build(arch=None, weights=None, resize="clean", random_init=False):
        return MeanColour(resize)


    SPEC = EncoderSpec(name="toy_plugin", factory=build, description="mean colour (test plugin)",
                       archs=("mean",), default_arch="mean", outputs={"mean": {"features": 3}},
                       weights={"mean": None}, input_size={"mean": 8})
''')


def identity_of(encoder, arch=None, weights=None, resize="clean"):
    """The encoder identity record field of extracting with these options (no model built)."""
    return identity_for(ExtractOptions(encoder=encoder, arch=arch, weights=weights,
                                       resize=resize)).as_dict()


def _write_distribution(root, entry_points: str) -> None:
    (root / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    info = root / "evalkit_toyplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: evalkit-toyplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry copy with the plugin flag reset; everything restored after the test."""
    monkeypatch.setattr(E.ENCODERS, "_entries", dict(E.ENCODERS._entries))
    monkeypatch.setattr(E, "_built_preprocess", {})
    monkeypatch.setattr(E, "_plugins_loaded", False)
    monkeypatch.delitem(sys.modules, PLUGIN_MODULE, raising=False)
    yield
    sys.modules.pop(PLUGIN_MODULE, None)


def test_plugin_encoder_is_listed_and_builds(tmp_path, monkeypatch, fresh_registry):
    _write_distribution(tmp_path, f"[evalkit.encoders]\ntoy_plugin = {PLUGIN_MODULE}:SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    names = E.list_encoders()
    assert "toy_plugin" in names and {"pixel", "inception", "dinov2", "clip"} <= set(names)
    enc = E.build_encoder("toy_plugin")
    x = torch.full((2, 3, 8, 8), 51.0)
    torch.testing.assert_close(enc(x)["features"], torch.full((2, 3), 0.2))
    assert not enc.training
    ident = identity_of("toy_plugin")  # learnt from a build: no preprocess hook given
    assert ident == {"name": "toy_plugin", "arch": "mean", "weights_sha256": None,
                     "preprocess": E.Preprocess(size=8).describe(), "precision": "fp32"}


def test_broken_plugin_warns_and_others_still_work(tmp_path, monkeypatch, fresh_registry):
    _write_distribution(tmp_path, "[evalkit.encoders]\n"
                                  "broken_one = evalkit_no_such_module_xyz:SPEC\n"
                                  f"toy_plugin = {PLUGIN_MODULE}:SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    with pytest.warns(RuntimeWarning, match="broken_one"):
        names = E.list_encoders()
    assert "toy_plugin" in names and "pixel" in names
    assert E.build_encoder("pixel")(torch.zeros(1, 3, 32, 32))["features"].shape == (1, 3072)


def test_plugin_with_a_taken_name_warns(tmp_path, monkeypatch, fresh_registry):
    (tmp_path / "evalkit_dupe_mod.py").write_text(
        "from evalkit.encoders import register_encoder, get_encoder_spec\n"
        "import dataclasses\n"
        "register_encoder(dataclasses.replace(get_encoder_spec('pixel')))\n")
    _write_distribution(tmp_path, "[evalkit.encoders]\ndupe = evalkit_dupe_mod\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evalkit_dupe_mod", raising=False)
    importlib.invalidate_caches()
    with pytest.warns(RuntimeWarning, match="dupe.*already registered"):
        assert "pixel" in E.list_encoders()
    sys.modules.pop("evalkit_dupe_mod", None)
