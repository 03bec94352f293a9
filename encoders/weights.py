"""Finding, downloading, hashing and loading encoder weights.

Resolution order for a declared :class:`~evalkit.encoders.base.WeightsSpec`:

1. an explicit file (``--weights FILE``); a missing one is an :class:`InputError`;
2. the torch hub checkpoint folder (``torch.hub.get_dir()/checkpoints/<filename>``), where
   ``torch.hub`` / pytorch-fid / dgm-eval put their downloads;
3. the Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``): ``models--org--name/snapshots/*/<file>``, where timm and
   open_clip put theirs;
4. a download into the torch hub checkpoint folder when online (resumable, through
   :func:`evalkit.files.download.download`); with no network
   (``HF_HUB_OFFLINE=1`` or a failed download) an
   :class:`OfflineError` names the file and the exact path to put it at.

Files found in the caches (2, 3) and downloads (4) are verified against the expected sha256
(:func:`expected_sha256`): a mismatch is a :class:`WeightsHashError` naming the file. An
explicit ``--weights`` file is the user's choice and is only hashed for the record.

Nothing is ever written into site-packages or /tmp. Digests come from
:func:`evalkit.files.fileio.file_sha256`, which remembers them per (path, size, mtime_ns), so the
sha256 of a 1 GB checkpoint is computed once.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from evalkit.encoders.spec import WeightsSpec
from evalkit.errors import DownloadError, InputError, OfflineError, WeightsHashError
from evalkit.files.download import download
from evalkit.files.fileio import SHA256_CACHE_FILE, file_sha256  # noqa: F401 (re-exported)

_TRUE = {"1", "true", "yes", "on"}
# A Hugging Face repo often holds the same weights in both formats.
_HF_ALTERNATIVES = {
    "model.safetensors": ("pytorch_model.bin",),
    "pytorch_model.bin": ("model.safetensors",),
    "open_clip_model.safetensors": ("open_clip_pytorch_model.bin",),
    "open_clip_pytorch_model.bin": ("open_clip_model.safetensors",),
}


# --------------------------------------------------------------------------- locations

def torch_hub_checkpoints_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (honours ``$TORCH_HOME`` and ``$XDG_CACHE_HOME``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache folder, resolved the way ``huggingface_hub`` does."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def is_offline() -> bool:
    """True when the environment forbids downloads (``HF_HUB_OFFLINE``/``EVALKIT_OFFLINE``)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE
               for v in ("HF_HUB_OFFLINE", "EVALKIT_OFFLINE"))


def _hf_candidates(spec: WeightsSpec) -> Iterable[Path]:
    """Files in the HF cache that hold ``spec``'s weights, the ``main`` snapshot first."""
    if not spec.hf_repo:
        return []
    repo_dir = hf_hub_cache_dir() / ("models--" + spec.hf_repo.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return []
    names = [spec.hf_filename or spec.filename]
    names += list(_HF_ALTERNATIVES.get(names[0], ()))
    ordered: list[Path] = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        ordered.append(snapshots / ref.read_text().strip())
    others = sorted((p for p in snapshots.iterdir() if p.is_dir() and p not in ordered),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    ordered += others
    return [snap / name for name in names for snap in ordered if (snap / name).is_file()]


def local_weights(spec: WeightsSpec) -> Path | None:
    """The weights file for ``spec`` already on this machine (torch hub or HF cache), or None."""
    hub_file = torch_hub_checkpoints_dir() / spec.filename
    if hub_file.is_file():
        return hub_file
    for candidate in _hf_candidates(spec):
        return candidate
    return None


def resolve_weights(encoder_name: str, spec: WeightsSpec, explicit: str | os.PathLike | None,
                    *, download: bool = True) -> Path:
    """Find the weights file for ``encoder_name`` (see the module docstring for the order).

    Args:
        encoder_name: the encoder's registry name, used in messages.
        spec: the declared weights (official file name, URL, sha256, HF repo).
        explicit: a user-given file (``--weights``); when set, nothing else is looked at.
        download: allow a download when nothing is found locally.

    Returns:
        The path of an existing file.

    Raises:
        InputError: ``explicit`` does not exist.
        OfflineError: nothing found locally and the download is impossible or failed.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise InputError(f"{encoder_name} weights file not found: {path} (--weights)")
        return path
    found = local_weights(spec)
    if found is not None:
        verify_sha256(found, spec, encoder_name)
        return found
    target = torch_hub_checkpoints_dir() / spec.filename
    hint = (f"{encoder_name} weights not found: put {spec.filename} at {target} "
            "(or pass --weights FILE)")
    if spec.hf_repo:
        hint += (f"; or download {spec.hf_filename or spec.filename} of {spec.hf_repo} into the "
                 f"Hugging Face cache {hf_hub_cache_dir()}")
    if not download or not spec.url:
        raise OfflineError(hint)
    if is_offline():
        raise OfflineError(hint + "; downloads are disabled (HF_HUB_OFFLINE)")
    _download(spec, target, hint)
    return target


def _download(spec: WeightsSpec, target: Path, hint: str) -> None:
    """Fetch ``spec.url`` to ``target`` with :func:`evalkit.files.download.download`: through
    ``target.part`` (resumed by a later call after a dropped connection), the sha256 checked
    before the rename; a failed transfer is an :class:`OfflineError` carrying ``hint``."""
    try:
        download([spec.url], target, mirror=False,
                 check=lambda part: verify_sha256(part, spec, "downloaded"))
    except DownloadError as exc:
        raise OfflineError(f"{hint}; download from {spec.url} failed: {exc}") from None


_HEX_PREFIX = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def expected_sha256(spec: WeightsSpec, path: str | os.PathLike | None = None) -> str | None:
    """The sha256 (or leading hex of it) a weights file must have, or None when none is known.

    In order: the declared ``spec.sha256``; the torch.hub file-name convention
    (``name-<8+ hex>.ext``, as ``torch.hub.load_state_dict_from_url(check_hash=True)``
    verifies, e.g. pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``); a 64-hex folder
    in the download URL (OpenAI's CLIP URLs, which open_clip verifies); for a file in the
    Hugging Face cache, its blob name (the sha256 the hub publishes as the LFS etag).
    """
    if spec.sha256:
        return spec.sha256.lower()
    m = _HEX_PREFIX.search(spec.filename)
    if m:
        return m.group(1)
    if spec.url:
        for part in spec.url.split("/"):
            if _HEX64.match(part):
                return part
    if path is not None:
        real = Path(path).resolve()
        if real.parent.name == "blobs" and _HEX64.match(real.name):
            return real.name
    return None


def verify_sha256(path: str | os.PathLike, spec: WeightsSpec, encoder_name: str) -> None:
    """Raise :class:`WeightsHashError` naming ``path`` when its sha256 is not the expected one.

    Weights without a known digest (DINOv2's official files publish none) are not checked.
    """
    want = expected_sha256(spec, path)
    if want is None:
        return
    digest = file_sha256(path)
    if not digest.startswith(want):
        raise WeightsHashError(
            f"{encoder_name} weights {path}: sha256 {digest[:16]}... does not match the "
            f"{want[:16]} declared for {spec.filename} (corrupt or another file; delete it "
            "to download again, or pass your own file with --weights)")


# --------------------------------------------------------------------------- loading

def load_state_dict(path: str | os.PathLike, encoder_name: str = "encoder") -> dict:
    """Read a checkpoint (``.safetensors`` or a torch pickle) as a flat name -> tensor dict.

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` / ``{"teacher": ...}`` containers, the
    SimCLRv2 converter's ``{"resnet": ..., "head": ...}``, and a DDP ``module.`` prefix. Torch
    pickles are read with ``weights_only=True``.
    """
    import torch

    p = Path(path)
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 — any unpickling failure becomes a typed InputError
        raise InputError(f"{encoder_name} weights {p}: cannot read ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    for wrapper in ("state_dict", "model", "teacher", "resnet"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{encoder_name} weights {p}: not a state dict of tensors")
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def check_keys(encoder_name: str, path: str | os.PathLike, expected: Iterable[str],
               found: Iterable[str]) -> None:
    """Raise :class:`InputError` unless ``found`` and ``expected`` are the same key sets."""
    expected, found = set(expected), set(found)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise InputError(f"{encoder_name} weights {path}: not this architecture's checkpoint: "
                         f"{'; '.join(parts)} keys")


def fill_bn_counters(module, state_dict: Mapping) -> dict:
    """``state_dict`` with BatchNorm ``num_batches_tracked`` taken from ``module`` where the
    file lacks them (they are present in some copies of a checkpoint and not in others and
    never change an eval-mode output)."""
    import torch

    sd = dict(state_dict)
    for k in module.state_dict():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.tensor(0, dtype=torch.long)
    return sd


def load_strict(module, state_dict: Mapping, encoder_name: str, path: str | os.PathLike) -> None:
    """Load ``state_dict`` into ``module`` with ``strict=True``, typed errors for mismatches.

    Floating tensors are cast to float32. A module built on the ``meta`` device (see
    :func:`build_module`) receives the checkpoint's tensors themselves (``assign=True``).
    """
    check_keys(encoder_name, path, module.state_dict().keys(), state_dict.keys())
    sd = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    on_meta = any(t.is_meta for t in module.state_dict().values())
    try:
        module.load_state_dict(sd, strict=True, assign=on_meta)
    except RuntimeError as exc:  # shape mismatch (e.g. vitb14 weights for vitl14)
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        raise InputError(f"{encoder_name} weights {path}: do not fit the architecture "
                         f"({lines[-1] if lines else exc})") from None
    if on_meta:
        left = [n for n, t in list(module.named_parameters()) + list(module.named_buffers())
                if t.is_meta]
        if left:
            raise InputError(f"{encoder_name} weights {path}: {len(left)} tensors not loaded "
                             f"(e.g. {left[0]})")


def build_module(ctor, *, random_init: bool, init=None, seed: int = 0):
    """Construct ``ctor()`` for loading or for random weights, leaving global RNG untouched.

    ``random_init``: build under a forked RNG seeded with ``seed`` and apply ``init`` (so the
    random weights are the same in every run). Otherwise build on the ``meta`` device: no
    time or memory spent on an initialisation that the checkpoint overwrites.
    """
    import torch

    if random_init:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = ctor()
            if init is not None:
                init(module)
        return module
    with torch.device("meta"):
        return ctor()


def known_sha256(spec: WeightsSpec) -> str | None:
    """The sha256 of ``spec``'s weights without downloading: the file found in the caches,
    else the full digest the spec declares, else None (not known on this machine)."""
    local = local_weights(spec)
    if local is not None:
        return file_sha256(local)
    if spec.sha256 and len(spec.sha256) == 64:
        return spec.sha256.lower()
    return None


def load_checkpoint(module, encoder_name: str, spec: WeightsSpec,
                    explicit: str | os.PathLike | None, convert=None, *,
                    path: str | os.PathLike | None = None) -> str:
    """Resolve ``spec``'s file (or ``explicit``), load it into ``module`` strictly, return its sha256.

    The one way every built-in encoder loads its weights. ``convert(state_dict, path) ->
    state_dict`` maps the checkpoint's layout to the module's keys; BatchNorm step counters
    the file lacks are filled in. ``path``: the file, already resolved by the caller (an
    encoder whose architecture is read from the file's folder, e.g. data2vec's
    ``config.json``). Errors name the file (InputError).
    """
    if path is None:
        path = resolve_weights(encoder_name, spec, explicit)
    sd = load_state_dict(path, encoder_name)
    if convert is not None:
        sd = convert(sd, path)
    load_strict(module, fill_bn_counters(module, sd), encoder_name, path)
    return file_sha256(path)
