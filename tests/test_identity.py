"""EncoderIdentity: one identity type; every key derived from it changes with every field."""
from __future__ import annotations

import dataclasses
import json

import pytest

from evalkit.features.cache import cache_key
from evalkit.features.identity import IDENTITY_FIELDS, EncoderIdentity
from evalkit.refs import manifest as refs
from evalkit.results.record import protocol_of

BASE = EncoderIdentity(name="inception", arch="pt_inception", weights_sha256="a" * 64,
                       preprocess=json.dumps({"size": 299, "resize": "clean"}), precision="fp32")
CHANGED = {"name": "dinov2", "arch": "other", "weights_sha256": "b" * 64,
           "preprocess": json.dumps({"size": 299, "resize": "none"}), "precision": "bf16"}


def _record(ident: EncoderIdentity) -> dict:
    return {"encoder": ident.as_dict(), "reference": {"fingerprint": "r"},
            "samples": {"n": 10}, "config": {"nsample": None}}


def _entry(ident: EncoderIdentity) -> dict:
    return refs.identity_fields(ident, True)


def test_every_field_is_covered():
    assert set(CHANGED) == set(IDENTITY_FIELDS)


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_each_field_changes_every_derived_key(field):
    other = dataclasses.replace(BASE, **{field: CHANGED[field]})
    assert other != BASE
    assert cache_key("fp", other) != cache_key("fp", BASE)
    assert refs.entry_file_name(other, False) != refs.entry_file_name(BASE, False)
    assert _entry(other)["identity_key"] != _entry(BASE)["identity_key"]
    assert not refs.same_identity(refs.entry_identity(_entry(other)),
                                  refs.entry_identity(_entry(BASE)))
    assert protocol_of(_record(other)) != protocol_of(_record(BASE))


def test_same_identity_same_keys_and_round_trips():
    again = EncoderIdentity.from_dict(json.loads(json.dumps(BASE.as_dict())))
    assert again == BASE and again.key() == BASE.key()
    assert cache_key("fp", again) == cache_key("fp", BASE)
    assert cache_key("fp2", BASE) != cache_key("fp", BASE)  # the source is in the cache key too
    assert protocol_of(_record(again)) == protocol_of(_record(BASE))


def test_unknown_stored_fields_do_not_match_known_ones():
    """An entry missing a field (None) is another identity, not a wildcard."""
    partial = dataclasses.replace(BASE, preprocess=None)
    assert not refs.same_identity((partial, True), (BASE, True))
    # only a weights digest that one side could not know is left out of the comparison
    unknown = dataclasses.replace(BASE, weights_sha256=None)
    assert refs.same_identity((unknown, False), (BASE, True))
    assert not refs.same_identity((unknown, True), (BASE, True))


def test_old_manifest_spelling_reads_as_the_same_identity():
    old = {"encoder": BASE.name, "arch": BASE.arch, "weights_sha256": BASE.weights_sha256,
           "preprocess": BASE.preprocess, "resize": "clean"}
    assert refs.entry_identity(old) == (BASE, True)


def test_one_identity_function_local_and_downloading(tmp_path, monkeypatch):
    """encoder_identity: a weight-free encoder is known without a digest; declared weights
    found nowhere are unknown locally and an OfflineError when a download is needed; a
    ``--weights`` file is hashed in both forms; the pixel key is pinned (cache keys of
    existing caches must not move)."""
    import hashlib

    from evalkit.errors import OfflineError
    from evalkit.features.identity import encoder_identity, identity_for, local_identity
    from evalkit.features.options import ExtractOptions

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pixel, known = local_identity(ExtractOptions(encoder="pixel"))
    assert known and pixel.weights_sha256 is None and pixel == identity_for(ExtractOptions("pixel"))
    assert pixel.key() == "26b1a5502f98cbcaf4b1a9b1f2f9dbf1193a8c0f378287d2a68f0a07e93742ff"
    swav = ExtractOptions(encoder="swav")
    ident, known = encoder_identity(swav, download=False)
    assert not known and ident.weights_sha256 is None and ident.arch == "rn50_800ep"
    with pytest.raises(OfflineError, match="swav_800ep_pretrain.pth.tar"):
        identity_for(swav)
    f = tmp_path / "w.pth"
    f.write_bytes(b"weights")
    given = dataclasses.replace(swav, weights=str(f))
    digest = hashlib.sha256(b"weights").hexdigest()
    assert local_identity(given) == (identity_for(given), True)
    assert identity_for(given).weights_sha256 == digest
