"""Tables and plots of a run's comparisons at equal speed, from ``results.json``: the
verdict table (``verdicts.md`` / ``.csv``), every family's front with intervals
(``fronts.png``) and each search's convergence (``convergence.png``).

Like :mod:`repro.reporting.report`, only numpy, pandas and (lazily) matplotlib: never torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from repro.core.pareto import front_indices
from repro.infra.atomic import atomic_path
from repro.results.schema import Results, Row

VERDICT_COLUMNS = [
    "experiment",
    "method",
    "budget",
    "family",
    "metric",
    "speed",
    "searched",
    "family at speed",
    "difference",
    "95% low",
    "95% high",
    "verdict",
    "against",
    "repeats",
    "p",
    "label",
    "Holm p",
    "adjusted verdict",
]


def verdict_table(results: Results | dict) -> pd.DataFrame:
    """One row per searched method, budget, family, metric and speed (predicted, measured):
    the searched rows' mean quality, the family's front interpolated at their speeds (or the
    other method's mean), the difference (searched minus family) with its 95% interval, the
    verdict, what it was against (the front at equal speed, its nearer end beyond it, or
    another method at equal budget), the search repeats, p, whether the comparison is
    primary or exploratory, and for primary ones Holm's p and verdict across the run
    (empty in runs made before verdicts had them)."""
    records = [
        {
            "experiment": v["experiment"],
            "method": v["method"],
            "budget": v["budget"],
            "family": v["family"],
            "metric": v["metric"],
            "speed": v["speed"],
            "searched": v.get("searched"),
            "family at speed": v.get("at_speed"),
            "difference": v.get("difference"),
            "95% low": v.get("low"),
            "95% high": v.get("high"),
            "verdict": v["outcome"],
            "against": v.get("basis"),
            "repeats": v.get("n_search_seeds"),
            "p": v.get("p"),
            "label": v.get("label"),
            "Holm p": v.get("p_holm"),
            "adjusted verdict": v.get("adjusted"),
        }
        for v in Results.of(results).verdicts
    ]
    return pd.DataFrame(records, columns=VERDICT_COLUMNS)


_KEY = ["experiment", "method", "budget", "family", "metric", "speed"]


def verdict_changes(old: Results | dict, new: Results | dict) -> pd.DataFrame:
    """The verdicts of two runs side by side (the new run's order, then old-only ones):
    each run's difference and verdict, and whether the verdict changed."""
    a, b = verdict_table(old), verdict_table(new)
    merged = b.merge(a, on=_KEY, how="outer", suffixes=(" new", " old"), sort=False)
    merged["changed"] = [
        ""
        if x == y
        else ("only in old" if pd.isna(y) else "only in new" if pd.isna(x) else f"{x} -> {y}")
        for x, y in zip(merged["verdict old"], merged["verdict new"], strict=True)
    ]
    return merged[
        [*_KEY, "difference old", "verdict old", "difference new", "verdict new", "changed"]
    ]


def write_verdicts(results: Results | dict, directory: Path | str) -> list[Path]:
    """``verdicts.md`` and ``verdicts.csv`` (nothing when the run has no verdicts)."""
    df = verdict_table(results)
    if df.empty:
        return []
    from repro.reporting.report import render

    paths = []
    for fmt in ("md", "csv"):
        path = Path(directory) / f"verdicts.{fmt}"
        with atomic_path(path) as tmp:
            tmp.write_text(render(df, fmt))
        paths.append(path)
    return paths


def _speed(row: Row) -> float | None:
    value = row.measured_speedup
    return row.predicted_speedup if value is None else value


def fronts_plot(results: Results | dict, path: Path | str) -> Path | None:
    """Quality against measured speed (predicted where not measured) with 95% intervals
    (percentile bootstrap of the metric, drawn as vertical lines),
    one panel per experiment and FID protocol: each baseline family's front as a line
    through its non-dominated points, searched rows as points (one per budget and search
    seed), published rows as hollow markers. None when no row has an interval."""
    rows = [r for r in Results.of(results).rows if r.intervals]
    if not rows:
        return None
    from matplotlib import colormaps

    experiments = list(dict.fromkeys(r.experiment for r in rows))
    metrics = list(dict.fromkeys(m for r in rows for m in r.intervals))
    families = list(dict.fromkeys(r.family or r.kind for r in rows))
    colours, markers = colormaps["tab10"], "os^DvP<>Xhp"
    fig, axes = _panels(len(experiments), len(metrics), (6, 4.5))
    for i, experiment in enumerate(experiments):
        for j, metric in enumerate(metrics):
            ax = axes[i][j]
            for k, name in enumerate(families):
                members = [
                    r
                    for r in rows
                    if r.experiment == experiment
                    and (r.family or r.kind) == name
                    and _speed(r) is not None
                    and metric in r.intervals
                ]
                if not members:
                    continue
                x = np.array([_speed(r) for r in members], dtype=float)
                y = np.array([r.metrics[metric] for r in members], dtype=float)
                low, high = np.array([r.intervals[metric] for r in members], dtype=float).T
                style = dict(color=colours(k % 10), marker=markers[k % len(markers)])
                ax.scatter(x, y, s=25, label=name, zorder=3, **style)
                # a bootstrap FID is biased upwards (resamples repeat images): the interval
                # shows the spread and may lie above the value as drawn
                ax.vlines(x, low, high, color=style["color"], linewidth=1, alpha=0.6)
                if members[0].kind == "baseline" and len(members) > 1:
                    front = front_indices(list(x), list(y))
                    ax.plot(x[front], y[front], color=style["color"], linewidth=1)
                key = metric.partition(":")[0]
                published = [
                    (r.published.get("speedup"), r.published.get(key))
                    for r in members
                    if r.published
                ]
                published = [(a, b) for a, b in published if a is not None and b is not None]
                if published:
                    ax.scatter(
                        *zip(*published, strict=True),
                        facecolors="none",
                        edgecolors=style["color"],
                        marker=style["marker"],
                        s=60,
                        label=f"{name} (published)",
                    )
            ax.set_xlabel("measured speedup")
            ax.set_ylabel(f"{metric} (lower is better), 95% interval")
            ax.set_title(f"{experiment}: {metric}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="x-small")
    return _save(fig, path)


def convergence(row: Row) -> np.ndarray:
    """Best fitness so far after each scored schedule of a searched row's search."""
    return np.minimum.accumulate(np.asarray(row.search["trace"], dtype=float))


def convergence_plot(results: Results | dict, path: Path | str) -> Path | None:
    """Best fitness so far against schedules scored, one panel per experiment and budget,
    one line per search method: the mean over search seeds and their range. None when no
    searched row kept its trace."""
    rows = [
        r
        for r in Results.of(results).rows
        if r.kind == "searched" and (r.search or {}).get("trace")
    ]
    if not rows:
        return None
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    experiments = list(dict.fromkeys(r.experiment for r in rows))
    budgets = sorted({r.budget for r in rows})
    methods = list(dict.fromkeys(r.method for r in rows))
    colours = colormaps["tab10"]
    fig, axes = _panels(len(experiments), len(budgets), (5, 4))
    for i, experiment in enumerate(experiments):
        protocol = next(r.search.get("protocol", "?") for r in rows if r.experiment == experiment)
        for j, budget in enumerate(budgets):
            ax = axes[i][j]
            for k, method in enumerate(methods):
                curves = [
                    convergence(r)
                    for r in rows
                    if r.experiment == experiment and r.budget == budget and r.method == method
                ]
                if not curves:
                    continue
                length = min(len(c) for c in curves)
                stack = np.array([c[:length] for c in curves])
                x = np.arange(1, length + 1)
                seeds = f"{len(curves)} seed{'s' if len(curves) != 1 else ''}"
                ax.plot(x, stack.mean(axis=0), color=colours(k % 10), label=f"{method} ({seeds})")
                ax.fill_between(
                    x, stack.min(axis=0), stack.max(axis=0), color=colours(k % 10), alpha=0.2
                )
            ax.set_xlabel("schedules scored")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"best search fitness so far ({protocol})")
            ax.set_title(f"{experiment} @{budget:g}x")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    return _save(fig, path)


def _panels(rows: int, cols: int, size: tuple[float, float]):
    """A figure of ``rows`` x ``cols`` panels of ``size`` inches (Agg: no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * cols, size[1] * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig, path: Path | str) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)
