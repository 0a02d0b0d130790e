"""Prefix reuse: a schedule continued from another schedule's loop state gives the same
latents bit for bit, and sampling through a PrefixStore makes fewer UNet calls for the same
images and the same rFID."""

import dataclasses
import random

import numpy as np
import pytest
import torch
from conftest import ddim
from diffusers import PNDMScheduler

from repro import models
from repro.core.schedule import Schedule
from repro.engine.branches import num_branches
from repro.engine.loop import denoise
from repro.sampling.generate import generate
from repro.sampling.prefix import PrefixStore, _tensors, reusable
from repro.search.fitness import RFIDFitness

STEPS = 12


def random_schedule(rng: random.Random, branches: int) -> Schedule:
    tokens = ["F"] + [
        rng.choice(["F", "N", f"P{rng.randrange(branches)}"]) for _ in range(STEPS - 1)
    ]
    return Schedule(tuple(tokens))


def count_calls(module) -> list:
    calls = []
    module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


@torch.no_grad()
def test_recording_every_step_changes_nothing(unet2d):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    schedule = "F P3 N P7 | F N P0 P11 | F F P5 N"
    states = []
    got = denoise(unet2d, ddim(STEPS), x, schedule, on_step=states.append)
    assert torch.equal(got, denoise(unet2d, ddim(STEPS), x, schedule))
    assert [s.step for s in states] == list(range(1, STEPS + 1))
    assert torch.equal(states[-1].latents, got)


@torch.no_grad()
def test_a_schedule_resumed_at_a_shared_prefix_is_bit_identical(unet2d):
    rng = random.Random(0)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    branches = num_branches(unet2d)
    for _ in range(6):
        first = random_schedule(rng, branches)
        k = rng.randrange(1, STEPS)
        second = Schedule(first.steps[:k] + random_schedule(rng, branches).steps[k:])
        states = []
        denoise(unet2d, ddim(STEPS), x, first, on_step=states.append)
        resumed = denoise(unet2d, ddim(STEPS), None, second, resume=states[k - 1])
        assert torch.equal(resumed, denoise(unet2d, ddim(STEPS), x, second)), (first, second, k)


@pytest.fixture(scope="module")
def digits():
    return models.load_model("digits-ddpm")


def sample(model, schedule, store=None):
    return generate(model, 20, schedule, seeds=range(24), batch_size=16, prefixes=store)


@torch.no_grad()
def test_generate_through_a_store_gives_the_same_images_with_fewer_calls(digits):
    first = Schedule.parse("F P0 N N | F P0 N N | F P0 N N | F P0 N N | F P0 N N")
    second = Schedule.parse("F P0 N N | F P0 N N | F P0 N N | F N N N | F F F F")
    plain = sample(digits, second)
    store = PrefixStore()
    sample(digits, first, store)
    assert store.longest((20, None, tuple(range(16)), None), second).step == 13
    calls = count_calls(digits.unet.conv_in)
    reused = sample(digits, second, store)
    assert np.array_equal(reused.images, plain.images)
    # 2 batches; the schedules agree on their first 13 tokens, so only "F F F F" runs
    assert len(calls) == 2 * 4


@torch.no_grad()
def test_a_sampler_with_state_of_its_own_samples_from_the_start(digits):
    assert not reusable(PNDMScheduler()) and reusable(ddim(4))
    assert not reusable(ddim(4), {"eta": 0.5})
    plms = dataclasses.replace(digits, scheduler=PNDMScheduler(num_train_timesteps=1000))
    store = PrefixStore()
    sample(plms, None, store)
    assert store.longest((20, None, tuple(range(16)), None), Schedule.full(21)) is None


@torch.no_grad()
def test_a_full_store_evicts_and_stays_correct(digits):
    schedule = Schedule.parse("F P0 N N | F P0 N N | F P0 N N | F N N N | F F F F")
    store = PrefixStore(max_bytes=16 * 8 * 8 * 4)
    sample(digits, Schedule.full(20), store)
    assert store.bytes <= store.max_bytes and store.evicted
    assert np.array_equal(sample(digits, schedule, store).images, sample(digits, schedule).images)


@torch.no_grad()
def test_the_store_drops_the_least_recently_used_states_and_counts_storage_once(unet2d):
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    first, second = Schedule.parse("F N F N"), Schedule.parse("F P3 F F")
    states = {}
    for schedule in (first, second):
        states[schedule] = []
        denoise(unet2d, ddim(4), x, schedule, on_step=states[schedule].append)
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
        for s in states[first]
        for t in _tensors(s)
    }
    store = PrefixStore()
    record = store.recorder("b", first)
    for state in states[first]:
        record(state)
    assert store.bytes == sum(storages.values())  # N steps share their caches: counted once
    store.max_bytes = store.bytes  # full: each new state pushes out the oldest unused ones
    assert store.longest("b", Schedule.parse("F N N N")).step == 2  # used: kept
    record = store.recorder("b", second)
    for state in states[second][1:]:  # after "F P3", "F P3 F", "F P3 F F"
        record(state)
    assert store.bytes <= store.max_bytes and store.evicted
    used = ["F", "F N F", "F N F N", "F N", "F P3", "F P3 F", "F P3 F F"]  # least recent first
    kept = [" ".join(tokens) for _, tokens in store._states]
    assert kept == used[len(used) - len(kept) :] and "F P3 F F" in kept
    assert store.bytes == sum(
        {
            t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
            for s in store._states.values()
            for t in _tensors(s)
        }.values()
    )


@torch.no_grad()
def test_rfid_fitness_scores_are_identical_with_and_without_reuse(digits):
    rng = random.Random(3)
    schedules = [Schedule.fewer_steps(20, 10)]
    for _ in range(3):  # children of the last one: long shared prefixes
        parent = schedules[-1].steps
        k = rng.randrange(4, 16)
        schedules.append(Schedule(parent[:k] + tuple(rng.choice("FN") for _ in parent[k:])))
    kwargs = dict(model=digits, steps=20, seeds=range(32), batch_size=16)
    with_reuse = RFIDFitness(**kwargs)
    without = RFIDFitness(**kwargs, reuse_prefixes=False)
    assert [with_reuse(s) for s in schedules] == [without(s) for s in schedules]
