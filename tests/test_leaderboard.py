"""Leaderboards: ranks, best marks, directions, one table per protocol, formats, inputs."""
import csv
import io
import json

import pytest
from click.testing import CliRunner

from evalkit.cli import main
from evalkit.errors import InputError
from evalkit.formatting import format_number
from evalkit.results.directions import metric_directions
from evalkit.results.leaderboard import build_tables, collect_records
from evalkit.results.record import METRIC_KEYS, SCHEMA
from evalkit.results.renderers import render


def rec(name, encoder="dinov2", ref_fp="fpA", n=1000, ci=None, **metrics):
    r = {"schema": SCHEMA, "name": name, "created": "2026-01-01T00:00:00+00:00",
         "samples": {"source": f"/s/{name}", "n": n, "fingerprint": "f" + name},
         "reference": {"source": "/data/imagenet", "name": "imagenet", "n": 5000,
                       "fingerprint": ref_fp},
         "test": None,
         "encoder": {"name": encoder, "arch": "vitl14", "weights_sha256": "ab" * 32,
                     "preprocess": json.dumps({"size": 224, "resize": "clean"})},
         "config": {"seed": 0, "metrics": "all", "nsample": None}, "metrics": metrics}
    if ci:
        r["metrics_ci"] = ci
    return r


@pytest.fixture
def records():
    return [
        rec("gan", fd=25.0, precision=0.80, recall=0.30, ct=2.0, kd=0.02, kd_std=0.001),
        rec("diffusion", fd=12.5, precision=0.70, recall=0.60, ct=-0.5, kd=0.01, kd_std=0.002,
            ci={"fd": [11.9, 13.2]}),
        rec("vae", fd=80.0, precision=0.50, recall=0.65, ct=0.9, kd=0.05, kd_std=0.003),
    ]


def test_ranks_best_and_directions(records):
    [(protocol, t)] = build_tables(records)
    assert protocol["encoder"] == "dinov2" and protocol["reference"] == "fpA"
    assert t.attrs["sort"] == "fd"
    assert list(t.index) == ["diffusion", "gan", "vae"]           # fd: lower is better
    assert list(t["rank"]) == [1, 2, 3]
    best = t.attrs["best"]
    assert best["fd"] == ["diffusion"] and best["kd"] == ["diffusion"]
    assert best["precision"] == ["gan"]                              # higher is better
    assert best["recall"] == ["vae"]
    assert best["ct"] == ["diffusion"]                               # |-0.5| closest to zero
    assert "kd_std" not in best                                      # no direction, no best
    d = t.attrs["directions"]
    assert (d["fd"], d["precision"], d["ct"], d["kd_std"]) == ("lower", "higher", "zero", "none")


def test_sort_by_higher_is_better_metric(records):
    [(_, t)] = build_tables(records, sort="precision")
    assert list(t.index) == ["gan", "diffusion", "vae"]
    [(_, t)] = build_tables(records, sort="ct")
    assert list(t.index) == ["diffusion", "vae", "gan"]  # |ct| 0.5, 0.9, 2.0


def test_ties_share_rank_and_missing_values_rank_last():
    rs = [rec("a", fd=10.0), rec("b", fd=10.0), rec("c", fd=5.0), rec("d", precision=0.5)]
    [(_, t)] = build_tables(rs)
    assert dict(t["rank"]) == {"c": 1, "a": 2, "b": 2, "d": 4}
    assert t.attrs["best"]["fd"] == ["c"]
    assert "–" in render([(None, t)], "md").split("| d |")[1].splitlines()[0]


def test_mixed_protocols_never_share_a_table(records):
    others = [rec("incep_model", encoder="inception", fd=3.0),
              rec("other_ref", ref_fp="fpB", fd=1.0),
              rec("small_n", n=500, fd=2.0)]
    tables = build_tables(records + others)
    assert len(tables) == 4
    groups = [set(t.index) for _, t in tables]
    assert groups[0] == {"gan", "diffusion", "vae"}
    assert {"incep_model"} in groups and {"other_ref"} in groups and {"small_n"} in groups
    for protocol, t in tables:  # each table holds one protocol only
        assert all(t.attrs["protocol"] == protocol for _ in t.index)
    md = render(tables, "md")
    blocks = md.split("**Protocol:")[1:]
    assert len(blocks) == 4
    assert "inception/vitl14" in blocks[1] and "incep_model" in blocks[1]
    assert "incep_model" not in blocks[0] and "other_ref" not in blocks[0]


def test_markdown_headers_bold_and_ci(records):
    md = render(build_tables(records), "md")
    lines = md.splitlines()
    assert lines[0].startswith("**Protocol: encoder dinov2/vitl14") and "imagenet fpA" in lines[0]
    header = next(line for line in lines if line.startswith("| rank"))
    assert "fd ↓" in header and "precision ↑" in header and "ct →0" in header
    assert "| kd_std |" in header                                  # no arrow without direction
    row = next(line for line in lines if "| diffusion |" in line)
    assert "**12.50 [11.90, 13.20]**" in row                         # best + bootstrap interval
    assert row.startswith("| 1 |")
    assert "**0.8000**" in next(line for line in lines if "| gan |" in line)


def test_csv_html_latex_json(records):
    tables = build_tables(records)
    text = render(tables, "csv")
    assert text.startswith("table,rank,model,") and "↓" not in text and "*" not in text
    rows = list(csv.DictReader(io.StringIO(text)))
    by = {r["model"]: r for r in rows}
    assert by["diffusion"]["fd"] == "12.5" and by["diffusion"]["fd_best"] == "1"
    assert by["gan"]["fd"] == "25.0" and by["gan"]["fd_best"] == "0"
    assert by["diffusion"]["fd_ci_lo"] == "11.9" and by["gan"]["fd_ci_lo"] == ""
    assert by["gan"]["precision"] == "0.8" and by["gan"]["precision_best"] == "1"
    assert by["gan"]["table"].startswith("Protocol:")
    import pandas

    frame = pandas.read_csv(io.StringIO(text))  # plain data: numeric columns, one header row
    assert frame["fd"].dtype == float and frame["fd_best"].dtype.kind == "i" and len(frame) == 3
    assert frame.set_index("model").loc["diffusion", "fd_ci_hi"] == 13.2

    page = render(tables, "html")
    assert page.startswith("<!DOCTYPE html>") and "fd ↓" in page
    assert '<td class="best">12.50 [11.90, 13.20]</td>' in page
    assert page.index("Protocol:") < page.index("<table>")

    tex = render(tables, "latex")
    assert r"fd $\downarrow$" in tex and r"precision $\uparrow$" in tex
    assert r"\textbf{12.50 [11.90, 13.20]}" in tex and r"kd\_std" in tex
    assert tex.index(r"\caption{Protocol:") < tex.index(r"\begin{tabular}")

    data = json.loads(render(tables, "json"))
    assert data[0]["sort"] == "fd" and data[0]["protocol"]["encoder"] == "dinov2"
    first = data[0]["rows"][0]
    assert first["model"] == "diffusion" and first["rank"] == 1
    assert first["metrics"]["fd"] == 12.5 and first["ci"]["fd"] == [11.9, 13.2]
    assert "fd" in first["best"] and "precision" not in first["best"]


def test_html_escapes_model_names():
    page = render(build_tables([rec("<script>x</script>", fd=1.0)]), "html")
    assert "<script>" not in page and "&lt;script&gt;" in page


@pytest.mark.parametrize("value, text", [
    (123.456, "123.5"), (0.71234, "0.7123"), (12345.6, "12346"), (0.0012345, "0.001234"),
    (0.00012345, "1.234e-04"), (0.0, "0"), (-2.5, "-2.500"), (9.87654, "9.877"),
    (float("nan"), "–"), (float("inf"), "∞"),
])
def test_format_number_four_significant_digits(value, text):
    assert format_number(value) == text


# SPEC's seventeen keys (and the two spreads) with the direction a reader expects.
SPEC_DIRECTIONS = {
    **{k: "lower" for k in ("fd", "fd_inf", "sfid", "kd", "cmmd", "sw_approx", "fd_per_class",
                            "class_kl", "prompt_similarity")},
    **{k: "higher" for k in ("is", "precision", "recall", "density", "coverage", "realism",
                             "vendi", "vendi_per_class", "authpct", "fls", "clip_score",
                             "prompt_vendi", "prompt_vendi_all", "class_coverage", "class_accuracy",
                             "rke", "top_precision", "top_recall", "top_f1", "precision_per_class",
                             "recall_per_class", "density_per_class", "coverage_per_class")},
    **{k: "zero" for k in ("ct", "fls_pog")},
    **{k: "none" for k in ("kd_std", "is_std", "rke_sigma", "rarity", "rarity_outside")},
}


def test_directions_come_from_the_registry_and_match_spec():
    from evalkit.metrics import result_directions

    assert set(METRIC_KEYS) == set(SPEC_DIRECTIONS)
    assert metric_directions() == result_directions()
    for key, direction in SPEC_DIRECTIONS.items():
        assert metric_directions()[key] == direction, key


def test_duplicate_names_are_disambiguated(tmp_path):
    a, b = rec("m", fd=1.0), rec("m", fd=2.0)
    a["_path"], b["_path"] = str(tmp_path / "run1.json"), str(tmp_path / "run2.json")
    [(_, t)] = build_tables([a, b])
    assert list(t.index) == ["m [run1.json]", "m [run2.json]"]


def _write(path, payload):
    path.write_text(json.dumps(payload))
    return path


def test_cli_inputs_files_dirs_globs_and_output(tmp_path, records):
    d = tmp_path / "results"
    d.mkdir()
    _write(d / "gan.json", records[0])
    _write(d / "rest.json", records[1:])
    _write(d / "notes.json", {"hello": 1})           # not a record: skipped inside a folder
    (d / "per_sample.csv").write_text("index\n0\n")
    runner = CliRunner()
    with pytest.warns(UserWarning, match="notes.json"):
        r = runner.invoke(main, ["leaderboard", str(d)])
    assert r.exit_code == 0, r.output
    assert r.output.count("| diffusion |") == 1 and "| vae |" in r.output
    with pytest.warns(UserWarning, match="notes.json"):
        r = runner.invoke(main, ["leaderboard", str(d / "*.json"), "--format", "csv",
                                 "--sort", "recall"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[1].split(",")[1:3] == ["1", "vae"]
    out = tmp_path / "board.tex"
    r = runner.invoke(main, ["leaderboard", str(d / "gan.json"), str(d / "rest.json"),
                             "--format", "latex", "-o", str(out)])
    assert r.exit_code == 0 and r"\begin{tabular}" in out.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.warns(UserWarning, match="skipping .*notes.json"):
        assert len(collect_records([str(d)])) == 3


@pytest.mark.parametrize("args, message", [
    (["missing.json"], "no such file"),
    (["{d}/*.nothing"], "no result records"),
    (["{d}/gan.json", "--sort", "nope"], "--sort nope"),
    (["{d}/gan.json", "--sort", "kd_std"], "no better direction"),
    (["{d}/notes.json"], "not an evalkit result record"),
])
def test_cli_bad_input_exits_2(tmp_path, records, args, message):
    _write(tmp_path / "gan.json", records[0])
    _write(tmp_path / "notes.json", {"hello": 1})
    r = CliRunner().invoke(main, ["leaderboard"] + [a.format(d=tmp_path) for a in args])
    assert r.exit_code == 2 and message in r.output, r.output


def test_paper_exact_and_non_exact_numbers_never_share_a_column(records):
    """A number every convention of which is the original tool's (``protocol.exact``) is not
    ranked beside one that is not (an older record of the same protocol, say)."""
    exact = [dict(rec(m, fd=v), protocol={"name": "adm", "complete": True, "exact": ["fd"]})
             for m, v in (("adm_a", 3.9), ("adm_b", 4.2))]
    [(_, t)] = build_tables(exact)
    assert list(t.index) == ["adm_a", "adm_b"]
    old = dict(rec("adm_old", fd=3.0), protocol={"name": "adm", "complete": True})
    with pytest.raises(InputError, match="fd: paper-exact in adm_a, adm_b but not in adm_old"):
        build_tables(exact + [old])
def test_test_set_metrics_of_different_test_sets_never_share_a_column(records):
    """ct and fls depend on the --test set: records scored against different ones share the fd
    column but get one ct table per test set; with the same test set, one table."""
    for r, fp in zip(records, ("t1", "t2", "t1")):
        r["test"] = {"source": "/t", "n": 500, "fingerprint": fp}
    tables = build_tables(records)
    assert len(tables) == 3
    (p0, main), (p1, t1), (p2, t2) = tables
    assert "ct" not in main.columns and set(main.index) == {"gan", "diffusion", "vae"}
    assert "test" not in p0 and p1["test"] == "t1" and p2["test"] == "t2"
    assert list(t1.columns) == ["rank", "ct"] and set(t1.index) == {"gan", "vae"}
    assert list(t2.index) == ["diffusion"]
    [(_, t)] = build_tables(records, sort="ct", metrics=["fd"])  # no ct asked for: one table
    assert list(t.columns) == ["rank", "fd"]
    for r in records:
        r["test"]["fingerprint"] = "t1"
    [(_, t)] = build_tables(records)
    assert "ct" in t.columns


# ------------------------------------------------------------------ per-condition column groups


@pytest.fixture
def conditioned():
    return [rec("ldm", fd=8.0, precision=0.7, fd_per_class=30.0, prompt_vendi=2.5,
                precision_per_class=0.6, kd=0.01),
            rec("gan", fd=9.0, precision=0.8, fd_per_class=25.0, prompt_vendi=1.5,
                precision_per_class=0.7, kd=0.02)]


# what a reader expects: overall columns first, then each condition's columns together
GROUPED_ORDER = ["fd", "kd", "precision", "fd_per_class", "precision_per_class", "prompt_vendi"]


def test_per_condition_columns_are_grouped(conditioned):
    [(_, t)] = build_tables(conditioned)
    assert [c for c in t.columns if c != "rank"] == GROUPED_ORDER
    assert t.attrs["groups"] == {"fd_per_class": ("per class", "fd"),
                                 "precision_per_class": ("per class", "precision"),
                                 "prompt_vendi": ("per prompt", "vendi")}
    md = render(build_tables(conditioned), "md")
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert header == ("| rank | model | fd ↓ | kd ↓ | precision ↑ | per class: fd ↓ | "
                      "per class: precision ↑ | per prompt: vendi ↑ |")
    # --sort and --metrics keep taking the metric keys
    [(_, by)] = build_tables(conditioned, sort="fd_per_class", metrics=["fd_per_class", "fd"])
    assert list(by.index) == ["gan", "ldm"] and list(by.columns) == ["rank", "fd", "fd_per_class"]


def test_per_condition_groups_in_csv_html_latex_json(conditioned):
    import html.parser

    import pandas as pd

    tables = build_tables(conditioned)
    df = pd.read_csv(io.StringIO(render(tables, "csv")))
    assert [c for c in df.columns if not c.endswith("_best")] == [
        "table", "rank", "model", "fd", "kd", "precision", "per_class.fd", "per_class.precision",
        "per_prompt.vendi"]
    assert df.set_index("model")["per_class.fd"].to_dict() == {"ldm": 30.0, "gan": 25.0}
    assert df.set_index("model")["per_class.fd_best"].to_dict() == {"ldm": 0, "gan": 1}

    class Head(html.parser.HTMLParser):  # the <thead> rows: (text, colspan, rowspan) per cell
        def __init__(self):
            super().__init__()
            self.rows, self.on, self.cell = [], False, None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "thead":
                self.on = True
            elif tag == "tr" and self.on:
                self.rows.append([])
            elif tag == "th" and self.on:
                self.cell = ["", int(a.get("colspan", 1)), int(a.get("rowspan", 1))]

        def handle_endtag(self, tag):
            if tag == "thead":
                self.on = False
            elif tag == "th" and self.cell is not None:
                self.rows[-1].append(tuple(self.cell))
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell[0] += data

    p = Head()
    p.feed(render(tables, "html"))
    top, sub = p.rows
    assert [c[0] for c in top] == ["rank", "model", "fd ↓", "kd ↓", "precision ↑", "per class",
                                   "per prompt"]
    assert [c[1] for c in top] == [1, 1, 1, 1, 1, 2, 1] and [c[2] for c in top[:5]] == [2] * 5
    assert [c[0] for c in sub] == ["fd ↓", "precision ↑", "vendi ↑"]
    tex = render(tables, "latex").splitlines()
    at = tex.index(r"\hline") + 1
    assert tex[at] == r" &  &  &  &  & \multicolumn{2}{c}{per class} & \multicolumn{1}{c}{per prompt} \\"
    assert tex[at + 1] == r"\cline{6-7}\cline{8-8}"
    assert tex[at + 2].startswith(r"rank & model & fd $\downarrow$ & kd $\downarrow$ & "
                                  r"precision $\uparrow$ & fd $\downarrow$ & precision $\uparrow$")
    [payload] = json.loads(render(tables, "json"))
    assert payload["groups"]["fd_per_class"] == ["per class", "fd"]
    assert "fd_per_class" in payload["rows"][0]["metrics"]  # json keeps the keys


def test_tables_without_conditions_keep_one_header_row(records):
    tables = build_tables(records)
    assert "colspan" not in render(tables, "html") and r"\multicolumn" not in render(tables, "latex")
