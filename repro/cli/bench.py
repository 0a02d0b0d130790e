"""``repro bench``: time a model's UNet loop under schedules, or a"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from repro.cli.common import (
    SUITE_HELP,
    Command,
    add_tracking_uri,
    at_least_one,
    checked_mode,
    command_line,
    log_for,
    replaceable,
    suite_path,
)
from repro.infra.errors import UserError


def add_parser(command: Command) -> None:
    bench = command(
        "bench",
        cmd_bench,
        "time a model's UNet loop under schedules, or a "
        "suite's schedules on its architecture (defaults: --model 1 image, 50 "
        "steps; --suite the suite's evaluation.latency_batch images and steps, "
        "guidance doubling the UNet batch)",
        "model",
        "steps",
        "scheduler",
        "weights",
        "device",
        "threads",
        "batch",
        "step_mode",
    )
    bench.add_argument(
        "--suite",
        help=SUITE_HELP + ": time its teacher, baselines, DeepCache "
        "N=2..10 and uniform segment schedules per budget against a calibrated "
        "cost table (instead of --model)",
    )
    bench.add_argument(
        "--repeats",
        type=int,
        help="interleaved repeats (default 3; with --suite the suite's evaluation.latency_repeats)",
    )
    bench.add_argument(
        "--budget",
        type=float,
        action="append",
        metavar="X",
        help="with --suite: also a uniform segment schedule at this predicted speedup (repeatable)",
    )
    bench.add_argument("--warmup", type=int, default=1)
    bench.add_argument(
        "--schedule",
        action="append",
        default=[],
        metavar="TEXT",
        help="schedule text to time (repeatable)",
    )
    bench.add_argument(
        "--deepcache",
        action="append",
        default=[],
        metavar="N[:B]",
        help="DeepCache uniform interval N at branch B (repeatable)",
    )
    bench.add_argument(
        "--calibrate",
        action="store_true",
        help="fit the cost table (P<b>/F kind costs, per-call and per-step "
        "overheads) to per-call times and calibration loops (all-F, F then N, "
        "fewer-steps, DeepCache N=2/3/5/10) instead of MAC ratios; --json carries "
        "it as cost_table for --cost-table and suites (--suite always does)",
    )
    bench.add_argument(
        "--oracle",
        action="store_true",
        help="also time DeepCache's own DeepCacheSDHelper (per call and loop)",
    )
    bench.add_argument("--plain", action="store_true", help="also time the unhooked diffusers loop")
    bench.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall time (default, the latency protocol) or process CPU time "
        "(--device cpu only: for a CPU shared with other jobs)",
    )
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--out", type=Path, help="also write the markdown report here")
    bench.add_argument(
        "--json", action="store_true", help="print the report as JSON (what `repro gate` reads)"
    )
    add_tracking_uri(bench)
    bench.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    bench.add_argument(
        "--experiment", help="MLflow experiment (default: repro/bench/<suite or model>)"
    )
    bench.set_defaults(weights="random")


def _checked(args: argparse.Namespace) -> list[str]:
    """The flags checked before any model is built; the step modes asked for."""
    from repro.infra.timing import clock_for

    if bool(args.model) == bool(args.suite):
        raise UserError("bench takes --model MODEL or --suite SUITE (exactly one)")
    replaceable(args.out, "--out")
    at_least_one(args, "batch", "steps", "repeats")
    if args.suite:
        model_only = [
            flag
            for flag, given in (
                ("--deepcache", args.deepcache),
                ("--oracle", args.oracle),
                ("--plain", args.plain),
                ("--scheduler", args.scheduler),
            )
            if given
        ]
        if model_only:
            raise UserError(
                f"{model_only[0]} is a --model option; --suite times the suite's "
                "sampler, its baselines and DeepCache N=2..10"
            )
    elif args.budget:
        raise UserError("--budget needs --suite (segment schedules at a budget)")
    try:
        clock_for(args.clock, args.device)
    except ValueError as error:
        raise UserError(str(error)) from None
    return [
        checked_mode(args, mode)
        for mode, given in (("compile", args.compile), ("cuda-graphs", args.cuda_graphs))
        if given
    ]


def cmd_bench(args: argparse.Namespace) -> int:
    from repro.infra.atomic import atomic_path
    from repro.results import bench_report
    from repro.speed import bench

    modes = _checked(args)
    tracking_uri = _bench_tracking(args)
    started = datetime.now(UTC)
    if args.suite:
        from repro.run.bench_suite import bench_suite, suite_markdown

        report = bench_suite(
            suite_path(args.suite),
            weights=args.weights,
            device=args.device,
            dtype=args.dtype,
            batch=args.batch,
            steps=args.steps,
            repeats=args.repeats,
            warmup=args.warmup,
            schedules=args.schedule,
            budgets=args.budget or (),
            seed=args.seed,
            clock=args.clock,
            log=log_for("bench"),
            modes=modes,
        )
        render = suite_markdown
    else:
        try:
            deepcache = [f"{i}:{b}" for i, b in map(bench.parse_deepcache, args.deepcache)]
        except ValueError as error:
            raise UserError(str(error)) from None
        report = bench.bench_model(
            args.model,
            weights=args.weights,
            device=args.device,
            dtype=args.dtype,
            batch=args.batch or 1,
            steps=args.steps or 50,
            repeats=args.repeats or 3,
            warmup=args.warmup,
            schedules=args.schedule,
            deepcache=deepcache,
            do_calibrate=args.calibrate,
            oracle=args.oracle,
            plain=args.plain,
            scheduler=args.scheduler,
            seed=args.seed,
            clock=args.clock,
            modes=modes,
        )
        for line in report["cautions"]:
            logging.getLogger("repro.bench").warning(line)
        render = bench.report_markdown
    report = bench_report.stamp(report, started)
    markdown = render(report, command_line(args))
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(markdown)
    print(json.dumps(report, indent=2) if args.json else markdown)
    if tracking_uri is not None:
        from repro.reporting.tracking import log_bench

        run_id = log_bench(report, uri=tracking_uri, experiment=args.experiment)
        print(f"MLflow: run {run_id} at {tracking_uri}", file=sys.stderr)
    return 0


def _bench_tracking(args: argparse.Namespace) -> str | None:
    """Where ``repro bench`` logs, checked before any timing (as a run's store is): None
    with --no-tracking or a suite whose tracking is off; else --tracking-uri, the suite's
    ``tracking.uri``, ``$MLFLOW_TRACKING_URI`` or MLflow's default."""
    from repro.reporting import tracking

    setting = None
    if args.suite:
        from repro.config.suite import load

        setting = load(suite_path(args.suite)).tracking
    if args.no_tracking or (setting is not None and not setting.enabled):
        return None
    uri = tracking.resolve_uri(args.tracking_uri or (setting and setting.uri))
    tracking.check_reachable(uri)
    return uri
