"""Suites: declarative YAML experiments loaded into frozen dataclasses.

YAML keys are the dataclass fields (pydantic checks types and refuses unknown keys; errors
name the field with a did-you-mean). ``include: other.yaml`` makes another suite the
defaults, the including file's keys winning (mappings merge, lists replace). A suite with
``experiments:`` runs each entry merged over its own top-level experiment keys; without it,
the top level is the one experiment. Loading is pure data; :func:`check` then resolves what
needs the registry (model ids, schedule lengths, reachable budgets) before any heavy work.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import yaml
from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveInt,
    TypeAdapter,
    ValidationError,
)

from repro import techniques
from repro.infra.errors import UserError
from repro.infra.quoting import short
from repro.search.loop import Evolution
from repro.search.methods import METHODS

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN guidance: refused

STEPWISE_GRIDS = ("training", "teacher")
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
    population: PositiveInt = 50
    parents: PositiveInt = 10
    mutations: NonNegativeInt = 25
    crossovers: NonNegativeInt = 15
    generations: int | None = None
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
    tol: float = 0.1
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
    e.g. ``DPMSolverMultistepScheduler``) on the experiment's noise schedule and spacing."""

    __pydantic_config__ = _STRICT
    technique: str
    branch: int = 0
    center: int | None = None
    power: float | None = None
    scheduler: str | None = None
    intervals: tuple[int, ...] = ()
    keep: tuple[int, ...] = ()
    steps: tuple[int, ...] = ()
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
    latency_batch: PositiveInt = 64
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
    steps: int
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
# one point of accuracy, precision and recall, a fifth of a CLIP point.
DEFAULT_TOLERANCES = {"fid": Tolerance(0.5, 0.05), "rfid": Tolerance(0.5, 0.05),
                      "kid": Tolerance(0.0, 0.05), "rkid": Tolerance(0.0, 0.05),
                      "is": Tolerance(0.0, 0.05), "acc": Tolerance(0.01),
                      "precision": Tolerance(0.01), "recall": Tolerance(0.01),
                      "clip": Tolerance(0.2)}


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
    confidence: float = 0.95
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
    knob: int | None = None  # the fixed DeepCache interval, kept steps or sampler steps
    seed: int = 0  # searched rows: the search's random seed


# -- loading (pure data) ---------------------------------------------------------------
_SUITE_KEYS = {"name", "version", "description", "tracking", "regression", "include",
               "experiments"}
SUITE_MAX_BYTES = 1 << 20  # a suite is a small text file (this also refuses /dev/zero)
SUITE_MAX_NODES = 100_000  # values with every YAML alias expanded (refuses alias bombs)
SUITE_MAX_LIST = 1_000  # entries of any one list (budgets, baselines, experiments, ...)


PACKAGED = Path(__file__).parents[1] / "suites"  # shipped with the package (`suites/` in the repo)


def packaged() -> dict[str, Path]:
    """The suites shipped with the package, by name (the file's stem)."""
    return {path.stem: path for path in sorted(PACKAGED.glob("*.yaml"))}


def find(text: str) -> Path:
    """A suite file, or the name of a packaged suite (``smoke`` is the package's
    ``suites/smoke.yaml``), so ``repro run smoke`` works from any directory. An existing path
    wins over a name."""
    path = Path(text)
    if path.exists():
        return path
    shipped = packaged()
    if text in shipped:
        inside = Path(os.path.relpath(shipped[text]))  # shown relative where it can be
        return shipped[text] if inside.parts[0] == ".." else inside
    if path.suffix or len(path.parts) > 1:
        return path  # a file that is not there: load names it
    raise SuiteError(f"{short(text)}: no such suite file, nor a packaged suite (known: "
                     f"{', '.join(shipped)})")


def load(path: str | Path) -> Suite:
    """Read, include, merge and type-check a suite file."""
    path = Path(path)
    raw = _read_with_includes(path, ())
    experiment_keys = {k: v for k, v in raw.items() if k not in _SUITE_KEYS}
    listed = "experiments" in raw
    entries = raw.get("experiments")
    if not listed:
        model = experiment_keys.get("model")
        entries = [{"name": model if isinstance(model, str) else raw.get("name")}]
    if not isinstance(entries, list) or not entries:
        raise SuiteError(f"{path}: 'experiments' must be a non-empty list of mappings")
    experiments = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SuiteError(f"{path}: experiments[{index}] must be a mapping")
        experiments.append(_merge(experiment_keys, entry))
    data = {k: raw[k] for k in ("name", "version", "description", "tracking") if k in raw}
    data.update(experiments=experiments, file=str(path))
    if "regression" in raw:
        data["regression"] = raw["regression"]
    misused = _misused_bool(data, Suite, [])
    if misused:
        where = _dotted(_as_written(misused, entries if listed else None))
        raise SuiteError(f"{path}: field '{where}': true/false where a number is expected")
    try:
        loaded = TypeAdapter(Suite).validate_python(data)
    except ValidationError as error:
        raise SuiteError(f"{path}: {_describe(error, Suite, entries if listed else None)}"
                         ) from None
    return replace(loaded, digest=settings_digest(loaded))


# not settings of the results: where the file is, the gate's tolerances and where the run
# is logged (a run resumes, and an edited tracking section is logged by the resumed run)
_UNDIGESTED = ("file", "digest", "regression", "tracking")


def settings_digest(suite: Suite) -> str:
    """Digest of the resolved settings: every field after includes, merging and defaults,
    so a run resumes only under the same settings however the YAML spelled them, and a
    changed default starts a new run instead of resuming one made under the old."""
    settings = {k: v for k, v in asdict(suite).items() if k not in _UNDIGESTED}
    for experiment in settings["experiments"]:  # added later: the default leaves digests be
        if experiment["evaluation"]["primary"] is None:
            del experiment["evaluation"]["primary"]
    text = json.dumps(settings, sort_keys=True, allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_with_includes(path: Path, seen: tuple[Path, ...]) -> dict:
    resolved = path.resolve()
    if resolved in seen:
        cycle = " -> ".join(map(str, (*seen, resolved)))
        raise SuiteError(f"{path}: include cycle: {cycle}")
    try:
        raw = yaml.load(_read_text(path), _SuiteLoader)
        _check_size(raw)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = f": {error.problem}" if isinstance(error, _SuiteYAMLError) else ""
        raise SuiteError(f"{path}: not valid YAML{where}{problem}") from None
    except _TooLarge as error:
        raise SuiteError(f"{path}: {error}") from None
    except RecursionError:
        raise SuiteError(f"{path}: nested too deeply") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: a suite is a YAML mapping of fields")
    include = raw.pop("include", None)
    if include is None:
        return raw
    if not isinstance(include, str):
        raise SuiteError(f"{path}: 'include' must be a file path")
    if not (path.parent / include).is_file():
        raise SuiteError(f"{path}: field 'include': {path.parent / include} not found")
    base = _read_with_includes(path.parent / include, (*seen, resolved))
    return _merge(base, raw)


def _read_text(path: Path) -> str:
    """The UTF-8 text of a suite file of at most :data:`SUITE_MAX_BYTES` (a FIFO or a device
    is refused: reading one could hang or never end)."""
    from repro.infra.files import InputFileError, read_capped

    if not path.exists() and not path.is_symlink():
        raise SuiteError(f"{path}: suite file not found")
    if path.is_dir():
        raise SuiteError(f"{path}: is a directory, not a suite file")
    try:
        data = read_capped(path, SUITE_MAX_BYTES)
    except InputFileError as error:
        raise SuiteError(f"{error}; a suite is a small YAML file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SuiteError(f"{path}: not UTF-8 text (byte {error.start})") from None


class _SuiteYAMLError(yaml.MarkedYAMLError):
    """YAML that parses but is refused for a suite (a key given twice)."""


class _SuiteLoader(yaml.SafeLoader):
    """Safe YAML refusing a duplicate key (YAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                continue  # refused by validation, naming the field
            if key in seen:
                raise _SuiteYAMLError(problem=f"key {short(key)} given twice",
                                      problem_mark=key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


class _TooLarge(ValueError):
    """Suite data over a size limit."""


def _check_size(raw: Any) -> None:
    """Refuse data whose expanded size (aliases repeated, long strings weighed by length) is
    over :data:`SUITE_MAX_NODES` or with a list over :data:`SUITE_MAX_LIST`, before merging,
    validation or an error message expands it."""
    sizes: dict[int, int] = {}

    def size(value: Any, where: str) -> int:
        if isinstance(value, str):
            return 1 + len(value) // 100
        if not isinstance(value, (list, dict)):
            return 1
        if id(value) not in sizes:
            if isinstance(value, list) and len(value) > SUITE_MAX_LIST:
                raise _TooLarge(f"'{where}' has {len(value)} entries; at most "
                                f"{SUITE_MAX_LIST}")
            sizes[id(value)] = -1  # in progress: meeting it again is a cycle
            items = value.items() if isinstance(value, dict) else enumerate(value)
            sizes[id(value)] = 1 + sum(size(v, f"{where}.{k}".lstrip(".")) for k, v in items)
        if sizes[id(value)] < 0:
            raise _TooLarge("a YAML alias refers to itself")
        return sizes[id(value)]

    total = size(raw, "")
    if total > SUITE_MAX_NODES:
        raise _TooLarge(f"{total} values with YAML aliases expanded; at most "
                        f"{SUITE_MAX_NODES}")


def _merge(base: Mapping, override: Mapping) -> dict:
    """Deep merge: mappings merge key by key, anything else is replaced by ``override``."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError, root: type, entries: list | None) -> str:
    """One pydantic error as one line: dotted field path, problem, did-you-mean. An unknown
    key comes first (a typo also makes the intended field missing). ``entries``: a listed
    suite's own experiment entries; a key written at the top level (a single experiment, or
    the shared defaults of a listed suite) is named without ``experiments[i].``."""
    rank = {"unexpected_keyword_argument": 0, "missing": 1}
    first = min(error.errors(), key=lambda e: rank.get(e["type"], 2))
    loc = _as_written(list(first["loc"]), entries, first["type"] == "missing")
    where = _dotted(loc)
    if first["type"] == "unexpected_keyword_argument":
        known = _field_names_at(root, list(first["loc"][:-1]))
        if len(loc) == 1:  # a top-level key
            known += [k for k in _SUITE_KEYS if k not in known]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if not close:  # a key of a nested section written a level too high (budgets:)
            nested = _nested_names(root, list(first["loc"][:-1]))
            close = [nested[c] for c in difflib.get_close_matches(str(loc[-1]), nested, n=1)]
        hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}"
        return f"unknown field '{where}'{hint}"
    if first["type"] == "missing":
        return f"missing field '{where}'"
    return f"field '{where}': {first['msg']} (got {short(first.get('input'))})"


def _as_written(loc: list, entries: list | None, missing: bool = False) -> list:
    """``loc`` without ``experiments[i]`` where the key was written at the top level (a
    single experiment, or the shared defaults of a listed suite)."""
    if loc[:1] == ["experiments"] and len(loc) > 2 and (entries is None or (
            not missing and not _written_in(entries[loc[1]], loc[2:]))):
        return loc[2:]
    return loc


def _dotted(loc: list) -> str:
    """``["baselines", 0, "steps"]`` -> ``baselines[0].steps``."""
    where = ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in loc)
    return where.replace(".[", "[")


def _misused_bool(value: Any, hint: Any, loc: list) -> list | None:
    """The location of the first true/false given where the type takes no bool (pydantic
    would read it as 1 or 0, so ``steps: true`` ran one step), or None."""
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if isinstance(value, bool):
        return None if bool in options or Any in options else loc
    cls = next((o for o in options if is_dataclass(o)), None)
    if cls is not None and isinstance(value, dict):
        hints = get_type_hints(cls, include_extras=False)
        items = [(key, hints[key]) for key in value if key in hints]
        return next((found for key, sub in items
                     if (found := _misused_bool(value[key], sub, [*loc, key]))), None)
    sequence = next((o for o in options if get_origin(o) is tuple), None)
    if sequence is not None and isinstance(value, list):
        item = get_args(sequence)[0]
        return next((found for index, entry in enumerate(value)
                     if (found := _misused_bool(entry, item, [*loc, index]))), None)
    mapping = next((o for o in options if get_origin(o) is dict), None)
    if mapping is not None and isinstance(value, dict):
        item = get_args(mapping)[1]
        return next((found for key, entry in value.items()
                     if (found := _misused_bool(entry, item, [*loc, key]))), None)
    return None


def _written_in(data: Any, loc: list) -> bool:
    """Whether the path ``loc`` exists in the raw YAML data ``data``."""
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return False
    return True


def _dataclass_at(cls: type, loc: list) -> type:
    """The dataclass reached by following ``loc`` from ``cls``."""
    for part in loc:
        hints = get_type_hints(cls)
        if isinstance(part, int) or part not in hints:  # a list index or a mapping's key
            continue
        hint = hints[part]
        cls = next((a for a in (hint, *get_args(hint)) if is_dataclass(a)), cls)
    return cls


def _field_names_at(cls: type, loc: list) -> list[str]:
    """Field names of the dataclass reached by following ``loc`` from ``cls``."""
    return [f.name for f in fields(_dataclass_at(cls, loc)) if f.name not in ("file", "digest")]


def _nested_names(cls: type, loc: list) -> dict[str, str]:
    """Fields of the sections (dataclass fields) one level below ``loc``: name -> dotted."""
    cls = _dataclass_at(cls, loc)
    names: dict[str, str] = {}
    for section, hint in get_type_hints(cls).items():
        if is_dataclass(hint):
            for f in fields(hint):
                names.setdefault(f.name, f"{section}.{f.name}")
    return names


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
            raise SuiteError(f"{suite.file}: field 'experiments[{index}].name': "
                             f"{short(e.name)} is longer than {ROW_NAME_MAX} characters")
    _check_tracking(suite)
    _check_regression(suite)
    return {e.name: _check_experiment(suite, e) for e in suite.experiments}


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
        frechet = [m.partition(":")[2] for m in e.evaluation.metrics
                   if m.partition(":")[0] in ("fid", "rfid")]
        n = len(parse_seeds(e.evaluation.seeds))
        for extractor in dict.fromkeys(frechet):
            dims = FEATURE_DIMS.get(extractor, 0)
            if n <= dims:
                lines.append(f"{suite.file}: experiment {e.name!r}: field 'evaluation.seeds': "
                             f"{n} seeds for {dims}-dimensional {extractor} features: the Frechet "
                             f"distance's covariances are singular (rank below {n}), so it is "
                             f"biased and may be undefined (more than {dims} seeds avoid it)")
        ev = e.evaluation
        if e.search.budgets and ev.latency and ev.bootstrap and \
                ev.latency_repeats < MIN_TIMING_REPEATS:
            lines.append(f"{suite.file}: experiment {e.name!r}: field "
                         f"'evaluation.latency_repeats': {ev.latency_repeats} timing repeats: "
                         f"verdicts at measured speed resample them and are inconclusive "
                         f"below {MIN_TIMING_REPEATS}")
    return lines


# MLflow's experiments.name column is String(256) (its API allows 500; MySQL and PostgreSQL
# stores enforce the column)
EXPERIMENT_NAME_MAX = 256


def _check_tracking(suite: Suite) -> None:
    """The experiment name MLflow will take, checked here rather than after all the work."""
    name = suite.tracking.experiment
    if name is not None and not 0 < len(name) <= EXPERIMENT_NAME_MAX:
        raise SuiteError(f"{suite.file}: field 'tracking.experiment': "
                         + (f"{short(name)} is longer than {EXPERIMENT_NAME_MAX} characters "
                            "(MLflow's limit)" if name else "empty"))


def _check_regression(suite: Suite) -> None:
    """Tolerances name metrics that exist (a protocol or a kind); the confidence is a
    probability."""
    from repro.metrics.protocols import METRICS

    known = [*DEFAULT_TOLERANCES, *(m for m in METRICS if m != "latency")]
    for key in suite.regression.metrics:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
            raise SuiteError(f"{suite.file}: field 'regression.metrics.{key}': unknown metric "
                             f"{short(key)}; {hint}")
    if not 0 < suite.regression.confidence < 1:
        raise SuiteError(f"{suite.file}: field 'regression.confidence': must be between 0 "
                         f"and 1, got {suite.regression.confidence}")


SUITE_NAME_MAX = 64  # a suite's results folder; its run ids add a time stamp and a suffix
# an experiment's or a row's name: its folder and files (with an atomic write's temporary
# name) stay far below the file systems' 255 bytes, and the MLflow child run name
# ``<experiment>/<row>`` below MLflow's 250 characters
ROW_NAME_MAX = 100
# latents timed at once: far above any timing batch used, far below exhausting memory
LATENCY_BATCH_MAX = 4096
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def plain_name_problem(name: str, limit: int) -> str | None:
    """Why ``name`` cannot be one folder inside its parent (a suite name, a run id), or None:
    a path, an empty or dot name would write outside ``results/<suite>/``."""
    if len(name) > limit:
        return f"{short(name)} is longer than {limit} characters"
    if not _PLAIN_NAME.fullmatch(name):
        return (f"{short(name)} is not a plain folder name (letters, digits, '.', '_', '-'; "
                "starting with a letter or digit)")
    return None


def slug(name: str) -> str:
    """The folder name of an experiment or a row under a run's ``work/`` and ``grids/``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


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
            return (f"two {what} are named {short(name)}" if first == name else
                    f"{what} {short(first)} and {short(name)} share the folder name {folder!r}")
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
        raise _fail(suite, e, "search.fitness", f"rfid on {n} search seeds of {dims}-dimensional "
                    f"{s.extractor} features is singular or mostly finite-sample bias (it "
                    f"needs at least {2 * dims} seeds); set 'kid' or more search.seeds")


def _check_experiment(suite: Suite, e: Experiment) -> list[RowPlan]:
    from repro import models
    from repro.core.budget import Budget, BudgetError
    from repro.metrics.protocols import EXTRACTORS, METRICS, NEEDS_REFERENCE, REFERENCES, is_path
    from repro.sampling.samples import parse_seeds
    from repro.search.operators import stepwise_feasible

    _choice(e.model, models.model_ids(), suite, e, "model")
    spec = models.get(e.model)
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
            raise _fail(suite, e, "evaluation.reference", "fid metrics need a reference "
                        f"(known: {', '.join(REFERENCES)})")
        if not is_path(e.evaluation.reference):  # a path is checked before a run
            _choice(e.evaluation.reference, REFERENCES, suite, e, "evaluation.reference")
    try:
        scheduler, _ = models.scheduler_setting(spec, e.sampler)
    except (ValueError, AttributeError) as error:
        field_name = "spacing" if "spacing" in str(error) else "scheduler"
        raise _fail(suite, e, field_name, str(error)) from None
    _choice(e.search.stepwise_grid, STEPWISE_GRIDS, suite, e, "search.stepwise_grid")
    if ("stepwise" in e.search.methods and e.search.stepwise_grid == "training"
            and scheduler != "DDIMScheduler"):
        raise _fail(suite, e, "search.stepwise_grid", "'training' needs a DDIM sampler (null "
                    f"steps chain exactly only there); {scheduler} samples this "
                    "experiment: set 'teacher'")
    if "stepwise" in e.search.methods and e.search.stepwise_grid == "training":
        try:
            models.sampler_calls(spec, training_steps(e), e.sampler)
        except ValueError as error:
            raise _fail(suite, e, "search.stepwise_grid", f"'training': {error}; set "
                        "'teacher'") from None
    if e.steps < 1:
        raise _fail(suite, e, "steps", f"must be at least 1, got {e.steps}")
    try:
        calls = models.sampler_calls(spec, e.steps, e.sampler)
    except ValueError as error:  # e.g. more steps than the training timesteps
        raise _fail(suite, e, "steps", str(error)) from None
    branches = e.search.branches or tuple(range(spec.num_branches))
    for where, branch in (*(("search.branches", b) for b in branches),
                          *((f"baselines[{i}].branch", x.branch)
                            for i, x in enumerate(e.baselines))):
        if not 0 <= branch < spec.num_branches:
            raise _fail(suite, e, where, f"branch {branch} outside "
                        f"0..{spec.num_branches - 1} for {e.model!r}")
    if e.evaluation.latency_batch > LATENCY_BATCH_MAX:
        raise _fail(suite, e, "evaluation.latency_batch", f"{e.evaluation.latency_batch} is "
                    f"more than {LATENCY_BATCH_MAX} latents timed at once")
    if e.search.tol < 0:
        raise _fail(suite, e, "search.tol", f"must be at least 0, got {e.search.tol}")
    if e.search.generations is not None and e.search.generations < 1:
        raise _fail(suite, e, "search.generations", "must be at least 1 (or absent: "
                    f"until n_eval schedules are scored), got {e.search.generations}")
    _check_cost_table(suite, e)
    try:
        space = segment_space(e, calls)
    except BudgetError as error:
        raise _fail(suite, e, "search.seg_lens", str(error)) from None
    try:
        for target in e.search.budgets:
            budget = Budget(target, _unit_table(), e.search.tol)
            if "segment" in e.search.methods or "random" in e.search.methods:
                space.check_reachable(budget)
            if "stepwise" in e.search.methods:
                grid = training_steps(e) if e.search.stepwise_grid == "training" else calls
                stepwise_feasible(grid, replace(budget, reference_calls=calls))
    except BudgetError as error:
        raise _fail(suite, e, "search.budgets", str(error)) from None
    plan = [RowPlan("teacher", "teacher", "teacher")]
    plan += [RowPlan(searched_name(m, b, seed, e.search.repeats), "searched",
                     METHODS[m].result_name, b, seed=seed)
             for b in e.search.budgets for m in e.search.methods
             for seed in e.search.search_seeds]
    setting = techniques.Setting(spec, e.steps, calls, e.sampler, tuple(e.search.budgets))
    for index, baseline in enumerate(e.baselines):
        where = f"baselines[{index}]"
        _choice(baseline.technique, techniques.TECHNIQUES, suite, e, f"{where}.technique")
        technique = techniques.get(baseline.technique)
        _check_technique_fields(suite, e, baseline, where)
        knobs = getattr(baseline, technique.knob) if technique.knob else ()
        top, _ = technique.knob_limit(e.steps, calls)
        out_of_range = [k for k in knobs if not 1 <= k <= top]
        if out_of_range:
            raise _fail(suite, e, f"{where}.{technique.knob}",
                        f"{out_of_range[0]} outside 1..{top}")
        try:
            technique.check(baseline, setting)
        except techniques.TechniqueError as error:
            raise _fail(suite, e, f"{where}.{error.field}" if error.field else where,
                        str(error)) from None
        if technique.knob is None:
            plan.append(RowPlan(baseline.name, "baseline", technique.name, None, baseline))
            continue
        for knob in knobs:
            plan.append(RowPlan(baseline.name or technique.row_name(baseline, knob), "baseline",
                                technique.name, None, baseline, knob))
        if not knobs:
            plan += [RowPlan(f"{baseline.name or technique.label(baseline)} @{b:g}x", "baseline",
                             technique.name, b, baseline) for b in e.search.budgets]
    row_names = [row.name for row in plan]
    for row in plan:
        if len(row.name) > ROW_NAME_MAX:
            where = (f"baselines[{e.baselines.index(row.baseline)}].name" if row.baseline
                     else "name")
            raise _fail(suite, e, where, f"row {short(row.name)} is longer than "
                        f"{ROW_NAME_MAX} characters")
    clash = folder_clash(row_names, "rows")
    if clash:
        raise _fail(suite, e, "baselines", f"{clash}; give one a 'name'")
    for index, published in enumerate(e.published):
        _choice(published.row, row_names, suite, e, f"published[{index}].row")
    _check_primary(suite, e)
    return plan


def _check_primary(suite: Suite, e: Experiment) -> None:
    """Primary comparisons name this experiment's search methods, families, budgets, judged
    metrics and a speed, and need verdicts (``evaluation.bootstrap`` > 0)."""
    from repro.results.verdicts import SPEEDS, judged

    if e.evaluation.primary and not e.evaluation.bootstrap:
        raise _fail(suite, e, "evaluation.primary", "needs evaluation.bootstrap > 0 "
                    "(no verdicts are made without resamples)")
    families = [*e.search.methods, *(technique_label(b) for b in e.baselines
                                     if techniques.get(b.technique).knob is not None)]
    for index, primary in enumerate(e.evaluation.primary or ()):
        where = f"evaluation.primary[{index}]"
        _choice(primary.method, e.search.methods, suite, e, f"{where}.method")
        _choice(primary.against, [f for f in families if f != primary.method], suite, e,
                f"{where}.against")
        if primary.budget is not None and primary.budget not in e.search.budgets:
            raise _fail(suite, e, f"{where}.budget", f"{primary.budget:g} is not one of "
                        f"search.budgets {list(e.search.budgets)}")
        if primary.metric is not None:
            _choice(primary.metric, judged(e.evaluation.metrics), suite, e, f"{where}.metric")
        _choice(primary.speed, SPEEDS, suite, e, f"{where}.speed")


def _check_prompts(suite: Suite, e: Experiment, spec) -> None:
    """Text-conditioned models need prompts, others must not have them; clip needs them.
    Pure: the prompts file itself is read when a run starts."""
    from repro.sampling.prompts import FORMATS

    text = spec.conditioning == "text"
    if text and e.prompts is None:
        raise _fail(suite, e, "prompts", f"model {e.model!r} is text-conditioned: give "
                    "prompts: {file: PATH, format: auto|coco|parti|lines, limit: N}")
    if not text and e.prompts is not None:
        raise _fail(suite, e, "prompts", f"model {e.model!r} is not text-conditioned "
                    f"(conditioning: {spec.conditioning}); prompts do not apply")
    if e.prompts is not None:
        _choice(e.prompts.format, FORMATS, suite, e, "prompts.format")
    for metric in e.evaluation.metrics:
        if metric.startswith("clip:") and e.prompts is None:
            raise _fail(suite, e, "evaluation.metrics", f"{metric} scores images against "
                        "their prompts; it needs a text-conditioned model with 'prompts'")


def _check_labels(suite: Suite, e: Experiment, spec) -> None:
    """Labels pick classes of a class-conditional model (checked here, not mid-run)."""
    if e.labels is None:
        return
    if spec.num_classes is None:
        raise _fail(suite, e, "labels", f"model {e.model!r} is not class-conditional "
                    f"(conditioning: {spec.conditioning}); labels do not apply")
    bad = [label for label in e.labels if not 0 <= label < spec.num_classes]
    if bad:
        raise _fail(suite, e, "labels", f"{bad[0]} outside 0..{spec.num_classes - 1} for "
                    f"{e.model!r}")


def segment_space(experiment: Experiment, calls: int):
    """The experiment's segment search space at ``calls`` UNet calls (default: every branch
    of its model, every segment length up to ``max_seg_len``)."""
    from repro import models
    from repro.search.space import SegmentSpace

    s = experiment.search
    branches = s.branches or tuple(range(models.get(experiment.model).num_branches))
    return SegmentSpace.of(calls, branches, s.seg_lens, s.max_seg_len)


MIN_TIMING_REPEATS = 5  # verdicts at measured speed resample the timing repeats


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
            raise _fail(suite, e, "search.seeds", f"the fitness seeds of search seed {seed} "
                        f"(repeat {seed - e.search.seed + 1} of {e.search.repeats}: each "
                        f"repeat shifts them past the last) share {len(shared)} seeds with "
                        f"evaluation.seeds, e.g. {min(shared)}")


COST_TABLES = ("default", "calibrate")  # cost_table values that name no file


def _check_cost_table(suite: Suite, e: Experiment) -> None:
    """A cost table file is read as the run will read it (relative to the working
    directory), before any work."""
    from repro.core.schedule import CostTable, ScheduleError

    if e.cost_table not in COST_TABLES:
        try:
            CostTable.load(e.cost_table)
        except ScheduleError as error:
            raise _fail(suite, e, "cost_table", str(error)) from None


def searched_name(method: str, budget: float, seed: int, repeats: int) -> str:
    """``segment @2x``; with several searches per method and budget, ``... seed 1``."""
    return f"{method} @{budget:g}x" + (f" seed {seed}" if repeats > 1 else "")


def training_steps(e: Experiment) -> int:
    """The model's training timesteps: the step-wise search's grid on ``training``."""
    from repro.core.sampler_calls import training_timesteps
    from repro.models import get, scheduler_setting

    return training_timesteps(scheduler_setting(get(e.model), e.sampler)[1])


def row_sampler(e: Experiment, baseline: Baseline | None):
    """The sampler of a baseline row that runs its own (a sampler-steps row naming a
    scheduler, on the experiment's spacing); None for rows on the experiment's sampler."""
    return None if baseline is None else techniques.get(baseline.technique).sampler(
        baseline, e.spacing)


def technique_label(baseline: Baseline) -> str:
    """A baseline's technique as row names and verdicts show it (its front's name)."""
    return techniques.get(baseline.technique).label(baseline)


def _check_technique_fields(suite: Suite, e: Experiment, baseline: Baseline, where: str,
                            ) -> None:
    """Optional fields (``center``, ``power``, ``scheduler``) only where the technique takes
    them, and present where it needs them: DeepCache's non-uniform samplers have no default
    centre or power."""
    technique = techniques.get(baseline.technique)
    for name in OPTIONAL_FIELDS:
        given = getattr(baseline, name) is not None
        if name in technique.required and not given:
            raise _fail(suite, e, f"{where}.{name}", f"{baseline.technique} needs '{name}': "
                        "DeepCache sets it per model, state the value used")
        if given and name not in technique.fields:
            raise _fail(suite, e, f"{where}.{name}", f"'{name}' applies to "
                        f"{' and '.join(techniques.takers(name))} only, not "
                        f"{baseline.technique}")


# Baseline fields that only some techniques take (Technique.fields)
OPTIONAL_FIELDS = ("center", "power", "scheduler")


def _unit_table():
    """Reachability only needs the cost-independent bounds (null steps cost 0)."""
    from repro.core.schedule import CostTable

    return CostTable({}, source="bounds")
