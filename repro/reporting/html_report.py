"""``report.html``: one self-contained page per run that a reviewer can attach to a review.

The tables the markdown report shows (results, verdicts at equal speed), every plot and
sample grid the run wrote (embedded as base64 ``data:`` URIs), the environment and the
command that made the run. No scripts, no external links: the file is the whole report.
Every string from the run (suite, experiment and row names, schedules, the command, the
suite file) is escaped. Like :mod:`repro.reporting.report`, never imports torch.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

import pandas as pd

from repro.infra.atomic import atomic_path
from repro.infra.files import InputFileError, read_capped
from repro.reporting.report import display_cells, primary_lines, table
from repro.reporting.verdict_report import verdict_table
from repro.results.schema import Results, Row

FILENAME = "report.html"
PLOTS = (
    ("pareto.png", "speedup against quality, the non-dominated front per experiment"),
    ("fronts.png", "each family's front with 95% bootstrap intervals"),
    ("convergence.png", "best search fitness against schedules scored"),
)
_PNG = b"\x89PNG\r\n\x1a\n"
EMBED_MAX_BYTES = 1 << 26  # a plot, grid or suite.yaml; a report stays a mailable page
_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #111; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.5em; text-align: left; }
th { background: #eee; }
pre { background: #f5f5f5; padding: 0.6em; overflow-x: auto; white-space: pre-wrap; }
figure { display: inline-block; margin: 0 1em 1.5em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figure.grid img { width: 16em; image-rendering: pixelated; }
figcaption { font-size: 0.85em; max-width: 40em; }
li span { font-weight: bold; padding: 0 0.3em; }
span.better { background: #c8efc8; } span.worse { background: #f6c6c6; }
span.tie, span.out, span.inconclusive { background: #e6e6e6; }
"""


def write_html(results: Results | dict, run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Write the report of ``results`` (whose plots and grids lie in ``run_dir``) to ``out``,
    default ``run_dir/report.html``, atomically; returns its path."""
    run_dir = Path(run_dir)
    path = Path(out) if out is not None else run_dir / FILENAME
    text = render_html(results, run_dir)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def render_html(results: Results | dict, run_dir: Path) -> str:
    """The page of ``results`` whose images lie under ``run_dir``."""
    results = Results.of(results)
    suite = results.suite or {}
    title = f"{suite.get('name', '?')}: {results.run_id or '?'}"
    parts = [
        f"<h1>{_e(title)}</h1>",
        _summary(results),
        *_primary(results),
        "<h2>Command</h2>",
        _command(results.command),
        "<h2>Environment</h2>",
        _pairs(results.environment or {}),
        "<h2>Results</h2>",
        _table(table(results)),
    ]
    plots = [
        _figure(_inside(run_dir, name), name, caption)
        for name, caption in PLOTS
        if os.path.lexists(run_dir / name)
    ]
    if plots:
        parts += ["<h2>Plots</h2>", *plots]
    verdicts = verdict_table(results)
    if not verdicts.empty:
        parts += [
            "<h2>Verdicts at equal speed</h2>",
            f"<details><summary>all {len(verdicts)} verdicts (primary and "
            f"exploratory, both speeds)</summary>{_table(verdicts)}</details>",
        ]
    grids = [_grid(row, run_dir) for row in results.rows if row.grid]
    if grids:
        parts += ["<h2>Sample grids</h2>", *grids]
    if os.path.lexists(run_dir / "suite.yaml"):
        parts += ["<h2>Suite (resolved)</h2>", _suite(_inside(run_dir, "suite.yaml"))]
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n"
        "</body>\n</html>\n"
    )


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _table(df: pd.DataFrame) -> str:
    """``df`` as the markdown report shows it (:func:`~repro.reporting.report.display_cells`),
    escaped."""
    return display_cells(df).to_html(index=False, escape=True, border=0, na_rep="")


def _pairs(mapping: dict) -> str:
    """Names and values as a two-column table without a header (None blank)."""
    df = pd.DataFrame([(str(k), "" if v is None else str(v)) for k, v in mapping.items()])
    return df.to_html(index=False, header=False, escape=True, border=0)


def _summary(results: Results) -> str:
    suite = results.suite or {}
    return _pairs(
        {
            "run": results.run_id,
            "suite file": suite.get("file"),
            "suite version": suite.get("version"),
            "suite digest": suite.get("digest"),
            "started": results.started,
            "finished": results.finished,
        }
    )


def _primary(results: Results) -> list[str]:
    """The primary verdicts first, each outcome coloured (none: nothing)."""
    lines = primary_lines(results)
    if not lines:
        return []
    items = "".join(
        f'<li><span class="{re.sub(r"[^a-z]", "", outcome.split()[0])}">'
        f"{_e(outcome)}</span> {_e(line)}</li>"
        for outcome, line in lines
    )
    return [
        "<h2>Primary comparisons</h2>",
        f"<p>Holm-adjusted across the run's {len(lines)}; difference = searched minus "
        f"the other, 95% interval.</p><ul>{items}</ul>",
    ]


def _command(command: str | None) -> str:
    if not command:
        return "<p>not recorded (the run predates results.json's <code>command</code>)</p>"
    return f"<pre><code>{_e(command)}</code></pre>"


def _inside(run_dir: Path, name: str) -> Path | None:
    """``run_dir / name`` with symlinks resolved, or None where it leads out of the run
    directory or loops (a report must not embed files from elsewhere on the machine)."""
    try:
        path = (run_dir / name).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return path if path.is_relative_to(run_dir.resolve()) else None


def _read(path: Path | None, limit: int) -> tuple[bytes, str]:
    """The bytes of an embedded file and, where it cannot be embedded, why."""
    if path is None:
        return b"", "refused: it leads out of the run directory"
    if not path.exists():
        return b"", "image missing"
    try:
        return read_capped(path, limit), ""
    except InputFileError as error:
        return b"", f"not embedded ({str(error).removeprefix(f'{path}: ')})"


def _suite(path: Path | None) -> str:
    data, problem = _read(path, EMBED_MAX_BYTES)
    if problem:
        return f"<p>suite.yaml: {_e(problem)}</p>"
    return f"<pre>{_e(data.decode('utf-8', errors='replace'))}</pre>"


def _figure(path: Path | None, alt: str, caption: str, kind: str = "plot") -> str:
    """The PNG at ``path`` inline as a data URI, or a note where it is missing, refused or not
    a PNG."""
    data, problem = _read(path, EMBED_MAX_BYTES)
    if problem or not data.startswith(_PNG):
        return f"<p>{_e(alt)}: {_e(problem or 'not a PNG')}</p>"
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (
        f'<figure class="{kind}"><img src="{uri}" alt="{_e(alt)}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _grid(row: Row, run_dir: Path) -> str:
    """A row's sample grid; a path leading out of the run directory is refused."""
    label = f"{row.experiment}: {row.name}"
    return _figure(_inside(run_dir, row.grid), label, f"{label}, first evaluation seeds", "grid")
