"""One suite run by 1 and by K ranks of torchrun at one thread each: wall time per stage of
rank 0 (what the runner logs as ``stage NAME: S s``), the ratio, and whether the quality
numbers are identical. Writes results/scale-out.md.

    python benchmarks/scale_out.py                      # the smoke suite, 1 vs 2 ranks
    python benchmarks/scale_out.py --suite t.yaml --ranks 1 2 --out /tmp/page.md

Run it on a quiet machine (the page records the load average before and after): the ranks
share the cores with everything else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = re.compile(
    r"^(?:\[rank 0/\d+\] )?\[(?P<experiment>[^\]]+)\] stage (?P<stage>.+): "
    r"(?P<seconds>[\d.]+) s$"
)
# stages that sample (the ones sharding speeds up), then the rest, in the order a run meets them
SAMPLING = ("search sampling", "search", "evaluation sampling")
OTHERS = ("metrics", "latency")


def command(suite: Path, ranks: int, results: Path) -> list[str]:
    torchrun = Path(sys.executable).with_name("torchrun")
    return [
        str(torchrun),
        "--standalone",
        "--nproc-per-node",
        str(ranks),
        "-m",
        "repro",
        "run",
        str(suite),
        "--results",
        str(results),
        "--no-tracking",
        "--threads",
        "1",
        "--new",
    ]


def run(suite: Path, ranks: int) -> dict:
    """One run in a fresh results directory: total wall time, rank 0's stage times summed
    over experiments (searches summed as ``search``), and each row's quality numbers."""
    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(ROOT),
        }
        started = time.perf_counter()
        done = subprocess.run(
            command(suite, ranks, Path(tmp)), cwd=ROOT, env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"{ranks} rank(s) failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        stages: dict[str, float] = defaultdict(float)
        for line in done.stderr.splitlines():
            match = STAGE.match(line)
            if match:
                name = match["stage"]
                stages[
                    "search" if name.startswith("search ") and name != "search sampling" else name
                ] += float(match["seconds"])
        (results,) = Path(tmp).glob("*/*/results.json")
        data = json.loads(results.read_text())
        quality = {
            (r["experiment"], r["name"]): (r["schedule"], r["metrics"]) for r in data["rows"]
        }
        return {"wall": wall, "stages": dict(stages), "quality": quality}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def page(suite: Path, runs: dict[int, dict], loads: tuple[str, str], argv: list[str]) -> str:
    base, *others = sorted(runs)
    lines = [
        "# Scale-out: one suite run by several ranks",
        "",
        f"`{suite.relative_to(ROOT) if suite.is_relative_to(ROOT) else suite}` run by "
        + " and by ".join(f"{k} rank{'s' if k > 1 else ''}" for k in sorted(runs))
        + " of `torchrun --standalone` (gloo), one thread each, on "
        f"{os.cpu_count()} cores of {cpu_name()}; torch "
        f"{_torch_version()}. Wall seconds of rank 0 per stage, summed over experiments "
        "(every rank waits at the same barriers, so rank 0's time is the stage's time).",
        "",
        f"Command: `python {' '.join(shlex.quote(a) for a in argv)}`; each run: "
        f"`{' '.join(command(Path('SUITE'), base, Path('TMP'))[1:]).replace(str(base), 'K', 1)}`"
        f" (`--new` in a fresh results directory).",
        f"Load average before / after: {loads[0]} / {loads[1]}.",
        "",
        "| stage | "
        + " | ".join(f"{k} rank{'s' if k > 1 else ''} (s)" for k in sorted(runs))
        + " | "
        + " | ".join(f"ratio 1:{k}" for k in others)
        + " |",
        "|:--|" + "--:|" * (len(runs) + len(others)),
    ]
    names = [s for s in (*SAMPLING, *OTHERS) if any(s in r["stages"] for r in runs.values())]
    for name in [*names, "whole run (wall)"]:
        values = {
            k: (r["wall"] if name.startswith("whole") else r["stages"].get(name, 0.0))
            for k, r in runs.items()
        }
        ratios = [f"{values[base] / values[k]:.2f}x" if values[k] else "" for k in others]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{values[k]:.1f}" for k in sorted(runs))
            + " | "
            + " | ".join(ratios)
            + " |"
        )
    same = {k: runs[k]["quality"] == runs[base]["quality"] for k in others}
    lines += [
        "",
        "Quality numbers (every row's schedule and metrics in results.json): "
        + "; ".join(
            f"{k} ranks {'identical to' if ok else 'DIFFERENT from'} {base}"
            for k, ok in same.items()
        )
        + ".",
    ]
    for k, ok in same.items():
        if not ok:
            for row, value in runs[base]["quality"].items():
                if runs[k]["quality"].get(row) != value:
                    lines.append(f"- {row}: {value} vs {runs[k]['quality'].get(row)}")
    lines += [
        "",
        "Sampling stages are cut into shards of one evaluation batch spread over the "
        "ranks (`search` spreads each generation's candidates); `metrics` runs on rank 0 "
        "from the gathered samples and `latency` is timed on rank 0 while the others "
        "wait, so neither is expected to scale.",
        "",
    ]
    return "\n".join(lines)


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=ROOT / "suites" / "smoke.yaml")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "scale-out.md")
    args = parser.parse_args(argv)
    before = load()
    runs = {}
    for ranks in args.ranks:
        runs[ranks] = run(args.suite.resolve(), ranks)
        print(f"{ranks} rank(s): {runs[ranks]['wall']:.0f} s", file=sys.stderr)
    after = load()
    text = page(
        args.suite.resolve(),
        runs,
        (before, after),
        ["benchmarks/scale_out.py", *(argv if argv is not None else sys.argv[1:])],
    )
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
