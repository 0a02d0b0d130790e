"""`apply_schedule` on the pipelines users have: every call starts at the first token,
lengths are checked against the calls a call really makes, nesting and scheduler swaps are
refused, and DeepCache's helper is matched in its own numbering.

Tiny random pipelines of the real diffusers classes, built offline.
"""

import subprocess
import sys

import pytest
import torch
from conftest import ddim, offline_clip_tokenizer, tiny_sd_pipeline, tiny_unet2d
from DeepCache import DeepCacheSDHelper
from diffusers import (
    DDIMPipeline,
    DDPMPipeline,
    DDPMScheduler,
    EulerDiscreteScheduler,
    LDMPipeline,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    UNet2DConditionModel,
    VQModel,
)

import repro
from repro.core.schedule import Schedule, ScheduleError
from repro.engine.loop import apply_schedule, denoise, is_scheduled

STEPS = 6
SCHEDULE = Schedule.parse("F P0 N F P2 N")


@pytest.fixture
def sd(tmp_path):
    pipe = tiny_sd_pipeline(tmp_path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def text_to_image(pipe, steps=STEPS, **kwargs):
    return pipe(
        "a red cube",
        num_inference_steps=steps,
        guidance_scale=5.0,
        height=16,
        width=16,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        **kwargs,
    ).images


def scheduled_fresh(pipe, schedule, call=text_to_image, **kwargs):
    """The reference: the schedule attached anew for a single call."""
    with apply_schedule(pipe, schedule):
        return call(pipe, **kwargs)


def with_helper(pipe, interval, branch, call=text_to_image, **kwargs):
    """DeepCache's own helper driving the same pipeline call: the oracle."""
    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=interval, cache_branch_id=branch)
    helper.enable()
    try:
        return call(pipe, **kwargs)
    finally:
        helper.disable()


def max_diff(a, b) -> float:
    return float(abs(a - b).max())


# -- 1. every call starts at the first token ---------------------------------------------
@torch.no_grad()
def test_an_interrupted_call_does_not_shift_the_next_one(sd):
    expected = scheduled_fresh(sd, SCHEDULE)

    def stop_after_two(pipe, step, t, kwargs):
        if step == 1:
            pipe._interrupt = True
        return kwargs

    with apply_schedule(sd, SCHEDULE):
        text_to_image(sd, callback_on_step_end=stop_after_two)  # 2 of 6 UNet calls made
        assert max_diff(text_to_image(sd), expected) == 0.0


@torch.no_grad()
def test_an_exception_inside_the_block_does_not_shift_the_next_call(sd):
    expected = scheduled_fresh(sd, SCHEDULE)

    def fail_at_three(pipe, step, t, kwargs):
        if step == 2:
            raise RuntimeError("user callback failed")
        return kwargs

    with apply_schedule(sd, SCHEDULE):
        with pytest.raises(RuntimeError, match="user callback failed"):
            text_to_image(sd, callback_on_step_end=fail_at_three)
        assert max_diff(text_to_image(sd), expected) == 0.0
        assert max_diff(text_to_image(sd), expected) == 0.0  # and again


@torch.no_grad()
def test_a_hand_written_loop_run_twice_restarts_at_the_first_token(unet2d):
    scheduler = ddim(4)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    expected = denoise(unet2d, ddim(4), x, "F N P3 F")
    with repro.engine.scheduled(unet2d, "F N P3 F", scheduler):
        for _ in range(2):
            latents = x
            for t in scheduler.timesteps:
                eps = unet2d(latents, t).sample
                latents = scheduler.step(eps, t, latents).prev_sample
            assert torch.equal(latents, expected)


@torch.no_grad()
def test_two_unet_calls_per_step_are_refused_not_cycled(unet2d):
    scheduler = ddim(3)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ScheduleError, match="called more often than the schedule's 3 tokens"):
        with repro.engine.scheduled(unet2d, "F N F", scheduler):
            for t in scheduler.timesteps:  # e.g. unbatched guidance: uncond, then cond
                unet2d(x, t), unet2d(x, t)


# -- 2. img2img: tokens for the calls a call makes ---------------------------------------
def image_to_image(pipe, strength, steps=10):
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    return pipe(
        "a red cube",
        image=image,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images


@torch.no_grad()
@pytest.mark.parametrize(("strength", "calls"), [(0.3, 3), (0.5, 5), (1.0, 10)])
def test_img2img_takes_one_token_per_call_made(sd, strength, calls):
    pipe = StableDiffusionImg2ImgPipeline(**sd.components)
    pipe.set_progress_bar_config(disable=True)
    schedule = Schedule.deepcache(calls, 2, 1)
    expected = with_helper(pipe, 2, 1, image_to_image, strength=strength)
    with apply_schedule(pipe, schedule):
        first = image_to_image(pipe, strength)
        second = image_to_image(pipe, strength)
    assert max_diff(first, expected) <= 1e-5
    assert max_diff(second, first) == 0.0  # the second call does not start mid-way
    if calls > 1:
        assert max_diff(first, image_to_image(pipe, strength)) > 1e-4  # caching acted


@torch.no_grad()
def test_img2img_refuses_a_schedule_of_the_full_grid_naming_the_rule(sd):
    pipe = StableDiffusionImg2ImgPipeline(**sd.components)
    pipe.set_progress_bar_config(disable=True)
    with pytest.raises(
        ScheduleError,
        match=r"schedule has 10 steps but the scheduler runs 5 "
        r"UNet calls \(it starts at position 5 of the "
        r"scheduler's 10 timesteps, as img2img",
    ):
        with apply_schedule(pipe, Schedule.deepcache(10, 2)):
            image_to_image(pipe, 0.5)
    assert not is_scheduled(pipe.unet)


# -- 3. nesting ----------------------------------------------------------------------------
@torch.no_grad()
def test_nesting_is_refused_and_the_outer_schedule_stays(sd):
    expected = scheduled_fresh(sd, SCHEDULE)
    with apply_schedule(sd, SCHEDULE):
        with pytest.raises(ScheduleError, match="already runs under a schedule"):
            with apply_schedule(sd, Schedule.full(STEPS)):
                pass
        assert is_scheduled(sd.unet)
        assert max_diff(text_to_image(sd), expected) == 0.0
    assert not is_scheduled(sd.unet)


# -- 4. a scheduler swapped inside the block ---------------------------------------------
@torch.no_grad()
def test_a_scheduler_swapped_inside_the_block_is_checked(sd):
    with apply_schedule(sd, SCHEDULE):
        sd.scheduler = EulerDiscreteScheduler.from_config(sd.scheduler.config)
        with pytest.raises(
            ScheduleError, match="schedule has 6 steps but the scheduler runs 4 UNet calls"
        ):
            text_to_image(sd, steps=4)
        swapped = text_to_image(sd)
    assert max_diff(swapped, scheduled_fresh(sd, SCHEDULE)) == 0.0


# -- 5. PLMS: DeepCache's helper numbering -----------------------------------------------
def plms(pipe):
    pipe.scheduler = PNDMScheduler(num_train_timesteps=1000, skip_prk_steps=True)
    probe = PNDMScheduler(num_train_timesteps=1000, skip_prk_steps=True)
    probe.set_timesteps(STEPS)
    return probe.timesteps


@torch.no_grad()
@pytest.mark.parametrize("interval", [2, 3, 4, 5])
@pytest.mark.parametrize("branch", [0, 4])
def test_plms_in_helper_numbering_equals_deepcaches_helper(sd, interval, branch):
    timesteps = plms(sd)
    expected = with_helper(sd, interval, branch)
    schedule = Schedule.deepcache_helper(timesteps, interval, branch)
    assert len(schedule) == STEPS + 1
    assert max_diff(scheduled_fresh(sd, schedule), expected) <= 1e-5


@torch.no_grad()
def test_plms_positional_numbering_is_not_the_helpers(sd):
    timesteps = plms(sd)
    helper = Schedule.deepcache_helper(timesteps, 2, 0)
    positional = Schedule.deepcache(STEPS, 2, 0, calls=STEPS + 1)
    assert helper != positional
    assert max_diff(scheduled_fresh(sd, positional), with_helper(sd, 2, 0)) > 1e-4


@torch.no_grad()
def test_a_plms_schedule_one_token_short_says_how_many_calls(sd):
    plms(sd)
    with pytest.raises(
        ScheduleError,
        match=rf"schedule has {STEPS} steps but the scheduler "
        rf"runs {STEPS + 1} UNet calls; .*calls={STEPS + 1}\)\)$",
    ):
        with apply_schedule(sd, Schedule.deepcache(STEPS, 2, 0)):
            text_to_image(sd)


# -- every pipeline family: all-F exact, DeepCache equal to the helper ------------------
def tiny_sdxl(directory):
    from diffusers import AutoencoderKL, StableDiffusionXLPipeline
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
    )

    tokenizer = offline_clip_tokenizer(directory)
    config = dict(
        vocab_size=len(tokenizer),
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(**config)).eval()
    encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**config, projection_dim=8)).eval()
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        cross_attention_dim=16,
        attention_head_dim=2,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=8 + 6 * 4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    ).eval()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        norm_num_groups=4,
        sample_size=16,
    ).eval()
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=encoder,
        text_encoder_2=encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=ddim(STEPS),
        force_zeros_for_empty_prompt=False,
    )


def tiny_ldm():
    torch.manual_seed(0)
    vqvae = VQModel(
        in_channels=3,
        out_channels=3,
        latent_channels=3,
        num_vq_embeddings=16,
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        norm_num_groups=4,
    ).eval()
    return LDMPipeline(vqvae=vqvae, unet=tiny_unet2d(), scheduler=ddim(STEPS))


def unconditional(pipe, steps=STEPS):
    return pipe(
        batch_size=1,
        num_inference_steps=steps,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images


def sd_with(scheduler):
    def make(directory):
        pipe = tiny_sd_pipeline(directory)
        pipe.scheduler = scheduler
        return pipe

    return make


FAMILIES = {
    "sd-ddim": (tiny_sd_pipeline, text_to_image),
    "sd-euler": (sd_with(EulerDiscreteScheduler(num_train_timesteps=1000)), text_to_image),
    "sdxl": (tiny_sdxl, text_to_image),
    "ldm": (lambda _: tiny_ldm(), unconditional),
    "ddim": (lambda _: DDIMPipeline(unet=tiny_unet2d(), scheduler=ddim(STEPS)), unconditional),
    "ddpm": (
        lambda _: DDPMPipeline(
            unet=tiny_unet2d(), scheduler=DDPMScheduler(num_train_timesteps=1000)
        ),
        unconditional,
    ),
}


@torch.no_grad()
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_all_full_is_exact_and_deepcache_is_the_helper(tmp_path, family):
    make, call = FAMILIES[family]
    pipe = make(tmp_path)
    pipe.set_progress_bar_config(disable=True)
    plain = call(pipe)
    assert max_diff(scheduled_fresh(pipe, Schedule.full(STEPS), call), plain) == 0.0
    expected = with_helper(pipe, 3, 1, call)
    got = scheduled_fresh(pipe, Schedule.deepcache(STEPS, 3, 1), call)
    assert max_diff(got, expected) <= 1e-5 and max_diff(got, plain) > 1e-6


# -- 6. inference mode, branch numbering of uneven UNets ----------------------------------
def test_denoise_keeps_no_autograd_state_unless_asked(unet2d):
    x = torch.randn(1, 3, 16, 16)
    out = denoise(unet2d, ddim(3), x, "F P0 N")
    assert torch.is_inference(out) and not out.requires_grad
    trained = denoise(unet2d, ddim(3), x, "F P0 N", inference=False)
    assert trained.requires_grad  # the caller asked for gradients


def uneven_unet():
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=(1, 2, 1),
        block_out_channels=(8, 16, 16),
        norm_num_groups=4,
        cross_attention_dim=8,
        attention_head_dim=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()


@torch.no_grad()
def test_uneven_layers_per_block_are_numbered_block_by_block():
    unet = uneven_unet()
    found = repro.branches(unet)
    assert [(b.index, b.block, b.layer) for b in found] == [
        (0, 0, 0),
        (1, 0, 1),
        (2, 1, 0),
        (3, 1, 1),
        (4, 1, 2),
        (5, 2, 0),
        (6, 2, 1),
    ]
    for branch in found:  # the named modules exist
        unet.get_submodule(branch.skips_from), unet.get_submodule(branch.resumes_at)

    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    kwargs = {"encoder_hidden_states": torch.randn(1, 5, 8)}
    plain = denoise(unet, ddim(2), x, "F F", **kwargs)
    outputs = []
    for branch in found:
        calls = {
            (block, layer): []
            for block, down in enumerate(unet.down_blocks)
            for layer in range(len(down.resnets))
        }
        for (block, layer), made in calls.items():
            unet.down_blocks[block].resnets[layer].conv1.register_forward_pre_hook(
                lambda *_, made=made: made.append(1)
            )
        outputs.append(denoise(unet, ddim(2), x, f"F P{branch.index}", **kwargs))
        for (block, layer), made in calls.items():
            kept = (block, layer) < (branch.block, branch.layer)
            assert len(made) == (2 if kept else 1), (branch, block, layer)
        for down in unet.down_blocks:
            for resnet in down.resnets:
                resnet.conv1._forward_pre_hooks.clear()
    assert torch.equal(denoise(unet, ddim(2), x, "F F", **kwargs), plain)
    assert len({o.sum().item() for o in outputs}) == len(found)  # every cut is its own


def test_branches_of_the_sd_layout_follow_deepcaches_numbering(unet_cond):
    found = repro.branches(unet_cond)
    assert [(b.index, b.block, b.layer) for b in found] == [
        (3 * block + layer, block, layer) for block in range(3) for layer in range(3)
    ]
    assert found[2].skips_from == "down_blocks.0.downsamplers.0"
    assert found[8].skips_from == "mid_block"  # the last block has no downsampler


# -- the cost table of the public API ----------------------------------------------------
@torch.no_grad()
def test_cost_table_and_speedup_of_the_public_api(unet_cond):
    x = torch.randn(1, 4, 16, 16)
    table = repro.cost_table(unet_cond, x, encoder_hidden_states=torch.randn(1, 5, 8))
    assert sorted(table.partial) == [b.index for b in repro.branches(unet_cond)]
    costs = [table.partial[b] for b in sorted(table.partial)]
    assert all(0 < c < 1 for c in costs) and costs == sorted(costs)  # deeper cuts cost more
    schedule = Schedule.deepcache(10, 5, 0)
    assert schedule.speedup(table) == pytest.approx(10 / (2 + 8 * table.partial[0]))
    measured = repro.cost_table(
        unet_cond, x, calibrated=True, repeats=2, encoder_hidden_states=torch.randn(1, 5, 8)
    )
    assert sorted(measured.partial) == sorted(table.partial)
    assert "measured on" in measured.source


def test_the_public_api_is_exported_lazily():
    # `import repro` and schedule arithmetic stay free of torch (fast CLI, light imports).
    code = (
        "import sys, repro; repro.Schedule.deepcache(50, 5, calls=51); "
        "assert 'torch' not in sys.modules; "
        "assert sorted(repro.__all__) == ['CostTable', 'Schedule', 'apply_schedule', "
        "'branches', 'cost_table', 'denoise']"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        repro.no_such_name  # noqa: B018
