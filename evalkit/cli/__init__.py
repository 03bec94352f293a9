"""The command line: click commands only; ``app`` owns the group and the exit codes.

Each command module registers its commands on :data:`evalkit.cli.app.main` when imported;
they are imported here, explicitly, so a broken module fails loudly instead of hiding a
command.
"""
from evalkit.cli import check, features, leaderboard, listing, refs, report, score  # noqa: F401
from evalkit.cli.app import main

__all__ = ["main"]
