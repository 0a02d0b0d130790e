"""Candidates of a generation sampled in one batched pass (``engine.denoise_many``,
``samples.generate_many``, ``RFIDFitness.score_many``): one UNet call per step kind present
and the same samples as sampling each schedule alone.

Bit for bit where every sub-batch has 64 rows or more. Below that the digits-ddpm UNet is
not batch-size independent: diffusers' ``Upsample2D`` makes its input contiguous only from
a batch of 64 on, and the convolution after it then runs on another memory layout. Measured
here (CPU, 1 thread, 4-32 seeds a batch, DDIM and PLMS): final latents within 6e-5 of the
one-at-a-time path, uint8 images off by at most one level in at most 0.1% of pixels. The
small-batch tests allow 2e-4 and 0.5%; the search runs at 64+ seeds a batch and must match
exactly."""

import dataclasses
import json
import math
import random
import types

import numpy as np
import pytest
import torch
from conftest import ddim, tiny_unet2d
from diffusers import DDPMScheduler, PNDMScheduler

from repro import models, search
from repro.core.schedule import Schedule, ScheduleError
from repro.engine.batched import denoise_many
from repro.engine.branches import num_branches
from repro.engine.hooks import set_step_runner
from repro.engine.loop import denoise
from repro.run.searching import SpreadFitness
from repro.sampling.generate import generate, generate_many
from repro.sampling.prefix import PrefixStore
from repro.search import search_log
from repro.search.fitness import RFIDFitness
from repro.speed.costs import model_cost_table

STEPS = 10
SEEDS = range(12)


def mixed_schedules(unet, count: int, seed: int = 0) -> list[Schedule]:
    """F/P/N schedules of every branch, the later ones children of the first (long shared
    prefixes), plus the all-F schedule."""
    rng = random.Random(seed)
    kinds = ["F", "N", *(f"P{b}" for b in range(num_branches(unet)))]
    first = Schedule(("F", *(rng.choice(kinds) for _ in range(STEPS - 1))))
    found = [first, Schedule.full(STEPS)]
    while len(found) < count:
        k = rng.randrange(1, STEPS)
        found.append(Schedule(first.steps[:k] + tuple(rng.choice(kinds) for _ in range(STEPS - k))))
    return found


def assert_close_images(a: np.ndarray, b: np.ndarray) -> None:
    """Equal but for the small-batch rounding described above."""
    off = np.abs(a.astype(int) - b.astype(int))
    assert off.max() <= 1 and (off > 0).mean() <= 0.005, (off.max(), (off > 0).mean())


def unet_rows(unet) -> list[int]:
    """The batch size of every UNet call from now on."""
    rows: list[int] = []
    unet.conv_in.register_forward_pre_hook(lambda _, args: rows.append(args[0].shape[0]))
    return rows


@pytest.fixture(scope="module")
def ddpm():
    return models.load_model("digits-ddpm")


@pytest.fixture(scope="module")
def cond():
    return models.load_model("digits-cond")


@torch.no_grad()
def test_one_pass_equals_each_schedule_alone_with_one_call_per_kind(ddpm):
    schedules = mixed_schedules(ddpm.unet, 6)
    alone = [generate(ddpm, STEPS, s, SEEDS, batch_size=8) for s in schedules]
    rows = unet_rows(ddpm.unet)
    try:  # 12 seeds in batches of 8 and 4: 24 samples a pass are 3 schedules, then 6
        together = generate_many(ddpm, STEPS, schedules, SEEDS, batch_size=8, pass_samples=24)
    finally:
        ddpm.unet.conv_in._forward_pre_hooks.clear()
    for a, b in zip(alone, together, strict=True):
        assert_close_images(a.images, b.images)
        assert (b.schedule, b.steps, b.seeds.tolist()) == (a.schedule, a.steps, list(SEEDS))
    passes = [schedules[:3], schedules[3:], schedules]
    calls = sum(len({s.steps[i] for s in part} - {"N"}) for part in passes for i in range(STEPS))
    assert len(rows) == calls  # one call per kind present at each step
    per_candidate = sum(s.steps[i] != "N" for s in schedules for i in range(STEPS))
    assert sum(rows) == per_candidate * 12  # every sample once per non-null step


@torch.no_grad()
def test_class_labels_and_guidance(cond):
    assert cond.default_guidance == 2.0  # classifier-free guidance: the UNet sees [null, label]
    schedules = mixed_schedules(cond.unet, 4, seed=1)
    labels = [3, 1, 4, 1, 5]
    alone = [generate(cond, STEPS, s, SEEDS, labels, batch_size=12) for s in schedules]
    together = generate_many(cond, STEPS, schedules, SEEDS, labels, batch_size=12, pass_samples=48)
    for a, b in zip(alone, together, strict=True):
        assert_close_images(a.images, b.images)
        assert a.labels.tolist() == b.labels.tolist() and a.guidance == b.guidance


@torch.no_grad()
def test_shared_prefixes_run_once_and_stored_states_serve_both_paths(ddpm):
    schedules = mixed_schedules(ddpm.unet, 5, seed=2)
    alone = [generate(ddpm, STEPS, s, SEEDS, batch_size=12) for s in schedules]
    store = PrefixStore()
    rows = unet_rows(ddpm.unet)
    try:
        together = generate_many(ddpm, STEPS, schedules, SEEDS, batch_size=12, prefixes=store)
        first = sum(rows)
        # every prefix is stored now: sampled again, nothing runs, one at a time or batched
        again = generate_many(ddpm, STEPS, schedules[::-1], SEEDS, batch_size=12, prefixes=store)
        single = [generate(ddpm, STEPS, s, SEEDS, batch_size=12, prefixes=store) for s in schedules]
        assert sum(rows) == first
    finally:
        ddpm.unet.conv_in._forward_pre_hooks.clear()
    distinct = {s.steps[: i + 1] for s in schedules for i in range(STEPS) if s.steps[i] != "N"}
    assert first == len(distinct) * 12  # each distinct prefix computed once
    for a, b, c, d in zip(alone, together, again[::-1], single, strict=True):
        assert_close_images(a.images, b.images)  # from the store: exactly as stored
        assert np.array_equal(b.images, c.images) and np.array_equal(b.images, d.images)


@torch.no_grad()
def test_a_batched_pass_resumes_from_states_the_single_path_stored(ddpm):
    parent = mixed_schedules(ddpm.unet, 1, seed=3)[0]
    children = [Schedule(parent.steps[:k] + ("F",) * (STEPS - k)) for k in (3, 6, 8)]
    store = PrefixStore()
    generate(ddpm, STEPS, parent, SEEDS, batch_size=12, prefixes=store)
    rows = unet_rows(ddpm.unet)
    try:
        resumed = generate_many(ddpm, STEPS, children, SEEDS, batch_size=12, prefixes=store)
    finally:
        ddpm.unet.conv_in._forward_pre_hooks.clear()
    assert sum(rows) == 12 * ((STEPS - 3) + (STEPS - 6) + (STEPS - 8))
    for child, got in zip(children, resumed, strict=True):
        assert_close_images(got.images, generate(ddpm, STEPS, child, SEEDS, batch_size=12).images)


@torch.no_grad()
@pytest.mark.parametrize(
    "scheduler",
    [
        PNDMScheduler(num_train_timesteps=1000, skip_prk_steps=True),
        DDPMScheduler(num_train_timesteps=1000),
    ],
    ids=["plms", "ddpm-ancestral"],
)
def test_samplers_with_state_or_noise_of_their_own(ddpm, scheduler):
    """PLMS keeps past outputs, DDPM draws noise per step from each image's generator:
    every schedule is stepped on every step, each with its own generators."""
    model = dataclasses.replace(ddpm, scheduler=scheduler)
    scheduler.set_timesteps(STEPS)
    calls = len(scheduler.timesteps)
    rng = random.Random(4)
    schedules = [
        Schedule(("F", *(rng.choice(["F", "N", "P2", "P5"]) for _ in range(calls - 1))))
        for _ in range(3)
    ]
    together = generate_many(model, STEPS, schedules, SEEDS, batch_size=12, prefixes=PrefixStore())
    for s, got in zip(schedules, together, strict=True):
        assert_close_images(got.images, generate(model, STEPS, s, SEEDS, batch_size=12).images)


@torch.no_grad()
@pytest.mark.parametrize("rows", [64, 5])
def test_the_engine_pass_bit_for_bit_from_64_rows(ddpm, rows):
    schedules = mixed_schedules(ddpm.unet, 4, seed=5)
    x = torch.randn(rows, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    got = denoise_many(ddpm.unet, ddim(STEPS), [x] * 4, schedules)
    for s, latents in zip(schedules, got, strict=True):
        alone = denoise(ddpm.unet, ddim(STEPS), x, s)
        if rows >= 64:
            assert torch.equal(latents, alone), str(s)
        else:
            torch.testing.assert_close(latents, alone, rtol=0, atol=2e-4)


def test_refusals(ddpm):
    unet = tiny_unet2d()
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ScheduleError, match="scheduler runs 10 UNet calls"):
        denoise_many(unet, ddim(STEPS), [x], [Schedule.full(STEPS - 1)])
    set_step_runner(unet, types.SimpleNamespace(reuses_outputs=True))
    with pytest.raises(ScheduleError, match="one schedule at a time"):
        denoise_many(unet, ddim(STEPS), [x], [Schedule.full(STEPS)])
    text = dataclasses.replace(ddpm, pipeline=object())
    with pytest.raises(ValueError, match="text-conditioned .* batched passes do not apply"):
        generate_many(text, STEPS, [Schedule.full(STEPS)], SEEDS)
    with pytest.raises(ValueError, match="pass_samples"):
        RFIDFitness(ddpm, STEPS, SEEDS, pass_samples=0, teacher=object())


@torch.no_grad()
def test_a_seeded_search_logs_the_same_with_batching_on_and_off(ddpm, tmp_path):
    spec = models.get("digits-ddpm")
    budget = search.Budget(2.0, model_cost_table(spec, ddpm.unet), 0.2)
    space = search.SegmentSpace.of(STEPS, range(spec.num_branches), max_len=5)
    logs = []
    for name, pass_samples in (("alone", None), ("batched", 4 * 96)):
        fitness = RFIDFitness(ddpm, STEPS, range(96), batch_size=96, pass_samples=pass_samples)
        path = tmp_path / f"{name}.jsonl"
        search.segment_evolution(
            space,
            fitness,
            budget,
            n_eval=14,
            seed=1,
            evolution=search.Evolution(6, 2, 4, 2),
            on_record=search_log.appender(path, fitness.context),
        )
        logs.append(
            [
                {k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in path.read_text().splitlines()
            ]
        )
    assert len(logs[0]) > 6 and all(math.isfinite(r["fitness"]) for r in logs[0])
    assert logs[0] == logs[1]  # 96 rows a call: bit for bit


def test_ranks_batch_their_share_and_every_rank_gets_every_score():
    class Fitness:
        def __init__(self):
            self.batches = []

        def score_many(self, schedules):
            self.batches.append(list(schedules))
            return [float(len(s)) for s in schedules]

    world = types.SimpleNamespace(size=2, map=lambda what, fn, items: [fn(i) for i in items])
    fitness = Fitness()
    schedules = ["F", "F N", "F N N", "F F N N", "F N N N N"]
    assert SpreadFitness(fitness, world).score_many(schedules) == [1, 3, 5, 7, 9]
    assert fitness.batches == [schedules[0::2], schedules[1::2]]


def test_cli_search_batches_a_generation_unless_told_not_to(tmp_path, capsys, monkeypatch):
    from repro.cli.main import main

    sizes = []
    many = RFIDFitness.score_many
    monkeypatch.setattr(
        RFIDFitness,
        "score_many",
        lambda self, s: sizes.append((self.pass_samples, len(s))) or many(self, s),
    )
    argv = [
        "search",
        "--model",
        "digits-ddpm",
        "--steps",
        "4",
        "--budget",
        "2",
        "--n-eval",
        "3",
        "--population",
        "3",
        "--seeds",
        "0:8",
        "--json",
    ]
    assert main(argv) == 0 and main([*argv, "--pass-samples", "0"]) == 0
    assert sizes == [(512, 3), (None, 3)]
    capsys.readouterr()
    assert main([*argv, "--pass-samples", "-1"]) == 2
    assert "--pass-samples must be 0 or more, got -1" in capsys.readouterr().err
