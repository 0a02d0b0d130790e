"""The data sections of results/search-digits.md from finished runs of
suites/search_digits.yaml (one directory per experiment, as `repro run --experiment` makes):
the searched rows with their intervals and the verdict matrices at equal measured and
predicted speed. The reading above them is written by hand.

    python benchmarks/search_digits_page.py results/search-digits/*/ > /tmp/data.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.reporting.report import load_results
from repro.results.schema import Row

SHORT = {
    "segment-evolution": "segment",
    "stepwise-evolution": "step-wise",
    "segment-random": "random",
}


def cell(verdict: dict) -> str:
    if verdict["difference"] is None:
        return verdict["outcome"]
    return (
        f"**{verdict['outcome']}** {verdict['difference']:+.2f} "
        f"[{verdict['low']:+.2f}, {verdict['high']:+.2f}]"
    )


def searched_rows(rows: list[Row]) -> list[str]:
    fitness = next((r.search["protocol"] for r in rows if r.search), "search fitness")
    lines = [
        "| method | budget | seed | predicted | measured | FID [95%] | rFID [95%] | "
        f"search {fitness} | scored |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.kind != "searched":
            continue
        quality = []
        for metric in ("fid:digits-cnn", "rfid:digits-cnn"):
            low, high = row.intervals[metric]
            quality.append(f"{row.metrics[metric]:.2f} [{low:.2f}, {high:.2f}]")
        search = row.search
        lines.append(
            f"| {SHORT.get(row.method, row.method)} | {row.budget:g}x | "
            f"{search['seed']} | {row.predicted_speedup:.2f} | "
            f"{row.measured_speedup:.2f} | {quality[0]} | {quality[1]} | "
            f"{search['fitness']:.2f} | {search['scored']} |"
        )
    return lines


def primary_table(records: list[dict]) -> list[str]:
    """The primary comparisons with Holm's adjustment across the run."""
    lines = [
        "| searched | against | metric | speed | difference [95%] | p | Holm p | "
        "adjusted verdict |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for v in records:
        if v.get("label") != "primary":
            continue
        difference = (
            ""
            if v["difference"] is None
            else f"{v['difference']:+.2f} [{v['low']:+.2f}, {v['high']:+.2f}]"
        )
        p = "" if v["p"] is None else f"{v['p']:.3f}"
        lines.append(
            f"| {SHORT.get(v['method'], v['method'])} @{v['budget']:g}x | "
            f"{SHORT.get(v['family'], v['family'])} | {v['metric']} | {v['speed']} | "
            f"{difference} | {p} | {v['p_holm']:.3f} | **{v['adjusted']}** |"
        )
    return lines


def verdict_matrix(records: list[dict], metric: str, speed: str) -> list[str]:
    verdicts = [v for v in records if v["metric"] == metric and v["speed"] == speed]
    families = list(dict.fromkeys(v["family"] for v in verdicts))
    keys = list(dict.fromkeys((v["method"], v["budget"]) for v in verdicts))
    lines = [
        "| searched | " + " | ".join(SHORT.get(f, f) for f in families) + " |",
        "|---|" + "---|" * len(families),
    ]
    for method, budget in keys:
        by = {v["family"]: v for v in verdicts if (v["method"], v["budget"]) == (method, budget)}
        lines.append(
            f"| {SHORT.get(method, method)} @{budget:g}x | "
            + " | ".join(cell(by[f]) if f in by else "" for f in families)
            + " |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    out = []
    for run in args.runs:
        results = load_results(run)
        for experiment in results.experiments:
            verdicts = [v for v in results.verdicts if v["experiment"] == experiment]
            out += [
                f"### {experiment} ({results.run_id})",
                "",
                "Searched rows:",
                "",
                *searched_rows(results.of_experiment(experiment)),
                "",
                "Primary comparisons (Holm-adjusted across the run's primary ones):",
                "",
                *primary_table(verdicts),
                "",
            ]
            for metric in ("fid:digits-cnn", "rfid:digits-cnn"):
                for speed in ("measured", "predicted"):
                    out += [
                        f"Verdicts on {metric} at equal {speed} speed (searched minus "
                        "the family's front, 95% interval; lower is better):",
                        "",
                        *verdict_matrix(verdicts, metric, speed),
                        "",
                    ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
