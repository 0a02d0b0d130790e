"""The sampler setting of an experiment: timestep spacing and another solver.

On a ``trailing`` DDIM grid null steps are DDIM at fewer steps (both grids end at the same
last timestep); on diffusers' default ``leading`` grid they are not, which once made
"DDIM at fewer steps beats every schedule on the teacher's grid" partly a grid artefact.
"""

import dataclasses
import json

import pytest
import torch

from repro import models
from repro.config import suite
from repro.core.sampler_calls import CALL_RULES, known_calls
from repro.core.schedule import Schedule
from repro.engine.loop import denoise
from repro.search.fitness import RFIDFitness

SPEC = models.get("digits-ddpm")


def on_grid(spacing: str, steps: int):
    scheduler = models.build_scheduler(SPEC, models.Sampler(spacing=spacing))
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.fixture(scope="module")
def digits():
    return models.load_model("digits-ddpm")


@torch.no_grad()
@pytest.mark.parametrize(("steps", "keep"), [(20, 10), (20, 5), (20, 4), (50, 10), (1000, 10)])
def test_null_steps_on_the_trailing_grid_are_ddim_at_fewer_steps(digits, steps, keep):
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    nulls = denoise(digits.unet, on_grid("trailing", steps), x, Schedule.fewer_steps(steps, keep))
    fewer = denoise(digits.unet, on_grid("trailing", keep), x, Schedule.full(keep))
    assert (nulls - fewer).abs().max() <= 1e-5 * fewer.abs().max()
    leading_nulls = denoise(
        digits.unet, on_grid("leading", steps), x, Schedule.fewer_steps(steps, keep)
    )
    leading_fewer = denoise(digits.unet, on_grid("leading", keep), x, Schedule.full(keep))
    assert (leading_nulls - leading_fewer).abs().max() > 1e-2  # the artefact, for contrast


@torch.no_grad()
def test_full_steps_on_the_training_grid_are_a_first_order_solver_at_those_timesteps(digits):
    """The step-wise search's space off the teacher's grid (AutoDiffusion): F at any
    training timesteps, null elsewhere, is DDIM at exactly those timesteps, checked against
    diffusers' first-order DPM-Solver++ (DDIM in other words) on custom timesteps."""
    from diffusers import DPMSolverMultistepScheduler

    timesteps = [999, 871, 640, 333, 120, 37]  # not a grid of any step count
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    schedule = Schedule.from_full_steps(1000, {999 - t for t in timesteps}, "N")
    nulls = denoise(digits.unet, on_grid("trailing", 1000), x, schedule)
    solver = DPMSolverMultistepScheduler.from_config(
        digits.scheduler.config, solver_order=1, algorithm_type="dpmsolver++"
    )
    solver.set_timesteps(timesteps=timesteps)
    expected = x
    for t in solver.timesteps:
        expected = solver.step(digits.unet(expected, t).sample, t, expected).prev_sample
    assert (nulls - expected).abs().max() <= 1e-4 * expected.abs().max()
    on_teacher_grid = denoise(digits.unet, on_grid("trailing", 6), x, Schedule.full(6))
    assert (nulls - on_teacher_grid).abs().max() > 1e-2  # other timesteps, other images


def test_the_spacing_is_part_of_the_fitness_context(digits):
    trailing = dataclasses.replace(digits, scheduler=on_grid("trailing", 10))
    contexts = [RFIDFitness(m, 4, range(2), batch_size=2).context for m in (digits, trailing)]
    assert [c["sampler"] for c in contexts] == [
        {"scheduler": "DDIMScheduler", "spacing": "leading"},
        {"scheduler": "DDIMScheduler", "spacing": "trailing"},
    ]


def write(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nversion: 1\nsteps: 20\nsearch: {methods: [], budgets: [2]}\n"
        "experiments: [{name: e, model: digits-ddpm}]\n" + text
    )
    return path


def test_an_unknown_spacing_is_a_suite_error_naming_the_field(tmp_path):
    with pytest.raises(
        suite.SuiteError,
        match=r"field 'spacing': unknown timestep spacing "
        r"'sideways'",
    ):
        suite.check(suite.load(write(tmp_path, "spacing: sideways\n")))


@pytest.mark.parametrize(
    ("baseline", "where", "message"),
    [
        (
            "{technique: sampler-steps, scheduler: NoSuchScheduler}",
            "scheduler",
            "unknown diffusers scheduler class 'NoSuchScheduler'",
        ),
        (
            "{technique: deepcache, scheduler: DPMSolverMultistepScheduler}",
            "scheduler",
            "'scheduler' applies to sampler-steps only",
        ),
    ],
)
def test_a_bad_solver_is_a_suite_error(tmp_path, baseline, where, message):
    with pytest.raises(suite.SuiteError, match=rf"baselines\[0\]\.{where}.*{message}"):
        suite.check(suite.load(write(tmp_path, f"baselines: [{baseline}]\n")))


def test_a_named_solver_reaches_the_budget_against_the_teachers_calls(tmp_path):
    from repro import techniques
    from repro.core.schedule import CostTable

    loaded = suite.load(
        write(
            tmp_path,
            "spacing: trailing\nbaselines: [{technique: "
            "sampler-steps, scheduler: UniPCMultistepScheduler}]\n",
        )
    )
    (plan,) = suite.check(loaded).values()
    (experiment,) = loaded.experiments
    row = plan[-1]
    assert row.name == "sampler-steps UniPCMultistep @2x"
    sampler = suite.row_sampler(experiment, row.baseline)
    assert sampler == models.Sampler("UniPCMultistepScheduler", "trailing")
    calls_at = lambda k, s=None: models.sampler_calls(SPEC, k, s or experiment.sampler)  # noqa: E731
    planned = techniques.plan_schedule(
        row, 20, calls_at, CostTable({}, "unit"), 0.1, own_calls_at=lambda k: calls_at(k, sampler)
    )
    assert (planned.steps, planned.schedule) == (10, Schedule.full(10))


def test_a_candidate_whose_rfid_is_undefined_scores_worst(digits, monkeypatch):
    """Fewer search seeds than feature dimensions leave covariances singular; a candidate
    whose statistic then has no real square root scores +inf instead of ending the search,
    and the search goes on to a finite winner."""
    import math

    from repro.core.budget import Budget
    from repro.core.schedule import CostTable
    from repro.metrics.errors import StatisticsError
    from repro.search import fitness as fitness_module
    from repro.search.methods import segment_evolution
    from repro.search.space import SegmentSpace

    scorer = RFIDFitness(digits, 8, range(2), batch_size=2)
    real = fitness_module.rfid
    undefined = Schedule.parse("F N F N F N F N")

    def undefined_for_one(samples, teacher, extractor):
        if Schedule.parse(samples.schedule) == undefined:
            raise StatisticsError(
                "digits-cnn: sqrtm of the covariance product has a significant imaginary part"
            )
        return real(samples, teacher, extractor)

    monkeypatch.setattr(fitness_module, "rfid", undefined_for_one)
    result = segment_evolution(
        SegmentSpace.of(8, (0,), max_len=4), scorer, Budget(2.0, CostTable({0: 0.5}), 0.1), n_eval=6
    )
    scores = {Schedule.parse(r.schedule): r.fitness for r in result.records}
    assert scores[undefined] == math.inf and len(scores) > 1
    assert math.isfinite(result.fitness) and result.best != undefined


STEP_COUNTS = (1, 2, 3, 4, 7, 50, 999, 1000, 1001)


@pytest.mark.filterwarnings("ignore")  # diffusers warns per set_timesteps on numpy 2
@pytest.mark.parametrize("name", sorted(CALL_RULES))
def test_the_call_rules_are_what_diffusers_counts(name):
    """Every class ``repro validate`` counts without diffusers, on every registered model's
    noise schedule and every spacing: the same UNet calls as diffusers' ``set_timesteps``,
    and a refusal where diffusers refuses or, for DDIM and DDPM, sets a grid whose timesteps
    leave the noise schedule (their step would fail there), so validate passes what a run
    can sample."""
    import diffusers

    seen = set()  # models sharing a noise schedule give the same configuration: once each
    for model_id in models.model_ids():
        spec = models.get(model_id)
        for spacing in (None, *models.SPACINGS):
            sampler = models.Sampler(name, spacing)
            _, config = models.scheduler_setting(spec, sampler)
            if (key := json.dumps(dict(config), sort_keys=True, default=str)) in seen:
                continue
            seen.add(key)
            scheduler = getattr(diffusers, name).from_config(config)
            for steps in STEP_COUNTS:
                try:
                    scheduler.set_timesteps(steps)
                    counted = len(scheduler.timesteps)
                except ValueError:
                    counted = None
                if (
                    name in ("DDIMScheduler", "DDPMScheduler")
                    and counted is not None
                    and int(scheduler.timesteps.max()) >= scheduler.config.num_train_timesteps
                ):
                    counted = None
                try:
                    ruled = known_calls(name, config, steps)
                except ValueError:
                    ruled = None
                assert ruled == counted, (model_id, spacing, steps)


def test_a_class_without_a_rule_is_counted_by_diffusers():
    assert "TCDScheduler" not in CALL_RULES
    sampler = models.Sampler("TCDScheduler")
    assert models.sampler_calls(SPEC, 8, sampler) == 8
    with pytest.raises(ValueError, match="TCDScheduler cannot run 1000 steps"):
        models.sampler_calls(SPEC, 1000, sampler)
