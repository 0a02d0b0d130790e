"""`repro` command line. Bad input exits 2 with one line naming the culprit.

Parsing imports nothing heavy: `repro --help` and `repro validate` run without torch
(`tests/test_cli.py` checks); each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from repro.infra.errors import RunFailure, UserError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # the shell's code for a command ended by SIGINT
SUITE_HELP = "suite file, or the name of a packaged suite (see `repro ls`)"


def _configure_output(args: argparse.Namespace) -> None:
    """Messages go through the ``repro`` logger to stderr: warnings only with ``--quiet``,
    debug with ``-v``; progress bars follow it (:mod:`repro.infra.progress`)."""
    from repro.infra.progress import LOGGER

    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):  # main may run more than once in a process
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def _log(name: str):
    """A ``log(message)`` callable for the library's long-running functions."""
    return logging.getLogger(f"repro.{name}").info


def cmd_ls(args: argparse.Namespace) -> int:
    from repro import models
    from repro.config.suite import find, packaged
    from repro.metrics.protocols import METRICS

    print("suites (repro run NAME):")
    for name in packaged():
        print(f"  {name:<18} {find(name)}")
    print("models:")
    for model_id in models.model_ids():
        spec = models.get(model_id)
        print(f"  {model_id:<14} {spec.description} [{spec.source}]")
    print("metrics:")
    for name in METRICS:
        print(f"  {name}")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Versions, devices, threads and platform: what a bug report needs (as `diffusers-cli
    env`)."""
    import importlib.metadata
    import os
    import platform

    from repro import __version__

    info: dict[str, object] = {"repro": __version__, "python": platform.python_version(),
                               "platform": platform.platform()}
    for package in ("torch", "torchvision", "diffusers", "transformers", "accelerate",
                    "mlflow", "torch-fidelity", "open_clip_torch", "numpy",
                    "DeepCache"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    import torch

    from repro.infra.timing import device_name

    info["torch"] = torch.__version__  # with its build suffix (+cu130, +cpu)
    info["torch CUDA build"] = torch.version.cuda or "none (CPU build)"
    info["devices"] = [f"cpu: {device_name('cpu')}"] + [
        f"cuda:{i}: {torch.cuda.get_device_name(i)} "
        f"({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
        for i in range(torch.cuda.device_count())]
    info["torch threads"] = torch.get_num_threads()
    info["CPU cores"] = os.cpu_count()
    info["environment"] = {k: os.environ[k] for k in sorted(os.environ) if k in ENV_VARIABLES}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        shown = "; ".join(value) if isinstance(value, list) else (
            ", ".join(f"{k}={v}" for k, v in value.items()) or "(none set)"
            if isinstance(value, dict) else value)
        print(f"- {key}: {shown}")
    return 0


# variables that change what a run does, shown by `repro env` where set
ENV_VARIABLES = ("HF_HUB_OFFLINE", "HF_HOME", "MLFLOW_TRACKING_URI", "REPRO_CACHE",
                 "REPRO_DATA", "REPRO_INCEPTION_WEIGHTS", "REPRO_CLIP_WEIGHTS", "REPRO_KILL_AT",
                 "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")


def _suite_path(text: str) -> Path:
    from repro.config.suite import find

    return find(text)


def cmd_validate(args: argparse.Namespace) -> int:
    from repro.config import suite

    for text in args.suite:
        loaded = suite.load(_suite_path(text))
        plans = suite.check(loaded)
        for line in suite.cautions(loaded):
            logging.getLogger("repro").warning(f"warning: {line}")
        rows = sum(len(plan) for plan in plans.values())
        print(f"{loaded.file}: ok (suite {loaded.name!r} v{loaded.version}, "
              f"{len(plans)} experiments, {rows} rows, {loaded.digest})")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from repro.config import suite
    from repro.infra import distributed
    from repro.run import runner

    loaded = suite.load(_suite_path(args.suite))
    if args.no_tracking:
        loaded = replace(loaded, tracking=replace(loaded.tracking, enabled=False))
    if args.experiment:
        loaded = _only(loaded, args.experiment)
    run_dir = runner.run_suite(loaded, results_root=args.results, run_id=args.run_id,
                               new=args.new, tracking_uri=args.tracking_uri,
                               device=args.device, dtype=args.dtype, log=_log("runner"),
                               step_mode=_step_mode(args), command=_command_line(args))
    if not args.quiet and distributed.launch_env()[0] == 0:  # rank 0 wrote the results
        print((run_dir / "table.md").read_text())
        print(f"results: {run_dir}")
    return 0


def _command_line(args: argparse.Namespace) -> str:
    """The command as a user would type it again."""
    return "repro " + shlex.join(args.argv)


def _only(loaded, names: list[str]):
    """The suite with only the named experiments: one process per experiment, each in its
    own run directory; work files are keyed by what made them, so a whole-suite run on
    one of those directories (``--run-id``) reuses them."""
    known = [e.name for e in loaded.experiments]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UserError(f"--experiment: {unknown[0]!r} is not in suite {loaded.name!r} "
                       f"(known: {', '.join(known)})")
    return replace(loaded, experiments=tuple(e for e in loaded.experiments if e.name in names))


def _required(args: argparse.Namespace, *flags: str) -> None:
    """Shared flags that this command cannot run without."""
    for flag in flags:
        if getattr(args, flag) is None:
            raise UserError(f"{args.command} needs --{flag.replace('_', '-')}")


def _at_least_one(args: argparse.Namespace, *flags: str) -> None:
    """Counts given on the command line are positive (``--steps 0`` samples nothing and
    ``--steps -1`` pure noise)."""
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")


def _replaceable(path: Path | None, flag: str) -> None:
    """A file the command will write is a regular file or nothing yet, checked before any
    work (a directory, a FIFO, a device or a symlink there is never replaced)."""
    from repro.infra.atomic import target_problem

    problem = path is not None and target_problem(path)
    if problem:
        raise UserError(f"{flag}: {problem}")


def _step_mode(args: argparse.Namespace) -> str:
    """The one step mode a run or sampling uses (:data:`repro.engine.accel.MODES`), checked
    against ``--device`` before anything is loaded."""
    if args.compile and args.cuda_graphs:
        raise UserError("--compile and --cuda-graphs: choose one")
    return _checked(args, "compile" if args.compile else "cuda-graphs" if args.cuda_graphs
                    else "eager")


def _checked(args: argparse.Namespace, mode: str) -> str:
    from repro.engine.accel import check_device

    check_device(mode, args.device)
    return mode


def cmd_sample(args: argparse.Namespace) -> int:
    from repro import models
    from repro.engine import accel
    from repro.sampling import samples
    from repro.sampling.prompts import read_prompts

    _required(args, "model", "steps")
    _at_least_one(args, "steps", "batch", "prompts_limit")
    _replaceable(args.out, "--out")
    try:
        seeds = samples.parse_seeds(args.seeds)
        labels = [int(x) for x in args.labels.split(",")] if args.labels else None
    except ValueError as error:
        raise UserError(str(error)) from None
    prompts = read_prompts(args.prompts, limit=args.prompts_limit) if args.prompts else None
    mode = _step_mode(args)
    model = models.load_model(args.model, args.weights, device=args.device, dtype=args.dtype)
    accel.apply(model.unet, mode)
    result = samples.generate(model, args.steps, args.schedule, seeds, labels, args.guidance,
                              batch_size=args.batch, prompts=prompts)
    path = result.save(args.out)
    if not args.quiet:
        print(f"{len(result.images)} images of {result.model} under '{result.schedule}' "
              f"-> {path}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    import json

    from repro import models
    from repro.infra.atomic import atomic_path
    from repro.metrics.extractors import load_extractor
    from repro.sampling import samples
    from repro.search.probe import plot_similarity, probe

    _at_least_one(args, "steps", "interval")
    try:
        seeds = samples.parse_seeds(args.seeds)
    except ValueError as error:
        raise UserError(str(error)) from None
    model = models.load_model(args.model, args.weights, device=args.device, dtype=args.dtype)
    result = probe(model, args.steps, args.interval, seeds, load_extractor(args.extractor))
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "probe.json") as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=1))
    plot_similarity(result, args.out / "similarity.png")
    if not args.quiet:
        print(f"{result.protocol} at the full steps of DeepCache N={result.interval}: null "
              f"steps {result.null_rfid:.2f}; partial " + ", ".join(
                  f"P{b} {v:.2f}" for b, v in sorted(result.partial_rfid.items())))
        print("adjacent-step cosine of the deep feature per branch (mean): " + ", ".join(
            f"{b} {row.mean():.3f}" for b, row in enumerate(result.similarity)))
        print(f"-> {args.out / 'probe.json'}, {args.out / 'similarity.png'}")
    return 0


def cmd_zoo_train(args: argparse.Namespace) -> int:
    from repro.models.zoo import WEIGHTS_DIR, ZOO_NAMES
    from repro.training.train import train

    if args.name not in ZOO_NAMES:
        raise UserError(f"unknown zoo model {args.name!r}; known: {', '.join(ZOO_NAMES)}")
    _at_least_one(args, "threads")
    print(train(args.name, args.out or WEIGHTS_DIR, seed=args.seed, minutes=args.minutes,
                threads=args.threads))
    return 0


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"{flag} expects a comma list of integers, got {text!r}") from None


def cmd_convert(args: argparse.Namespace) -> int:
    from repro.models.convert import convert_file

    if args.out.exists():
        raise UserError(f"{args.out} already exists; convert writes a new directory")
    out = convert_file(args.kind, args.checkpoint, args.out)
    print(f"{args.kind} checkpoint {args.checkpoint} -> {out} (use it with --weights {out})")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from repro import models, search
    from repro.core.schedule import CostTable
    from repro.infra.progress import bar
    from repro.metrics.protocols import EXTRACTORS
    from repro.sampling import samples
    from repro.sampling.prompts import read_prompts
    from repro.search import search_log
    from repro.search.fitness import FITNESSES
    from repro.speed.costs import model_cost_table

    _required(args, "model", "steps")
    _at_least_one(args, "steps", "n_eval", "population", "generations", "batch",
                  "prompts_limit")
    _replaceable(args.log, "--log")
    spec = models.get(args.model)
    if args.extractor not in EXTRACTORS:
        raise UserError(f"--extractor: unknown {args.extractor!r}; known: {', '.join(EXTRACTORS)}")
    try:
        seeds = samples.parse_seeds(args.seeds)
        sampler = models.Sampler(args.scheduler)
        calls = models.sampler_calls(spec, args.steps, sampler)
    except ValueError as error:
        raise UserError(str(error)) from None
    labels = _int_list(args.labels, "--labels") if args.labels else None
    if args.pass_samples is not None and args.pass_samples < 0:
        raise UserError(f"--pass-samples must be 0 or more, got {args.pass_samples}")
    pass_samples = {} if args.pass_samples is None else {"pass_samples": args.pass_samples or None}
    branches = (_int_list(args.branches, "--branches") if args.branches
                else list(range(spec.num_branches)))
    lens = _int_list(args.seg_lens, "--seg-lens") if args.seg_lens else None
    # one token per UNet call of the sampler: PLMS at 50 steps makes 51
    space = search.SegmentSpace.of(calls, branches, lens, args.max_seg_len)
    table = CostTable.load(args.cost_table) if args.cost_table else None
    budgets = [search.Budget(b, table or CostTable({}, "bounds"), args.tol)
               for b in args.budget]
    for budget in budgets:  # before any weights are loaded
        space.check_reachable(budget)
    prompts = read_prompts(args.prompts, limit=args.prompts_limit) if args.prompts else None
    model = models.load_model(args.model, args.weights, device=args.device, dtype=args.dtype)
    if args.scheduler:
        model = replace(model, scheduler=models.build_scheduler(spec, sampler))
    table = table or model_cost_table(spec, model.unet)
    budgets = [search.Budget(b, table, args.tol) for b in args.budget]
    fitness = FITNESSES[args.fitness](
        model, args.steps, seeds, labels, guidance=args.guidance, extractor=args.extractor,
        batch_size=args.batch, prompts=prompts, **pass_samples)
    known = search_log.read_scores(args.log, fitness.context) if args.log else {}
    on_record = search_log.appender(args.log, fitness.context) if args.log else None
    with bar(total=args.n_eval * len(budgets), desc="search", unit="schedule") as progress:
        def scored(schedule):
            value = fitness(schedule)
            progress.update(1)
            return value

        def score_many(schedules):  # a generation at a time: batched passes
            values = fitness.score_many(schedules)
            progress.update(len(schedules))
            return values

        scored.score_many = score_many
        results, front = search.multi_budget(
            search.run_method, budgets, method=search.METHODS[args.method].result_name,
            space=space, evolution=search.Evolution(args.population, args.parents,
                                                    args.mutations, args.crossovers),
            generations=args.generations, fitness=scored, n_eval=args.n_eval,
            seed_uniform=args.seed_uniform, seed=args.seed, known=known, on_record=on_record)
    summary = {
        "model": spec.id, "steps": args.steps, "unet_calls": calls,
        "sampler": models.sampler_record(model.scheduler), "method": results[0].method,
        "cost_table": table.to_dict(), "fitness": fitness.context["protocol"],
        "budgets": [{"budget": r.budget, "schedule": str(r.best), "fitness": r.fitness,
                     "predicted_speedup": r.predicted_speedup, "evaluated": len(r.records),
                     "reused_from_log": sum(rec.cached for rec in r.records)}
                    for r in results],
        "pareto": [{"schedule": r.schedule, "predicted_speedup": r.predicted_speedup,
                    "fitness": r.fitness} for r in front],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for row in summary["budgets"]:
            print(f"{row['budget']}x  {summary['fitness']} {row['fitness']:.3f}  predicted "
                  f"{row['predicted_speedup']:.2f}x  ({row['evaluated']} scored, "
                  f"{row['reused_from_log']} from the log)  {row['schedule']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from repro.infra.atomic import atomic_path
    from repro.infra.timing import clock_for
    from repro.results import bench_report
    from repro.speed import bench

    if bool(args.model) == bool(args.suite):
        raise UserError("bench takes --model MODEL or --suite SUITE (exactly one)")
    _replaceable(args.out, "--out")
    _at_least_one(args, "batch", "steps", "repeats")
    if args.suite:
        model_only = [flag for flag, given in (("--deepcache", args.deepcache),
                                               ("--oracle", args.oracle),
                                               ("--plain", args.plain),
                                               ("--scheduler", args.scheduler)) if given]
        if model_only:
            raise UserError(f"{model_only[0]} is a --model option; --suite times the suite's "
                           "sampler, its baselines and DeepCache N=2..10")
    elif args.budget:
        raise UserError("--budget needs --suite (segment schedules at a budget)")
    try:
        clock_for(args.clock, args.device)
    except ValueError as error:
        raise UserError(str(error)) from None
    modes = [_checked(args, mode) for mode, given in (("compile", args.compile),
                                                      ("cuda-graphs", args.cuda_graphs)) if given]
    tracking_uri = _bench_tracking(args)
    started = datetime.now(UTC)
    if args.suite:
        from repro.run.bench_suite import bench_suite, suite_markdown

        report = bench_suite(
            _suite_path(args.suite), weights=args.weights, device=args.device,
            dtype=args.dtype, batch=args.batch, steps=args.steps, repeats=args.repeats,
            warmup=args.warmup, schedules=args.schedule, budgets=args.budget or (),
            seed=args.seed, clock=args.clock, log=_log("bench"), modes=modes)
        render = suite_markdown
    else:
        try:
            deepcache = [f"{i}:{b}" for i, b in map(bench.parse_deepcache, args.deepcache)]
        except ValueError as error:
            raise UserError(str(error)) from None
        report = bench.bench_model(
            args.model, weights=args.weights, device=args.device, dtype=args.dtype,
            batch=args.batch or 1, steps=args.steps or 50, repeats=args.repeats or 3,
            warmup=args.warmup, schedules=args.schedule, deepcache=deepcache,
            do_calibrate=args.calibrate, oracle=args.oracle, plain=args.plain,
            scheduler=args.scheduler, seed=args.seed, clock=args.clock, modes=modes,
        )
        render = bench.report_markdown
    report = bench_report.stamp(report, started)
    markdown = render(report, _command_line(args))
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

        setting = load(_suite_path(args.suite)).tracking
    if args.no_tracking or (setting is not None and not setting.enabled):
        return None
    uri = tracking.resolve_uri(args.tracking_uri or (setting and setting.uri))
    tracking.check_reachable(uri)
    return uri


def cmd_report(args: argparse.Namespace) -> int:
    from repro.infra.atomic import atomic_path
    from repro.reporting import comparison_report, report

    if sum(map(bool, (args.runs, args.compare, args.experiment))) != 1:
        raise UserError("report takes RUN_DIR..., --compare OLD NEW or --experiment NAME")
    _replaceable(args.out, "--out")
    if args.format == "html":
        if len(args.runs) != 1:
            raise UserError("--format html takes one RUN_DIR (its plots and grids go inside)")
        from repro.reporting.html_report import write_html

        run_dir = args.runs[0].parent if args.runs[0].suffix == ".json" else args.runs[0]
        results = report.load_results(run_dir)
        with _writing(args.out or run_dir / "report.html"):
            print(write_html(results, run_dir, args.out))
        return 0
    if args.experiment:
        from repro.reporting.tracking import load_results, resolve_uri

        runs = load_results(args.experiment, uri=resolve_uri(args.tracking_uri))
        if args.regression and len(runs) < 2:
            raise UserError(f"MLflow experiment {args.experiment!r} has {len(runs)} finished "
                           "run(s); --regression needs two")
        text = (report.render(report.compare(runs[1], runs[0]), "md") if args.regression
                else report.render(report.table(runs[0]), args.format))
    elif args.compare:
        old, new = (report.load_results(p) for p in args.compare)
        text = report.render(report.compare(old, new), "md")
        if old.get("verdicts") or new.get("verdicts"):
            text += "\n" + report.render(comparison_report.verdict_changes(old, new), "md")
    else:
        runs = [report.load_results(p) for p in args.runs]
        text = report.render(report.table(runs), args.format)
        if len(runs) == 1 and runs[0].get("verdicts") and args.format == "md":
            text += "\n" + report.render(comparison_report.verdict_table(runs[0]), "md")
    if args.out:
        with _writing(args.out), atomic_path(args.out) as tmp:
            tmp.write_text(text)
    else:
        print(text, end="")
    return 0


@contextlib.contextmanager
def _writing(path) -> Iterator[None]:
    """A file the user named that cannot be written is bad input: one line naming it."""
    try:
        yield
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


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
    tolerances = _suite_path(args.suite) if args.suite else new.suite
    regression = suite.load(tolerances).regression if tolerances else suite.Regression()
    with tempfile.TemporaryDirectory() as tmp:
        if args.experiment:
            run_id = tracking.find_run(args.experiment, uri=args.tracking_uri, tags=tags,
                                       exclude_run_id=new.run_id)
            old = replace(gate.read_run(tracking.download_run(run_id, Path(tmp),
                                                              uri=args.tracking_uri)),
                          label=f"MLflow run {run_id} of {args.experiment}")
        else:
            old = gate.read_run(args.baseline, exclude_run_id=new.run_id)
        outcome = gate.gate(new, old, regression, allow_mismatch=args.allow_mismatch)
    print(gate.summary(outcome, new, old))
    return gate.EXIT_REGRESSED if outcome.regressions else 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2, like every other bad input."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


DTYPES = ("float32", "float16", "bfloat16")


def _flag_groups() -> dict[str, ArgumentParser]:
    """The flags several commands share, each defined once with one name: commands take
    them as argparse parents (a fresh set each) and override a default with
    ``set_defaults``."""
    groups = {name: ArgumentParser(add_help=False) for name in
              ("output", "device", "threads", "batch", "weights", "model", "steps", "seeds",
               "prompts", "scheduler", "step_mode")}
    output = groups["output"].add_mutually_exclusive_group()
    output.add_argument("-q", "--quiet", action="store_true",
                        help="warnings and errors only, no progress bars")
    output.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    groups["device"].add_argument("--device", default="cpu",
                                  help="torch device: cpu, cuda, cuda:1, ... (default cpu)")
    groups["device"].add_argument("--dtype", default="float32", choices=DTYPES,
                                  help="weights and sampling dtype (default float32)")
    groups["threads"].add_argument("--threads", type=int, default=0,
                                   help="torch CPU threads (default: torch's)")
    groups["batch"].add_argument("--batch", type=int, help="images per batch")
    groups["weights"].add_argument("--weights", default="pretrained",
                                   help="pretrained (Hugging Face cache or the zoo's), random "
                                   "(architecture only), or a local directory "
                                   "(default %(default)s)")
    groups["model"].add_argument("--model", help="model id (see `repro ls`)")
    groups["steps"].add_argument("--steps", type=int, help="sampler steps")
    groups["seeds"].add_argument("--seeds", default="0:64",
                                 help="A:B (B excluded) or a comma list (default %(default)s)")
    groups["prompts"].add_argument("--prompts", type=Path,
                                   help="text-conditioned models: COCO captions JSON, "
                                   "PartiPrompts TSV or one prompt per line, cycled over the "
                                   "seeds")
    groups["prompts"].add_argument("--prompts-limit", type=int,
                                   help="use the first N prompts")
    groups["scheduler"].add_argument("--scheduler",
                                     help="diffusers scheduler class (default: the model's)")
    groups["step_mode"].add_argument("--compile", action="store_true",
                                     help="torch.compile the UNet under the schedule's hooks "
                                     "(one graph per step kind)")
    groups["step_mode"].add_argument("--cuda-graphs", action="store_true",
                                     help="capture each step kind (F, each P<b>) once as a "
                                     "CUDA graph and replay it (CUDA only)")
    return groups


def build_parser() -> argparse.ArgumentParser:
    from repro import __version__
    from repro.cli.eval import add_eval_parser
    from repro.metrics.protocols import SEARCH_FITNESSES
    from repro.search.methods import METHODS

    def parents(*groups: str) -> list[ArgumentParser]:
        # fresh parents per command: argparse shares a parent's actions, so one command's
        # set_defaults would change every other command's default
        fresh = _flag_groups()
        return [fresh["output"], *(fresh[x] for x in groups)]

    parser = ArgumentParser(prog="repro", description="Reproduce and benchmark training-free "
                            "acceleration of diffusion models by per-step schedules (F / P<b> / "
                            "N): searches, baselines, metrics and timing from declarative "
                            "suites. Bad input exits 2 with one line naming the culprit.")
    parser.add_argument("--version", action="version", version=f"repro {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func, help: str, *groups: str) -> ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=parents(*groups))
        p.set_defaults(func=func)
        return p

    command("ls", cmd_ls, "list the packaged suites, models and metrics")
    env = command("env", cmd_env, "what a bug report needs: versions, devices, threads, "
                  "platform")
    env.add_argument("--json", action="store_true", help="print one JSON object")

    run = command("run", cmd_run, "run a suite: teacher -> search -> evaluation -> results",
                  "device", "threads", "step_mode")
    run.add_argument("suite", help=SUITE_HELP)
    run.add_argument("--results", type=Path, default=Path("results"),
                     help="results root (default: results/)")
    run.add_argument("--run-id", help="run directory name; an existing one is resumed "
                     "(default: resume this suite's latest unfinished run, else a new id)")
    run.add_argument("--experiment", action="append", default=[],
                     help="run only this experiment of the suite (repeatable)")
    run.add_argument("--new", action="store_true", help="start a new run even if one is "
                     "unfinished")
    run.add_argument("--tracking-uri", help="MLflow tracking URI (default: the suite's, "
                     "MLFLOW_TRACKING_URI, or MLflow's default sqlite:///mlflow.db)")
    run.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")

    validate = command("validate", cmd_validate, "check suites without running them")
    validate.add_argument("suite", nargs="+", help=SUITE_HELP)

    sample = command("sample", cmd_sample, "generate images under a schedule into FILE.npz",
                     "model", "steps", "seeds", "prompts", "weights", "device", "threads",
                     "batch", "step_mode")
    sample.add_argument("--schedule", help="schedule text (default: all F)")
    sample.add_argument("--labels", help="comma list of class labels, cycled over the seeds "
                        "(default: seed mod classes)")
    sample.add_argument("--guidance", type=float, help="classifier-free guidance scale "
                        "(default: the model's)")
    sample.add_argument("--out", type=Path, required=True, help="samples file (.npz)")
    sample.set_defaults(batch=64)

    prb = command("probe", cmd_probe, "does a model suit caching? P<b> vs N at the same full "
                  "steps (rFID) and the deep feature's similarity between steps",
                  "steps", "seeds", "weights", "device", "threads")
    prb.add_argument("model", help="model id (see `repro ls`)")
    prb.add_argument("--interval", type=int, default=5, help="DeepCache N (default 5)")
    prb.add_argument("--extractor", default="digits-cnn", help="rFID features (default "
                     "digits-cnn; inception-2015-12-05 for real images)")
    prb.add_argument("--out", type=Path, default=Path("probe"),
                     help="directory for probe.json and similarity.png (default ./probe)")
    prb.set_defaults(steps=20)

    srch = command("search", cmd_search, "search schedules under speed budgets, rFID fitness",
                   "model", "steps", "seeds", "prompts", "scheduler", "weights", "device",
                   "threads", "batch")
    srch.add_argument("--budget", type=float, action="append", required=True,
                      help="target predicted speedup (repeatable)")
    srch.add_argument("--n-eval", type=int, default=40, help="schedules scored per budget")
    srch.add_argument("--method", choices=list(METHODS), default="segment")
    srch.add_argument("--population", type=int, default=50, help="first generation's size")
    srch.add_argument("--parents", type=int, default=10, help="best candidates bred from")
    srch.add_argument("--mutations", type=int, default=25, help="mutated children a generation")
    srch.add_argument("--crossovers", type=int, default=15,
                      help="crossed children a generation")
    srch.add_argument("--generations", type=int, help="stop after this many generations")
    srch.add_argument("--no-seed-uniform", dest="seed_uniform", action="store_false",
                      help="start from random candidates, not the uniform schedules")
    srch.add_argument("--seed", type=int, default=0)
    srch.add_argument("--labels", help="class labels, comma list cycled over the seeds "
                      "(default: seed mod classes)")
    srch.add_argument("--guidance", type=float, help="guidance (default: the model's)")
    srch.add_argument("--extractor", default="digits-cnn", help="fitness features (default "
                      "digits-cnn; inception-2015-12-05 for real images)")
    srch.add_argument("--fitness", choices=list(SEARCH_FITNESSES), default="rfid",
                      help="distance to the teacher's samples: rfid (the paper's; needs twice "
                      "as many seeds as feature dimensions) or kid (unbiased at any n)")
    srch.add_argument("--branches", help="allowed cache branches, comma list (default: all)")
    srch.add_argument("--seg-lens", help="allowed segment lengths (default: 1..--max-seg-len)")
    srch.add_argument("--max-seg-len", type=int, default=10, help="longest segment length")
    srch.add_argument("--tol", type=float, default=0.1, help="budget window above the target")
    srch.add_argument("--cost-table", type=Path, help="JSON from `repro bench --json` "
                      "(default: MAC ratios)")
    srch.add_argument("--log", type=Path, help="JSONL log; a rerun reuses its scores")
    srch.add_argument("--pass-samples", type=int,
                      help="candidates x seeds sampled in one batched pass (default 512; "
                      "0: one candidate at a time)")
    srch.add_argument("--json", action="store_true")
    srch.set_defaults(seeds="0:128", batch=128)

    add_eval_parser(sub, parents=parents("weights", "device", "threads", "batch"))

    zoo = sub.add_parser("zoo", help="the embedded digits models")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    train = zoo_sub.add_parser("train", help="train an embedded model (seeded, CPU)",
                               parents=parents("threads"))
    train.add_argument("name", help="digits-ddpm, digits-cond or digits-cnn")
    train.add_argument("--out", type=Path, help="output dir (default: repro/models/zoo/weights)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--minutes", type=float, help="stop training after this wall time")
    train.set_defaults(func=cmd_zoo_train, threads=1)  # the committed weights used 1

    convert = command("convert", cmd_convert, "convert an original checkpoint file into a "
                      "diffusers directory (once)")
    convert.add_argument("kind", choices=("ldm", "adm"),
                         help="ldm: CompVis LDM-4-G model.ckpt (cin256-v2); adm: guided-diffusion "
                         "64x64_diffusion.pt")
    convert.add_argument("checkpoint", type=Path, help="the original checkpoint file")
    convert.add_argument("out", type=Path, help="new directory (unet/, scheduler/, ...)")

    bench = command("bench", cmd_bench, "time a model's UNet loop under schedules, or a "
                    "suite's schedules on its architecture (defaults: --model 1 image, 50 "
                    "steps; --suite the suite's evaluation.latency_batch images and steps, "
                    "guidance doubling the UNet batch)",
                    "model", "steps", "scheduler", "weights", "device", "threads", "batch",
                    "step_mode")
    bench.add_argument("--suite", help=SUITE_HELP + ": time its teacher, baselines, DeepCache "
                       "N=2..10 and uniform segment schedules per budget against a calibrated "
                       "cost table (instead of --model)")
    bench.add_argument("--repeats", type=int, help="interleaved repeats (default 3; with "
                       "--suite the suite's evaluation.latency_repeats)")
    bench.add_argument("--budget", type=float, action="append", metavar="X",
                       help="with --suite: also a uniform segment schedule at this predicted "
                       "speedup (repeatable)")
    bench.add_argument("--warmup", type=int, default=1)
    bench.add_argument("--schedule", action="append", default=[], metavar="TEXT",
                       help="schedule text to time (repeatable)")
    bench.add_argument("--deepcache", action="append", default=[], metavar="N[:B]",
                       help="DeepCache uniform interval N at branch B (repeatable)")
    bench.add_argument("--calibrate", action="store_true",
                       help="fit the cost table (P<b>/F kind costs, per-call and per-step "
                       "overheads) to per-call times and calibration loops (all-F, F then N, "
                       "fewer-steps, DeepCache N=2/3/5/10) instead of MAC ratios; --json carries "
                       "it as cost_table for --cost-table and suites (--suite always does)")
    bench.add_argument("--oracle", action="store_true",
                       help="also time DeepCache's own DeepCacheSDHelper (per call and loop)")
    bench.add_argument("--plain", action="store_true",
                       help="also time the unhooked diffusers loop")
    bench.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                       help="wall time (default, the latency protocol) or process CPU time "
                       "(--device cpu only: for a CPU shared with other jobs)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--out", type=Path, help="also write the markdown report here")
    bench.add_argument("--json", action="store_true", help="print the report as JSON (what "
                       "`repro gate` reads)")
    bench.add_argument("--tracking-uri", help="MLflow tracking URI (default: the suite's, "
                       "MLFLOW_TRACKING_URI, or MLflow's default sqlite:///mlflow.db)")
    bench.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    bench.add_argument("--experiment", help="MLflow experiment (default: repro/bench/<suite or "
                       "model>)")
    bench.set_defaults(weights="random")

    rep = command("report", cmd_report, "tables of run results, or a regression diff of two")
    rep.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR",
                     help="run directory or results.json (several: one table, a run column)")
    rep.add_argument("--format", choices=["md", "csv", "tex", "html"], default="md",
                     help="html: one run's self-contained report.html (tables, plots, grids, "
                     "environment, command), written beside its results.json unless --out")
    rep.add_argument("--out", type=Path, help="write here instead of printing")
    rep.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"),
                     help="regression table (md) of two runs")
    rep.add_argument("--experiment", help="read runs from this MLflow experiment instead "
                     "(the newest run's table)")
    rep.add_argument("--regression", action="store_true",
                     help="with --experiment: regression table of its two newest runs")
    rep.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                     "MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")

    gte = command("gate", cmd_gate, "exit 1 when a run got worse than a baseline run "
                  "beyond its tolerance with the suite's confidence (Holm over the run's "
                  "checks), naming row and metric; 0 otherwise; 2 on bad input or runs of "
                  "another suite or protocol")
    gte.add_argument("run", type=Path, help="the new run: run directory, results.json or a "
                     "`repro bench --json` report")
    gte.add_argument("baseline", nargs="?", type=Path, help="the baseline: the same kinds, or "
                     "a suite's results folder (results/smoke: its newest finished run)")
    gte.add_argument("--experiment", help="take the baseline from this MLflow experiment "
                     "instead: its newest finished run (not the new run itself)")
    gte.add_argument("--branch", help="with --experiment: the newest run on this git branch")
    gte.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE",
                     help="with --experiment: the newest run with this MLflow tag (repeatable)")
    gte.add_argument("--tracking-uri", help="MLflow tracking URI (default: "
                     "MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    gte.add_argument("--suite", help="tolerances from this suite's regression block (default: "
                     "the new run's suite.yaml; built-in defaults for benchmarks)")
    gte.add_argument("--allow-mismatch", action="store_true", help="gate runs that differ in "
                     "suite, model, steps, sampler, guidance or evaluation protocol anyway, "
                     "with a note per difference")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what `repro bench` reports as its command
    _configure_output(args)
    try:
        if getattr(args, "threads", 0) < 0:
            raise UserError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
        if getattr(args, "threads", 0) and args.command != "zoo":
            import torch

            torch.set_num_threads(args.threads)
        return args.func(args)
    except UserError as error:
        print(f"repro: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunFailure as error:
        print(f"repro: failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("repro: interrupted; finished work is kept (the same command resumes it)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `repro env | head`: the reader left; Python's documented way out
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1

