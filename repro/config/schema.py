"""The suite schema: every field of a suite as frozen dataclasses (pydantic checks types and
refuses unknown keys), with its default; the one source of a suite's defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
)

from repro.infra.errors import UserError
from repro.search.loop import DEFAULT_EVOLUTION, Evolution

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN guidance: refused


STEPWISE_GRIDS = ("training", "teacher")
LATENCY_BATCH_MAX = 4096


PUBLISHED_KEYS = ("speedup", "fid", "rfid", "clip", "acc")


class SuiteError(UserError, ValueError):
    """A suite that cannot run; the message names the file and the field."""


@dataclass(frozen=True)
class Search:
    """Search settings, the same for every method of the experiment; ``fitness`` is the
    candidates' distance to the teacher on ``seeds`` (smaller than the evaluation's): rFID
    (the paper's; needs at least twice as many seeds as the extractor has feature
    dimensions) or KID (``kid``: unbiased, defined at small n). Evolution: AutoDiffusion's
    defaults."""

    __pydantic_config__ = _STRICT
    methods: tuple[str, ...] = ("segment", "stepwise", "random")
    budgets: tuple[float, ...] = ()
    n_eval: PositiveInt = 40
    population: PositiveInt = DEFAULT_EVOLUTION.population
    parents: PositiveInt = DEFAULT_EVOLUTION.parents
    mutations: NonNegativeInt = DEFAULT_EVOLUTION.mutations
    crossovers: NonNegativeInt = DEFAULT_EVOLUTION.crossovers
    generations: PositiveInt | None = None  # absent: until n_eval schedules are scored
    seed: int = 0
    # independent searches per method and budget: search seeds seed, seed+1, ..., each
    # scoring on its own fitness seeds (:meth:`fitness_seeds`)
    repeats: PositiveInt = 1
    seeds: str = "0:128"  # the first repeat's fitness seeds
    seed_uniform: bool = True  # start every method from its uniform schedules in the window
    branches: tuple[int, ...] | None = None  # default: every branch of the model
    seg_lens: tuple[int, ...] | None = None  # default: every length up to max_seg_len
    max_seg_len: PositiveInt = 10
    # the step-wise search's grid: every training timestep (AutoDiffusion; DDIM samplers
    # only, where null steps chain exactly) or the teacher's sampler grid
    stepwise_grid: str = "training"
    tol: NonNegativeFloat = 0.1
    extractor: str = "digits-cnn"
    fitness: str = "rfid"

    @property
    def search_seeds(self) -> range:
        return range(self.seed, self.seed + self.repeats)

    def fitness_seeds(self, seed: int) -> list[int]:
        """The fitness seeds of the repeat with search seed ``seed``: ``seeds`` shifted past
        every earlier repeat's, so repeats are independent samples of the whole search
        (fitness noise included) and share no image."""
        from repro.sampling.samples import parse_seeds

        first = parse_seeds(self.seeds)
        return [s + (seed - self.seed) * (max(first) - min(first) + 1) for s in first]

    @property
    def evolution(self) -> Evolution:
        return Evolution(self.population, self.parents, self.mutations, self.crossovers)


@dataclass(frozen=True)
class Baseline:
    """A closed-form technique: at each search budget (no knob given), at fixed knobs
    (DeepCache ``intervals``, fewer-steps ``keep``: full steps kept on the sampler's grid,
    the rest null; sampler-steps ``steps``: the sampler itself run at that many steps), or a
    given ``schedule`` text. DeepCache's non-uniform variants take the ``center`` (a step
    index; centred variant only) and ``power`` its code was run with: no defaults.
    sampler-steps may name another diffusers ``scheduler`` (a better solver at fewer steps,
    e.g. ``DPMSolverMultistepScheduler``) on the experiment's noise schedule and spacing.
    diffusers' caches (``first-block-cache``, ``magcache``, ...) sweep ``settings`` (their
    knob: a threshold, an interval; default: the one documented) with other fields of
    their diffusers config in ``options``."""

    __pydantic_config__ = _STRICT
    technique: str
    branch: int = 0
    center: int | None = None
    power: float | None = None
    scheduler: str | None = None
    intervals: tuple[int, ...] = ()
    keep: tuple[int, ...] = ()
    steps: tuple[int, ...] = ()
    settings: tuple[float, ...] = ()
    options: dict[str, Any] | None = None
    schedule: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class Primary:
    """One primary comparison (Holm-adjusted across the run; docs/comparisons.md): search
    ``method`` (a ``search.methods`` name) against ``against`` (a baseline technique as the
    verdict table names it, or another search method) at ``budget`` (None: each), on
    ``metric`` (None: the first ``fid:`` protocol, else the first judged one) at
    ``speed`` (predicted or measured)."""

    __pydantic_config__ = _STRICT
    method: str
    against: str
    budget: float | None = None
    metric: str | None = None
    speed: str = "predicted"


@dataclass(frozen=True)
class Evaluation:
    """The final protocol: metrics on ``seeds``, latency on ``latency_batch``."""

    __pydantic_config__ = _STRICT
    seeds: str = "10000:10512"
    metrics: Annotated[tuple[str, ...], Field(min_length=1)] = ("rfid:digits-cnn",)
    reference: str | None = None
    batch_size: PositiveInt = 64
    latency: bool = True
    latency_batch: Annotated[int, Field(gt=0, le=LATENCY_BATCH_MAX)] = 64  # latents timed at once
    latency_repeats: PositiveInt = 5  # interleaved; verdicts at measured speed need 5+
    grid: NonNegativeInt = 64
    # resamples of the bootstrap intervals and verdicts at equal speed (0: none)
    bootstrap: NonNegativeInt = 200
    # the primary comparisons (None: each search method at each budget against each
    # baseline family, first FID protocol, predicted speed; []: none, all exploratory)
    primary: tuple[Primary, ...] | None = None


@dataclass(frozen=True)
class Published:
    """Numbers a paper reports for one row of this suite, shown beside the measured ones."""

    __pydantic_config__ = _STRICT
    row: str
    source: str
    speedup: float | None = None
    fid: float | None = None
    rfid: float | None = None
    clip: float | None = None
    acc: float | None = None

    def values(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in PUBLISHED_KEYS if getattr(self, k) is not None}


@dataclass(frozen=True)
class Prompts:
    """The prompts of a text-conditioned experiment: ``file`` is an MS-COCO captions JSON
    (first caption per image, ascending image id), PartiPrompts' TSV (``Prompt`` column) or
    one prompt per line; ``format`` auto|coco|parti|lines; the first ``limit`` prompts.

    A relative ``file`` is relative to the working directory of ``repro run``. Prompts cycle
    over a seed list like labels: the i-th seed takes prompt i mod n. ``check`` does not read
    the file (a suite validates without its data); ``repro run`` reads it before anything is
    written and stops with the file named when it is missing or unreadable."""

    __pydantic_config__ = _STRICT
    file: str
    format: str = "auto"
    limit: PositiveInt | None = None


@dataclass(frozen=True)
class Experiment:
    """One model and sampler setting: its teacher, searches, baselines and evaluation."""

    __pydantic_config__ = _STRICT
    name: str
    model: str
    steps: PositiveInt
    weights: str = "pretrained"
    scheduler: str | None = None  # diffusers class name; default: the model's
    spacing: str | None = None  # timestep spacing (leading, trailing, linspace); the model's
    guidance: float | None = None
    labels: tuple[int, ...] | None = None
    prompts: Prompts | None = None  # text-conditioned models (required for them)
    # default (MAC/FLOP ratios), calibrate (the cost model fitted on the run's own device
    # before the search, as `repro bench --calibrate`) or a `repro bench --json` file
    cost_table: str = "default"
    search: Search = field(default_factory=Search)
    baselines: tuple[Baseline, ...] = ()
    evaluation: Evaluation = field(default_factory=Evaluation)
    published: tuple[Published, ...] = ()

    @property
    def sampler(self):
        """The experiment's :class:`repro.models.Sampler`."""
        from repro.models import Sampler

        return Sampler(self.scheduler, self.spacing)


@dataclass(frozen=True)
class Tracking:
    """MLflow: ``uri`` None means ``MLFLOW_TRACKING_URI`` or MLflow's own default."""

    __pydantic_config__ = _STRICT
    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class Tolerance:
    """How much worse a number may get, in its own units: ``max(abs, rel * |baseline|)``;
    ``repro gate`` fails a change confidently beyond it (see Regression)."""

    __pydantic_config__ = _STRICT
    abs: NonNegativeFloat = 0.0
    rel: NonNegativeFloat = 0.0

    def allowed(self, baseline: float) -> float:
        return max(self.abs, self.rel * abs(baseline))


# Tolerances of a metric kind when the suite states none: a few percent of FID-like
# distances (with a floor where they are near zero: rFID of rows close to the teacher;
# none for KID, whose scale is the extractor's: ~1e4 on digits-cnn, ~1e-3 on Inception),
# one point of accuracy, precision and recall, a fifth of a CLIP point, half a dB of PSNR and
# a hundredth of SSIM and LPIPS.
DEFAULT_TOLERANCES = {
    "fid": Tolerance(0.5, 0.05),
    "rfid": Tolerance(0.5, 0.05),
    "kid": Tolerance(0.0, 0.05),
    "rkid": Tolerance(0.0, 0.05),
    "is": Tolerance(0.0, 0.05),
    "acc": Tolerance(0.01),
    "precision": Tolerance(0.01),
    "recall": Tolerance(0.01),
    "clip": Tolerance(0.2),
    "psnr": Tolerance(0.5),
    "ssim": Tolerance(0.01),
    "lpips": Tolerance(0.01),
}


@dataclass(frozen=True)
class Regression:
    """What ``repro gate`` lets a run lose against its baseline, row by row, and how sure
    it must be before failing. A check (a metric of a row, or its measured speedup) fails
    when its change is worse beyond its tolerance (``metrics``: by protocol, e.g.
    ``fid:digits-cnn``, or by kind, ``fid``; unlisted kinds keep
    :data:`DEFAULT_TOLERANCES`; ``speed``) with ``confidence``: H0 "worse by at most the
    tolerance" rejected by Holm's step-down over the run's checks that have an interval, so
    a run whose every true change is within tolerance fails with probability at most
    1 - ``confidence``. Metrics draw their p-values from ``resamples`` bootstrap resamples
    of the evaluation seeds (per-seed data), speedups from Welch's t over at least five
    timing repeats in each run; metrics without per-seed data are gated on the tolerance
    alone, outside that rate (``repro.reporting.gate``)."""

    __pydantic_config__ = _STRICT
    metrics: dict[str, Tolerance] = field(default_factory=dict)
    speed: Tolerance = field(default_factory=lambda: Tolerance(0.0, 0.05))
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    resamples: PositiveInt = 999

    def tolerance(self, protocol: str) -> Tolerance:
        """The tolerance of a metric protocol: its own entry, else its kind's, else the
        kind's default."""
        kind = protocol.partition(":")[0]
        return self.metrics.get(protocol) or self.metrics.get(kind) or DEFAULT_TOLERANCES[kind]


@dataclass(frozen=True)
class Suite:
    __pydantic_config__ = _STRICT
    name: str
    version: int
    experiments: tuple[Experiment, ...]
    description: str = ""
    tracking: Tracking = field(default_factory=Tracking)
    regression: Regression = field(default_factory=Regression)
    file: str = ""
    digest: str = ""


@dataclass(frozen=True)
class RowPlan:
    """A schedule the runner evaluates, known before running (names are unique per
    experiment; ``published`` entries refer to them)."""

    name: str
    kind: str  # teacher | searched | baseline
    method: str
    budget: float | None = None
    baseline: Baseline | None = None
    knob: float | None = None  # the fixed DeepCache interval, kept steps, sampler steps or
    # a diffusers cache's setting
    seed: int = 0  # searched rows: the search's random seed


# MLflow's experiments.name column is String(256) (its API allows 500; MySQL and PostgreSQL
# stores enforce the column)
EXPERIMENT_NAME_MAX = 256


SUITE_NAME_MAX = 64  # a suite's results folder; its run ids add a time stamp and a suffix


# an experiment's or a row's name: its folder and files (with an atomic write's temporary
# name) stay far below the file systems' 255 bytes, and the MLflow child run name
# ``<experiment>/<row>`` below MLflow's 250 characters
ROW_NAME_MAX = 100


# latents timed at once: far above any timing batch used, far below exhausting memory


MIN_TIMING_REPEATS = 5  # verdicts at measured speed resample the timing repeats


COST_TABLES = ("default", "calibrate")  # cost_table values that name no file
