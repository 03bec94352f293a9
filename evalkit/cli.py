"""The `evalkit` command line. Parsing only: logic lives in the engine modules.

Library code raises typed errors; here they become exit codes and one-line messages.
"""
from __future__ import annotations

import importlib
import sys

import click

from evalkit.errors import EvalkitError

# Each module registers its commands on `main` when imported.
COMMAND_MODULES = ("score", "features", "listing", "refs", "leaderboard", "check", "report")


class EvalkitGroup(click.Group):
    """A click group that turns EvalkitError into a one-line message and exit code 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EvalkitError as exc:
            click.echo(f"evalkit: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("evalkit: interrupted", err=True)
            sys.exit(130)


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
