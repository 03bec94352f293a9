"""Features made with two different ``--weights`` files never share an identity (and so never
a cache entry or a stored reference entry), even when the files have the same name."""
from __future__ import annotations

from evalkit.features.identity import encoder_identity, local_identity
from evalkit.features.options import ExtractOptions


def test_two_weights_files_with_the_same_name_have_different_identities(tmp_path):
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
