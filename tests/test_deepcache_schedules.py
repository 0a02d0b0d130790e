"""DeepCache's schedules as DeepCache's own code computes them.

DeepCache's non-uniform samplers live in modules that no longer import on current diffusers
(``DeepCache.sd.pipeline_stable_diffusion`` needs ``PositionNet``), so the oracle functions
are read from the installed file and run on their own, unchanged.
"""

import ast
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from diffusers import DDIMScheduler, PNDMScheduler

from repro.core.schedule import Schedule, ScheduleError


def deepcache_function(name: str, module: str = "sd/pipeline_stable_diffusion.py"):
    root = Path(importlib.util.find_spec("DeepCache").submodule_search_locations[0])
    tree = ast.parse((root / module).read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace = {"np": np}
    exec(compile(ast.Module([node], type_ignores=[]), str(root / module), "exec"), namespace)
    return namespace[name]


SAMPLE_FROM_QUAD_CENTER = deepcache_function("sample_from_quad_center")
SAMPLE_FROM_QUAD = deepcache_function("sample_from_quad")


def full_steps(schedule: Schedule) -> list[int]:
    return [i for i, token in enumerate(schedule) if token == "F"]


def centred_cases():
    for steps in (20, 50, 100, 250):
        for center in sorted({steps // 5, steps // 2, 3 * steps // 4, steps - 1}):
            for power in (1.2, 1.4):
                for interval in range(2, steps + 1):
                    yield steps, interval, center, power


def test_the_oracle_is_deepcaches_own_function():
    # A negative base to a fractional power is complex in Python: DeepCache keeps the real
    # part; the full steps are not symmetric around the centre.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        indices, power = SAMPLE_FROM_QUAD_CENTER(100, 34, 50, 1.4)
    assert len(indices) == 34 and power == 1.4
    assert full_steps(Schedule.deepcache_nonuniform(100, 3, center=50, power=1.4)) == sorted(
        int(i) for i in indices
    )


@pytest.mark.parametrize("steps", [20, 50, 100, 250])
def test_centred_nonuniform_equals_deepcaches_sample_from_quad_center(steps):
    checked = solved = 0
    for s, interval, center, power in centred_cases():
        if s != steps:
            continue
        count = -(-steps // interval)  # DeepCache's SD/DDPM samplers: ceil(steps / N)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy's ComplexWarning: DeepCache's own cast
            try:
                indices, _ = SAMPLE_FROM_QUAD_CENTER(steps, count, center, pow=power)
            except ValueError:
                indices = None
        checked += 1
        if indices is None:
            with pytest.raises(ScheduleError, match="no power > 1"):
                Schedule.deepcache_nonuniform(steps, interval, center=center, power=power)
            continue
        solved += 1
        schedule = Schedule.deepcache_nonuniform(steps, interval, 3, center=center, power=power)
        assert full_steps(schedule) == sorted({i for i in indices if 0 <= i < steps}), (
            steps,
            interval,
            center,
            power,
        )
        assert set(schedule) <= {"F", "P3"} and len(schedule) == steps
    assert solved > checked // 2  # most intervals have a solution: the equality is exercised


@pytest.mark.parametrize("steps", [20, 50, 100, 250])
def test_plain_nonuniform_is_deepcaches_ldm_sample_from_quad(steps):
    # DeepCache's LDM sampler runs sample_from_quad once at the given power for
    # ceil(steps / N) points; the installed SD copy of the function retries lower powers
    # until no point collides. Where it succeeds at the given power the two agree exactly.
    agreed = 0
    for power in (1.2, 1.4, 1.5):
        for interval in range(2, steps + 1):
            count = -(-steps // interval)
            full = full_steps(Schedule.deepcache_quad(steps, interval, 1, power=power))
            assert 0 in full and len(full) <= count
            try:
                indices, used = SAMPLE_FROM_QUAD(steps, count, pow=power)
            except ValueError:
                continue
            if used == power:
                agreed += 1
                assert full == sorted(int(i) for i in indices), (steps, interval, power)
    assert agreed > 0


def test_the_ldm_variant_drops_colliding_points_like_deepcaches_runs():
    # T=250, N=20 (DeepCache's LDM table): 13 points asked, every one distinct
    assert Schedule.deepcache_quad(250, 20, power=1.5).count("F") == 13
    # where int() collides near the start there are fewer full steps, as in its code
    assert Schedule.deepcache_quad(250, 1, power=1.5).count("F") < 250


def test_interval_one_is_all_full_as_in_deepcaches_samplers():
    assert Schedule.deepcache_nonuniform(20, 1, center=10, power=1.4) == Schedule.full(20)


def test_pipeline_numbering_gives_plms_extra_call_a_partial_step():
    # DeepCache's SD pipeline: F at call i when i in range(0, num_inference_steps, N).
    for interval in (2, 3, 5, 10):
        schedule = Schedule.deepcache(50, interval, 0, calls=51)
        assert full_steps(schedule) == list(range(0, 50, interval))
        assert len(schedule) == 51 and schedule.steps[-1] == "P0"
    assert Schedule.deepcache(50, 5, calls=51) != Schedule.deepcache(51, 5)


def plms_timesteps(steps: int) -> list[int]:
    scheduler = PNDMScheduler(num_train_timesteps=1000, skip_prk_steps=True)
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.tolist()


def test_helper_numbering_on_plms_runs_one_ahead_after_the_repeated_timestep():
    timesteps = plms_timesteps(10)  # 11 calls, the second timestep twice
    schedule = Schedule.deepcache_helper(timesteps, 2, 0)
    # helper numbers: 0 1 1 3 4 5 ... 10 -> F where even
    assert full_steps(schedule) == [0, 4, 6, 8, 10]
    assert schedule != Schedule.deepcache(11, 2, 0)


def test_helper_numbering_without_repeats_is_positional():
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(12)
    for interval in (2, 3, 5):
        assert Schedule.deepcache_helper(scheduler.timesteps, interval, 1) == Schedule.deepcache(
            12, interval, 1
        )


def test_helper_numbering_of_an_img2img_call_starts_at_its_first_call():
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    scheduler.set_timesteps(10)
    assert Schedule.deepcache_helper(scheduler.timesteps, 2, 0, calls=5) == Schedule.deepcache(
        5, 2, 0
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"center": 20, "power": 1.4}, "center must lie in"),
        ({"center": 5, "power": 1.0}, "power must be > 1"),
    ],
)
def test_nonuniform_arguments_are_checked(kwargs, message):
    with pytest.raises(ScheduleError, match=message):
        Schedule.deepcache_nonuniform(20, 2, **kwargs)


def test_calls_below_steps_are_refused():
    with pytest.raises(ScheduleError, match="makes at least 10 calls"):
        Schedule.deepcache(10, 2, calls=9)
