"""The reference store's folder changes: built aside and renamed in, removed by renaming away."""
from __future__ import annotations

import os

import numpy as np
import pytest

from evalkit.errors import InputError
from evalkit.refs import store
from evalkit.refs.layout import building, discard, drop_dir, store_root, validate_name
from evalkit.refs.manifest import read_manifest


def _names(root):
    return sorted(p.name for p in root.iterdir())


def test_building_renames_a_complete_folder_into_place(tmp_path):
    with building(tmp_path, "r") as tmp:
        (tmp / "a.txt").write_text("a")
        assert _names(tmp_path) == [tmp.name]  # nothing under the final name yet
    assert _names(tmp_path) == ["r"] and (tmp_path / "r" / "a.txt").read_text() == "a"
    assert (os.stat(tmp_path / "r").st_mode & 0o777) == 0o777 & ~_umask()


def test_building_replaces_only_when_asked(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "manifest.json").write_text("{}")
    with pytest.raises(InputError, match="already registered"):
        with building(tmp_path, "r") as tmp:
            (tmp / "new.txt").write_text("new")
    assert _names(tmp_path) == ["r"] and _names(tmp_path / "r") == ["manifest.json"]
    with building(tmp_path, "r", replace=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _names(tmp_path) == ["r"] and _names(tmp_path / "r") == ["new.txt"]


@pytest.mark.parametrize("kind", ["folder", "empty folder", "file", "link to a reference"])
def test_building_never_replaces_what_is_not_a_reference(tmp_path, kind):
    """Only a folder holding a manifest is the store's to replace; a user's folder, an empty
    one, a file or a link (even to a reference elsewhere) stays untouched, with --force too."""
    target = tmp_path / "r"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "manifest.json").write_text("{}")
    if kind == "folder":
        target.mkdir()
        (target / "notes.txt").write_text("mine")
    elif kind == "empty folder":
        target.mkdir()
    elif kind == "file":
        target.write_text("mine")
    else:
        target.symlink_to(elsewhere)
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    for replace in (False, True):
        with pytest.raises(InputError, match="not an evalkit reference"):
            with building(tmp_path, "r", replace=replace) as tmp:
                (tmp / "new.txt").write_text("new")
        with pytest.raises(InputError, match="not an evalkit reference"):
            discard(target)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("name", ["../victim", "./../victim", "a/b", "..", ".", ".lock",
                                  "_ok/../x", "-rf", "", "x" * 65, "a\\b", "nul\0"])
def test_names_that_are_not_one_store_folder_are_refused(tmp_path, name):
    with pytest.raises(InputError, match="invalid reference name"):
        validate_name(name)
    with pytest.raises(InputError, match="invalid reference name"):
        with building(tmp_path / "store", name):
            pass
    assert not (tmp_path / "victim").exists()


def test_building_failure_leaves_nothing_and_calls_on_error_first(tmp_path):
    seen = []
    with pytest.raises(RuntimeError):
        with building(tmp_path, "r", on_error=lambda tmp: seen.append(_names(tmp))) as tmp:
            (tmp / "part.txt").write_text("x")
            raise RuntimeError("writer failed")
    assert seen == [["part.txt"]] and _names(tmp_path) == []


def test_discard_removes_the_folder(tmp_path):
    (tmp_path / "r" / "sub").mkdir(parents=True)
    (tmp_path / "r" / "manifest.json").write_text("{}")
    (tmp_path / "r" / "sub" / "f").write_text("f")
    discard(tmp_path / "r")
    assert _names(tmp_path) == []


def test_failed_registration_gives_a_moved_download_back(tmp_path, monkeypatch):
    """A catalog file moved into the folder being built goes back to the drop folder when the
    registration fails, so that a retry does not download it again."""
    root = store_root(tmp_path / "refs")
    download = drop_dir(root) / "file.npz"
    download.parent.mkdir(parents=True)
    download.write_bytes(b"published bytes")

    def broken(folder, manifest):
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_manifest", broken)
    with pytest.raises(OSError, match="disk full"):
        store.store_file_reference("r", {"source_fingerprint": "sha256:x"}, download, [], root,
                                   move=True)
    assert download.read_bytes() == b"published bytes"
    assert _names(root) == [".lock", "_downloads"]
    monkeypatch.undo()
    payload = {"mu": np.zeros(3), "sigma": np.eye(3)}
    manifest = store.store_file_reference(
        "r", {"source_fingerprint": "sha256:x"}, download, [({"file": "s.npz"}, payload)], root,
        move=True)
    assert not download.exists() and manifest["source"] == str(root / "r" / "file.npz")
    assert read_manifest(root / "r")["entries"] == [{"file": "s.npz"}]
    assert sorted(_names(root / "r")) == ["file.npz", "manifest.json", "s.npz"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
