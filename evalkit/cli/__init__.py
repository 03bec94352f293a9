"""The command line: click commands only; ``app`` owns the group and the exit codes.

Each command module registers its commands on :data:`evalkit.cli.app.main` when imported;
they are imported here, explicitly, so a broken module fails loudly instead of hiding a
command.
"""
from evalkit.cli import (  # noqa: F401
    check,
    features,
    leaderboard,
    listing,
    refs,
    report,
    score,
    track,
)
from evalkit.cli.app import main

__all__ = ["main"]
