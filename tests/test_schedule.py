import pytest
from hypothesis import given
from hypothesis import strategies as st

from repro.core.schedule import CostTable, Schedule, ScheduleError

tokens = st.one_of(st.just("F"), st.just("N"), st.integers(0, 11).map(lambda b: f"P{b}"))
schedules = st.lists(tokens, min_size=0, max_size=30).map(lambda rest: Schedule(("F", *rest)))


@given(schedules)
def test_text_round_trips_through_canonical_form(schedule):
    text = str(schedule)
    assert Schedule.parse(text) == schedule
    assert Schedule.parse(text.replace("|", " ")) == schedule
    assert len(schedule) == len(text.replace("|", " ").split())


def test_separators_carry_no_meaning_and_canonical_text_marks_segments():
    schedule = Schedule.parse("F P0 P0 F | P0 P0 |F")
    assert str(schedule) == "F P0 P0 | F P0 P0 | F"
    assert schedule == Schedule.deepcache(7, 3, 0)
    assert str(Schedule.parse("F|F F N F")) == "F F F N | F"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("F P0 X N", "'X' at step 3"),
        ("P0 F", "'P0' at step 1"),
        ("N F", "'N' at step 1"),
        ("F P-1", "'P-1' at step 2"),
        ("F Pa", "'Pa' at step 2"),
        ("F f", "'f' at step 2"),
        ("", "at least one step"),
        ("| |", "at least one step"),
    ],
)
def test_bad_text_is_rejected_naming_token_and_position(text, needle):
    with pytest.raises(ScheduleError, match=needle):
        Schedule.parse(text)


def test_branch_beyond_model_is_rejected_with_position():
    Schedule.parse("F P11", num_branches=12)
    with pytest.raises(ScheduleError, match=r"'P12' at step 3: the model has branches 0\.\.11"):
        Schedule.parse("F N P12", num_branches=12)


def test_positions_count_steps_not_separators():
    with pytest.raises(ScheduleError, match="at step 4"):
        Schedule.parse("F N | F Q")


def test_deepcache_uniform_puts_full_steps_on_the_interval():
    schedule = Schedule.deepcache(10, 3, branch=2)
    assert [i for i, t in enumerate(schedule) if t == "F"] == [0, 3, 6, 9]
    assert set(schedule) == {"F", "P2"}


@pytest.mark.parametrize(("steps", "keep"), [(100, 20), (10, 3), (7, 7), (9, 1)])
def test_fewer_steps_keeps_evenly_spaced_full_steps(steps, keep):
    schedule = Schedule.fewer_steps(steps, keep)
    assert schedule.count("F") == keep and schedule.count("N") == steps - keep
    assert schedule.steps[0] == "F"


def test_from_segments_expands_genes():
    schedule = Schedule.from_segments(4, [(1, 0), (3, 2), (4, 5)])
    assert str(schedule) == "F N N N | F P2 P2 N | F P5 P5 P5"
    with pytest.raises(ScheduleError, match="segment 1"):
        Schedule.from_segments(4, [(1, 0), (5, 0)])


def test_cost_and_speedup_from_table():
    table = CostTable({0: 0.1, 2: 0.3}, source="test")
    schedule = Schedule.parse("F P0 P2 N")
    assert schedule.cost(table) == pytest.approx(1.4)
    assert schedule.speedup(table) == pytest.approx(4 / 1.4)
    assert Schedule.full(8).speedup(table) == 1.0
    with pytest.raises(ScheduleError, match="no entry for branch 7"):
        Schedule.parse("F P7").cost(table)
    assert CostTable.from_dict(table.to_dict()) == table


def test_generators_reject_impossible_arguments():
    for make in (
        lambda: Schedule.deepcache(10, 0),
        lambda: Schedule.fewer_steps(10, 11),
        lambda: Schedule.full(0),
        lambda: Schedule.deepcache(10, 2, branch=-1),
    ):
        with pytest.raises(ScheduleError):
            make()


def test_the_documented_examples_hold():
    import doctest

    import repro.core.schedule

    assert doctest.testmod(repro.core.schedule).failed == 0
