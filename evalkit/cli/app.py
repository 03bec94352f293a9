"""The `evalkit` command group, its error handling and exit codes (the one place they live).

Library code raises typed errors; here they become exit codes and one-line messages:
0 success, 1 only a `check` regression, 2 bad input or an output that cannot be written
(``EvalkitError``, and any ``OSError`` naming a file), 3 an internal error (any other
exception: one line asking for a report; the traceback with ``--debug`` or
``EVALKIT_DEBUG=1``). Warnings print as one line each, ``evalkit: warning: ...``.
"""
from __future__ import annotations

import contextlib
import os
import sys
import traceback
import warnings

import click

from evalkit import __version__
from evalkit.errors import DIST_NAME, EvalkitError
from evalkit.features.distributed import launch_env

EXIT_INTERNAL = 3


class EvalkitGroup(click.Group):
    """A click group that turns EvalkitError into a one-line message and exit code 2.

    Under torchrun, ranks other than 0 print nothing (their stdout and stderr are silenced
    while the command runs) but their own errors; an error every rank shares is printed by
    rank 0 only.
    """

    def invoke(self, ctx):
        worker = _worker_rank()
        try:
            with _silenced(worker is not None), _one_line_warnings():
                return super().invoke(ctx)
        except EvalkitError as exc:
            if worker is None:
                click.echo(f"evalkit: error: {exc}", err=True)
            elif not getattr(exc, "reported", False):
                click.echo(f"evalkit: error (rank {worker}): {exc}", err=True)
            _debug_traceback(ctx)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("evalkit: interrupted", err=True)
            sys.exit(130)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # usage errors: click prints them and exits 2
        except BrokenPipeError:  # `evalkit ... | head`: the reader left; stop quietly, like SIGPIPE
            with contextlib.suppress(OSError, ValueError):  # no flush error at exit either
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except OSError as exc:  # the environment, not a bug: a file that cannot be read/written
            if exc.filename is None:
                _internal_error(ctx, exc, worker)
            click.echo(f"evalkit: error{_rank(worker)}: {exc.filename}: {exc.strerror or exc}",
                       err=True)
            _debug_traceback(ctx)
            sys.exit(2)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: exit 3, never a trace
            _internal_error(ctx, exc, worker)


def debug_enabled(ctx: click.Context | None = None) -> bool:
    """``--debug`` given, or ``EVALKIT_DEBUG`` set to anything but empty/0/false/no."""
    root = ctx.find_root() if ctx is not None else None
    if root is not None and (root.params or {}).get("debug"):
        return True
    return os.environ.get("EVALKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _rank(worker: int | None) -> str:
    return "" if worker is None else f" (rank {worker})"


def _debug_traceback(ctx) -> None:
    if debug_enabled(ctx):
        traceback.print_exc(file=sys.stderr)


def _internal_error(ctx, exc: BaseException, worker: int | None):
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    hint = "" if debug_enabled(ctx) else "; rerun with --debug (or EVALKIT_DEBUG=1) for the traceback"
    click.echo(f"evalkit: internal error{_rank(worker)}: {what} (a bug in evalkit: please report "
               f"it with the command line you ran{hint})", err=True)
    _debug_traceback(ctx)
    sys.exit(EXIT_INTERNAL)


def format_warning(message, category, filename, lineno, line=None) -> str:
    """``evalkit: warning: <message>`` on one line, without Python's source location."""
    text = " ".join(str(message).split())
    if text.startswith("evalkit: "):
        text = text[len("evalkit: "):]
    return f"evalkit: warning: {text}\n"


@contextlib.contextmanager
def _one_line_warnings():
    saved = warnings.formatwarning
    warnings.formatwarning = format_warning
    try:
        yield
    finally:
        warnings.formatwarning = saved


def _worker_rank() -> int | None:
    """This process's rank when torchrun started it as a rank other than 0, else None."""
    if not (os.environ.get("RANK", "").strip()  # torchrun, or an srun step (slurm_env)
            or os.environ.get("SLURM_STEP_NUM_TASKS", "").strip()):
        return None  # neither: don't import torch for it
    try:
        env = launch_env()
    except EvalkitError:
        return None
    return env.rank if env.distributed and env.rank != 0 else None


@contextlib.contextmanager
def _silenced(on: bool):
    if not on:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sink):
        yield


@click.group(cls=EvalkitGroup)
@click.version_option(version=__version__, package_name=DIST_NAME, prog_name="evalkit")
@click.option("--debug", is_flag=True, help="Print the traceback of errors (also EVALKIT_DEBUG=1).")
def main(debug: bool) -> None:
    """Score image generative models: FD, KID, IS, PRDC, Vendi, memorization, CLIP-MMD."""


