"""Comparison tables, regression diffs, Pareto plots and sample grids from ``results.json``.

Only stdlib, numpy, pandas and (lazily) matplotlib / PIL: reporting never imports torch.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from repro.core.pareto import front_indices
from repro.infra.atomic import atomic_path
from repro.infra.errors import UserError
from repro.metrics.protocols import lower_is_better
from repro.results.schema import Results, Row, SchemaError

FORMATS = ("md", "csv", "tex")
_TEXT_COLUMNS = ("run", "experiment", "name", "kind", "source", "schedule")
_SPEEDUPS = ("predicted speedup", "measured speedup")
# what a row's loop costs beside time, as columns after the speedups (where any row has it):
# its work in full calls, throughput, and the memory one loop took (host: what it added)
_COSTS = {
    "work": lambda row: (row.computed or {}).get("work"),
    "images/s": lambda row: (row.latency or {}).get("images_per_s"),
    "host MB": lambda row: (row.latency or {}).get("host_memory_mb"),
    "GPU MB": lambda row: (row.latency or {}).get("peak_memory_mb"),
}
_QUALITY_PREFIXES = (("fid:",), ("rfid:",), ("clip:", "acc:"))  # pareto y axis, by preference
_MIN_TILE = 64  # px: sample grids upscale smaller images (nearest neighbour) to at least this
_GRID_PAD = 2  # px of white between grid tiles


class ReportError(UserError, ValueError):
    """A results file or report request that cannot be rendered; one line for the CLI."""


def load_results(path: Path | str) -> Results:
    """Read a run directory's ``results.json`` (or the file itself) through the schema,
    refusing other schemas so a stray JSON file cannot silently render as an empty table."""
    path = Path(path)
    file = path if path.is_file() or path.suffix == ".json" else path / "results.json"
    try:
        results = json.loads(file.read_text())
    except FileNotFoundError:
        raise ReportError(f"{file}: no such results file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ReportError(f"{file}: cannot read ({error})") from None
    except json.JSONDecodeError as error:
        raise ReportError(f"{file}: not valid JSON ({error})") from None
    try:
        return Results.of(results, str(file))
    except SchemaError as error:
        raise ReportError(str(error)) from None


def _protocols(rows: Sequence[Row]) -> list[str]:
    """Metric protocols of all rows, first-seen order."""
    return list(dict.fromkeys(p for row in rows for p in row.metrics))


def _columns(
    protocols: list[str], published: list[str], has_published: bool, multi: bool, costs: list[str]
) -> list[str]:
    """Table column order; each ``published <key>`` sits right after the metric it matches."""
    columns = ["run"] * multi + ["experiment", "name", "kind", "budget", *_SPEEDUPS, *costs]
    columns += ["published speedup"] * ("speedup" in published)
    unplaced = [key for key in published if key != "speedup"]
    for protocol in protocols:
        columns.append(protocol)
        key = next((k for k in unplaced if protocol.startswith(f"{k}:") or protocol == k), None)
        if key is not None:
            columns.append(f"published {key}")
            unplaced.remove(key)
    columns += [f"published {key}" for key in unplaced]
    return columns + ["search fitness"] + ["source"] * has_published + ["schedule"]


def _record(run_id: str | None, row: Row) -> dict:
    published = row.published or {}
    return {
        "run": run_id,
        "experiment": row.experiment,
        "name": row.name,
        "kind": row.kind,
        "budget": row.budget,
        "predicted speedup": row.predicted_speedup,
        "measured speedup": row.measured_speedup,
        **{column: value(row) for column, value in _COSTS.items()},
        **row.metrics,
        **{f"published {k}": v for k, v in published.items() if k != "source"},
        "search fitness": (row.search or {}).get("fitness"),
        "source": published.get("source"),
        "schedule": row.schedule,
    }


def table(results: Results | dict | Sequence[Results | dict]) -> pd.DataFrame:
    """One row per evaluated schedule of one or more runs (a ``run`` column when several).

    Columns: experiment, name, kind, budget, predicted / measured speedup, the loop's work
    in full calls, images/s and memory (host MB on a CPU, GPU MB on CUDA; each where any row
    has it), one column per metric protocol (first-seen order), search fitness, schedule.
    When any row has a ``published`` dict, ``published speedup`` / ``published <key>`` (the
    short key: ``fid``, ``clip``, ...; its protocol is the paper's, not ours) follow the
    reproduced column the key maps to, and a ``source`` column precedes the schedule. Missing
    values are NaN.
    """
    runs = [
        Results.of(run) for run in ([results] if isinstance(results, Results | dict) else results)
    ]
    pairs = [(run.run_id, row) for run in runs for row in run.rows]
    rows = [row for _, row in pairs]
    published = [row.published for row in rows if row.published is not None]
    keys = list(dict.fromkeys(k for p in published for k in p if k != "source"))
    costs = [
        column for column, value in _COSTS.items() if any(value(row) is not None for row in rows)
    ]
    columns = _columns(_protocols(rows), keys, bool(published), len(runs) > 1, costs)
    df = pd.DataFrame([_record(run_id, row) for run_id, row in pairs], columns=columns)
    numeric = [c for c in columns if c not in _TEXT_COLUMNS]
    df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    return df


def display_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Cells as display strings: floats with 2 decimals (accuracy, SSIM and LPIPS, whose
    differences live in the third, 3), missing values blank."""
    out = pd.DataFrame(index=df.index)
    for column in df.columns:
        values = df[column]
        if pd.api.types.is_float_dtype(values):
            fine = column.removeprefix("published ").startswith(("acc", "ssim", "lpips"))
            decimals = 3 if fine else 2
            out[column] = ["" if pd.isna(v) else f"{v:.{decimals}f}" for v in values]
        else:
            out[column] = ["" if pd.isna(v) else str(v) for v in values]
    if "schedule" in out:
        out["schedule"] = out["schedule"].map(_display_schedule)
    return out


def _display_schedule(text: str, longest: int = 200) -> str:
    """A schedule as tables show it: a long F/N schedule (the step-wise search on the
    training grid has 1000 steps) as its F positions; csv keeps the full text."""
    tokens = [t for t in text.split() if t != "|"]
    if len(tokens) <= longest or set(tokens) - {"F", "N"}:
        return text
    at = " ".join(str(i) for i, t in enumerate(tokens) if t == "F")
    return f"{len(tokens)} steps: F at {at}, N elsewhere"


def render(df: pd.DataFrame, fmt: str) -> str:
    """``df`` as ``md`` (pipe table), ``csv`` (full precision) or ``tex`` (booktabs tabular).

    md and tex show floats with 2 decimals (accuracy columns 3) and missing values blank;
    csv keeps every digit, writes missing values empty (``pandas.read_csv`` reads NaN) and
    quotes text, a cell a spreadsheet would run as a formula after a leading apostrophe; md
    escapes ``|`` and writes line breaks as ``<br>``, so a hostile name stays in its cell.
    """
    if fmt == "csv":  # text quoted: a CR inside a name would otherwise end the record
        cells = df.map(_no_formula).rename(columns=_no_formula)
        return cells.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC)
    if fmt not in FORMATS:
        raise ReportError(f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
    cells = display_cells(df)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    if fmt == "md":  # a '|' (schedule segments) or a line break would split the row

        def escape(text: str) -> str:
            return _LINE_BREAK.sub("<br>", text.replace("|", r"\|"))

        cells = cells.map(escape).rename(columns=escape)
        return (
            cells.to_markdown(
                index=False,
                disable_numparse=True,
                colalign=["right" if n else "left" for n in numeric],
            )
            + "\n"
        )
    cells = cells.map(lambda text: _LINE_BREAK.sub(" ", text))  # a blank line ends a tabular
    return cells.to_latex(
        index=False, escape=True, column_format="".join("r" if n else "l" for n in numeric)
    )


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula
_LINE_BREAK = re.compile(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]")  # str.splitlines'


def _no_formula(value):
    """A text cell that a spreadsheet would run as a formula (``=HYPERLINK(...)``), with a
    leading apostrophe as OWASP recommends; numbers and other text as they are."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def _delta(column: str, old: float, new: float) -> str:
    """``"+1.2 ↑ worse"``: signed change, arrow, and verdict by the column's direction."""
    if pd.isna(old) or pd.isna(new):
        return ""
    delta = new - old
    if delta == 0:
        return "="
    lower = lower_is_better(column)
    verdict = "" if lower is None else (" better" if (delta < 0) == lower else " worse")
    return f"{delta:+.3g} {'↑' if delta > 0 else '↓'}{verdict}"


def _match(a: pd.DataFrame, b: pd.DataFrame) -> list[tuple[int | None, int | None, str]]:
    """(old position, new position, note) pairs: same schedule first (same name before
    renamed), then same name with a changed schedule, then rows only on one side."""
    left, right, pairs = list(range(len(a))), list(range(len(b))), []
    passes = (
        (("experiment", "schedule", "name"), ""),
        (("experiment", "schedule"), "renamed"),
        (("experiment", "name"), "schedule changed"),
    )
    for keys, note in passes:
        for j in list(right):
            key = tuple(b.iloc[j][k] for k in keys)
            i = next((i for i in left if tuple(a.iloc[i][k] for k in keys) == key), None)
            if i is not None:
                left.remove(i)
                right.remove(j)
                pairs.append((i, j, note))
    pairs += [(None, j, "only in new") for j in right] + [(i, None, "only in old") for i in left]
    return sorted(pairs, key=lambda p: p[1] if p[1] is not None else len(b) + p[0])


def regression_diff(old: Results | dict, new: Results | dict) -> pd.DataFrame:
    """Regression table of two runs, one row per schedule (new run's order, then old-only).

    Columns: experiment, name, note (``""``, ``renamed``, ``schedule changed``, ``only in
    old``, ``only in new``), then for predicted / measured speedup and every metric protocol
    in both runs three columns ``<q> old``, ``<q> new`` (floats) and ``<q> Δ``: a string
    ``"+1.2 ↑ worse"`` -- signed change (3 significant digits), arrow, and ``better`` /
    ``worse`` by direction (lower is better for ``fid:*``, ``rfid:*``, ``latency``; higher for
    speedups, ``acc:*``, ``clip:*``); ``"="`` when unchanged, blank when a side is missing.
    The new schedule (the old one for old-only rows) comes last.
    """
    old, new = Results.of(old), Results.of(new)
    a, b = table(old), table(new)
    shared = [p for p in _protocols(new.rows) if p in _protocols(old.rows)]
    quantities = [*_SPEEDUPS, *shared]
    records = []
    for i, j, note in _match(a, b):
        side = b.iloc[j] if j is not None else a.iloc[i]
        record = {"experiment": side["experiment"], "name": side["name"], "note": note}
        for q in quantities:
            before = a.iloc[i][q] if i is not None else math.nan
            after = b.iloc[j][q] if j is not None else math.nan
            record |= {f"{q} old": before, f"{q} new": after, f"{q} Δ": _delta(q, before, after)}
        records.append(record | {"schedule": side["schedule"]})
    columns = [
        "experiment",
        "name",
        "note",
        *(f"{q} {s}" for q in quantities for s in ("old", "new", "Δ")),
        "schedule",
    ]
    return pd.DataFrame(records, columns=columns)


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _quality_metric(rows: Sequence[Row]) -> str | None:
    """The y axis of a Pareto plot: the first fid:*, else rfid:*, else clip:* / acc:* metric."""
    protocols = [
        p for p in _protocols(rows) if any(_number(r.metrics.get(p)) is not None for r in rows)
    ]
    for prefixes in _QUALITY_PREFIXES:
        found = next((p for p in protocols if p.startswith(prefixes)), None)
        if found:
            return found
    return None


def pareto_plot(results: Results | dict, path: Path | str) -> Path:
    """Speedup vs quality, one column per experiment, predicted speed above and measured
    below (verdicts are made at both), the non-dominated front as a step line.

    One marker and colour per series (a search method, or a baseline family: each solver of
    sampler-steps its own), the teacher a star; a point sitting on another series' point is
    drawn hollow and larger, so neither hides the other. Written atomically as PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    results = Results.of(results)
    rows = results.rows
    experiments = list(dict.fromkeys(row.experiment for row in rows)) or [None]
    series = list(dict.fromkeys(_series(row) for row in rows))
    fig = Figure(figsize=(5.5 * len(experiments), 8.4), layout="constrained")
    FigureCanvasAgg(fig)
    suite = (results.suite or {}).get("name", "")
    axes = fig.subplots(2, len(experiments), squeeze=False)
    for column, experiment in enumerate(experiments):
        group = [row for row in rows if row.experiment == experiment]
        for line, speed in enumerate(("predicted", "measured")):
            _pareto_panel(axes[line][column], group, speed, series)
            axes[line][column].set_title(f"{suite}: {experiment} ({speed} speed)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)


def _series(row: Row) -> str:
    """What a Pareto plot marks alike: the teacher, a search method, a baseline family."""
    return "teacher" if row.kind == "teacher" else (row.family or row.method or "?")


def _pareto_panel(ax, group: Sequence[Row], speed: str, series: list[str]) -> None:
    from matplotlib import colormaps

    colours, markers = colormaps["tab10"], "os^DvP<>Xhp"
    metric = _quality_metric(group)
    points = [
        (x, y, row)
        for row in group
        if (x := _number(getattr(row, f"{speed}_speedup"))) is not None
        and (y := _number(row.metrics.get(metric))) is not None
    ]
    seen: dict[tuple[float, float], str] = {}
    for name in series:
        mine = [(x, y) for x, y, row in points if _series(row) == name]
        if not mine:
            continue
        k = series.index(name)
        star = name == "teacher"
        under = [p for p in mine if seen.get((round(p[0], 3), round(p[1], 3)), name) != name]
        for p in mine:
            seen.setdefault((round(p[0], 3), round(p[1], 3)), name)
        own = [p for p in mine if p not in under]
        style = {
            "marker": "*" if star else markers[k % len(markers)],
            "color": colours(k % 10),
            "zorder": 3,
        }
        if own:
            ax.scatter(*zip(*own, strict=True), label=name, s=160 if star else 45, **style)
        if under:  # on another series' point: hollow and larger
            ax.scatter(
                *zip(*under, strict=True),
                label=None if own else name,
                s=140,
                facecolors="none",
                linewidths=1.5,
                **{**style, "color": None, "edgecolors": colours(k % 10)},
            )
    lower = lower_is_better(metric or "") is not False
    front = front_indices([p[0] for p in points], [p[1] for p in points], lower)
    if front:
        ax.step(
            [points[k][0] for k in front],
            [points[k][1] for k in front],
            where="pre",
            color="0.4",
            linestyle="--",
            linewidth=1,
            label="front",
            zorder=2,
        )
        ax.legend(fontsize="small")
    ax.set_xlabel(f"{speed} speedup")
    ax.set_ylabel(
        f"{metric} ({'lower' if lower else 'higher'} is better)" if metric else "no quality metric"
    )
    ax.grid(alpha=0.3)


def sample_grid(images: np.ndarray, path: Path | str, ncols: int = 8) -> Path:
    """Images (uint8 NHWC, C 1 or 3) as a PNG grid, ``ncols`` wide, tiles 2 px apart on white,
    each upscaled by an integer nearest-neighbour factor to at least 64 px so pixels stay exact."""
    from PIL import Image

    images = np.asarray(images)
    if (
        images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[-1] not in (1, 3)
        or not len(images)
        or ncols < 1
    ):
        raise ReportError(
            f"sample_grid needs uint8 NHWC images with 1 or 3 channels and "
            f"ncols >= 1, got {images.dtype} {images.shape}, ncols {ncols}"
        )
    n, h, w, c = images.shape
    scale = -(-_MIN_TILE // min(h, w))  # ceil; 1 when the images are big enough
    tiles = images.repeat(scale, axis=1).repeat(scale, axis=2)
    th, tw, ncols = h * scale, w * scale, min(ncols, n)
    nrows = -(-n // ncols)
    grid = np.full(
        (nrows * (th + _GRID_PAD) + _GRID_PAD, ncols * (tw + _GRID_PAD) + _GRID_PAD, c),
        255,
        np.uint8,
    )
    for k, tile in enumerate(tiles):
        top, left = (
            _GRID_PAD + q * (size + _GRID_PAD)
            for q, size in zip(divmod(k, ncols), (th, tw), strict=True)
        )
        grid[top : top + th, left : left + tw] = tile
    with atomic_path(path) as tmp:
        Image.fromarray(grid[..., 0] if c == 1 else grid).save(tmp, format="PNG")
    return Path(path)


def write_tables(
    results: Results | dict | Sequence[Results | dict], directory: Path | str
) -> list[Path]:
    """``table.md``, ``table.csv`` and ``table.tex`` of :func:`table`, each written
    atomically; one run's ``table.md`` opens with its primary verdicts."""
    df = table(results)
    summary = summary_markdown(results) if isinstance(results, Results | dict) else ""
    paths = []
    for fmt in FORMATS:
        path = Path(directory) / f"table.{fmt}"
        with atomic_path(path) as tmp:
            tmp.write_text((summary + "\n" if fmt == "md" and summary else "") + render(df, fmt))
        paths.append(path)
    return paths


def primary_lines(results: Results | dict) -> list[tuple[str, str]]:
    """The run's primary comparisons, one (outcome, line) each, in the run's order:
    ``digits-dit: segment-evolution @2x vs fewer-steps: tie, fid:digits-cnn -0.27 [-4.77,
    +4.22] at equal predicted speed (equal speed; Holm p 1.000)``. The outcome is the
    Holm-adjusted one."""
    lines = []
    for v in Results.of(results).verdicts:
        if v.get("label") != "primary":
            continue
        outcome = v.get("adjusted") or v["outcome"]
        difference = "" if v.get("difference") is None else f" {v['difference']:+.2f}"
        if v.get("low") is not None and v.get("high") is not None:
            difference += f" [{v['low']:+.2f}, {v['high']:+.2f}]"
        holm = "" if v.get("p_holm") is None else f"; Holm p {v['p_holm']:.3f}"
        lines.append(
            (
                outcome,
                f"{v['experiment']}: {v['method']} @{v['budget']:g}x vs "
                f"{v['family']}: {outcome}, {v['metric']}{difference} at "
                f"{v['speed']} speed ({v.get('basis')}{holm})",
            )
        )
    return lines


def summary_markdown(results: Results | dict) -> str:
    """The primary verdicts as the block reports open with (empty without any)."""
    lines = primary_lines(results)
    if not lines:
        return ""
    return "\n".join(
        [
            f"Primary comparisons ({len(lines)}, Holm-adjusted across the run; "
            "difference = searched minus the other, 95% interval):",
            "",
            *(f"- {line}" for _, line in lines),
            "",
        ]
    )
