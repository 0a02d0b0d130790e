"""``repro report``: tables of run results, or a regression diff of two"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.cli.common import Command, add_tracking_uri, replaceable, writing
from repro.infra.errors import UserError


def add_parser(command: Command) -> None:
    rep = command("report", cmd_report, "tables of run results, or a regression diff of two")
    rep.add_argument(
        "runs",
        nargs="*",
        type=Path,
        metavar="RUN_DIR",
        help="run directory or results.json (several: one table, a run column)",
    )
    rep.add_argument(
        "--format",
        choices=["md", "csv", "tex", "html"],
        default="md",
        help="html: one run's self-contained report.html (tables, plots, grids, "
        "environment, command), written beside its results.json unless --out",
    )
    rep.add_argument("--out", type=Path, help="write here instead of printing")
    rep.add_argument(
        "--compare",
        nargs=2,
        type=Path,
        metavar=("OLD", "NEW"),
        help="regression table (md) of two runs",
    )
    rep.add_argument(
        "--experiment",
        help="read runs from this MLflow experiment instead (the newest run's table)",
    )
    rep.add_argument(
        "--regression",
        action="store_true",
        help="with --experiment: regression table of its two newest runs",
    )
    add_tracking_uri(rep)


def cmd_report(args: argparse.Namespace) -> int:
    from repro.infra.atomic import atomic_path
    from repro.reporting import report, verdict_report

    if sum(map(bool, (args.runs, args.compare, args.experiment))) != 1:
        raise UserError("report takes RUN_DIR..., --compare OLD NEW or --experiment NAME")
    replaceable(args.out, "--out")
    if args.format == "html":
        if len(args.runs) != 1:
            raise UserError("--format html takes one RUN_DIR (its plots and grids go inside)")
        from repro.reporting.html_report import write_html

        run_dir = args.runs[0].parent if args.runs[0].suffix == ".json" else args.runs[0]
        results = report.load_results(run_dir)
        with writing(args.out or run_dir / "report.html"):
            print(write_html(results, run_dir, args.out))
        return 0
    if args.experiment:
        from repro.reporting.tracking import load_results, resolve_uri

        runs = load_results(args.experiment, uri=resolve_uri(args.tracking_uri))
        if args.regression and len(runs) < 2:
            raise UserError(
                f"MLflow experiment {args.experiment!r} has {len(runs)} finished "
                "run(s); --regression needs two"
            )
        text = (
            report.render(report.regression_diff(runs[1], runs[0]), "md")
            if args.regression
            else report.render(report.table(runs[0]), args.format)
        )
    elif args.compare:
        old, new = (report.load_results(p) for p in args.compare)
        text = report.render(report.regression_diff(old, new), "md")
        if old.verdicts or new.verdicts:
            text += "\n" + report.render(verdict_report.verdict_changes(old, new), "md")
    else:
        runs = [report.load_results(p) for p in args.runs]
        text = report.render(report.table(runs), args.format)
        if len(runs) == 1 and runs[0].verdicts and args.format == "md":
            text += "\n" + report.render(verdict_report.verdict_table(runs[0]), "md")
    if args.out:
        with writing(args.out), atomic_path(args.out) as tmp:
            tmp.write_text(text)
    else:
        print(text, end="")
    return 0
