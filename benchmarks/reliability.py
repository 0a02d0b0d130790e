"""Issue 17's reliability table: hostile input, faults and kills against ``repro`` on the
embedded digits models, each case in a fresh directory, written to ``results/reliability.md``.

Each row says what was done, what happened (exit code and the first line on stderr, or the
outcome), what was left on disk and what was lost. Nothing is copied by hand: run from the
repository root, ``python benchmarks/reliability.py`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from repro.faults import KILL_ENV, with_ctrl_c

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import failing_mlflow_server  # noqa: E402 - the tests' stand-in server

OUT = Path("results/reliability.md")
SUITE = """name: rel
version: 1
steps: 4
search: {methods: [segment], budgets: [2], n_eval: 3, population: 3, seeds: "0:16"}
baselines: [{technique: fewer-steps, keep: [1, 2, 3]}]
evaluation: {seeds: "1000:1256", metrics: ["rfid:digits-cnn"], batch_size: 64, latency: false,
             grid: 0}
tracking: {enabled: false}
experiments: [{name: a, model: digits-ddpm}]
"""
Outcome = tuple[str, str, str]  # what happened, left on disk, lost


class Case:
    """A fresh directory holding ``suite.yaml``, and ``repro`` run in it."""

    def __init__(self, root: Path):
        self.root = root
        self.suite = root / "suite.yaml"
        self.suite.write_text(SUITE)
        self.results = root / "results"

    def repro(self, *args: str, env: dict | None = None, prefix: tuple = ()) -> tuple[int, str]:
        """Exit code and stderr of ``repro ARGS`` (one process, as a user runs it)."""
        done = subprocess.run([*prefix, sys.executable, "-m", "repro.cli", *args],
                              capture_output=True, text=True, cwd=self.root, timeout=600,
                              env={**os.environ, "REPRO_CACHE": str(self.root / "cache"),
                                   **(env or {})}, preexec_fn=with_ctrl_c)
        return done.returncode, done.stderr

    def run_args(self, *extra: str) -> list[str]:
        return ["run", str(self.suite), "--results", str(self.results), "--quiet",
                "--threads", "1", *extra]

    def outcome(self, code: int, err: str) -> str:
        """Exit code, stderr line count and its last line (the case directory as $CASE)."""
        lines = err.strip().splitlines()
        tail = "; traceback" if "Traceback" in err else ""
        last = (lines[-1] if lines else "").replace(str(self.root), "$CASE")
        return f"exit {code}, {len(lines)} line(s){tail}: `{last[:160]}`"

    def left(self) -> str:
        """Files under the case directory besides the suite and the metric cache."""
        files = [p for p in self.root.rglob("*") if p.is_file() and p != self.suite
                 and "cache" not in p.relative_to(self.root).parts]
        return f"{len(files)} files under results/" if files else "nothing"


def input_case(text: str | bytes, *args: str) -> Callable[[Case], Outcome]:
    """``repro validate`` (or ``ARGS``) of the suite with ``text`` written over it."""
    def case(c: Case) -> Outcome:
        if text:
            c.suite.write_bytes(text if isinstance(text, bytes) else text.encode())
        code, err = c.repro(*(args or ("validate", str(c.suite))))
        return c.outcome(code, err), c.left(), "-"
    return case


def escaping_name(c: Case) -> Outcome:
    c.suite.write_text(SUITE.replace("name: rel", "name: ../../escaped"))
    code, err = c.repro(*c.run_args())
    escaped = (c.root.parent / "escaped").exists() or (c.root / "escaped").exists()
    return c.outcome(code, err), c.left() + ("; escaped!" if escaped else ""), "-"


def busy_run_id(c: Case) -> Outcome:
    """A run holding run id x while a second process starts on x."""
    first = subprocess.Popen([sys.executable, "-m", "repro.cli", *c.run_args("--run-id", "x")],
                             cwd=c.root, stderr=subprocess.PIPE, text=True)
    _wait_for(c.results / "rel" / "x" / "work" / "state.json", first)
    code, err = c.repro(*c.run_args("--run-id", "x"))
    first.wait(timeout=600)
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
    redone = sum(p.stat().st_mtime_ns != before[p.name] for p in rows.glob("*.json")
                 if p.name in before)
    return (c.outcome(code, err) + f"; rerun exit {rerun}", left,
            f"{redone} finished row(s) redone")


def killed_at(stage: str) -> Callable[[Case], Outcome]:
    """SIGKILL right after the stage's first unit of work is on disk (``REPRO_KILL_AT``,
    deterministic), then the same command: work files rewritten count what was lost."""
    def case(c: Case) -> Outcome:
        c.suite.write_text(SUITE.replace(  # every stage present, the latency table included
            "latency: false", "latency: true, latency_batch: 2, latency_repeats: 1"))
        code, err = c.repro(*c.run_args("--run-id", "x"), env={KILL_ENV: f"{stage}:1"})
        work = c.results / "rel" / "x" / "work" / "a"
        before = {p: p.stat().st_mtime_ns for p in work.rglob("*")
                  if p.is_file() and p.name != "search.jsonl"}
        rerun, _ = c.repro(*c.run_args("--run-id", "x"))
        # finished shards are merged and removed once their samples are kept whole
        rewritten = sum(p.exists() and p.stat().st_mtime_ns != mtime
                        for p, mtime in before.items())
        return (c.outcome(code, err) + f"; rerun exit {rerun}",
                f"{len(before)} work file(s)", f"{rewritten} of them written again")
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
    return (c.outcome(code, err) + f" (the first rerun: exit {first})",
            f"{len(log.read_text().splitlines())} log lines", "the torn candidate's score")


def broken_samples(how: str) -> Callable[[Case], Outcome]:
    def case(c: Case) -> Outcome:
        path = c.root / "s.npz"
        assert c.repro("sample", "--model", "digits-ddpm", "--steps", "2", "--seeds", "0:4",
                       "--out", str(path), "--quiet")[0] == 0
        path.write_bytes(b"" if how == "empty" else path.read_bytes()[:300])
        code, err = c.repro("eval", str(path), "--metric", "rfid:digits-cnn", "--teacher",
                            str(path))
        return c.outcome(code, err), c.left(), "-"
    return case


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
    with failing_mlflow_server() as uri:
        code, err = c.repro(*c.run_args("--tracking-uri", uri))
    return (c.outcome(code, err) + f" after {time.monotonic() - started:.0f} s",
            c.left() + " (results.json, no work/mlflow.json)", "nothing: a rerun logs")


def _bomb() -> str:
    levels = ["  - &a [" + ", ".join(["lol"] * 9) + "]"]
    levels += [f"  - &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)]
    return "description:\n" + "\n".join(levels) + "\n" + SUITE


CASES: list[tuple[str, Callable[[Case], Outcome]]] = [
    ("experiments `digits ddpm` and `digits-ddpm` (one folder name)", input_case(
        SUITE.replace("[{name: a, model: digits-ddpm}]", "[{name: digits ddpm, model: "
                      "digits-ddpm}, {name: digits-ddpm, model: digits-cond}]"))),
    ("`name: ../../escaped` then `repro run`", escaping_name),
    ("`repro run --run-id ../../escaped`", lambda c: input_case(
        "", *c.run_args("--run-id", "../../escaped"))(c)),
    ("a second `repro run` on a run id in use", busy_run_id),
    ("SIGINT (Ctrl-C) right after the teacher row, then the same command", ctrl_c),
    *((f"SIGKILL right after the first {stage} unit is written, then the same command",
       killed_at(stage)) for stage in ("teacher", "candidate", "shard", "row", "latency",
                                       "results")),
    ("a torn last line in search.jsonl, then more candidates", torn_search_log),
    ("a suite file that is not UTF-8", input_case("name: caf\xe9\n".encode("latin-1"))),
    ("`repro validate /dev/zero`", lambda c: input_case("", "validate", "/dev/zero")(c)),
    ("`repro validate` of a directory", lambda c: input_case("", "validate", str(c.root))(c)),
    ("an empty samples.npz to `repro eval`", broken_samples("empty")),
    ("a truncated samples.npz to `repro eval`", broken_samples("truncated")),
    ("`repro sample --steps -1`", lambda c: input_case(
        "", "sample", "--model", "digits-ddpm", "--steps", "-1", "--out", "s.npz")(c)),
    ("a read-only `--results`", read_only("--results")),
    ("a read-only `REPRO_CACHE`", read_only("REPRO_CACHE")),
    ("every metric cache file corrupted", corrupted_cache),
    ("`labels: [3, 10]` on digits-cond", input_case(SUITE.replace(
        "model: digits-ddpm}", "model: digits-cond, labels: [3, 10]}"))),
    ("a YAML alias bomb (9^9 strings, 400 bytes)", input_case(_bomb())),
    ('`seeds: "0:2000000000"`', input_case(SUITE.replace('seeds: "0:256"',
                                                         'seeds: "0:2000000000"'))),
    ("3000 budgets", input_case(SUITE.replace("budgets: [2]", "budgets: ["
                                              + ", ".join(["2"] * 3000) + "]"))),
    ("`guidance: .nan`", input_case(SUITE.replace("model: digits-ddpm}",
                                                  "model: digits-cond, guidance: .nan}"))),
    ("duplicate seeds", input_case(SUITE.replace('"0:256"', '"1,2,1"'))),
    ("`metrics: []`", input_case(SUITE.replace('metrics: ["rfid:digits-cnn"]', "metrics: []"))),
    ("`tol: -1`", input_case(SUITE.replace("seeds: \"0:16\"}", "seeds: \"0:16\", tol: -1}"))),
    ("`steps: true`", input_case(SUITE.replace("steps: 4", "steps: true"))),
    ("`generations: -3`", input_case(SUITE.replace("population: 3", "generations: -3"))),
    ("a duplicate YAML key", input_case(SUITE.replace("steps: 4\n", "steps: 4\nsteps: 8\n"))),
    ("a search budget below 1x", input_case(SUITE.replace("budgets: [2]", "budgets: [0.5]"))),
    ("a cost_table file that does not exist", input_case(SUITE.replace(
        "steps: 4\n", "steps: 4\ncost_table: missing.json\n"))),
    ("an MLflow server failing every call (HTTP 503)", failing_server),
]


def main() -> None:
    from repro.provenance import git_state
    from repro.timing import device_name

    commit, rows = git_state()["git_commit"], []  # the code under test, before anything runs
    for name, case in CASES:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.monotonic()
            happened, left, lost = case(Case(Path(tmp)))
            rows.append((name, happened, left, lost))
            print(f"{time.monotonic() - started:5.0f} s  {name}: {happened}", file=sys.stderr)
    lines = ["# Reliability: hostile input, faults and kills (issue 17)", "",
             f"Written by `python benchmarks/reliability.py` at commit {commit} on "
             f"{device_name('cpu')}, each case in a fresh directory with its own metric "
             "cache. Exit 2 is bad input (one line), 130 an interrupt, 0 success.", "",
             "| case | what happened | left on disk | lost |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(cell.replace('|', '/') for cell in row)} |" for row in rows]
    OUT.write_text("\n".join(lines) + "\n")
    print(OUT)


if __name__ == "__main__":
    main()
