"""Reproduce published ADM numbers with ``--protocol adm``: evalkit vs the paper, per metric.

Dhariwal & Nichol 2021 published their sample batches (50,000 images each, ``.npz``) and the
reference batches (guided-diffusion ``evaluations/README.md``). For every row below this script
downloads the sample batch it lacks (resumable, ``$EVALKIT_REF_MIRROR`` honoured, like every
evalkit download), lets evalkit fetch the reference batch from its catalog, scores the samples
with ``--protocol adm`` and prints evalkit's number, the published one and the difference::

    python benchmarks/reproduce_papers.py                        # every row (~40 GB)
    python benchmarks/reproduce_papers.py --rows adm-g+u-256     # the README's example
    python benchmarks/reproduce_papers.py --list

The rows are data, ``benchmarks/paper_rows.json``: each names its sample batch and reference
batch (URLs from guided-diffusion's ``evaluations/README.md``) and the published numbers exactly
as guided-diffusion prints them, citing where (repository, commit, file and table): the
``evaluations/README.md`` example output (full digits, all five metrics) for ADM-G + ADM-U 256,
the ``README.md`` Results tables (FID, precision, recall to 2 decimals) for the others. Where a
number is published to ``decimals`` places, the ``rounding`` column says whether evalkit's
value rounds to it (|difference| <= half a unit of the last place). Inception on a CPU takes
about 0.2 s per image: a row takes hours without a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

METRICS = ("is", "fd", "sfid", "precision", "recall")
ROWS_FILE = Path(__file__).with_name("paper_rows.json")


def load_rows(path: str | Path = ROWS_FILE) -> dict[str, dict]:
    """Rows by name: ``{"reference", "url", "published": {metric: value}, "source",
    "decimals"}``. The file is either an ``evalkit.paper-rows/1`` document (``{"source",
    "rows"}``, as ``paper_rows.json``) or a plain ``{name: row}`` mapping."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data["rows"] if isinstance(data, dict) and "rows" in data else data


ROWS: dict[str, dict] = load_rows()


def papers_dir(arg: str | None) -> Path:
    """Where sample batches are kept: ``--dir``, else ``$EVALKIT_CACHE_DIR/papers``, else
    ``~/.cache/evalkit/papers``."""
    if arg:
        return Path(arg)
    root = os.environ.get("EVALKIT_CACHE_DIR") or Path.home() / ".cache" / "evalkit"
    return Path(root) / "papers"


def fetch_samples(row: dict, folder: Path, quiet: bool) -> Path:
    """The row's sample batch, downloaded (resuming a ``.part``) when it is not there yet."""
    from evalkit.files.download import download

    dest = folder / row["url"].rsplit("/", 1)[-1]
    if not dest.is_file():
        download([row["url"]], dest, quiet=quiet)
    return dest


def compare(name: str, row: dict, metrics: dict[str, float]) -> list[tuple]:
    """(row, metric, evalkit, published, difference, relative difference, rounds) per metric;
    ``rounds``: whether evalkit's value rounds to a number published to ``row["decimals"]``
    places (None without such a number)."""
    out = []
    decimals = row.get("decimals")
    for key in METRICS:
        ours, theirs = metrics.get(key), row["published"].get(key)
        diff = None if ours is None or theirs is None else ours - theirs
        rel = None if diff is None or theirs == 0 else diff / abs(theirs)
        rounds = None if diff is None or decimals is None else abs(diff) <= 0.5 * 10.0**-decimals + 1e-12
        out.append((name, key, ours, theirs, diff, rel, rounds))
    return out


def _fmt(x, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="", help="comma list of row names (default: all)")
    ap.add_argument("--rows-json", default=None,
                    help="a JSON file of rows in the same form (other batches, a test mirror)")
    ap.add_argument("--dir", default=None, help="folder for the sample batches")
    ap.add_argument("--list", action="store_true", help="list the rows and exit")
    ap.add_argument("--weights", default=None, help="Inception weights file (pytorch-fid's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--out", default=None, help="write the comparison as JSON here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    rows = load_rows(args.rows_json) if args.rows_json else ROWS
    names = [s for s in args.rows.split(",") if s] or list(rows)
    unknown = [n for n in names if n not in rows]
    if unknown:
        ap.error(f"unknown rows {', '.join(unknown)}; known: {', '.join(rows)}")
    if args.list:
        for n in names:
            print(f"{n}: {rows[n]['url']} vs {rows[n]['reference']} ({rows[n]['source']})")
        return 0
    import warnings

    import evalkit
    from evalkit.errors import ProtocolWarning

    folder = papers_dir(args.dir)
    table = []
    for name in names:
        row = rows[name]
        path = fetch_samples(row, folder, args.quiet)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ProtocolWarning)  # shown in the record instead
            res = evalkit.score(str(path), protocol="adm", ref=row["reference"], weights=args.weights,
                                device=args.device, batch_size=args.batch_size,
                                workers=args.workers, quiet=args.quiet)
        border = (res.record.get("details") or {}).get("precision", {}).get("_float16_borderline")
        table += compare(name, row, res.record["metrics"])
        print(f"{name}: {res.record['samples']['n']} samples vs {row['reference']}, complete="
              f"{res.record['protocol']['complete']}, float16-borderline {border}", flush=True)
    print("| row | metric | evalkit | published | difference | relative | rounding |")
    print("|---|---|---:|---:|---:|---:|---|")
    for name, key, ours, theirs, diff, rel, rounds in table:
        print(f"| {name} | {key} | {_fmt(ours, '.6g')} | {_fmt(theirs, '.6g')} | "
              f"{_fmt(diff, '+.3g')} | {_fmt(rel, '+.2e')} | "
              f"{'–' if rounds is None else ('same' if rounds else 'DIFFERS')} |")
    if args.out:
        Path(args.out).write_text(json.dumps(
            [dict(zip(("row", "metric", "evalkit", "published", "difference", "relative",
                       "rounds_to_published"), t)) for t in table], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
