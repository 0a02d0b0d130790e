"""``repro search``: search schedules under speed budgets, rFID fitness"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from repro.cli.common import Command, at_least_one, replaceable, required_flags
from repro.infra.errors import UserError


def add_parser(command: Command) -> None:
    from repro.config.schema import Search
    from repro.metrics.protocols import SEARCH_FITNESSES
    from repro.search.methods import METHODS

    suite = Search()  # a suite's defaults are the command's: one source

    srch = command(
        "search",
        cmd_search,
        "search schedules under speed budgets, rFID fitness",
        "model",
        "steps",
        "seeds",
        "prompts",
        "scheduler",
        "weights",
        "device",
        "threads",
        "batch",
    )
    srch.add_argument(
        "--budget",
        type=float,
        action="append",
        required=True,
        help="target predicted speedup (repeatable)",
    )
    srch.add_argument(
        "--n-eval", type=int, default=suite.n_eval, help="schedules scored per budget"
    )
    srch.add_argument("--method", choices=list(METHODS), default="segment")
    srch.add_argument(
        "--population", type=int, default=suite.population, help="first generation's size"
    )
    srch.add_argument(
        "--parents", type=int, default=suite.parents, help="best candidates bred from"
    )
    srch.add_argument(
        "--mutations", type=int, default=suite.mutations, help="mutated children a generation"
    )
    srch.add_argument(
        "--crossovers", type=int, default=suite.crossovers, help="crossed children a generation"
    )
    srch.add_argument("--generations", type=int, help="stop after this many generations")
    srch.add_argument(
        "--no-seed-uniform",
        dest="seed_uniform",
        action="store_false",
        help="start from random candidates, not the uniform schedules",
    )
    srch.add_argument("--seed", type=int, default=suite.seed)
    srch.add_argument(
        "--labels",
        help="class labels, comma list cycled over the seeds (default: seed mod classes)",
    )
    srch.add_argument("--guidance", type=float, help="guidance (default: the model's)")
    srch.add_argument(
        "--extractor",
        default=suite.extractor,
        help="fitness features (default digits-cnn; inception-2015-12-05 for real images)",
    )
    srch.add_argument(
        "--fitness",
        choices=list(SEARCH_FITNESSES),
        default=suite.fitness,
        help="distance to the teacher's samples: rfid (the paper's; needs twice "
        "as many seeds as feature dimensions) or kid (unbiased at any n)",
    )
    srch.add_argument("--branches", help="allowed cache branches, comma list (default: all)")
    srch.add_argument("--seg-lens", help="allowed segment lengths (default: 1..--max-seg-len)")
    srch.add_argument(
        "--max-seg-len", type=int, default=suite.max_seg_len, help="longest segment length"
    )
    srch.add_argument("--tol", type=float, default=suite.tol, help="budget window above the target")
    srch.add_argument(
        "--cost-table", type=Path, help="JSON from `repro bench --json` (default: MAC ratios)"
    )
    srch.add_argument("--log", type=Path, help="JSONL log; a rerun reuses its scores")
    srch.add_argument(
        "--pass-samples",
        type=int,
        help="candidates x seeds sampled in one batched pass (default 512; "
        "0: one candidate at a time)",
    )
    srch.add_argument("--json", action="store_true")
    srch.set_defaults(seeds=suite.seeds, batch=128)


def cmd_search(args: argparse.Namespace) -> int:
    """The runner's search stage (:func:`repro.run.searching.search_fitness` and
    :func:`~repro.run.searching.search_once`) on settings built from the flags, once per
    budget, with the joint Pareto front of every schedule scored."""
    from repro import models, search
    from repro.infra.progress import bar
    from repro.run.searching import search_fitness, search_once
    from repro.search import search_log
    from repro.speed.costs import model_cost_table

    spec, settings, sampler, calls, space, table = _checked(args)
    labels = _int_list(args.labels, "--labels") if args.labels else None
    pass_samples = {} if args.pass_samples is None else {"pass_samples": args.pass_samples or None}
    prompts = None
    if args.prompts:
        from repro.sampling.prompts import read_prompts

        prompts = read_prompts(args.prompts, limit=args.prompts_limit)
    model = models.load_model(args.model, args.weights, device=args.device, dtype=args.dtype)
    if args.scheduler:
        model = replace(model, scheduler=models.build_scheduler(spec, sampler))
    table = table or model_cost_table(spec, model.unet)
    fitness = search_fitness(
        settings,
        model,
        args.steps,
        settings.fitness_seeds(settings.seed),
        labels,
        args.guidance,
        batch_size=args.batch,
        prompts=prompts,
        **pass_samples,
    )
    known = search_log.read_scores(args.log, fitness.context) if args.log else {}
    on_record = search_log.appender(args.log, fitness.context) if args.log else None
    method = search.METHODS[args.method].result_name
    with bar(
        total=settings.n_eval * len(settings.budgets), desc="search", unit="schedule"
    ) as progress:
        results = [
            search_once(
                settings,
                method,
                space,
                search.Budget(b, table, settings.tol),
                _Counted(fitness, progress),
                seed=settings.seed,
                known=known,
                on_record=on_record,
            )
            for b in settings.budgets
        ]
    _report(
        args,
        {
            "model": spec.id,
            "steps": args.steps,
            "unet_calls": calls,
            "sampler": models.sampler_record(model.scheduler),
            "method": method,
            "cost_table": table.to_dict(),
            "fitness": fitness.context["protocol"],
            "budgets": [
                {
                    "budget": r.budget,
                    "schedule": str(r.best),
                    "fitness": r.fitness,
                    "predicted_speedup": r.predicted_speedup,
                    "evaluated": len(r.records),
                    "reused_from_log": sum(rec.cached for rec in r.records),
                }
                for r in results
            ],
            "pareto": [
                {
                    "schedule": r.schedule,
                    "predicted_speedup": r.predicted_speedup,
                    "fitness": r.fitness,
                }
                for r in search.pareto_front(results)
            ],
        },
    )
    return 0


class _Counted:
    """``fitness`` that advances a progress bar by each schedule it scores."""

    def __init__(self, fitness, progress):
        self.fitness, self.progress = fitness, progress

    def __getattr__(self, name: str):
        return getattr(self.fitness, name)

    def __call__(self, schedule):
        value = self.fitness(schedule)
        self.progress.update(1)
        return value

    def score_many(self, schedules):  # a generation at a time: batched passes
        values = self.fitness.score_many(schedules)
        self.progress.update(len(schedules))
        return values


def _settings(args: argparse.Namespace):
    """The flags as the suite's search settings (the same schema and bounds); a value out
    of bounds is one line naming its flag."""
    from pydantic import TypeAdapter, ValidationError

    from repro.config.schema import Search
    from repro.infra.quoting import short

    given = {
        "methods": (args.method,),
        "budgets": tuple(args.budget),
        "n_eval": args.n_eval,
        "population": args.population,
        "parents": args.parents,
        "mutations": args.mutations,
        "crossovers": args.crossovers,
        "generations": args.generations,
        "seed": args.seed,
        "seeds": args.seeds,
        "seed_uniform": args.seed_uniform,
        "max_seg_len": args.max_seg_len,
        "tol": args.tol,
        "extractor": args.extractor,
        "fitness": args.fitness,
        "branches": _int_list(args.branches, "--branches") if args.branches else None,
        "seg_lens": _int_list(args.seg_lens, "--seg-lens") if args.seg_lens else None,
    }
    try:
        return TypeAdapter(Search).validate_python(given)
    except ValidationError as error:
        first = error.errors()[0]
        flag = {"budgets": "budget", "methods": "method"}.get(first["loc"][0], first["loc"][0])
        raise UserError(
            f"--{flag.replace('_', '-')}: {first['msg']} (got {short(first.get('input'))})"
        ) from None


def _checked(args: argparse.Namespace) -> tuple:
    """The flags checked before any weights are loaded: the model's spec, the search
    settings, the sampler and its UNet calls, the search space and the cost table given
    (None: the model's), every budget reachable in the space."""
    from repro import models, search
    from repro.config.plan import search_space
    from repro.core.schedule import CostTable
    from repro.metrics.protocols import EXTRACTORS
    from repro.sampling import samples

    required_flags(args, "model", "steps")
    at_least_one(args, "steps", "batch", "prompts_limit")
    replaceable(args.log, "--log")
    spec = models.get(args.model)
    settings = _settings(args)
    if settings.extractor not in EXTRACTORS:
        raise UserError(
            f"--extractor: unknown {settings.extractor!r}; known: {', '.join(EXTRACTORS)}"
        )
    try:
        samples.parse_seeds(settings.seeds)
        sampler = models.Sampler(args.scheduler)
        calls = models.sampler_calls(spec, args.steps, sampler)
    except ValueError as error:
        raise UserError(str(error)) from None
    if args.pass_samples is not None and args.pass_samples < 0:
        raise UserError(f"--pass-samples must be 0 or more, got {args.pass_samples}")
    space = search_space(settings, spec.id, calls)
    table = CostTable.load(args.cost_table) if args.cost_table else None
    for budget in settings.budgets:
        space.check_reachable(search.Budget(budget, table or CostTable.bounds(), settings.tol))
    return spec, settings, sampler, calls, space, table


def _report(args: argparse.Namespace, summary: dict) -> None:
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    for row in summary["budgets"]:
        print(
            f"{row['budget']}x  {summary['fitness']} {row['fitness']:.3f}  predicted "
            f"{row['predicted_speedup']:.2f}x  ({row['evaluated']} scored, "
            f"{row['reused_from_log']} from the log)  {row['schedule']}"
        )


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} expects a comma list of integers, got {text!r}") from None
