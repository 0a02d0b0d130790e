"""What a loaded suite is checked against before anything heavy runs (model ids, metric
names, schedule lengths, reachable budgets, seed sets), and the row plan each experiment's
checks yield."""

from __future__ import annotations

import difflib
import re

from repro import techniques
from repro.config.plan import searched_name, segment_space, slug, technique_label, training_steps
from repro.config.schema import (
    COST_TABLES,
    DEFAULT_TOLERANCES,
    EXPERIMENT_NAME_MAX,
    MIN_TIMING_REPEATS,
    ROW_NAME_MAX,
    STEPWISE_GRIDS,
    SUITE_NAME_MAX,
    Baseline,
    Experiment,
    RowPlan,
    Suite,
    SuiteError,
)
from repro.infra.quoting import short
from repro.search.methods import METHODS


# -- checks against the registry (before any heavy work) --------------------------------
def check(suite: Suite) -> dict[str, list[RowPlan]]:
    """Resolve and check what loading cannot: model ids, methods, techniques, metric names,
    schedule texts and lengths, reachable budgets, duplicate rows, published rows, folder
    names. Returns the row plan per experiment."""
    problem = plain_name_problem(suite.name, SUITE_NAME_MAX)
    if problem:
        raise SuiteError(f"{suite.file}: field 'name': {problem}")
    clash = folder_clash([e.name for e in suite.experiments], "experiments")
    if clash:
        raise SuiteError(f"{suite.file}: {clash}")
    for index, e in enumerate(suite.experiments):
        if len(e.name) > ROW_NAME_MAX:
            raise SuiteError(
                f"{suite.file}: field 'experiments[{index}].name': "
                f"{short(e.name)} is longer than {ROW_NAME_MAX} characters"
            )
    _check_tracking(suite)
    _check_regression(suite)
    return {e.name: _check_experiment(suite, e) for e in suite.experiments}


def preflight(suite: Suite) -> None:
    """Each baseline entry's checks that need its technique's libraries (diffusers' cache
    configs), before a run or a bench starts anything; one line naming the field."""
    for e in suite.experiments:
        for index, baseline in enumerate(e.baselines):
            try:
                techniques.get(baseline.technique).preflight(baseline)
            except techniques.TechniqueError as error:
                where = f"baselines[{index}]" + (f".{error.field}" if error.field else "")
                raise _fail(suite, e, where, str(error)) from None


def cautions(suite: Suite) -> list[str]:
    """What is allowed but weakens the numbers, one line each (``repro validate`` and
    ``repro run`` print them): an evaluation FID / rFID on no more samples than its features
    have dimensions has singular covariances, so it rests on a degenerate fit and may come
    out infinite (a search's rFID fitness on too few seeds is refused by :func:`check`);
    fewer timing repeats than verdicts at measured speed need."""
    from repro.metrics.protocols import FEATURE_DIMS
    from repro.sampling.samples import parse_seeds

    lines = []
    for e in suite.experiments:
        frechet = [
            m.partition(":")[2]
            for m in e.evaluation.metrics
            if m.partition(":")[0] in ("fid", "rfid")
        ]
        n = len(parse_seeds(e.evaluation.seeds))
        for extractor in dict.fromkeys(frechet):
            dims = FEATURE_DIMS.get(extractor, 0)
            if n <= dims:
                lines.append(
                    f"{suite.file}: experiment {e.name!r}: field 'evaluation.seeds': "
                    f"{n} seeds for {dims}-dimensional {extractor} features: the Frechet "
                    f"distance's covariances are singular (rank below {n}), so it is "
                    f"biased and may be undefined (more than {dims} seeds avoid it)"
                )
        ev = e.evaluation
        if (
            e.search.budgets
            and ev.latency
            and ev.bootstrap
            and ev.latency_repeats < MIN_TIMING_REPEATS
        ):
            lines.append(
                f"{suite.file}: experiment {e.name!r}: field "
                f"'evaluation.latency_repeats': {ev.latency_repeats} timing repeats: "
                f"verdicts at measured speed resample them and are inconclusive "
                f"below {MIN_TIMING_REPEATS}"
            )
    return lines


def _check_tracking(suite: Suite) -> None:
    """The experiment name MLflow will take, checked here rather than after all the work."""
    name = suite.tracking.experiment
    if name is not None and not 0 < len(name) <= EXPERIMENT_NAME_MAX:
        raise SuiteError(
            f"{suite.file}: field 'tracking.experiment': "
            + (
                f"{short(name)} is longer than {EXPERIMENT_NAME_MAX} characters (MLflow's limit)"
                if name
                else "empty"
            )
        )


def _check_regression(suite: Suite) -> None:
    """Tolerances name metrics that exist (a protocol or a kind)."""
    from repro.metrics.protocols import METRICS

    known = [*DEFAULT_TOLERANCES, *(m for m in METRICS if m != "latency")]
    for key in suite.regression.metrics:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
            raise SuiteError(
                f"{suite.file}: field 'regression.metrics.{key}': unknown metric "
                f"{short(key)}; {hint}"
            )


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def plain_name_problem(name: str, limit: int) -> str | None:
    """Why ``name`` cannot be one folder inside its parent (a suite name, a run id), or None:
    a path, an empty or dot name would write outside ``results/<suite>/``."""
    if len(name) > limit:
        return f"{short(name)} is longer than {limit} characters"
    if not _PLAIN_NAME.fullmatch(name):
        return (
            f"{short(name)} is not a plain folder name (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit)"
        )
    return None


def folder_clash(names: list[str], what: str) -> str | None:
    """Why ``names`` cannot each have their own folder (two names with one :func:`slug`, or a
    name without one), or None: a shared folder would reuse one's work for the other."""
    seen: dict[str, str] = {}
    for name in names:
        folder = slug(name)
        if not folder:
            return f"{what}: {short(name)} has no letter or digit to name its folder"
        if folder in seen:
            first = seen[folder]
            return (
                f"two {what} are named {short(name)}"
                if first == name
                else f"{what} {short(first)} and {short(name)} share the folder name {folder!r}"
            )
        seen[folder] = name
    return None


def _fail(suite: Suite, experiment: Experiment, where: str, message: str) -> SuiteError:
    return SuiteError(f"{suite.file}: experiment {experiment.name!r}: field '{where}': {message}")


def _choice(value: str, known, suite, experiment, where) -> None:
    if value not in known:
        close = difflib.get_close_matches(value, list(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
        raise _fail(suite, experiment, where, f"unknown value {short(value)}; {hint}")


def _check_fitness(suite: Suite, e: Experiment) -> None:
    """A known fitness; rFID only on at least twice as many search seeds as the extractor's
    feature dimensions: below that the covariances are singular or barely estimated and
    rFID is mostly finite-sample bias, so candidates would be ranked by noise."""
    from repro.metrics.protocols import FEATURE_DIMS, SEARCH_FITNESSES
    from repro.sampling.samples import parse_seeds

    s = e.search
    _choice(s.fitness, SEARCH_FITNESSES, suite, e, "search.fitness")
    if s.fitness != "rfid" or not (s.budgets and s.methods):
        return
    n, dims = len(parse_seeds(s.seeds)), FEATURE_DIMS[s.extractor]
    if n < 2 * dims:
        raise _fail(
            suite,
            e,
            "search.fitness",
            f"rfid on {n} search seeds of {dims}-dimensional "
            f"{s.extractor} features is singular or mostly finite-sample bias (it "
            f"needs at least {2 * dims} seeds); set 'kid' or more search.seeds",
        )


def _check_experiment(suite: Suite, e: Experiment) -> list[RowPlan]:
    """Every check of one experiment, cheapest first, and its row plan."""
    from repro import models

    _choice(e.model, models.model_ids(), suite, e, "model")
    spec = models.get(e.model)
    _check_names(suite, e, spec)
    calls = _check_sampler(suite, e, spec)
    _check_bounds(suite, e, spec)
    _check_cost_table(suite, e)
    _check_reachable(suite, e, calls)
    plan = [RowPlan("teacher", "teacher", "teacher")]
    plan += [
        RowPlan(
            searched_name(m, b, seed, e.search.repeats),
            "searched",
            METHODS[m].result_name,
            b,
            seed=seed,
        )
        for b in e.search.budgets
        for m in e.search.methods
        for seed in e.search.search_seeds
    ]
    plan += _baseline_rows(suite, e, spec, calls)
    _check_plan(suite, e, plan)
    return plan


def _check_names(suite: Suite, e: Experiment, spec) -> None:
    """Prompts, labels, seed sets, search methods, extractors, metrics and references."""
    from repro.metrics.protocols import EXTRACTORS, METRICS, NEEDS_REFERENCE, REFERENCES, is_path
    from repro.sampling.samples import parse_seeds

    _check_prompts(suite, e, spec)
    _check_labels(suite, e, spec)
    for where, text in (("search.seeds", e.search.seeds), ("evaluation.seeds", e.evaluation.seeds)):
        try:
            parse_seeds(text)
        except ValueError as error:
            raise _fail(suite, e, where, str(error)) from None
    _check_seed_sets(suite, e)
    for method in e.search.methods:
        _choice(method, METHODS, suite, e, "search.methods")
    _choice(e.search.extractor, EXTRACTORS, suite, e, "search.extractor")
    _check_fitness(suite, e)
    for metric in e.evaluation.metrics:
        _choice(metric, [m for m in METRICS if m != "latency"], suite, e, "evaluation.metrics")
    if any(m.partition(":")[0] in NEEDS_REFERENCE for m in e.evaluation.metrics):
        if e.evaluation.reference is None:
            raise _fail(
                suite,
                e,
                "evaluation.reference",
                f"fid metrics need a reference (known: {', '.join(REFERENCES)})",
            )
        if not is_path(e.evaluation.reference):  # a path is checked before a run
            _choice(e.evaluation.reference, REFERENCES, suite, e, "evaluation.reference")


def _check_sampler(suite: Suite, e: Experiment, spec) -> int:
    """The sampler, the step-wise grid and the step count; the UNet calls they make."""
    from repro import models

    try:
        scheduler, _ = models.scheduler_setting(spec, e.sampler)
    except (ValueError, AttributeError) as error:
        field_name = "spacing" if "spacing" in str(error) else "scheduler"
        raise _fail(suite, e, field_name, str(error)) from None
    _choice(e.search.stepwise_grid, STEPWISE_GRIDS, suite, e, "search.stepwise_grid")
    on_training_grid = e.search.stepwise_grid == "training" and any(
        METHODS[m].training_grid for m in e.search.methods
    )
    if on_training_grid and scheduler != "DDIMScheduler":
        raise _fail(
            suite,
            e,
            "search.stepwise_grid",
            "'training' needs a DDIM sampler (null "
            f"steps chain exactly only there); {scheduler} samples this "
            "experiment: set 'teacher'",
        )
    if on_training_grid:
        try:
            models.sampler_calls(spec, training_steps(e), e.sampler)
        except ValueError as error:
            raise _fail(
                suite, e, "search.stepwise_grid", f"'training': {error}; set 'teacher'"
            ) from None
    try:
        calls = models.sampler_calls(spec, e.steps, e.sampler)
    except ValueError as error:  # e.g. more steps than the training timesteps
        raise _fail(suite, e, "steps", str(error)) from None
    return calls


def _check_bounds(suite: Suite, e: Experiment, spec) -> None:
    """Branches of the model (the schema bounds the other numbers)."""
    branches = e.search.branches or tuple(range(spec.num_branches))
    for where, branch in (
        *(("search.branches", b) for b in branches),
        *((f"baselines[{i}].branch", x.branch) for i, x in enumerate(e.baselines)),
    ):
        if not 0 <= branch < spec.num_branches:
            raise _fail(
                suite,
                e,
                where,
                f"branch {branch} outside 0..{spec.num_branches - 1} for {e.model!r}",
            )


def _check_reachable(suite: Suite, e: Experiment, calls: int) -> None:
    """Each search budget reachable in each method's space, whatever the costs."""
    from repro.core.budget import Budget, BudgetError
    from repro.core.schedule import CostTable

    try:
        space = segment_space(e, calls)
    except BudgetError as error:
        raise _fail(suite, e, "search.seg_lens", str(error)) from None
    try:
        for target in e.search.budgets:
            budget = Budget(target, CostTable.bounds(), e.search.tol)
            for method in map(METHODS.get, e.search.methods):
                on_training = method.training_grid and e.search.stepwise_grid == "training"
                method.reachable(space, budget, training_steps(e) if on_training else calls, calls)
    except BudgetError as error:
        raise _fail(suite, e, "search.budgets", str(error)) from None


def _baseline_rows(suite: Suite, e: Experiment, spec, calls: int) -> list[RowPlan]:
    """Each baseline entry checked by its technique, and its rows: one per fixed knob, else
    one per search budget (a given schedule: one row)."""
    plan: list[RowPlan] = []
    setting = techniques.Setting(spec, e.steps, calls, e.sampler, tuple(e.search.budgets))
    for index, baseline in enumerate(e.baselines):
        where = f"baselines[{index}]"
        _choice(baseline.technique, techniques.TECHNIQUES, suite, e, f"{where}.technique")
        technique = techniques.get(baseline.technique)
        _check_technique_fields(suite, e, baseline, where)
        knobs = getattr(baseline, technique.knob) if technique.knob else ()
        out_of_range = technique.knob_problem(knobs, e.steps, calls)
        if out_of_range:
            raise _fail(suite, e, f"{where}.{technique.knob}", out_of_range)
        knobs = knobs or technique.default_knobs(baseline)
        try:
            technique.check(baseline, setting)
        except techniques.TechniqueError as error:
            raise _fail(
                suite, e, f"{where}.{error.field}" if error.field else where, str(error)
            ) from None
        if technique.knob is None:
            plan.append(RowPlan(baseline.name, "baseline", technique.name, None, baseline))
            continue
        for knob in knobs:
            plan.append(
                RowPlan(
                    baseline.name or technique.row_name(baseline, knob),
                    "baseline",
                    technique.name,
                    None,
                    baseline,
                    knob,
                )
            )
        if not knobs:
            plan += [
                RowPlan(
                    f"{baseline.name or technique.label(baseline)} @{b:g}x",
                    "baseline",
                    technique.name,
                    b,
                    baseline,
                )
                for b in e.search.budgets
            ]
    return plan


def _check_plan(suite: Suite, e: Experiment, plan: list[RowPlan]) -> None:
    """Row names (length, folder clashes), published rows and primary comparisons."""
    row_names = [row.name for row in plan]
    for row in plan:
        if len(row.name) > ROW_NAME_MAX:
            where = f"baselines[{e.baselines.index(row.baseline)}].name" if row.baseline else "name"
            raise _fail(
                suite, e, where, f"row {short(row.name)} is longer than {ROW_NAME_MAX} characters"
            )
    clash = folder_clash(row_names, "rows")
    if clash:
        raise _fail(suite, e, "baselines", f"{clash}; give one a 'name'")
    for index, published in enumerate(e.published):
        _choice(published.row, row_names, suite, e, f"published[{index}].row")
    _check_primary(suite, e)


def _check_primary(suite: Suite, e: Experiment) -> None:
    """Primary comparisons name this experiment's search methods, families, budgets, judged
    metrics and a speed, and need verdicts (``evaluation.bootstrap`` > 0)."""
    from repro.results.verdicts import SPEEDS, judged

    if e.evaluation.primary and not e.evaluation.bootstrap:
        raise _fail(
            suite,
            e,
            "evaluation.primary",
            "needs evaluation.bootstrap > 0 (no verdicts are made without resamples)",
        )
    families = [
        *e.search.methods,
        *(technique_label(b) for b in e.baselines if techniques.get(b.technique).knob is not None),
    ]
    for index, primary in enumerate(e.evaluation.primary or ()):
        where = f"evaluation.primary[{index}]"
        _choice(primary.method, e.search.methods, suite, e, f"{where}.method")
        _choice(
            primary.against,
            [f for f in families if f != primary.method],
            suite,
            e,
            f"{where}.against",
        )
        if primary.budget is not None and primary.budget not in e.search.budgets:
            raise _fail(
                suite,
                e,
                f"{where}.budget",
                f"{primary.budget:g} is not one of search.budgets {list(e.search.budgets)}",
            )
        if primary.metric is not None:
            _choice(primary.metric, judged(e.evaluation.metrics), suite, e, f"{where}.metric")
        _choice(primary.speed, SPEEDS, suite, e, f"{where}.speed")


def _check_prompts(suite: Suite, e: Experiment, spec) -> None:
    """Text-conditioned models need prompts, others must not have them; clip needs them.
    Pure: the prompts file itself is read when a run starts."""
    from repro.sampling.prompts import FORMATS

    text = spec.conditioning == "text"
    if text and e.prompts is None:
        raise _fail(
            suite,
            e,
            "prompts",
            f"model {e.model!r} is text-conditioned: give "
            "prompts: {file: PATH, format: auto|coco|parti|lines, limit: N}",
        )
    if not text and e.prompts is not None:
        raise _fail(
            suite,
            e,
            "prompts",
            f"model {e.model!r} is not text-conditioned "
            f"(conditioning: {spec.conditioning}); prompts do not apply",
        )
    if e.prompts is not None:
        _choice(e.prompts.format, FORMATS, suite, e, "prompts.format")
    for metric in e.evaluation.metrics:
        if metric.startswith("clip:") and e.prompts is None:
            raise _fail(
                suite,
                e,
                "evaluation.metrics",
                f"{metric} scores images against "
                "their prompts; it needs a text-conditioned model with 'prompts'",
            )


def _check_labels(suite: Suite, e: Experiment, spec) -> None:
    """Labels pick classes of a class-conditional model (checked here, not mid-run)."""
    if e.labels is None:
        return
    if spec.num_classes is None:
        raise _fail(
            suite,
            e,
            "labels",
            f"model {e.model!r} is not class-conditional "
            f"(conditioning: {spec.conditioning}); labels do not apply",
        )
    bad = [label for label in e.labels if not 0 <= label < spec.num_classes]
    if bad:
        raise _fail(
            suite, e, "labels", f"{bad[0]} outside 0..{spec.num_classes - 1} for {e.model!r}"
        )


def _check_seed_sets(suite: Suite, e: Experiment) -> None:
    """Search repeats score on fitness seeds that no evaluation image shares (a schedule
    chosen on the images it is judged on would look better than it is)."""
    from repro.sampling.samples import parse_seeds

    if not e.search.budgets:
        return
    evaluation = set(parse_seeds(e.evaluation.seeds))
    for seed in e.search.search_seeds:
        shared = evaluation.intersection(e.search.fitness_seeds(seed))
        if shared:
            raise _fail(
                suite,
                e,
                "search.seeds",
                f"the fitness seeds of search seed {seed} "
                f"(repeat {seed - e.search.seed + 1} of {e.search.repeats}: each "
                f"repeat shifts them past the last) share {len(shared)} seeds with "
                f"evaluation.seeds, e.g. {min(shared)}",
            )


def _check_cost_table(suite: Suite, e: Experiment) -> None:
    """A cost table file is read as the run will read it (relative to the working
    directory), before any work."""
    from repro.core.schedule import CostTable, ScheduleError

    if e.cost_table not in COST_TABLES:
        try:
            CostTable.load(e.cost_table)
        except ScheduleError as error:
            raise _fail(suite, e, "cost_table", str(error)) from None


def _check_technique_fields(
    suite: Suite,
    e: Experiment,
    baseline: Baseline,
    where: str,
) -> None:
    """Optional fields (``center``, ``power``, ``scheduler``, ``options``) only where the
    technique takes them, and present where it needs them: DeepCache's non-uniform samplers
    have no default centre or power."""
    technique = techniques.get(baseline.technique)
    for name in OPTIONAL_FIELDS:
        given = getattr(baseline, name) is not None
        if name in technique.required and not given:
            raise _fail(
                suite,
                e,
                f"{where}.{name}",
                f"{baseline.technique} needs '{name}': "
                "DeepCache sets it per model, state the value used",
            )
        if given and name not in technique.fields:
            raise _fail(
                suite,
                e,
                f"{where}.{name}",
                f"'{name}' applies to "
                f"{' and '.join(techniques.takers(name))} only, not "
                f"{baseline.technique}",
            )


# Baseline fields that only some techniques take (Technique.fields)
OPTIONAL_FIELDS = ("center", "power", "scheduler", "options")
