"""Per-step schedules: which kind of UNet evaluation each sampler step gets.

A schedule is the identity of an accelerated sampler everywhere (results, MLflow, CLI), so
it is a frozen value with one canonical text. Tokens, one per sampler step (one per UNet
call of the pipeline):

- ``F``: full UNet; the features of the deep path are cached.
- ``P<b>``: partial (DeepCache "retrieve"): only the path shallower than branch ``b`` runs,
  the deep feature comes from the cache of the last ``F`` step.
- ``N``: null: no UNet call, the last model output is reused by the scheduler.

``|`` may separate segments and carries no meaning; the canonical text puts one before
every ``F`` that follows a partial or null step (``F P0 P0 | F P0``, ``F F F``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from repro.infra.errors import UserError

FULL = "F"
NULL = "N"
_PARTIAL = re.compile(r"P(\d+)")
COST_TABLE_MAX_BYTES = 1 << 24  # a `repro bench --json` report is far smaller


class ScheduleError(UserError, ValueError):
    """A schedule text or generator argument that cannot describe a valid schedule."""


def partial(branch: int) -> str:
    """The token of a partial step at ``branch``."""
    if branch < 0:
        raise ScheduleError(f"partial step branch must be >= 0, got {branch}")
    return f"P{branch}"


def branch_of(token: str) -> int | None:
    """The cache branch of a partial token; None for ``F`` and ``N``."""
    return int(token[1:]) if token.startswith("P") else None


def _check_token(token: str, position: int) -> str:
    if token in (FULL, NULL):
        return token
    match = _PARTIAL.fullmatch(token)
    if match is None:
        hint = " (branches are non-negative integers)" if token.startswith("P-") else ""
        raise ScheduleError(
            f"bad schedule token {token!r} at step {position}: expected F, P<branch> or N{hint}"
        )
    return partial(int(match.group(1)))  # canonical: P007 -> P7


@dataclass(frozen=True)
class CostTable:
    """Predicted cost of each step in units of one full UNet call (the F kind cost).

    Kind costs: F = 1, N = 0, P<b> = ``partial[b]``. Two overheads make cheap steps dearer
    than their kind cost: ``per_call`` is added to every step that calls the UNet (F, P<b>)
    and ``per_step`` to every step, N included (``scheduler.step`` and the loop's own work).
    Defaults: MAC ratios and no overheads; ``repro bench --calibrate`` fits all of them to
    a device's measured loops (:func:`repro.speed.costs.fit_cost_table`).
    """

    partial: Mapping[int, float]
    source: str = "unspecified"
    per_call: float = 0.0
    per_step: float = 0.0

    @classmethod
    def bounds(cls) -> CostTable:
        """The table of reachability checks made before any cost is known: no partial kind,
        so only F/N schedules are priced (null steps cost 0), whatever the device."""
        return cls({}, source="bounds")

    def kind_cost(self, token: str) -> float:
        if token == FULL:
            return 1.0
        if token == NULL:
            return 0.0
        branch = branch_of(token)
        if branch not in self.partial:
            raise ScheduleError(
                f"cost table ({self.source}) has no entry for branch {branch}; "
                f"known branches: {sorted(self.partial)}"
            )
        return float(self.partial[branch])

    def step_cost(self, token: str) -> float:
        """Kind cost plus the overheads the step pays."""
        call = 0.0 if token == NULL else self.per_call
        return self.kind_cost(token) + call + self.per_step

    def work_speedup(self, work: float, calls: int, reference_calls: int | None = None) -> float:
        """Predicted speedup of a loop of ``calls`` calls that did ``work`` full calls of work
        (a diffusers cache decides inside each call) over ``reference_calls`` full calls:
        every call pays the overheads.

            >>> CostTable({}, per_call=0.1).work_speedup(5.5, 10)   # 11 / (5.5 + 1)
            1.6923076923076923
        """
        overheads = self.per_call + self.per_step
        reference = reference_calls or calls
        return reference * (1 + overheads) / (work + calls * overheads)

    def without_overheads(self) -> CostTable:
        """The kind costs alone (the model before overheads, for comparisons)."""
        return CostTable(self.partial, self.source)

    def chained(self) -> CostTable:
        """The table of F/N schedules run without their null steps (DDIM's null steps chain
        into the next jump, so the step-wise search's schedules on the training grid run as
        their F steps alone): N is free and every call pays the per-step overhead too. P
        steps are costed as before."""
        return CostTable(self.partial, self.source, self.per_call + self.per_step, 0.0)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "partial": {str(b): c for b, c in self.partial.items()},
            "per_call": self.per_call,
            "per_step": self.per_step,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> CostTable:
        """Also reads tables written before the overhead fields (no overheads). All costs
        finite, partial kind costs positive, and every step's cost (kind plus overheads)
        positive where it calls the UNet and not negative where it does not: a free or
        negative step makes predicted speedups infinite or negative. ``per_call`` alone may
        be negative (a device overlapping the next launch with the last call)."""
        table = cls(
            {int(b): float(c) for b, c in data["partial"].items()},
            data.get("source", ""),
            float(data.get("per_call", 0.0)),
            float(data.get("per_step", 0.0)),
        )
        costs = [(f"P{b}", c) for b, c in table.partial.items()]
        costs += [("per_call", table.per_call), ("per_step", table.per_step)]
        for name, value in costs:
            if not math.isfinite(value):
                raise ScheduleError(f"cost of {name} must be finite, got {value}")
        for branch, cost in table.partial.items():
            if cost <= 0:
                raise ScheduleError(f"cost of P{branch} must be finite and positive, got {cost}")
        steps = [(NULL, table.step_cost(NULL), False)]
        steps += [(t, table.step_cost(t), True) for t in (FULL, *map(partial, table.partial))]
        for token, cost, calls in steps:
            if cost < 0 or (calls and cost == 0):
                least = "positive" if calls else "at least 0"
                raise ScheduleError(
                    f"a {token} step must cost {least} (kind cost plus "
                    f"per_call {table.per_call} and per_step {table.per_step}), "
                    f"got {cost}"
                )
        return table

    @classmethod
    def load(cls, path) -> CostTable:
        """A cost table saved by ``repro bench --json`` (its ``cost_table``) or on its own."""
        import json

        from repro.infra.files import read_capped

        try:
            report = json.loads(read_capped(path, COST_TABLE_MAX_BYTES))
            return cls.from_dict(report.get("cost_table", report))
        except ScheduleError as error:
            raise ScheduleError(f"{path}: {error}") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ScheduleError(
                f"{path}: not a cost table or `repro bench --json` report "
                f"({type(error).__name__}: {error})"
            ) from None


@dataclass(frozen=True)
class Schedule:
    """An immutable sequence of step tokens; build with :meth:`parse` or the generators."""

    steps: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.steps:
            raise ScheduleError("a schedule needs at least one step")
        for position, token in enumerate(self.steps, start=1):
            if _check_token(token, position) != token:
                raise ScheduleError(f"non-canonical token {token!r} at step {position}")
        if self.steps[0] != FULL:
            raise ScheduleError(
                f"bad schedule token {self.steps[0]!r} at step 1: the first step must be F "
                "(partial and null steps need an earlier full step)"
            )

    # -- text ---------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str | Schedule, num_branches: int | None = None) -> Schedule:
        """Parse schedule text; with ``num_branches``, also reject branches the model lacks."""
        if isinstance(text, Schedule):
            schedule = text
        else:
            tokens = [t for t in str(text).replace("|", " ").split()]
            schedule = cls(tuple(_check_token(t, i) for i, t in enumerate(tokens, start=1)))
        if num_branches is not None:
            schedule.check_branches(num_branches)
        return schedule

    def __str__(self) -> str:
        parts: list[str] = []
        for i, token in enumerate(self.steps):
            if token == FULL and i > 0 and self.steps[i - 1] != FULL:
                parts.append("|")
            parts.append(token)
        return " ".join(parts)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self):
        return iter(self.steps)

    def check_branches(self, num_branches: int) -> None:
        for position, token in enumerate(self.steps, start=1):
            branch = branch_of(token)
            if branch is not None and branch >= num_branches:
                raise ScheduleError(
                    f"bad schedule token {token!r} at step {position}: the model has "
                    f"branches 0..{num_branches - 1}"
                )

    # -- derived ------------------------------------------------------------------------
    @property
    def branches(self) -> frozenset[int]:
        """Cache branches used by partial steps."""
        return frozenset(b for b in map(branch_of, self.steps) if b is not None)

    def count(self, kind: str) -> int:
        """Number of steps of a kind: ``"F"``, ``"N"`` or ``"P"`` (any branch)."""
        return sum(1 for t in self.steps if t[0] == kind)

    def cost(self, table: CostTable) -> float:
        """Predicted cost in units of one full UNet call, the table's overheads included."""
        return sum(table.step_cost(t) for t in self.steps)

    def speedup(self, table: CostTable, reference_calls: int | None = None) -> float:
        """Predicted speedup over the all-F schedule of ``reference_calls`` UNet calls
        (default: the same length; a sampler run at fewer steps is shorter than its teacher),
        both costed with the table's overheads.

            >>> table = CostTable({0: 0.25})          # P0 costs a quarter of F
            >>> Schedule.parse("F P0 P0 P0").speedup(table)
            2.2857142857142856
            >>> Schedule.full(5).speedup(table, reference_calls=10)   # 5 of the teacher's 10
            2.0
        """
        reference = Schedule.full(reference_calls or len(self.steps))
        return reference.cost(table) / self.cost(table)

    # -- generators ---------------------------------------------------------------------
    @classmethod
    def full(cls, steps: int) -> Schedule:
        _check_steps(steps)
        return cls((FULL,) * steps)

    @classmethod
    def from_full_steps(cls, steps: int, full_at: Iterable[int], fill: str) -> Schedule:
        """F at the given step indices, ``fill`` (a P token or N) everywhere else."""
        _check_steps(steps)
        full_set = set(full_at)
        if not full_set or min(full_set) != 0 or max(full_set) >= steps:
            raise ScheduleError(f"full-step indices must include 0 and lie below {steps}")
        return cls(tuple(FULL if i in full_set else fill for i in range(steps)))

    @classmethod
    def deepcache(
        cls, steps: int, interval: int, branch: int = 0, *, calls: int | None = None
    ) -> Schedule:
        """DeepCache uniform 1:N as DeepCache's own pipelines number steps: F at every call
        index ``i < steps`` with ``i % interval == 0``, P<branch> elsewhere.

        ``calls`` (default ``steps``) is the UNet calls the sampler makes for ``steps``
        steps. PLMS makes one more; DeepCache's SD pipeline (``for i, t in
        enumerate(timesteps): if i in interval_seq`` with ``interval_seq = range(0,
        num_inference_steps, N)``), which made its published SD numbers, gives that extra
        last call a partial step. ``DeepCacheSDHelper`` numbers PLMS differently: see
        :meth:`deepcache_helper`.
        """
        calls = steps if calls is None else calls
        _check_calls(steps, calls)
        if interval < 1:
            raise ScheduleError(f"DeepCache interval must be >= 1, got {interval}")
        return cls.from_full_steps(calls, range(0, steps, interval), partial(branch))

    @classmethod
    def deepcache_helper(
        cls,
        timesteps: Sequence[float],
        interval: int,
        branch: int = 0,
        *,
        calls: int | None = None,
    ) -> Schedule:
        """DeepCache uniform 1:N as ``DeepCacheSDHelper`` runs it on a sampler whose
        ``scheduler.timesteps`` are ``timesteps``: the helper numbers each call by the first
        position of its timestep in that list, relative to the first call's. PLMS repeats
        its second timestep, so from the third call on the helper's count runs one ahead
        of the call index; on samplers without repeats this is :meth:`deepcache`.

        ``calls`` (default all): a pipeline that runs only the last ``calls`` timesteps
        (img2img with strength < 1).
        """
        timesteps = [float(t) for t in timesteps]
        calls = len(timesteps) if calls is None else calls
        _check_calls(calls, len(timesteps))
        if interval < 1:
            raise ScheduleError(f"DeepCache interval must be >= 1, got {interval}")
        numbers = [timesteps.index(t) for t in timesteps[len(timesteps) - calls :]]
        return cls(
            tuple(FULL if (n - numbers[0]) % interval == 0 else partial(branch) for n in numbers)
        )

    @classmethod
    def deepcache_nonuniform(
        cls,
        steps: int,
        interval: int,
        branch: int = 0,
        *,
        center: int,
        power: float,
        calls: int | None = None,
    ) -> Schedule:
        """DeepCache non-uniform 1:N (paper Eq. 7) exactly as DeepCache's code computes it
        (``sample_from_quad_center`` in its SD, SDXL and DDPM samplers): ``ceil(steps / N)``
        full steps meant to be denser around ``center``; the code's complex grid (see
        :func:`_quad_center_indices`) spreads them nearly evenly. There is no default
        centre: DeepCache sets it per model. ``calls`` as in :meth:`deepcache`.
        """
        calls = steps if calls is None else calls
        _check_calls(steps, calls)
        _check_nonuniform(steps, interval, power)
        if not 0 <= center < steps:
            raise ScheduleError(f"non-uniform center must lie in [0, {steps}), got {center}")
        full = (
            set(range(steps))
            if interval == 1  # DeepCache's samplers: N=1 is all-F
            else _quad_center_indices(steps, math.ceil(steps / interval), center, power)
        )
        return cls(tuple(FULL if i in full else partial(branch) for i in range(calls)))

    @classmethod
    def deepcache_quad(
        cls,
        steps: int,
        interval: int,
        branch: int = 0,
        *,
        power: float,
        calls: int | None = None,
    ) -> Schedule:
        """DeepCache's plain (not centred) non-uniform 1:N as its LDM sampler computes it
        (``DiffusionWrapper.set_interval`` / ``sample_from_quad`` in its LDM experiment):
        ``ceil(steps / N)`` points ``int(x^power)`` for x evenly spaced in
        ``[0, steps^(1/power)]``, the last dropped, in one pass at the given power: where
        ``int`` makes points collide (near the start) there are fewer full steps, as there
        were in DeepCache's runs."""
        calls = steps if calls is None else calls
        _check_calls(steps, calls)
        _check_nonuniform(steps, interval, power)
        full = _quad_indices(steps, math.ceil(steps / interval), power)
        return cls(tuple(FULL if i in full else partial(branch) for i in range(calls)))

    @classmethod
    def fewer_steps(cls, steps: int, keep: int) -> Schedule:
        """Keep ``keep`` evenly spaced full steps, null elsewhere.

        For DDIM (eta=0) with ``timestep_spacing="trailing"`` and ``keep`` dividing
        ``steps`` this is exactly DDIM run with ``keep`` steps.
        """
        _check_steps(steps)
        if not 1 <= keep <= steps:
            raise ScheduleError(f"keep must lie in [1, {steps}], got {keep}")
        return cls.from_full_steps(steps, {round(i * steps / keep) for i in range(keep)}, NULL)

    @classmethod
    def from_segments(cls, seg_len: int, genes: Sequence[tuple[int, int]]) -> Schedule:
        """Segment-wise genes: each ``(i, b)`` is F, ``i-1`` x P<b>, ``seg_len-i`` x N."""
        if seg_len < 1:
            raise ScheduleError(f"segment length must be >= 1, got {seg_len}")
        tokens: list[str] = []
        for k, (active, branch) in enumerate(genes):
            if not 1 <= active <= seg_len:
                raise ScheduleError(
                    f"segment {k}: active steps must lie in [1, {seg_len}], got {active}"
                )
            tokens += [FULL] + [partial(branch)] * (active - 1) + [NULL] * (seg_len - active)
        return cls(tuple(tokens))


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise ScheduleError(f"a schedule needs at least one step, got {steps}")


def _check_calls(steps: int, calls: int) -> None:
    _check_steps(steps)
    if calls < steps:
        raise ScheduleError(f"a sampler of {steps} steps makes at least {steps} calls, got {calls}")


def _check_nonuniform(steps: int, interval: int, power: float) -> None:
    if interval < 1:
        raise ScheduleError(f"DeepCache interval must be >= 1, got {interval}")
    if power <= 1:
        raise ScheduleError(f"non-uniform power must be > 1, got {power}")


def _quad_center_indices(steps: int, count: int, center: int, power: float) -> set[int]:
    """DeepCache's ``sample_from_quad_center``, faithfully: ``(-center) ** (1/p)`` is a
    complex number in Python, so the grid is complex, and ``np.int32`` keeps the real
    part of its ``p``-th power. The power drops by 0.02 until ``count`` indices come out;
    where DeepCache gives up (power down to 1) so does this."""
    import numpy as np

    while power > 1:
        grid = np.linspace((-center) ** (1 / power), (steps - center) ** (1 / power), count + 1)
        offsets = np.unique(np.real(grid**power).astype(np.int32))[1:-1]
        indices = [0, *(int(x) + center for x in offsets)]
        if len(indices) == count:
            return set(indices)
        power -= 0.02
    raise ScheduleError(
        f"DeepCache non-uniform: no power > 1 places {count} full steps "
        f"among {steps} around center {center}"
    )


def _quad_indices(steps: int, count: int, power: float) -> set[int]:
    """DeepCache's LDM ``sample_from_quad``, faithfully (one pass, no retry)."""
    import numpy as np

    grid = np.linspace(0, steps ** (1 / power), count + 1)
    return {int(i) for i in np.unique((grid**power).astype(np.int32))[:-1]}
