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
