import types

import pytest
import torch
from conftest import ddim, tiny_sd_pipeline, tiny_unet2d, tiny_unet_cond
from DeepCache import DeepCacheSDHelper
from diffusers import DDIMPipeline

from repro.core.schedule import Schedule, ScheduleError
from repro.engine.branches import num_branches
from repro.engine.loop import apply_schedule, denoise, is_scheduled, scheduled

STEPS = 6


def plain_loop(unet, scheduler, x, **kwargs):
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t, **kwargs).sample, t, x).prev_sample
    return x


def deepcache_helper_loop(unet, scheduler, x, interval, branch, **kwargs):
    """The published DeepCache helper driving the same plain loop: the oracle."""
    helper = DeepCacheSDHelper(pipe=types.SimpleNamespace(unet=unet, scheduler=scheduler))
    helper.set_params(cache_interval=interval, cache_branch_id=branch)
    helper.enable()
    try:
        return plain_loop(unet, scheduler, x, **kwargs)
    finally:
        helper.disable()


def cases():
    """(unet factory, latent shape, unet kwargs): both UNet classes, each conditioning."""
    g = torch.Generator().manual_seed(1)
    return {
        "unet2d": (tiny_unet2d, (2, 3, 16, 16), {}),
        "cond-text": (
            tiny_unet_cond,
            (2, 4, 16, 16),
            {"encoder_hidden_states": torch.randn(2, 5, 8, generator=g)},
        ),
        "cond-class": (
            lambda: tiny_unet_cond(num_class_embeds=10),
            (2, 4, 16, 16),
            {
                "encoder_hidden_states": torch.randn(2, 1, 8, generator=g),
                "class_labels": torch.tensor([3, 7]),
            },
        ),
    }


CASES = cases()


@pytest.fixture(params=list(CASES))
def case(request):
    make, shape, kwargs = CASES[request.param]
    return make(), torch.randn(shape, generator=torch.Generator().manual_seed(0)), kwargs


@torch.no_grad()
def test_all_full_is_bit_identical_to_the_plain_loop(case):
    unet, x, kwargs = case
    expected = plain_loop(unet, ddim(STEPS), x, **kwargs)
    assert torch.equal(denoise(unet, ddim(STEPS), x, Schedule.full(STEPS), **kwargs), expected)


@torch.no_grad()
@pytest.mark.parametrize("interval", [2, 3, 5])
@pytest.mark.parametrize("depth", ["shallow", "middle", "deep"])
def test_deepcache_schedule_matches_the_published_helper(case, interval, depth):
    unet, x, kwargs = case
    n = num_branches(unet)
    branch = {"shallow": 0, "middle": n // 2, "deep": n - 1}[depth]
    expected = deepcache_helper_loop(unet, ddim(STEPS), x, interval, branch, **kwargs)
    got = denoise(unet, ddim(STEPS), x, Schedule.deepcache(STEPS, interval, branch), **kwargs)
    assert (got - expected).abs().max().item() <= 1e-5
    if branch < n - 1:  # the cache must actually change the result, else the test proves nothing
        full = plain_loop(unet, ddim(STEPS), x, **kwargs)
        assert (got - full).abs().max().item() > 1e-4


@torch.no_grad()
def test_every_branch_of_both_unet_classes_matches_the_helper():
    for make, shape, kwargs in CASES.values():
        unet, x = make(), torch.randn(shape, generator=torch.Generator().manual_seed(2))
        for branch in range(num_branches(unet)):
            expected = deepcache_helper_loop(unet, ddim(6), x, 3, branch, **kwargs)
            got = denoise(unet, ddim(6), x, Schedule.deepcache(6, 3, branch), **kwargs)
            assert (got - expected).abs().max().item() <= 1e-5, (make, branch)


def count_calls(module):
    """Calls of a module's own forward: give it a leaf, since hooked modules' __call__ still
    fires torch pre-hooks when the engine replays their cache."""
    calls = []
    module.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


@torch.no_grad()
def test_partial_steps_never_call_deeper_modules(unet2d):
    x = torch.randn(1, 3, 16, 16)
    mid = count_calls(unet2d.mid_block.resnets[0].conv1)
    deepest_down = count_calls(unet2d.down_blocks[-1].resnets[0].conv1)
    cut_layer = count_calls(unet2d.down_blocks[1].resnets[1].conv1)  # P4 keeps resnets[0] only
    kept_layer = count_calls(unet2d.down_blocks[1].resnets[0].conv1)
    schedule = Schedule.parse("F P4 P4 P4 F P4")
    denoise(unet2d, ddim(6), x, schedule)
    assert len(mid) == len(deepest_down) == len(cut_layer) == 2
    assert len(kept_layer) == 6


@torch.no_grad()
def test_null_steps_reuse_the_last_output_without_calling_the_unet(unet2d):
    x = torch.randn(2, 3, 16, 16)
    scheduler = ddim(4)
    t = scheduler.timesteps
    eps = unet2d(x, t[0]).sample
    expected = x
    for k in range(3):  # F N N: one evaluation, three scheduler steps with the same eps
        expected = scheduler.step(eps, t[k], expected).prev_sample
    eps = unet2d(expected, t[3]).sample
    expected = scheduler.step(eps, t[3], expected).prev_sample
    conv_in = count_calls(unet2d.conv_in)
    got = denoise(unet2d, ddim(4), x, "F N N F")
    assert len(conv_in) == 2
    assert torch.equal(got, expected)


@torch.no_grad()
@pytest.mark.parametrize(("steps", "keep"), [(20, 5), (50, 10), (10, 10)])
def test_fewer_steps_equals_ddim_with_that_many_steps(unet2d, steps, keep):
    # DDIM steps t -> t - 1000 // steps, so the spacing is exact when steps divides 1000.
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = plain_loop(unet2d, ddim(keep, timestep_spacing="trailing"), x)
    got = denoise(
        unet2d, ddim(steps, timestep_spacing="trailing"), x, Schedule.fewer_steps(steps, keep)
    )
    # a random UNet drives latents to ~1e3: equal up to float32 rounding at that scale
    assert (got - expected).abs().max() <= 2e-6 * expected.abs().max()
    assert (
        not torch.equal(got, plain_loop(unet2d, ddim(steps, timestep_spacing="trailing"), x))
        or keep == steps
    )


@torch.no_grad()
def test_mixed_branches_in_one_schedule_run_and_hooks_are_minimal(unet2d):
    x = torch.randn(1, 3, 16, 16)
    out = denoise(unet2d, ddim(8), x, "F P0 P5 N | F P11 P2 P0")
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not is_scheduled(unet2d)


@torch.no_grad()
def test_schedule_length_must_match_the_scheduler(unet2d):
    with pytest.raises(ScheduleError, match="schedule has 3 steps but the scheduler runs 4"):
        denoise(unet2d, ddim(4), torch.randn(1, 3, 16, 16), "F N N")
    assert not is_scheduled(unet2d)


def test_branch_beyond_the_model_is_rejected(unet_cond):
    with pytest.raises(ScheduleError, match=r"'P9' at step 2: the model has branches 0\.\.8"):
        with scheduled(unet_cond, "F P9"):
            pass


def assert_pristine(unet):
    assert not is_scheduled(unet)
    for module in unet.modules():
        assert not hasattr(module, "_diffusers_hook")
        assert "forward" not in module.__dict__


@torch.no_grad()
def test_apply_schedule_on_a_stable_diffusion_pipeline(tmp_path):
    pipe = tiny_sd_pipeline(tmp_path)
    pipe.set_progress_bar_config(disable=True)

    def generate():
        return pipe(
            "a red cube",
            num_inference_steps=6,
            guidance_scale=5.0,
            height=16,
            width=16,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images

    plain = generate()
    with apply_schedule(pipe, Schedule.full(6)):
        assert is_scheduled(pipe.unet)
        hooked = generate()
        assert (hooked == generate()).all()  # the schedule restarts with each pipeline call
    assert (hooked == plain).all()
    assert_pristine(pipe.unet)

    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=3, cache_branch_id=2)
    helper.enable()
    expected = generate()
    helper.disable()
    with apply_schedule(pipe, Schedule.deepcache(6, 3, 2)):
        got = generate()
    assert abs(got - expected).max() <= 1e-5 and abs(got - plain).max() > 1e-4


@torch.no_grad()
def test_apply_schedule_removes_hooks_on_exceptions():
    unet = tiny_unet2d()
    pipe = DDIMPipeline(unet=unet, scheduler=ddim(4))
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(ScheduleError, match="scheduler runs 5 UNet calls"):
        with apply_schedule(pipe, "F P3 N F"):
            pipe(batch_size=1, num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    assert_pristine(unet)
    with apply_schedule(pipe, "F P3 N F"):
        images = pipe(
            batch_size=1,
            num_inference_steps=4,
            output_type="np",
            generator=torch.Generator().manual_seed(0),
        ).images
    assert images.shape == (1, 16, 16, 3)
    assert_pristine(unet)


@torch.no_grad()
def test_cfg_batches_run_under_a_schedule(unet_cond):
    x = torch.randn(2, 4, 16, 16)
    cond = torch.randn(4, 5, 8)  # [uncond x2, cond x2]
    plain = ddim(6)
    expected = x
    for t in plain.timesteps:
        noise = unet_cond(torch.cat([expected] * 2), t, encoder_hidden_states=cond).sample
        uncond, c = noise.chunk(2)
        expected = plain.step(uncond + 3.0 * (c - uncond), t, expected).prev_sample
    got = denoise(
        unet_cond, ddim(6), x, Schedule.full(6), guidance_scale=3.0, encoder_hidden_states=cond
    )
    assert torch.equal(got, expected)
