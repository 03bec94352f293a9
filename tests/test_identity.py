"""EncoderIdentity: one identity type; every key derived from it changes with every field."""
from __future__ import annotations

import dataclasses
import hashlib
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


# The declared output set of every built-in encoder and its outputs_version. Changing an
# encoder's outputs without bumping its outputs_version would let the cache serve entries
# that lack the new output: update both together (and this table).
DECLARED_OUTPUTS = {
    "pixel": (1, {"features"}),
    "inception": (1, {"features", "logits", "spatial"}),
    "dinov2": (1, {"features"}),
    "clip": (2, {"features", "embedding", "projected"}),  # 2: projected added
    "convnext": (1, {"features"}),
    "data2vec": (1, {"features"}),
    "mae": (1, {"features"}),
    "swav": (1, {"features"}),
    "simclr": (1, {"features"}),
    "timm": (1, {"features"}),
}


def test_output_sets_are_versioned():
    from evalkit import encoders

    assert {name: (b.outputs_version, set(b.default_outputs))
            for name, b in encoders.BUILTINS.items()} == DECLARED_OUTPUTS
    for name, (version, _) in DECLARED_OUTPUTS.items():
        assert encoders.encoder_outputs_version(name) == version
    assert encoders.get_encoder_spec("clip").outputs_version == 2  # the module's spec agrees
    assert encoders.encoder_outputs_version("not_registered") == 1


def _cache_key_by_hand(fingerprint: str, identity_key: str, outputs: int | None = None) -> str:
    payload = {"schema": 2, "source": fingerprint, "encoder": identity_key}
    if outputs is not None:
        payload["outputs"] = outputs
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def test_cache_keys_of_encoders_whose_outputs_did_not_change_are_kept():
    """The output-set version enters the cache key only where it is not 1: pixel and
    inception keep the keys they had before versions existed (pinned literals, computed
    before the change); clip's key moved (its entries without ``projected`` are not served)."""
    from evalkit.features.identity import local_identity
    from evalkit.features.options import ExtractOptions

    fp = "f" * 64
    pixel = local_identity(ExtractOptions(encoder="pixel"))[0]
    inception = dataclasses.replace(local_identity(ExtractOptions(encoder="inception"))[0],
                                    weights_sha256="ab" * 32)
    clip = dataclasses.replace(
        local_identity(ExtractOptions(encoder="clip", arch="ViT-B-32:openai"))[0],
        weights_sha256="ab" * 32)
    assert cache_key(fp, pixel) == \
        "b40456c5b000e6ef049182d2c599ab51d7497a87159fa62274a13ca703b55cfb"
    assert cache_key(fp, inception) == \
        "6601784ee476299aa5a369be2feecef201495195c655a635a251839125158f1b"
    before = "19559aedb7d4e88edc116a1da6ec0b37856b1753e1f3c36f90589e8eb29c0f29"  # clip, v1 key
    assert _cache_key_by_hand(fp, clip.key()) == before
    assert cache_key(fp, clip) != before
    assert cache_key(fp, clip) == _cache_key_by_hand(fp, clip.key(), outputs=2)
