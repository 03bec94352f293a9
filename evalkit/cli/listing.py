"""`evalkit metrics` and `evalkit encoders`: list the registries (no model is built); the
terminal-fitted listing layout (:func:`print_rows`, also `ref list --available`)."""
from __future__ import annotations

import click

from evalkit.cli.app import main


@main.command("metrics")
def metrics_command():
    """List metric keys with their inputs, direction and description (from the registry)."""
    from evalkit.metrics import metric_specs

    rows = [("key", "needs", "better", "description")]
    for spec in metric_specs():
        for out in spec.outputs:
            needs = [spec.array + (f"|{spec.fallback}" if spec.fallback else "")]
            needs += [a for a in spec.args if a not in ("real", "fake")]  # test, labels, prompts, ...
            needs += [f"[{a}]" for a in spec.optional]
            if spec.moments is not None:
                needs.append("(or ref mu/sigma)")
            name = out.key if out.select else f"  {out.key}"
            rows.append((name, " ".join(needs), out.better, out.description))
    print_rows(rows)


@main.command("encoders")
def encoders_command():
    """List encoders with their variants, outputs and input size."""
    from evalkit.encoders import encoder_summary, list_encoders

    rows = [("name", "archs (default first)", "outputs", "description")]
    for name in list_encoders():
        all_archs, default_arch, outs, description = encoder_summary(name)
        archs = [default_arch] + [a for a in all_archs if a != default_arch]
        rows.append((name, ",".join(archs), ",".join(f"{k}:{v}" for k, v in outs.items()),
                     description))
    print_rows(rows)


def print_rows(rows, width: int | None = None):
    """Aligned columns when they fit the terminal; otherwise one block per row, the first cell
    then ``header: value`` lines, each wrapped to the terminal's width."""
    import re
    import shutil
    import textwrap

    width = width or shutil.get_terminal_size((100, 24)).columns
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    if sum(widths) + 2 * (len(widths) - 1) <= width:
        for r in rows:
            click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
        return
    header = rows[0]
    for r in rows[1:]:
        click.echo(str(r[0]))
        for name, value in zip(header[1:], r[1:]):
            text = re.sub(r",(?=\S)", ", ", f"{name}: {value}")
            for line in textwrap.wrap(text, max(width - 4, 30), subsequent_indent="  "):
                click.echo("    " + line)


def echo_wrapped(text: str, width: int | None = None) -> None:
    """``text`` wrapped to the terminal's width."""
    import shutil
    import textwrap

    width = width or shutil.get_terminal_size((100, 24)).columns
    for line in textwrap.wrap(text, max(width, 30)):
        click.echo(line)
