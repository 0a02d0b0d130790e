"""A baseline technique and a search method added from outside the package: one class or
function and one register call, and suites, the planner, the runner's search dispatch and
the CLI take them, with no name of theirs anywhere in repro/."""

import pytest

from repro import search, techniques
from repro.cli.main import build_parser
from repro.config import suite
from repro.core.schedule import CostTable, Schedule
from repro.search.methods import SearchMethod, random_search
from repro.search.space import SegmentSpace
from repro.techniques import Resolved, Technique

SUITE = "name: t\nversion: 1\nmodel: digits-ddpm\nsteps: 20\n"


class EveryOther(Technique):
    """Full steps at every k-th call (k: the ``keep`` field), null between."""

    name = "toy-every-other"
    knob = "keep"
    knob_symbol = "k"

    @staticmethod
    def schedule(calls: int, k: int) -> Schedule:
        return Schedule.parse(" ".join("F" if i % k == 0 else "N" for i in range(calls)))

    def at_knob(self, baseline, knob, steps, calls, calls_at):
        return Resolved(f"every {knob}", self.schedule(calls, knob))

    def at_budget(self, baseline, budget, steps, calls, calls_at):
        k = next(
            k
            for k in range(1, calls + 1)
            if budget.speedup(self.schedule(calls, k)) >= budget.target
        )
        return Resolved(f"every {k}", self.schedule(calls, k))


@pytest.fixture
def toy_technique():
    technique = techniques.register(EveryOther())
    yield technique
    del techniques.TECHNIQUES[technique.name]


@pytest.fixture
def toy_method():
    calls = []

    def run(space, *, evolution, generations, stepwise_steps, **common):
        calls.append(space)
        return random_search(space, **common)

    method = search.register(SearchMethod("toy", "toy-random", run))
    yield calls
    del search.METHODS[method.name]


def test_a_technique_from_outside_is_validated_planned_and_resolved(tmp_path, toy_technique):
    path = tmp_path / "s.yaml"
    path.write_text(
        SUITE + "search: {budgets: [2]}\nbaselines:\n"
        "  - {technique: toy-every-other, keep: [4]}\n"
        "  - {technique: toy-every-other}\n"
    )
    (plan,) = suite.check(suite.load(path)).values()
    rows = {row.name: row for row in plan if row.kind == "baseline"}
    assert set(rows) == {"toy-every-other 4", "toy-every-other @2x"}
    table = CostTable({}, "unit")
    fixed = techniques.plan_schedule(rows["toy-every-other 4"], 20, lambda k: k, table, 0.1)
    assert fixed == Resolved("every 4", EveryOther.schedule(20, 4))
    at_budget = techniques.plan_schedule(rows["toy-every-other @2x"], 20, lambda k: k, table, 0.1)
    assert at_budget == Resolved("every 2", EveryOther.schedule(20, 2))
    path.write_text(SUITE + "baselines: [{technique: toy-every-other, keep: [30]}]\n")
    with pytest.raises(suite.SuiteError, match=r"field 'baselines\[0\]\.keep': 30 outside 1\.\.20"):
        suite.check(suite.load(path))


def test_an_unregistered_technique_is_refused_with_the_registered_ones(tmp_path, toy_technique):
    path = tmp_path / "s.yaml"
    path.write_text(SUITE + "baselines: [{technique: toy-every-othr}]\n")
    with pytest.raises(suite.SuiteError, match="did you mean 'toy-every-other'"):
        suite.check(suite.load(path))


def test_a_search_method_from_outside_is_planned_dispatched_and_offered(tmp_path, toy_method):
    path = tmp_path / "s.yaml"
    path.write_text(SUITE + "search: {budgets: [2], methods: [segment, toy]}\n")
    (plan,) = suite.check(suite.load(path)).values()
    assert [r.method for r in plan if r.kind == "searched"] == ["segment-evolution", "toy-random"]
    space = SegmentSpace.of(20, [0])
    result = search.run_method(
        "toy-random",
        space,
        fitness=lambda s: s.count("F"),
        budget=search.Budget(2.0, CostTable({0: 0.5}, "toy")),
        n_eval=5,
    )
    assert toy_method == [space] and len(result.records) == 5
    args = build_parser().parse_args(["search", "--method", "toy", "--budget", "2"])
    assert args.method == "toy"
    with pytest.raises(ValueError, match="already registered"):
        search.register(SearchMethod("toy", "toy-random-2", lambda *a, **k: None))
