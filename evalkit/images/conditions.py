"""Prompt files: the text condition of each generated image (``--prompts FILE``).

Formats, chosen by the file's suffix:

* ``.txt``: one prompt per line, in sample order (line i is the prompt of row i);
* ``.csv``: a header row with a file column (``file``, ``file_name``, ``filename``, ``path``,
  ``image`` or ``name``) and a prompt column (``prompt``, ``caption`` or ``text``);
* ``.jsonl``: one object per line with the same keys;
* ``.json``: COCO caption annotations (``images`` with ``id``/``file_name``, ``annotations``
  with ``image_id``/``caption``; an image's first caption in file order is its prompt, the
  COCO-30k convention of one sample per caption), or a plain object ``{file: prompt}``.

A mapping is matched to the samples by locator (``dir/a.png``, ``x.zip::a.png``): the full
locator, then its path inside the source, then the file name, then the name without suffix
(generators often write ``00042.png`` for the caption of ``00042``). Every sample must find a
prompt; an ambiguous or missing match is an :class:`~evalkit.errors.InputError` naming a few.
"""
from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from evalkit.errors import InputError

FILE_KEYS = ("file", "file_name", "filename", "path", "image", "name")
PROMPT_KEYS = ("prompt", "caption", "text")
SUFFIXES = (".txt", ".csv", ".jsonl", ".json")


def read_prompts(path: str | os.PathLike, files: Sequence[str] | None, n: int) -> list[str]:
    """The prompt of each of ``n`` samples, in sample order.

    Args:
        path: the prompts file (see the module doc for the formats).
        files: the samples' locators (None for a feature array: only ``.txt`` can be matched).
        n: number of samples.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--prompts {p}: no such file")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"--prompts {p}: unknown format {suffix!r} (use {', '.join(SUFFIXES)})")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--prompts {p}: cannot read as UTF-8 text ({exc})") from None
    if suffix == ".txt":
        lines = text.splitlines()
        if lines and lines[-1] == "" and len(lines) == n + 1:
            lines = lines[:-1]
        if len(lines) != n:
            raise InputError(f"--prompts {p}: {len(lines)} lines for {n} samples "
                             "(a .txt holds one prompt per line, in sample order)")
        return lines
    mapping = _read_mapping(p, suffix, text)
    if files is None:
        raise InputError(f"--prompts {p}: a mapping from file names needs image files as samples "
                         "(use a .txt with one prompt per line for feature arrays)")
    return match_prompts(mapping, files, str(p))


def _pick(row: Mapping, keys: tuple[str, ...], where: str) -> str:
    for k in keys:
        if k in row and row[k] is not None:
            return str(row[k])
    raise InputError(f"{where}: no {' / '.join(keys)} field (has: {', '.join(map(str, row)) or 'none'})")


def _read_mapping(p: Path, suffix: str, text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        for i, row in enumerate(reader, start=2):
            where = f"--prompts {p} line {i}"
            out[_pick(row, FILE_KEYS, where)] = _pick(row, PROMPT_KEYS, where)
        return out
    if suffix == ".jsonl":
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"--prompts {p} line {i}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise InputError(f"--prompts {p} line {i}: expected an object")
            where = f"--prompts {p} line {i}"
            out[_pick(row, FILE_KEYS, where)] = _pick(row, PROMPT_KEYS, where)
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--prompts {p}: not JSON ({exc})") from None
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        names = {img["id"]: str(img["file_name"]) for img in data["images"]}
        for ann in data["annotations"]:
            name = names.get(ann.get("image_id"))
            if name is None:
                raise InputError(f"--prompts {p}: caption for unknown image_id {ann.get('image_id')!r}")
            out.setdefault(name, str(ann["caption"]).strip())
        return out
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {str(k): v for k, v in data.items()}
    raise InputError(f"--prompts {p}: expected COCO caption JSON (images, annotations) "
                     "or an object mapping file names to prompts")


def _candidates(locator: str) -> list[str]:
    inner = locator.split("::")[-1]
    name = PurePosixPath(inner.replace("\\", "/")).name
    return [locator, inner, name, PurePosixPath(name).stem]


def match_prompts(mapping: Mapping[str, str], files: Sequence[str], where: str) -> list[str]:
    """The prompt of each locator in ``files`` (see the module doc for the matching order)."""
    index: dict[str, str | None] = {}
    for key, prompt in mapping.items():
        for cand in dict.fromkeys(_candidates(key)):
            # a short form two entries share is ambiguous (None); exact keys always win below
            index[cand] = prompt if index.get(cand, prompt) == prompt else None
    out, missing = [], []
    for loc in files:
        for cand in _candidates(loc):
            if cand in mapping:
                out.append(mapping[cand])
                break
            if index.get(cand) is not None:
                out.append(index[cand])
                break
        else:
            missing.append(loc)
    if missing:
        raise InputError(f"--prompts {where}: no prompt for {len(missing)} of {len(files)} samples "
                         f"(e.g. {', '.join(missing[:3])})")
    return out
