"""repro.reporting.html_report: report.html is self-contained, escapes what the run says, and
renders in headless Chromium (skipped, with the reason, where no chromium binary is installed)."""

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repro.cli import main as cli
from repro.reporting import report
from repro.reporting.html_report import PLOTS, write_html
from repro.reporting.verdict_report import verdict_table

# the newest committed smoke run (run ids end in their start time)
SMOKE_RUN = max(
    (
        p
        for p in (Path(__file__).resolve().parents[1] / "results" / "smoke").iterdir()
        if (p / "results.json").is_file()
    ),
    key=lambda p: p.name.split("-")[1],
)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Page(HTMLParser):
    """Every element's tag and attributes, and each table's rows as cell texts."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def tags(self, name: str) -> list[dict]:
        return [attrs for tag, attrs in self.elements if tag == name]


def _expected_images(results, run_dir: Path) -> list[Path]:
    """The PNGs the report must carry: the run's plots, then every row's grid."""
    plots = [run_dir / name for name, _ in PLOTS if (run_dir / name).is_file()]
    return plots + [run_dir / row.grid for row in results.rows if row.grid]


def _check_self_contained(page: Page, images: list[Path]) -> None:
    """Every image inline and equal to the run's file; nothing that loads anything."""
    for tag in ("script", "link", "iframe", "object", "embed", "base", "a"):
        assert not page.tags(tag), f"report.html has a <{tag}>"
    assert not any(
        k in ("href", "srcset", "action") or k.startswith("on")
        for _, attrs in page.elements
        for k in attrs
    )
    sources = [attrs["src"] for attrs in page.tags("img")]
    assert len(sources) == len(images)
    prefix = "data:image/png;base64,"
    for source, path in zip(sources, images, strict=True):
        assert source.startswith(prefix)
        assert base64.b64decode(source[len(prefix) :]) == path.read_bytes()
    assert "url(" not in "".join(page.text)


def _check_tables(page: Page, results) -> None:
    """The results and verdict tables, cell for cell as the markdown report shows them."""
    for df in (report.table(results), verdict_table(results)):
        cells = report.display_cells(df)
        expected = [list(df.columns), *cells.values.tolist()]
        assert expected in page.tables


def test_report_html_of_a_real_run_is_self_contained(tmp_path, capsys):
    out = tmp_path / "report.html"
    assert cli.main(["report", str(SMOKE_RUN), "--format", "html", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    results = report.load_results(SMOKE_RUN)
    images = _expected_images(results, SMOKE_RUN)
    assert len(images) == 3 + len(results.rows)  # pareto, fronts, convergence, grids
    page = Page(out.read_text())
    _check_self_contained(page, images)
    _check_tables(page, results)
    environment = [
        [key, "" if value is None else str(value)] for key, value in results.environment.items()
    ]
    assert environment in page.tables
    text = "".join(page.text)
    assert results.command in text  # the command the committed run was made with
    assert (SMOKE_RUN / "suite.yaml").read_text() in text


def _hostile_run(directory: Path) -> tuple[dict, list[str]]:
    """A run whose suite, row names, command and suite file carry markup."""
    evil = [
        '<script>alert("suite")</script>',
        '<img src="http://example.com/x.png">',
        "<a href='https://example.com'>prompt</a> & \"quotes\"",
        "rm -rf / <b>bold</b>",
    ]
    directory.mkdir()
    (directory / "grids").mkdir()
    report.sample_grid(np.zeros((4, 8, 8, 1), np.uint8), directory / "grids" / "g.png")
    row = {
        "experiment": evil[1],
        "name": evil[2],
        "kind": "teacher",
        "method": "teacher",
        "schedule": "F F",
        "predicted_speedup": 1.0,
        "measured_speedup": 1.0,
        "metrics": {"fid:digits-cnn": 1.0},
        "grid": "grids/g.png",
    }
    escape = dict(row, name="escapes", grid="../../etc/passwd")
    results = {
        "schema": "flexiffusion-repro/results@1",
        "run_id": "r1",
        "suite": {"name": evil[0], "version": 1},
        "command": f"repro run '{evil[3]}'",
        "environment": {"device": evil[1]},
        "rows": [row, escape],
    }
    (directory / "suite.yaml").write_text(f"name: x\nprompts: ['{evil[2]}']\n")
    (directory / "results.json").write_text(json.dumps(results))
    return results, evil


def test_strings_from_the_run_are_escaped_and_paths_stay_inside(tmp_path):
    results, evil = _hostile_run(tmp_path / "run")
    page = Page(write_html(results, tmp_path / "run").read_text())
    assert [tag for tag, _ in page.elements].count("img") == 1  # the grid inside the run
    _check_self_contained(page, [tmp_path / "run" / "grids" / "g.png"])
    text = "".join(page.text)
    for string in evil:
        assert string in text  # shown as text, parsed as no markup
    assert "refused: it leads out of the run directory" in text  # the grid path out of the run


def test_html_takes_one_run(tmp_path, capsys):
    assert cli.main(["report", str(SMOKE_RUN), str(SMOKE_RUN), "--format", "html"]) == 2
    assert "one RUN_DIR" in capsys.readouterr().err


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip(
            "no chromium binary on PATH (Debian: apt-get install chromium); "
            "report.html is not rendered in a browser here"
        )
    return found


def test_report_html_renders_in_headless_chromium(tmp_path):
    chromium = _chromium()
    out = write_html(report.load_results(SMOKE_RUN), SMOKE_RUN, tmp_path / "report.html")

    def browse(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'u'}", *args, out.as_uri()],
            capture_output=True,
            timeout=120,
            check=True,
        )

    dom = Page(browse("--dump-dom").stdout.decode())
    results = report.load_results(SMOKE_RUN)
    _check_self_contained(dom, _expected_images(results, SMOKE_RUN))
    _check_tables(dom, results)
    shot = tmp_path / "shot.png"
    browse("--window-size=1280,3000", f"--screenshot={shot}")
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"))
    assert pixels.shape == (3000, 1280)
    assert (pixels < 128).mean() > 0.01  # text and table rules drawn, not a blank page


@pytest.mark.parametrize("form", [[], ["--format", "html"]])
def test_an_unwritable_out_is_one_line_exit_2(tmp_path, capsys, form):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "report.out"  # a path under a plain file
    assert cli.main(["report", str(SMOKE_RUN), *form, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"repro: error: cannot write {out}") and err.count("\n") == 1


@pytest.mark.parametrize("name", ["pareto.png", "suite.yaml", "grids/g.png"])
def test_symlinks_out_of_the_run_are_not_embedded(tmp_path, name):
    """A plot, the suite or a grid that is a symlink to a file elsewhere is refused with a
    note; the secret it points at never reaches the page."""
    results, _ = _hostile_run(tmp_path / "run")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n" + b"top secret " * 10)
    link = tmp_path / "run" / name
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    text = write_html(results, tmp_path / "run").read_text()
    assert "top secret" not in text
    assert base64.b64encode(secret.read_bytes()).decode() not in text
    assert "refused: it leads out of the run directory" in text
