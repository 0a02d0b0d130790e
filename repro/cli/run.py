"""``repro run``: run a suite: teacher -> search -> evaluation -> results"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from repro.cli.common import (
    SUITE_HELP,
    Command,
    add_tracking_uri,
    command_line,
    log_for,
    step_mode,
    suite_path,
)
from repro.infra.errors import UserError


def add_parser(command: Command) -> None:
    run = command(
        "run",
        cmd_run,
        "run a suite: teacher -> search -> evaluation -> results",
        "device",
        "threads",
        "step_mode",
        "seeds",
        "batch",
        "weights",
        "metric_weights",
    )
    run.set_defaults(seeds=None, weights=None)  # the suite's unless given
    run.add_argument(
        "--search-seeds",
        help="the searches' seeds, A:B or a list, for every "
        "experiment (default: the suite's search.seeds)",
    )
    run.add_argument(
        "--evaluations",
        type=int,
        help="candidates each search scores (default: the suite's search.n_eval)",
    )
    run.add_argument("suite", help=SUITE_HELP)
    run.add_argument(
        "--results", type=Path, default=Path("results"), help="results root (default: results/)"
    )
    run.add_argument(
        "--run-id",
        help="run directory name; an existing one is resumed "
        "(default: resume this suite's latest unfinished run, else a new id)",
    )
    run.add_argument(
        "--experiment",
        action="append",
        default=[],
        help="run only this experiment of the suite (repeatable)",
    )
    run.add_argument("--new", action="store_true", help="start a new run even if one is unfinished")
    add_tracking_uri(run)
    run.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")


def cmd_run(args: argparse.Namespace) -> int:
    from repro.config import suite
    from repro.infra import distributed
    from repro.run import runner

    loaded = _overridden(suite.load(suite_path(args.suite)), args)
    if args.no_tracking:
        loaded = replace(loaded, tracking=replace(loaded.tracking, enabled=False))
    if args.experiment:
        loaded = _only(loaded, args.experiment)
    run_dir = runner.run_suite(
        loaded,
        results_root=args.results,
        run_id=args.run_id,
        new=args.new,
        tracking_uri=args.tracking_uri,
        device=args.device,
        dtype=args.dtype,
        log=log_for("runner"),
        step_mode=step_mode(args),
        command=command_line(args),
    )
    if not args.quiet and distributed.launch_env()[0] == 0:  # rank 0 wrote the results
        from repro.reporting.report import load_results, render, summary_markdown, table

        results = load_results(run_dir)
        print(render(table(results), "md"))
        print(summary_markdown(results))  # the answer last, where a terminal leaves it
        print(f"results: {run_dir}")
    return 0


# flag -> the path of the experiment field it overrides
OVERRIDES = {
    "seeds": ("evaluation", "seeds"),
    "batch": ("evaluation", "batch_size"),
    "search_seeds": ("search", "seeds"),
    "evaluations": ("search", "n_eval"),
    "weights": ("weights",),
}


def _overridden(loaded, args: argparse.Namespace):
    """The suite with the command line's overrides in every experiment (``--seeds 0:10``
    shrinks a run), checked as the suite's own fields are and digested with them: the run
    records them in its resolved suite.yaml and results.json's suite digest, and never
    resumes a run made without them. Metric weights go to the variables their loaders
    read (their content digests are in results.json's inputs)."""
    import os
    from dataclasses import asdict

    from pydantic import TypeAdapter, ValidationError

    from repro.config.suite import settings_digest
    from repro.metrics.protocols import CLIP_ENV, INCEPTION_ENV, LPIPS_ENV

    for flag, variable in (
        ("clip_weights", CLIP_ENV),
        ("inception_weights", INCEPTION_ENV),
        ("lpips_weights", LPIPS_ENV),
    ):
        if getattr(args, flag):
            os.environ[variable] = str(getattr(args, flag))
    given = {flag: getattr(args, flag) for flag in OVERRIDES if getattr(args, flag) is not None}
    if not given:
        return loaded
    experiments = []
    for e in loaded.experiments:
        for flag, value in given.items():
            *section, field = OVERRIDES[flag]
            e = (
                replace(e, **{section[0]: replace(getattr(e, section[0]), **{field: value})})
                if section
                else replace(e, **{field: value})
            )
        try:  # replace() does not validate: the suite schema's bounds, as loading checks them
            e = TypeAdapter(type(e)).validate_python(asdict(e))
        except ValidationError as error:
            problem = error.errors()[0]
            flag = next(
                f for f in given if tuple(problem["loc"][: len(OVERRIDES[f])]) == OVERRIDES[f]
            )
            raise UserError(f"--{flag.replace('_', '-')} {given[flag]}: {problem['msg']}") from None
        experiments.append(e)
    loaded = replace(loaded, experiments=tuple(experiments))
    return replace(loaded, digest=settings_digest(loaded))


def _only(loaded, names: list[str]):
    """The suite with only the named experiments: one process per experiment, each in its
    own run directory; work files are keyed by what made them, so a whole-suite run on
    one of those directories (``--run-id``) reuses them."""
    known = [e.name for e in loaded.experiments]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(
            f"--experiment: {unknown[0]!r} is not in suite {loaded.name!r} "
            f"(known: {', '.join(known)})"
        )
    return replace(loaded, experiments=tuple(e for e in loaded.experiments if e.name in names))
