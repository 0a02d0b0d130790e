"""``repro gate``: exit 1 when a run got worse than a baseline run"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from repro.cli.common import Command, add_tracking_uri, suite_path
from repro.infra.errors import UserError


def add_parser(command: Command) -> None:
    gte = command(
        "gate",
        cmd_gate,
        "exit 1 when a run got worse than a baseline run "
        "beyond its tolerance with the suite's confidence (Holm over the run's "
        "checks), naming row and metric; 0 otherwise; 2 on bad input or runs of "
        "another suite or protocol",
    )
    gte.add_argument(
        "run",
        type=Path,
        help="the new run: run directory, results.json or a `repro bench --json` report",
    )
    gte.add_argument(
        "baseline",
        nargs="?",
        type=Path,
        help="the baseline: the same kinds, or "
        "a suite's results folder (results/smoke: its newest finished run)",
    )
    gte.add_argument(
        "--experiment",
        help="take the baseline from this MLflow experiment "
        "instead: its newest finished run (not the new run itself)",
    )
    gte.add_argument("--branch", help="with --experiment: the newest run on this git branch")
    gte.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="with --experiment: the newest run with this MLflow tag (repeatable)",
    )
    add_tracking_uri(gte)
    gte.add_argument(
        "--suite",
        help="tolerances from this suite's regression block (default: "
        "the new run's suite.yaml; built-in defaults for benchmarks)",
    )
    gte.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="gate runs that differ in "
        "suite, model, steps, sampler, guidance or evaluation protocol anyway, "
        "with a note per difference",
    )
    gte.add_argument(
        "--json",
        action="store_true",
        help="print the answer as JSON (passed, "
        "rule, notes, every check with its decision) instead of the report",
    )
    gte.add_argument(
        "--junit",
        type=Path,
        metavar="FILE",
        help="also write the checks as "
        "JUnit XML (a failure per regression) for CI systems to display",
    )


def cmd_gate(args: argparse.Namespace) -> int:
    import tempfile

    from repro.config import suite
    from repro.reporting import gate, tracking

    if bool(args.baseline) == bool(args.experiment):
        raise UserError("gate takes a BASELINE run or --experiment NAME (exactly one)")
    if (args.branch or args.tag) and not args.experiment:
        raise UserError("--branch and --tag choose the baseline among --experiment's runs")
    tags = {}
    for text in args.tag:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UserError(f"--tag expects KEY=VALUE, got {text!r}")
        tags[key] = value
    if args.branch:
        tags["repro.git_branch"] = args.branch
    new = gate.read_run(args.run)
    tolerances = suite_path(args.suite) if args.suite else new.suite
    regression = suite.load(tolerances).regression if tolerances else suite.Regression()
    with tempfile.TemporaryDirectory() as tmp:
        if args.experiment:
            run_id = tracking.find_run(
                args.experiment, uri=args.tracking_uri, tags=tags, exclude_run_id=new.run_id
            )
            old = replace(
                gate.read_run(tracking.download_run(run_id, Path(tmp), uri=args.tracking_uri)),
                label=f"MLflow run {run_id} of {args.experiment}",
            )
        else:
            old = gate.read_run(args.baseline, exclude_run_id=new.run_id)
        outcome = gate.gate(new, old, regression, allow_mismatch=args.allow_mismatch)
    if args.junit:
        from repro.infra.atomic import atomic_path

        args.junit.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.junit) as tmp:
            tmp.write_text(gate.to_junit(outcome, new, old))
    if args.json:
        import json

        print(json.dumps(gate.to_json(outcome, new, old), indent=1))
    else:
        print(gate.summary(outcome, new, old))
    return gate.EXIT_REGRESSED if outcome.regressions else 0
