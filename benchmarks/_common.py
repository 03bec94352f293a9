"""Shared helpers for evalkit's benchmark scripts: isolated measurements, memory, tables.

Every number a benchmark reports comes from one measurement run in a fresh Python process
(:func:`measure`), so imports, allocator state and thread pools of one pipeline never leak into
the next. The child runs one *task* (a JSON dict) through a handler and reports its result
with :func:`emit_result`; the parent meanwhile samples the memory of the child's whole process
tree (DataLoader workers included) from ``/proc``, and adds the child's total CPU time from
``getrusage(RUSAGE_CHILDREN)``. Nothing here imports torch, so the parent stays small.

Memory terms, as reported:

* ``main_peak_mb``: the child's own peak resident set, the kernel's ``VmHWM`` (exact).
* ``tree_peak_mb``: the peak over time of the summed PSS (proportional set size, from
  ``/proc/PID/smaps_rollup``; RSS where that is unreadable) of the child and all of its
  descendants, sampled every ``interval`` seconds (a lower bound on the true peak). PSS splits
  pages shared after ``fork`` between the processes, so forked DataLoader workers are not
  counted twice.

Typical use in a benchmark script::

    from _common import child_main, measure
    HANDLERS = {"mytask": run_mytask}          # task dict -> result dict
    if child_main(HANDLERS):                    # in the child: runs the task, prints, exits
        ...
    m = measure(__file__, {"kind": "mytask", ...})  # in the parent
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

RESULT_MARKER = "EVALKIT_BENCH_RESULT "
TASK_FLAG = "--_bench-task"


# ---------------------------------------------------------------------------- /proc reading

def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def status_kb(pid: int | str, field: str) -> int | None:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``, ...), or None."""
    text = _read_text(f"/proc/{pid}/status")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            parts = line.split()
            return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return None


def pss_kb(pid: int | str) -> int | None:
    """Proportional set size of ``pid`` in kB (``smaps_rollup``), falling back to VmRSS."""
    text = _read_text(f"/proc/{pid}/smaps_rollup")
    if text is not None:
        for line in text.splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return status_kb(pid, "VmRSS")


def _parent_map() -> dict[int, int]:
    """pid -> parent pid for every process visible in /proc."""
    out: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        text = _read_text(f"/proc/{name}/stat")
        if not text:
            continue
        # the command name may hold spaces and parentheses: split after the last ')'
        rest = text[text.rfind(")") + 2:].split()
        if len(rest) >= 2 and rest[1].isdigit():
            out[int(name)] = int(rest[1])
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all of its live descendants."""
    parents = _parent_map()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    tree, stack = [], [pid]
    while stack:
        p = stack.pop()
        tree.append(p)
        stack.extend(children.get(p, []))
    return tree


class TreeMemorySampler(threading.Thread):
    """Samples the summed PSS of a process tree until :meth:`stop`; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_kb = 0
        self.max_processes = 0
        self._stop_event = threading.Event()

    def sample(self) -> None:
        pids = process_tree(self.pid)
        total = sum(v for v in (pss_kb(p) for p in pids) if v is not None)
        self.peak_kb = max(self.peak_kb, total)
        self.max_processes = max(self.max_processes, len(pids))

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def loadavg() -> float | None:
    """The 1-minute load average (other work on the machine skews wall-clock timings)."""
    text = _read_text("/proc/loadavg")
    return float(text.split()[0]) if text else None


# ---------------------------------------------------------------------------- child side

def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its reaped children (workers)."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


class Stopwatch:
    """``with Stopwatch() as sw: ...`` -> ``sw.wall_s`` and ``sw.cpu_s`` (this process and
    the children it reaped meanwhile, e.g. DataLoader workers)."""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self._c0 = cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._t0
        self.cpu_s = cpu_seconds() - self._c0


def emit_result(result: Mapping[str, Any]) -> None:
    """Print ``result`` (plus this process's peak RSS) as the marker line the parent reads."""
    out = dict(result)
    hwm = status_kb("self", "VmHWM")
    out.setdefault("main_peak_mb", None if hwm is None else round(hwm / 1024, 1))
    sys.stdout.write(RESULT_MARKER + json.dumps(out, default=str) + "\n")
    sys.stdout.flush()


def child_main(handlers: Mapping[str, Callable[[dict], Mapping[str, Any]]],
               argv: Sequence[str] | None = None) -> bool:
    """In a child started by :func:`measure`: run the task named in argv and exit.

    Returns False (and does nothing) when argv holds no task, i.e. in the parent.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if TASK_FLAG not in argv:
        return False
    task = json.loads(argv[argv.index(TASK_FLAG) + 1])
    kind = task.get("kind")
    if kind not in handlers:
        raise SystemExit(f"unknown benchmark task {kind!r} (known: {', '.join(handlers)})")
    emit_result(handlers[kind](task))
    raise SystemExit(0)


# ---------------------------------------------------------------------------- parent side

def measure(script: str, task: Mapping[str, Any], *, timeout: float | None = None,
            env: Mapping[str, str] | None = None, interval: float | None = None) -> dict[str, Any]:
    """Run ``task`` in ``python script --_bench-task JSON`` and measure it from outside.

    Returns the child's result dict plus ``process_wall_s`` (the whole child, imports
    included), ``process_cpu_s`` (its CPU time and its reaped descendants'), ``tree_peak_mb``,
    ``max_processes``, ``load_before``/``load_after`` (1-minute load averages), and ``error``
    (None, or the tail of stderr when the child failed or printed no result).
    """
    if interval is None:  # reading a tree's PSS takes its page-table locks: not too often
        interval = float(os.environ.get("EVALKIT_BENCH_MEM_INTERVAL", "0.2"))
    cmd = [sys.executable, script, TASK_FLAG, json.dumps(dict(task))]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = loadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=None if env is None else {**os.environ, **env})
    sampler = TreeMemorySampler(proc.pid, interval)
    sampler.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        stderr = (stderr or "") + f"\n(timed out after {timeout} s)"
    finally:
        sampler.stop()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result: dict[str, Any] = {}
    for line in (stdout or "").splitlines():
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER):])
    error = None
    if proc.returncode != 0 or not result:
        tail = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()][-6:]
        error = f"exit {proc.returncode}: " + " | ".join(tail)
    result.update(
        process_wall_s=round(wall, 3),
        process_cpu_s=round((after.ru_utime + after.ru_stime)
                            - (before.ru_utime + before.ru_stime), 3),
        tree_peak_mb=round(sampler.peak_kb / 1024, 1),
        max_processes=sampler.max_processes,
        load_before=load_before, load_after=loadavg(), error=error)
    return result


def machine_info() -> dict[str, Any]:
    """CPU model, core count, RAM, OS and Python; torch/GPU details when torch is importable
    (read in a subprocess, so this process stays torch-free)."""
    model = None
    text = _read_text("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = None
    for line in (_read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    info: dict[str, Any] = {
        "cpu": model or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "ram_gb": None if mem_kb is None else round(mem_kb / 2**20, 1),
        "os": platform.platform(), "python": platform.python_version(),
    }
    probe = ("import json, torch, numpy, scipy; d={'torch': torch.__version__, "
             "'numpy': numpy.__version__, 'scipy': scipy.__version__, "
             "'torch_threads': torch.get_num_threads(), "
             "'cpu_capability': torch.backends.cpu.get_cpu_capability(), "
             "'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}; "
             "print(json.dumps(d))")
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             timeout=120)
        info.update(json.loads(out.stdout.strip().splitlines()[-1]))
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        pass
    return info


def describe_machine(info: Mapping[str, Any]) -> str:
    """One line naming the machine a table was measured on."""
    parts = [f"{info.get('cpu')} ({info.get('cores')} cores)", f"{info.get('ram_gb')} GB RAM"]
    if info.get("gpu"):
        parts.append(f"GPU {info['gpu']}")
    parts.append(f"torch {info.get('torch')} ({info.get('torch_threads')} threads, "
                 f"{info.get('cpu_capability')})")
    parts.append(f"Python {info.get('python')}")
    if info.get("scipy"):
        parts.append(f"numpy {info.get('numpy')}, scipy {info['scipy']}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------- tables

def _cell(value: Any, fmt: str | None) -> str:
    if value is None:
        return "-"
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def format_table(rows: Iterable[Mapping[str, Any]], columns: Sequence[tuple[str, str] |
                 tuple[str, str, str]]) -> str:
    """A Markdown table. ``columns``: (key, header) or (key, header, format spec)."""
    rows = list(rows)
    header = [c[1] for c in columns]
    body = [[_cell(r.get(c[0]), c[2] if len(c) > 2 else None) for c in columns] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(header)]
    numeric = [all(_is_number(r.get(c[0])) for r in rows) and bool(rows) for c in columns]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(cells, widths, numeric)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                         for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(header), sep] + [line(b) for b in body])


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def median(values: Sequence[float]) -> float | None:
    """Median of the non-None values (None when there are none)."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


# -- seed-distribution comparisons with an anchor's own code (``*_vs_dgm_eval.py``) -----------------
def anchor_args(description: str, module_help: str, argv: Sequence[str] | None = None):
    """The options of a script that compares a stochastic metric with an anchor module over seeds:
    ``--dgm`` (the path of the anchor's module, kept outside the repository), ``--seeds``,
    ``--fixtures`` (comma list, default all) and ``--threads`` (torch threads, default 1)."""
    import argparse

    import torch

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--dgm", required=True, help=module_help)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--fixtures", default="", help="comma list (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def chosen(fixtures: Mapping[str, Any], arg: str) -> list[str]:
    """The fixture names a ``--fixtures`` comma list picks (all when empty)."""
    return [s for s in arg.split(",") if s] or list(fixtures)


def seed_spread(ours: Sequence[float], theirs: Sequence[float]) -> dict[str, float]:
    """Means, standard errors, sample standard deviations and the z of the difference of means
    of two sets of draws over seeds (``z`` = 0 when both spreads are 0)."""
    import math

    import numpy as np

    a, b = np.asarray(ours, float), np.asarray(theirs, float)
    sd_a, sd_b = float(a.std(ddof=1)), float(b.std(ddof=1))
    se_a, se_b = sd_a / math.sqrt(len(a)), sd_b / math.sqrt(len(b))
    se = math.hypot(se_a, se_b)
    return {"mean_a": float(a.mean()), "mean_b": float(b.mean()), "se_a": se_a, "se_b": se_b,
            "sd_a": sd_a, "sd_b": sd_b, "z": (a.mean() - b.mean()) / se if se > 0 else 0.0}
