"""Multi-process and multi-node runs on ``torch.distributed``, launched by ``torchrun``.

evalkit starts no processes of its own: ``torchrun --nproc_per_node=K -m evalkit score ...``
starts K copies of the command and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` (with ``--nnodes``/``--node_rank`` or ``--rdzv_*`` across
machines). Without ``WORLD_SIZE > 1`` every helper here is a no-op and evalkit runs as one
process.

* :func:`setup` initialises the default process group once (the first time features are
  extracted): ``gloo`` on CPU; on CUDA ``"cpu:gloo,cuda:nccl"``, NCCL for CUDA tensors and gloo
  for the CPU objects evalkit exchanges (shards of features, status), so nothing is copied to a
  GPU just to be sent. Each rank runs on ``cuda:LOCAL_RANK`` (``--device auto``/``cuda``) or
  the CPU. A process group the caller already initialised is used as it is.
* :func:`shard_ranges` cuts N images into contiguous shards whose boundaries depend only on N
  (never on the number of ranks); :func:`rank_shards` deals them to ranks round-robin. Every
  image is in exactly one shard and the ranks' loads differ by at most one shard.
* :func:`synced` runs a step on every rank and, when it fails on one with an evalkit error,
  raises that error on every rank (rank 0 reports it; the others stay silent), instead of
  leaving the others waiting in the next collective.
* Features are gathered on rank 0 through ``torch.distributed`` object collectives (see
  :mod:`evalkit.features.loader`), so no shared filesystem is needed; when rank 0 can read another
  rank's shard files from a shared cache folder, it reads them instead of receiving them.

SLURM: ``srun --ntasks-per-node=1 torchrun --nnodes=$SLURM_NNODES --nproc_per_node=G
--rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500 -m evalkit score ...`` (one torchrun per node),
or without torchrun ``srun -n K python -m evalkit score ...``: then each task takes its rank,
the world size and its local rank from SLURM's variables (:func:`slurm_env`).

Environment variables (besides torchrun's): ``EVALKIT_SHARD_SIZE`` fixes the shard size (images
per shard; default from N, see :func:`shard_size`); ``EVALKIT_DIST_TIMEOUT`` is the collective
timeout in seconds (default 6 hours: a rank may wait that long for the slowest one).
``EVALKIT_TEST_FAIL_AFTER_SHARDS=K`` is a test hook: a process raises ``RuntimeError`` right
after writing its K-th shard file, to simulate a crash (see :func:`fail_after_shards`).
"""
from __future__ import annotations

import atexit
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar

from evalkit.devices import resolve_device
from evalkit.errors import EvalkitError, InputError, PeerError
from evalkit.lazy import torch

SHARD_SIZE_ENV = "EVALKIT_SHARD_SIZE"
TIMEOUT_ENV = "EVALKIT_DIST_TIMEOUT"
FAIL_AFTER_ENV = "EVALKIT_TEST_FAIL_AFTER_SHARDS"
MIN_SHARD, MAX_SHARD, TARGET_SHARDS, SHARD_MULTIPLE = 64, 2048, 64, 64
DEFAULT_TIMEOUT_S = 6 * 3600

T = TypeVar("T")


class ShardRange(NamedTuple):
    """Shard ``index`` of ``count``: the images ``start`` (inclusive) to ``stop`` (exclusive)."""

    index: int
    count: int
    start: int
    stop: int


@dataclass(frozen=True)
class LaunchEnv:
    """What torchrun told this process: its rank, the world size, its rank on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SLURM_NAMES = {"RANK": "SLURM_PROCID", "WORLD_SIZE": "SLURM_STEP_NUM_TASKS",
               "LOCAL_RANK": "SLURM_LOCALID"}


def slurm_env() -> dict[str, str]:
    """torchrun's variables derived from an ``srun`` step's, when torchrun set none.

    ``srun -n K python -m evalkit ...`` starts K tasks with ``SLURM_PROCID`` (rank),
    ``SLURM_STEP_NUM_TASKS`` (world size; set by srun only, so a batch script's own shell,
    which has ``SLURM_NTASKS`` but no step, stays one process) and ``SLURM_LOCALID``.
    ``MASTER_ADDR`` defaults to the first host of ``SLURM_STEP_NODELIST`` (where task 0
    runs) and ``MASTER_PORT`` to 20000 + the job id modulo 10000; both are kept when set.
    Returns {} outside such a step or when ``RANK``/``WORLD_SIZE`` are set.
    """
    env = os.environ
    if env.get("RANK", "").strip() or env.get("WORLD_SIZE", "").strip():
        return {}
    if not env.get("SLURM_STEP_NUM_TASKS", "").strip():
        return {}
    out = {name: env.get(slurm, "").strip() for name, slurm in SLURM_NAMES.items()}
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
    out["MASTER_ADDR"] = env.get("MASTER_ADDR") or first_host(nodes) or "127.0.0.1"
    job = env.get("SLURM_JOB_ID", "").strip()
    out["MASTER_PORT"] = env.get("MASTER_PORT") or str(
        20000 + (int(job) % 10000 if job.isdigit() else 0))
    return out


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``gpu[03-05,9],cpu1`` -> ``gpu03``."""
    text = nodelist.strip()
    if not text:
        return ""
    head = text.split(",")[0] if "[" not in text.split(",")[0] else text[:text.index("]") + 1]
    if "[" not in head:
        return head
    prefix, rest = head.split("[", 1)
    return prefix + rest.rstrip("]").split(",")[0].split("-")[0]


def launch_env() -> LaunchEnv:
    """``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` from the environment (defaults 0, 1, 0); in
    an ``srun`` step without torchrun, from SLURM's variables (:func:`slurm_env`).

    Raises:
        InputError: a variable that is not a valid integer, or a rank outside the world.
    """
    values = {}
    slurm = slurm_env()
    for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0)):
        text = (slurm.get(name) if slurm else os.environ.get(name, "")).strip()
        try:
            values[name] = int(text) if text else default
        except ValueError:
            raise InputError(f"${name}={text!r}: not an integer (set by torchrun)") from None
    env = LaunchEnv(values["RANK"], max(1, values["WORLD_SIZE"]), values["LOCAL_RANK"])
    if not 0 <= env.rank < env.world_size or env.local_rank < 0:
        raise InputError(f"$RANK={env.rank} / $LOCAL_RANK={env.local_rank} do not fit "
                         f"$WORLD_SIZE={env.world_size}")
    return env


def active() -> bool:
    """True inside an initialised process group of more than one process."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    if active():
        return torch.distributed.get_rank()
    return launch_env().rank


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    if active():
        return torch.distributed.get_world_size()
    return launch_env().world_size


def is_main() -> bool:
    """True on rank 0, the process that gathers features, computes metrics and writes files."""
    return rank() == 0


def rank_device(device: str | torch.device = "auto", env: LaunchEnv | None = None
                ) -> torch.device:
    """This rank's device: ``auto``/``cuda`` -> ``cuda:LOCAL_RANK`` (modulo the GPUs visible),
    ``auto`` without CUDA -> ``cpu``; an explicit ``cuda:i`` or ``cpu`` is kept.

    Raises:
        InputError: ``cuda`` asked for on a machine without CUDA, or an unknown device string.
    """
    if isinstance(device, torch.device):
        return device
    env = env or launch_env()
    text = str(device).strip().lower()
    if text in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", env.local_rank % torch.cuda.device_count())
    return resolve_device(text)


_OWNED = {"group": False}


def setup(device: str | torch.device = "auto") -> torch.device | None:
    """Initialise the process group once when torchrun started several processes.

    Returns this rank's device (:func:`rank_device`), or None in a single process (where
    nothing happens and the device is resolved where it is used, as before). On CUDA the
    rank's GPU also becomes the current device, so that a plain ``cuda`` later (the metrics on
    rank 0) means this rank's GPU.

    Raises:
        InputError: a device this machine lacks, torchrun's variables incomplete (e.g.
            ``MASTER_ADDR`` missing), or a failed rendezvous.
    """
    env = launch_env()
    if not env.distributed or not torch.distributed.is_available():
        return None
    dev = rank_device(device, env)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if torch.distributed.is_initialized():
        return dev
    backend = "cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo"
    slurm = slurm_env()
    for name, value in slurm.items():  # srun without torchrun: env:// reads these
        os.environ.setdefault(name, value)
    try:
        torch.distributed.init_process_group(backend=backend, timeout=_timeout())
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot join the torch.distributed job (rank {env.rank} of "
                         f"{env.world_size}): {first}; launch with torchrun") from None
    _OWNED["group"] = True
    atexit.register(_shutdown)
    return dev


def _timeout() -> timedelta:
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise InputError(f"${TIMEOUT_ENV}={text!r}: not a number of seconds") from None
    return timedelta(seconds=max(1.0, seconds))


def _shutdown() -> None:
    if _OWNED["group"] and torch.distributed.is_initialized():
        _OWNED["group"] = False
        torch.distributed.destroy_process_group()


def broadcast(obj: T, src: int = 0) -> T:
    """``obj`` as rank ``src`` has it, on every rank (picklable objects)."""
    if not active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, indexed by rank, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def gather(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` on rank ``dst`` (indexed by rank); None on the other ranks."""
    if not active():
        return [obj]
    me = torch.distributed.get_rank()
    out: list[Any] | None = [None] * torch.distributed.get_world_size() if me == dst else None
    torch.distributed.gather_object(obj, out, dst=dst)
    return out


def synced(fn: Callable[[], T]) -> T:
    """Run ``fn`` on every rank; if it raises an evalkit error on any, raise on all of them.

    The error raised is the one of the lowest failing rank (another rank's error is a
    :class:`PeerError` naming that rank). On ranks other than 0 the error is marked
    ``reported`` (rank 0 prints it; the CLI keeps the others quiet). Errors that are not
    evalkit errors (bugs, KeyboardInterrupt) propagate at once; torchrun then stops the job.
    """
    error: EvalkitError | None = None
    result: Any = None
    try:
        result = fn()
    except EvalkitError as exc:
        error = exc
    if not active():
        if error is not None:
            raise error
        return result
    reports = all_gather(None if error is None else str(error))
    failed = [r for r, text in enumerate(reports) if text is not None]
    if not failed:
        return result
    me = torch.distributed.get_rank()
    exc = error if failed[0] == me else PeerError(f"{reports[failed[0]]} (on rank {failed[0]})")
    if me != 0:
        exc.reported = True
    raise exc


# -- sharding --------------------------------------------------------------------------------
def shard_size(n: int) -> int:
    """Images per shard for a source of ``n`` images: ``$EVALKIT_SHARD_SIZE`` when set, else
    about n/64 rounded up to a multiple of 64, within [64, 2048].

    It depends on ``n`` only, never on the number of processes, so shard files written by a
    run with K processes are reused by a rerun with any other number. Small shards balance
    many ranks and bound the work lost when a run is interrupted; the cap keeps each shard
    file small (2048 Inception rows with logits and spatial features: about 40 MB).

    Raises:
        InputError: ``$EVALKIT_SHARD_SIZE`` is not a positive integer.
    """
    text = os.environ.get(SHARD_SIZE_ENV, "").strip()
    if text:
        try:
            size = int(text)
        except ValueError:
            size = 0
        if size < 1:
            raise InputError(f"${SHARD_SIZE_ENV}={text!r}: expected a positive integer")
        return size
    size = math.ceil(max(1, n) / TARGET_SHARDS)
    size = SHARD_MULTIPLE * math.ceil(size / SHARD_MULTIPLE)
    return min(MAX_SHARD, max(MIN_SHARD, size))


def shard_ranges(n: int, size: int | None = None) -> list[ShardRange]:
    """Contiguous shards of ``size`` images (the last may be shorter) covering ``range(n)``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    size = shard_size(n) if size is None else int(size)
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    count = math.ceil(n / size)
    return [ShardRange(i, count, i * size, min(n, (i + 1) * size)) for i in range(count)]


def rank_shards(shards: list[ShardRange], rank: int, world: int) -> list[ShardRange]:
    """The shards rank ``rank`` of ``world`` extracts: every ``world``-th, from ``rank``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside a world of {world}")
    return shards[rank::world]


def owner_of(shard_index: int, world: int) -> int:
    """The rank that extracts shard ``shard_index`` (round-robin)."""
    return shard_index % world


def fail_after_shards() -> int | None:
    """Test hook: ``$EVALKIT_TEST_FAIL_AFTER_SHARDS`` as an int (None when unset).

    When set to K, a process raises ``RuntimeError`` right after writing its K-th shard file
    to the feature cache, as if it had been killed; tests use it to check that a rerun
    extracts only the shards that are missing. Never set it outside tests.
    """
    text = os.environ.get(FAIL_AFTER_ENV, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise InputError(f"${FAIL_AFTER_ENV}={text!r}: expected an integer") from None
