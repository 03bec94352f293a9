"""The `evalkit` command line. Parsing only: logic lives in the engine modules.

Library code raises typed errors; here they become exit codes and one-line messages.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys

import click

from evalkit.errors import EvalkitError

# Each module registers its commands on `main` when imported.
COMMAND_MODULES = ("score", "features", "listing", "refs", "leaderboard", "check", "report")


class EvalkitGroup(click.Group):
    """A click group that turns EvalkitError into a one-line message and exit code 2.

    Under torchrun, ranks other than 0 print nothing (their stdout and stderr are silenced
    while the command runs) but their own errors; an error every rank shares is printed by
    rank 0 only.
    """

    def invoke(self, ctx):
        worker = _worker_rank()
        try:
            with _silenced(worker is not None):
                return super().invoke(ctx)
        except EvalkitError as exc:
            if worker is None:
                click.echo(f"evalkit: error: {exc}", err=True)
            elif not getattr(exc, "reported", False):
                click.echo(f"evalkit: error (rank {worker}): {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("evalkit: interrupted", err=True)
            sys.exit(130)


def _worker_rank() -> int | None:
    """This process's rank when torchrun started it as a rank other than 0, else None."""
    from evalkit.distributed import launch_env

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
@click.version_option(package_name="evalkit")
def main() -> None:
    """Score image generative models: FD, KID, IS, PRDC, Vendi, memorization, CLIP-MMD."""


for _name in COMMAND_MODULES:
    try:
        importlib.import_module(f"evalkit.commands.{_name}")
    except ModuleNotFoundError as exc:  # a command module not written yet
        if exc.name != f"evalkit.commands.{_name}":
            raise

if __name__ == "__main__":
    main()
