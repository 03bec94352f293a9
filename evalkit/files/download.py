"""Resumable, verified HTTP downloads of reference files and encoder weights (stdlib urllib,
tqdm progress): the one download stack.

A download goes to ``DEST.part`` next to its destination. An interrupted transfer (the server
drops the connection, a read times out) is resumed with an HTTP ``Range`` request, within the
same call up to ``retries`` times and across calls from the ``.part`` file left behind. When
the bytes are complete the size and sha256 are checked against what the publisher states;
a mismatch deletes the partial file and raises :class:`DownloadError`, so nothing half-done is
ever registered. Only then is the file renamed to ``DEST`` (``os.replace``).

A caller with its own notion of a valid file (encoder weights: a sha256 prefix in the file
name) passes ``check``, run on the complete ``.part`` file before the rename.

``$EVALKIT_REF_MIRROR`` (e.g. ``http://mirror.lab/refs/``) replaces each reference URL's
scheme, host and path prefix, keeping the file name: ``https://host/a/b/FILE.npz`` is fetched
as ``$EVALKIT_REF_MIRROR/FILE.npz`` (``mirror=False`` for files that are not references).
"""
from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from evalkit.errors import DownloadError, VerificationError
from evalkit.files.fileio import file_sha256

MIRROR_ENV = "EVALKIT_REF_MIRROR"
CHUNK = 1 << 20
TIMEOUT_S = 30.0


def mirrored(url: str) -> str:
    """``url`` with host and path prefix replaced by ``$EVALKIT_REF_MIRROR`` when it is set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return url
    return mirror.rstrip("/") + "/" + PurePosixPath(urlsplit(url).path).name


def verify_file(path: Path, *, size: int | None, sha256: str | None, what: str) -> str:
    """Check ``path`` against a stated size and sha256; returns its sha256 (hex).

    Raises:
        VerificationError: size or digest differ (the message names both values).
    """
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise VerificationError(f"{what}: {actual_size} bytes, expected {size} (truncated or "
                                "a different file)")
    digest = file_sha256(path)
    if sha256 is not None and digest != sha256.lower():
        raise VerificationError(f"{what}: sha256 {digest}, expected {sha256.lower()} "
                                "(corrupted or a different file)")
    return digest


def download(urls: list[str] | tuple[str, ...], dest: Path, *, size: int | None = None,
             sha256: str | None = None, quiet: bool = False, retries: int = 3,
             check: Callable[[Path], None] | None = None, mirror: bool = True) -> str:
    """Fetch the first reachable URL of ``urls`` to ``dest``; returns the file's sha256.

    Args:
        urls: mirrors of one file, tried in order (each rewritten by ``$EVALKIT_REF_MIRROR``).
        dest: final path; the transfer runs in ``dest.part`` (kept on failure for resuming).
        size, sha256: what the publisher states (None: not checked).
        retries: resumed attempts after a dropped connection, per URL.
        check: called with the complete ``.part`` file; whatever it raises propagates
            (the ``.part`` is removed first).
        mirror: apply ``$EVALKIT_REF_MIRROR``.

    Raises:
        DownloadError: no URL could be fetched (the message lists the URLs and the reasons).
        VerificationError: the complete file has the wrong size or sha256 (``.part`` removed).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    reasons = []
    for raw in urls:
        url = mirrored(raw) if mirror else raw
        try:
            _fetch(url, part, size=size, quiet=quiet, retries=retries)
        except DownloadError as exc:
            reasons.append(str(exc))
            continue
        try:
            digest = verify_file(part, size=size, sha256=sha256, what=f"download of {url}")
            if check is not None:
                check(part)
        except Exception:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
        return digest
    raise DownloadError("; ".join(reasons))


def _fetch(url: str, part: Path, *, size: int | None, quiet: bool, retries: int) -> None:
    """Bring ``part`` to the complete remote file, resuming with Range after drops."""
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have == size:
            return
        if size is not None and have > size:
            part.unlink()
            have = 0
        try:
            if _transfer(url, part, have, quiet):
                return
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # nothing past what we have: the .part is complete
                return
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise DownloadError(f"{url}: {exc.reason}") from None
        except (http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            if attempt == retries:
                done = part.stat().st_size if part.exists() else 0
                raise DownloadError(f"{url}: connection lost after {done} bytes "
                                    f"({exc.__class__.__name__}); run again to resume") from None
    raise DownloadError(f"{url}: transfer kept stopping early; run again to resume")


def _transfer(url: str, part: Path, have: int, quiet: bool) -> bool:
    """One HTTP request appending to ``part`` from byte ``have``; True when the body was complete."""
    from tqdm.auto import tqdm  # ~80 ms: only when a transfer starts, not at CLI start-up

    req = urllib.request.Request(url, headers={"User-Agent": "evalkit"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - http(s) URLs only
        resumed = have and resp.status == 206
        if have and not resumed:  # the server ignored Range: start over
            have = 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = have + expected if expected is not None else None
        got = 0
        with open(part, "ab" if resumed else "wb") as fh, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                desc=PurePosixPath(urlsplit(url).path).name, disable=quiet, file=sys.stderr,
                leave=False) as bar:
            while True:
                try:
                    block = resp.read(CHUNK)
                except http.client.IncompleteRead as exc:
                    fh.write(exc.partial)
                    raise ConnectionError("connection closed mid-file") from None
                if not block:
                    break
                fh.write(block)
                got += len(block)
                bar.update(len(block))
            fh.flush()
            os.fsync(fh.fileno())
    if expected is not None and got < expected:
        raise ConnectionError(f"connection closed after {got} of {expected} bytes")
    return True
