"""The results.json format as types: :class:`Row` (one evaluated schedule) and
:class:`Results` (one run), with the schema string the runner writes and every reader checks.

The runner builds these objects and writes :meth:`Results.to_json`; every reader goes through
:meth:`Results.of` (``repro.reporting.report.load_results`` reads the file), so a field is
named, typed and given its default here once. pydantic checks the types and refuses keys
this harness does not know: a file from a newer harness is refused in one line rather than
half read. Fields added within version 1 (``per_seed``, ``intervals``, ``cache``, ``command``,
``cost_tables``, ``inputs``, ``computed``) default to None, so every version-1 file still
reads. A change that renames a field or changes its meaning bumps :data:`VERSION` and keeps
reading the older one here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from repro.infra.errors import UserError

NAME = "flexiffusion-repro/results"
VERSION = 1
SCHEMA = f"{NAME}@{VERSION}"
PREFIX = f"{NAME}@"

_FORMAT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=True, populate_by_name=True)


class SchemaError(UserError, ValueError):
    """A results file that does not follow the schema; one line naming the field."""


class Row(BaseModel):
    """One evaluated schedule of one experiment.

    ``kind``: teacher / searched / baseline (a ``repro bench`` loop: ``loop``); ``family``:
    the baseline family whose front a searched row is compared with; ``latency``: median_s,
    seconds (each timing repeat), batch, device, dtype, step_mode; ``metrics``: protocol ->
    value (None: not computed), with ``metric_n`` its seed count and ``intervals`` its
    bootstrap interval; ``grid`` and ``per_seed``: files relative to the run directory;
    ``published``: the paper's numbers for this row, with their ``source``; ``cache``: a
    diffusers cache row's technique, config and ``work`` (its loops' mean work in full
    calls, counted while it sampled: what its predicted speed is made of); ``computed``: what
    the row's loop computes, ``calls`` (model calls made) and ``work`` (their work in full
    calls by the model's MAC/FLOP ratios), with a schedule's ``full`` / ``partial`` /
    ``skipped`` step counts."""

    model_config = _FORMAT
    experiment: str | None
    model: str | None = None
    steps: int | None = None
    sampler: dict[str, Any] | None = None
    guidance: float | None = None
    name: str | None
    kind: str | None
    method: str | None = None
    family: str | None = None
    budget: float | None = None
    schedule: str | None = None
    predicted_speedup: float | None = None
    measured_speedup: float | None = None
    latency: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    metrics: dict[str, float | None] = {}
    metric_n: dict[str, int] | None = None
    grid: str | None = None
    per_seed: str | None = None
    published: dict[str, Any] | None = None
    intervals: dict[str, list[float | None]] | None = None
    cache: dict[str, Any] | None = None
    computed: dict[str, int | float] | None = None

    @classmethod
    def of(cls, data: dict, where: str = "row") -> Row:
        """Parsed JSON read as a row; :class:`SchemaError` names ``where`` and the field."""
        return _validated(cls, data, where)

    @property
    def key(self) -> tuple[str, str]:
        """What pairs a row with its counterpart in another run: experiment and name."""
        return str(self.experiment), str(self.name)

    @property
    def median_s(self) -> float | None:
        return (self.latency or {}).get("median_s")

    @property
    def device(self) -> str | None:
        return (self.latency or {}).get("device")


class Results(BaseModel):
    """One run: its identity (``suite``: name, version, file, digest), times, the command
    that started it, the environment, each experiment's cost table and input digests, the
    rows and the verdict records (:mod:`repro.results.verdicts`)."""

    model_config = _FORMAT
    schema_: str = Field(SCHEMA, alias="schema")  # `schema` is a BaseModel method
    run_id: str | None
    suite: dict[str, Any] | None = None
    started: str | None = None
    finished: str | None = None
    command: str | None = None
    environment: dict[str, Any] | None = None
    cost_tables: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    rows: tuple[Row, ...]
    verdicts: tuple[dict[str, Any], ...] = ()

    @classmethod
    def of(cls, data: Results | dict, where: str = "results") -> Results:
        """``data`` as Results: itself, or parsed JSON read through the schema."""
        if isinstance(data, Results):
            return data
        problem = schema_problem(data.get("schema") if isinstance(data, dict) else None)
        if problem:
            raise SchemaError(f"{where}: {problem}")
        return _validated(cls, data, where)

    def to_json(self) -> dict:
        """The data ``json.dumps`` writes as results.json (Python values, so an infinite
        search score stays ``Infinity`` as before, where pydantic's JSON mode writes null)."""
        return self.model_dump(by_alias=True)

    def of_experiment(self, experiment: str) -> list[Row]:
        return [row for row in self.rows if row.experiment == experiment]

    @property
    def experiments(self) -> list[str]:
        """The experiments of the rows, first-seen order."""
        return list(dict.fromkeys(str(row.experiment) for row in self.rows))


def _validated(model: type[BaseModel], data, where: str):
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise SchemaError(f"{where}: {_first(error)}") from None


def _first(error: ValidationError) -> str:
    """pydantic's first complaint as one line: where (``rows[3].metrics``) and what."""
    first = error.errors()[0]
    where = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]
    ).lstrip(".")
    what = (
        "unknown field (a newer harness's file?)"
        if first["type"] == "extra_forbidden"
        else first["msg"].lower()
    )
    return f"field {where or 'results'}: {what}"


def is_results(data) -> bool:
    """Whether parsed JSON claims to be a results file (of any version)."""
    return isinstance(data, dict) and str(data.get("schema", "")).startswith(PREFIX)


def schema_problem(schema) -> str | None:
    """Why a file with this ``schema`` value cannot be read as results, if so: it is not a
    results file, or a version newer than this harness knows (never misread)."""
    if not (isinstance(schema, str) and schema.startswith(PREFIX)):
        return f"schema {schema!r} is not {PREFIX}N"
    version = schema.removeprefix(PREFIX)
    if not version.isdigit() or not 1 <= int(version) <= VERSION:
        return f"schema {schema} is not one this harness reads ({SCHEMA} and earlier)"
    return None
