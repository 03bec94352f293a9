"""Features made with two different ``--weights`` files never share an identity (and so never
a cache entry or a stored reference entry), even when the files have the same name."""
from __future__ import annotations

import pytest

from evalkit import encoders
from evalkit.encoders.spec import WeightsSpec
from evalkit.features.identity import encoder_identity, local_identity
from evalkit.features.options import ExtractOptions


@pytest.mark.parametrize("declared", [None, "ab" * 32])
def test_two_weights_files_with_the_same_name_have_different_identities(tmp_path, monkeypatch,
                                                                        declared):
    """Also when the default weights declare their full sha256: ``--weights`` names other bytes."""
    if declared:
        monkeypatch.setattr(encoders, "encoder_weights_spec", lambda name, arch=None: WeightsSpec(
            filename="pt_inception-2015-12-05-6726825d.pth", sha256=declared))
    a, b = tmp_path / "a" / "pt_inception-2015-12-05-6726825d.pth", \
        tmp_path / "b" / "pt_inception-2015-12-05-6726825d.pth"
    for path, payload in ((a, b"weights one"), (b, b"weights two")):
        path.parent.mkdir()
        path.write_bytes(payload)
    ident_a, known_a = encoder_identity(ExtractOptions(encoder="inception", weights=str(a)))
    ident_b, known_b = encoder_identity(ExtractOptions(encoder="inception", weights=str(b)))
    default, _ = local_identity(ExtractOptions(encoder="inception"))
    assert known_a and known_b
    assert ident_a.weights_sha256 != ident_b.weights_sha256
    assert ident_a.key() != ident_b.key()
    assert default.weights_sha256 not in (ident_a.weights_sha256, ident_b.weights_sha256)
