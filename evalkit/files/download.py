"""Resumable, verified HTTP downloads of reference files and encoder weights (stdlib urllib,
tqdm progress): the one download stack.

A download goes to ``DEST.part`` next to its destination and everything is checked while it
is still ``.part``: only ``http``/``https`` URLs ending with a plain file name are fetched; a
transfer stops at ``limit`` bytes (the publisher's size, else a bound the caller derives) and
when it runs slower than :data:`LOW_SPEED` for its whole window (curl's ``--speed-limit`` /
``--speed-time``). An interrupted transfer is resumed with an HTTP ``Range`` request, within
the same call up to ``retries`` times and across calls from the ``.part`` file left behind; a
``206`` answer is used only when its ``Content-Range`` starts at the offset asked for and its
body is exactly the span it declares, else the transfer starts over from byte 0 (a server that
ignores ``Range`` and answers ``200`` restarts it too). A file whose total disagrees with the
server's declared total or the stated size is never accepted. When the bytes are complete the
size and sha256 are checked, then the caller's ``check``; any rejection deletes the ``.part``
and raises an error naming the URL, so nothing rejected is ever left under the final name.
Only then is the file renamed to ``DEST`` (``os.replace``).

``$EVALKIT_REF_MIRROR`` (e.g. ``http://mirror.lab/refs/``) replaces each reference URL's
scheme, host and path prefix, keeping the file name: ``https://host/a/b/FILE.npz`` is fetched
as ``$EVALKIT_REF_MIRROR/FILE.npz`` (``mirror=False`` for files that are not references).
"""
from __future__ import annotations

import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from evalkit.errors import DownloadError, EvalkitError, InputError, OutputError, VerificationError
from evalkit.files.fileio import file_sha256
from evalkit.formatting import format_size

MIRROR_ENV = "EVALKIT_REF_MIRROR"
CHUNK = 1 << 20
TIMEOUT_S = 30.0
SCHEMES = ("http", "https")
LOW_SPEED = (1024, 60.0)
"""``(bytes per second, seconds)``: a transfer averaging less over that many seconds stops."""
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Fetched:
    """A completed download: the file's sha256 and the URL its bytes came from (after
    ``$EVALKIT_REF_MIRROR`` and redirects)."""

    sha256: str
    url: str


class _Refused(Exception):
    """The server sent something that is not the file: the ``.part`` is deleted."""


class _StartOver(Exception):
    """The answer to a Range request cannot continue the ``.part``: fetch from byte 0."""


def url_file_name(url: str, where: str = "download") -> str:
    """The file name an http(s) ``url`` ends with.

    Raises:
        InputError: another scheme (``file://``, ``ftp://``...), no host, or a name that is
            empty, ``.``/``..``, hidden or not a plain file name (``where`` names the origin).
    """
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme.lower() not in SCHEMES or not parts.netloc:
        raise InputError(f"{where}: {url!r:.120} is not an http(s) URL")
    name = PurePosixPath(parts.path).name
    if not name or name.startswith(".") or "\\" in name or "\0" in name:
        raise InputError(f"{where}: {url!r:.120} does not end with a file name")
    return name


def mirrored(url: str) -> str:
    """``url`` with host and path prefix replaced by ``$EVALKIT_REF_MIRROR`` when it is set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return url
    parts = urlsplit(mirror)
    if parts.scheme.lower() not in SCHEMES or not parts.netloc:
        raise InputError(f"${MIRROR_ENV}={mirror!r:.120} is not an http(s) URL")
    return mirror.rstrip("/") + "/" + url_file_name(url)


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


def download(urls: list[str] | tuple[str, ...], dest: Path, **kwargs) -> str:
    """:func:`fetch` returning only the file's sha256 (hex)."""
    return fetch(urls, dest, **kwargs).sha256


def fetch(urls: list[str] | tuple[str, ...], dest: Path, *, size: int | None = None,
          sha256: str | None = None, limit: int | None = None, quiet: bool = False,
          retries: int = 3, check: Callable[[Path], None] | None = None, mirror: bool = True,
          low_speed: tuple[float, float] = LOW_SPEED) -> Fetched:
    """Fetch the first reachable URL of ``urls`` to ``dest``.

    Args:
        urls: mirrors of one file, tried in order (each rewritten by ``$EVALKIT_REF_MIRROR``).
        dest: final path; the transfer runs in ``dest.part`` (kept after a dropped connection
            for resuming, deleted when the bytes are rejected).
        size, sha256: what the publisher states (None: not checked).
        limit: the most bytes accepted when ``size`` is unknown (None: no bound).
        retries: resumed attempts after a dropped connection, per URL.
        check: called with the complete ``.part`` file; an :class:`EvalkitError` it raises
            propagates with the URL added to its message (the ``.part`` is removed first).
        mirror: apply ``$EVALKIT_REF_MIRROR``.
        low_speed: ``(bytes/s, seconds)``, see :data:`LOW_SPEED`.

    Raises:
        InputError: a URL that is not http(s) or does not end with a file name.
        DownloadError: no URL could be fetched (the message lists the URLs and the reasons).
        VerificationError: the server sent something that is not the file (too long, a body
            that disagrees with its headers, wrong size or sha256); the ``.part`` is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    limit = size if size is not None else limit
    reasons = []
    for raw in urls:
        url = mirrored(raw) if mirror else raw
        url_file_name(url)
        try:
            final = _fetch(url, part, size=size, limit=limit, quiet=quiet, retries=retries,
                           low_speed=low_speed)
        except DownloadError as exc:
            reasons.append(str(exc))
            continue
        except _Refused as exc:
            part.unlink(missing_ok=True)
            raise VerificationError(f"download of {url} rejected: {exc}") from None
        try:
            digest = verify_file(part, size=size, sha256=sha256, what=f"download of {url}")
            if check is not None:
                check(part)
        except EvalkitError as exc:
            part.unlink(missing_ok=True)
            if url in str(exc):
                raise
            raise type(exc)(f"download of {url} rejected: {exc}") from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
        return Fetched(digest, final)
    raise DownloadError("; ".join(reasons))


def _fetch(url: str, part: Path, *, size: int | None, limit: int | None, quiet: bool,
           retries: int, low_speed: tuple[float, float]) -> str:
    """Bring ``part`` to the complete remote file, resuming with Range after drops; returns
    the URL the bytes came from."""
    for attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        if size is not None and have == size:
            return url  # complete already: verified next
        if have and limit is not None and have > limit:
            part.unlink()
            have = 0
        try:
            return _transfer(url, part, have, quiet=quiet, size=size, limit=limit,
                             low_speed=low_speed)
        except _StartOver:
            part.unlink(missing_ok=True)
            if attempt == retries:
                raise _Refused("the server's answers to Range requests did not fit; "
                               "started over too often") from None
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have and _range_total(exc.headers) == have:
                return url  # nothing past what we have: the server says the .part is whole
            if exc.code == 416 and have:
                part.unlink(missing_ok=True)  # the .part is not a prefix of this file
                continue
            raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise DownloadError(f"{url}: {exc.reason}") from None
        except OutputError:  # our side (a full disk): not the connection's fault
            raise
        except (http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            if attempt == retries:
                done = part.stat().st_size if part.exists() else 0
                raise DownloadError(f"{url}: connection lost after {done} bytes "
                                    f"({exc.__class__.__name__}: {exc}); run again to resume") \
                    from None
    raise DownloadError(f"{url}: transfer kept stopping early; run again to resume")


def _open(part: Path, offset: int):
    """``part`` for appending at ``offset`` (0: truncated); OutputError naming it on failure."""
    try:
        return open(part, "ab" if offset else "wb")
    except OSError as exc:
        raise OutputError(f"{part}: cannot write the download ({exc.strerror or exc})") from None


def _write(fh, data: bytes, part: Path, sync: bool = False) -> None:
    """Append ``data`` (``sync``: and flush to disk); a full disk is an OutputError naming
    ``part``, never mistaken for a dropped connection."""
    try:
        fh.write(data)
        if sync:
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise OutputError(f"{part}: cannot write the download ({exc.strerror or exc}); "
                          "free some space and run again to resume") from None


def _range_total(headers) -> int | None:
    """The complete length in a 416's ``Content-Range: bytes */N`` (None when absent)."""
    value = (headers or {}).get("Content-Range") or ""
    m = re.match(r"^\s*bytes\s+\*/(\d+)\s*$", value, re.IGNORECASE)
    return int(m.group(1)) if m else None


def _span(resp, have: int) -> tuple[int, int | None, int | None]:
    """``(offset, body length, total length)`` the answer declares; offset is where its body
    goes in the file (``have`` for a fitting 206, 0 for a 200).

    Raises:
        _StartOver: a 206 that does not start at ``have`` (or has no usable Content-Range),
            or whose Content-Length is not the span its Content-Range declares.
        _Refused: headers that contradict each other.
    """
    length = resp.headers.get("Content-Length")
    length = int(length) if length and length.strip().isdigit() else None
    if resp.status == 200:
        return 0, length, length
    if resp.status != 206:
        raise _Refused(f"unexpected HTTP {resp.status}")
    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range") or "")
    if not m or int(m.group(1)) != have:
        raise _StartOver()
    first, last = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == "*" else int(m.group(3))
    span = last - first + 1
    if span <= 0 or (total is not None and last >= total):
        raise _Refused(f"Content-Range {resp.headers.get('Content-Range')!r} is not a range")
    if length is not None and length != span:  # e.g. the whole file behind a fitting range
        raise _StartOver()
    return first, span, total


def _transfer(url: str, part: Path, have: int, *, quiet: bool, size: int | None,
              limit: int | None, low_speed: tuple[float, float]) -> str:
    """One HTTP request writing ``part`` from the offset the answer fits; returns the URL the
    bytes came from. A short body raises ConnectionError (resumed by the caller)."""
    from tqdm.auto import tqdm  # ~80 ms: only when a transfer starts, not at CLI start-up

    req = urllib.request.Request(url, headers={"User-Agent": "evalkit"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - http(s) URLs only
        final = resp.geturl() or url
        if urlsplit(final).scheme.lower() not in SCHEMES:
            raise _Refused(f"redirected to {final!r:.120}, not an http(s) URL")
        offset, expected, total = _span(resp, have)
        if size is not None and total is not None and total != size:
            raise _Refused(f"the server declares {total} bytes, expected {size} (the stated size)")
        if limit is not None and total is not None and total > limit:
            raise _Refused(f"the server declares {format_size(total)}, more than the "
                           f"{format_size(limit)} this file can be")
        got = 0
        rate, window = low_speed
        since, mark = time.monotonic(), 0
        with _open(part, offset) as fh, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=PurePosixPath(urlsplit(url).path).name, disable=quiet, file=sys.stderr,
                leave=False) as bar:
            while True:
                try:
                    block = resp.read1(CHUNK)
                except http.client.IncompleteRead as exc:
                    _write(fh, exc.partial, part)
                    raise ConnectionError("connection closed mid-file") from None
                if not block:
                    break
                got += len(block)
                if expected is not None and got > expected:  # more than the span declared
                    raise _StartOver() if offset else _Refused(
                        f"the body is longer than the {expected} bytes declared")
                if limit is not None and offset + got > limit:
                    raise _Refused(f"more than {format_size(limit)}, more than this file can be "
                                   "(stopped)")
                _write(fh, block, part)
                bar.update(len(block))
                elapsed = time.monotonic() - since
                if elapsed >= window:
                    if got - mark < rate * elapsed:
                        raise DownloadError(
                            f"{url}: slower than {format_size(int(rate))}/s for {window:g} s "
                            f"(stopped after {offset + got} bytes; run again to resume)")
                    since, mark = time.monotonic(), got
            _write(fh, b"", part, sync=True)
    if expected is not None and got < expected:
        raise ConnectionError(f"connection closed after {got} of {expected} bytes")
    complete = part.stat().st_size
    if total is not None and complete != total:
        raise _Refused(f"{complete} bytes, but the server declared {total}")
    return final
