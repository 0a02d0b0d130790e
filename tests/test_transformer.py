"""Schedules on diffusion transformers built from config (DiT, PixArt-alpha, SD3, FLUX): an
all-F schedule is the unhooked model bit for bit, and P<b> is the residual reuse of an
independent implementation written here with plain torch hooks (every block still runs;
the outputs of the skipped ones are overwritten)."""

import contextlib

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DiTTransformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    FluxTransformer2DModel,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
)

from repro.core.schedule import ScheduleError
from repro.engine.branches import branches, num_branches
from repro.engine.loop import scheduled

STEPS = 6


def _dit():
    model = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        num_layers=4,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
        norm_num_groups=4,
    )
    labels = torch.tensor([1, 7])
    return (
        model,
        lambda x, t: {"hidden_states": x, "timestep": t.expand(len(x)), "class_labels": labels},
        (2, 4, 8, 8),
        "ddim",
    )


def _pixart():
    model = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        num_layers=3,
        sample_size=8,
        patch_size=2,
        cross_attention_dim=16,
        caption_channels=16,
        norm_num_groups=4,
    )
    text = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    return (
        model,
        lambda x, t: {
            "hidden_states": x,
            "encoder_hidden_states": text,
            "timestep": t.expand(len(x)),
            "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
        },
        (2, 4, 8, 8),
        "ddim",
    )


def _sd3():
    model = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=8,
        out_channels=4,
        pos_embed_max_size=8,
    )
    g = torch.Generator().manual_seed(1)
    text, pooled = torch.randn(2, 5, 16, generator=g), torch.randn(2, 8, generator=g)
    return (
        model,
        lambda x, t: {
            "hidden_states": x,
            "encoder_hidden_states": text,
            "pooled_projections": pooled,
            "timestep": t.expand(len(x)),
        },
        (2, 4, 8, 8),
        "flow",
    )


def _flux():
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=8,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=8,
        axes_dims_rope=(2, 2, 4),
    )
    g = torch.Generator().manual_seed(1)
    text, pooled = torch.randn(2, 5, 16, generator=g), torch.randn(2, 8, generator=g)
    img_ids, txt_ids = torch.zeros(16, 3), torch.zeros(5, 3)
    img_ids[:, 1], img_ids[:, 2] = torch.arange(16) // 4, torch.arange(16) % 4
    return (
        model,
        lambda x, t: {
            "hidden_states": x,
            "encoder_hidden_states": text,
            "pooled_projections": pooled,
            "timestep": t.expand(len(x)) / 1000,
            "img_ids": img_ids,
            "txt_ids": txt_ids,
        },
        (2, 16, 8),
        "flow",
    )


MODELS = {"dit": _dit, "pixart": _pixart, "sd3": _sd3, "flux": _flux}


def _scheduler(kind: str):
    scheduler = (
        DDIMScheduler(clip_sample=False) if kind == "ddim" else FlowMatchEulerDiscreteScheduler()
    )
    scheduler.set_timesteps(STEPS)
    return scheduler


def _sample(model, inputs, shape, kind, schedule=None):
    """The denoising loop a pipeline runs, the model called by keyword; under ``schedule``
    through the engine when given."""
    scheduler = _scheduler(kind)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    hooks = scheduled(model, schedule, scheduler) if schedule else contextlib.nullcontext()
    with torch.no_grad(), hooks:
        for t in scheduler.timesteps:
            x = scheduler.step(model(**inputs(x, t)).sample, t, x).prev_sample
    return x


def _streams(block):
    """(image, text) positions in a block's output, by class: written here, not read from
    diffusers' registry."""
    return {
        "BasicTransformerBlock": (None, None),
        "JointTransformerBlock": (1, 0),
        "FluxTransformerBlock": (1, 0),
        "FluxSingleTransformerBlock": (1, 0),
    }[type(block).__name__]


@contextlib.contextmanager
def _reference(model, schedule: list[str]):
    """Residual reuse with torch hooks: on F, note block b's inputs and the last block's
    output; on P<b>, overwrite block b's output with its input plus (last output - noted
    input) and every later block's output with its input; on N, the model's last output."""
    blocks = [
        b
        for name in ("transformer_blocks", "single_transformer_blocks")
        for b in getattr(model, name, [])
    ]
    step = {"i": -1, "noted": {}, "last": None}
    handles = []

    def streams_in(block, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        return hidden, kwargs.get("encoder_hidden_states")

    def streams_out(block, output):
        image, text = _streams(block)
        return (output, None) if image is None else (output[image], output[text])

    def packed(block, hidden, text, like):
        image, text_at = _streams(block)
        if image is None:
            return hidden
        out = list(like)
        out[image], out[text_at] = hidden, text
        return tuple(out)

    def on_model(module, args, kwargs):
        step["i"] += 1

    def after_model(module, args, kwargs, output):  # N: the last output again
        if schedule[step["i"]] == "N":
            return step["output"]
        step["output"] = output
        return output

    def make(index, block):
        def pre(module, args, kwargs):
            if schedule[step["i"]] == "F":
                step["noted"][index] = streams_in(block, args, kwargs)
            step.setdefault("current", {})[index] = streams_in(block, args, kwargs)

        def post(module, args, kwargs, output):
            token = schedule[step["i"]]
            if token == "F" and index == len(blocks) - 1:
                step["last"] = streams_out(block, output)
            if token in ("F", "N"):
                return output
            b = int(token[1:])
            if index < b:
                return output
            hidden, text = step["current"][index]
            if index == b:
                first, last = step["noted"][b], step["last"]
                hidden = hidden + (last[0] - first[0])
                # SD3's last block returns no text tokens: nothing reads them after it (and
                # every block still runs here, so they stay the block's input)
                text = text if last[1] is None else text + (last[1] - first[1])
            return packed(block, hidden, text, output if isinstance(output, tuple) else None)

        return pre, post

    handles.append(model.register_forward_pre_hook(on_model, with_kwargs=True))
    handles.append(model.register_forward_hook(after_model, with_kwargs=True))
    for index, block in enumerate(blocks):
        pre, post = make(index, block)
        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(block.register_forward_hook(post, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture(params=list(MODELS))
def built(request):
    torch.manual_seed(0)
    model, inputs, shape, kind = MODELS[request.param]()
    return model.eval(), inputs, shape, kind


def test_an_all_full_schedule_is_the_unhooked_model_bit_for_bit(built):
    model, inputs, shape, kind = built
    plain = _sample(model, inputs, shape, kind)
    assert torch.equal(_sample(model, inputs, shape, kind, "F " * STEPS), plain)


def test_a_partial_step_reuses_the_residual_of_the_blocks_it_skips(built):
    model, inputs, shape, kind = built
    last = num_branches(model) - 1
    schedule = ["F", "P1", "P0", "F", f"P{last}", "N"]
    with _reference(model, schedule):
        expected = _sample(model, inputs, shape, kind)
    got = _sample(model, inputs, shape, kind, " ".join(schedule))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, _sample(model, inputs, shape, kind, "F " * STEPS))


def test_a_transformer_has_one_branch_per_block_in_run_order():
    model = _flux()[0]
    found = branches(model)
    assert [b.skips_from for b in found] == [
        "transformer_blocks.0",
        "transformer_blocks.1",
        "single_transformer_blocks.0",
        "single_transformer_blocks.1",
    ]
    assert num_branches(model) == 4 and found[0].resumes_at == "after single_transformer_blocks.1"


def test_first_block_cache_with_its_decisions_replayed_is_a_p1_schedule():
    """diffusers' First Block Cache reuses the residual of every block after the first where
    its threshold says so: its images, with the decision of each step replayed as F or P1."""
    import copy

    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    model, inputs, shape, kind = _flux()
    model.eval()
    plain = copy.deepcopy(model)
    apply_first_block_cache(model, FirstBlockCacheConfig(threshold=0.3))
    head = model.transformer_blocks[0]._diffusers_hook.get_hook("fbc_leader_block_hook")
    decisions = []

    def note(module, args, kwargs, output):
        decisions.append("F" if head.state_manager.get_state().should_compute else "P1")

    model.register_forward_hook(note, with_kwargs=True)
    with model.cache_context("cond"):
        cached = _sample(model, inputs, shape, kind)
    assert decisions[0] == "F" and "P1" in decisions and decisions.count("F") > 1
    replayed = _sample(plain, inputs, shape, kind, " ".join(decisions))
    assert torch.equal(replayed, cached)


@pytest.fixture(scope="module")
def dit_pipe():
    """diffusers' DiTPipeline on a DiT and a VAE built from config (ImageNet's 1000 classes:
    the pipeline's null class is 1000)."""
    from diffusers import AutoencoderKL, DiTPipeline

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=3,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
    )
    pipe = DiTPipeline(transformer.eval(), vae.eval(), DDIMScheduler(clip_sample=False))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _images(pipe, steps=STEPS, guidance=4.0):
    return pipe(
        [3, 7],
        num_inference_steps=steps,
        guidance_scale=guidance,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images


def test_apply_schedule_on_a_dit_pipeline(dit_pipe):
    """A user's DiT pipeline (guidance: one call per step on the doubled batch): all-F is
    the plain pipeline bit for bit, a partial schedule changes the images, the wrong length
    and nesting are refused, and the hooks leave with the block."""
    import numpy as np

    from repro.engine.loop import apply_schedule, is_scheduled

    plain = _images(dit_pipe)
    with apply_schedule(dit_pipe, "F " * STEPS):
        assert np.array_equal(_images(dit_pipe), plain)
    with apply_schedule(dit_pipe, "F P1 P1 F P0 N"):
        partial = _images(dit_pipe)
        with pytest.raises(ScheduleError, match="already runs under a schedule"):
            with apply_schedule(dit_pipe, "F " * STEPS):
                pass
        with pytest.raises(ScheduleError, match="schedule has 6 steps but the scheduler runs 4"):
            _images(dit_pipe, steps=4)
    assert not np.allclose(partial, plain) and not is_scheduled(dit_pipe.transformer)
    assert np.array_equal(_images(dit_pipe), plain)


def test_a_transformers_cost_table_counts_the_blocks_each_partial_step_runs():
    """P<b> runs b of the L blocks: its FLOP ratio grows with b, all below F."""
    from repro.speed.costs import cost_table

    model, inputs, shape, _ = _sd3()
    kwargs = inputs(torch.zeros(shape), torch.tensor(0.0))
    del kwargs["hidden_states"], kwargs["timestep"]
    table = cost_table(model.eval(), torch.zeros(shape), 500, **kwargs)
    ratios = [table.partial[b] for b in range(num_branches(model))]
    assert ratios == sorted(ratios) and 0 < ratios[0] < ratios[-1] < 1


def test_the_probe_traces_each_branchs_residual_between_calls():
    """The same call twice gives cosine 1 on every branch; another timestep less than 1."""
    from repro.search.probe import residual_similarity

    model, inputs, shape, _ = _dit()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), residual_similarity(model.eval()) as rows:
        for t in (900, 900, 100):
            model(**inputs(x, torch.tensor(t)))
    assert len(rows) == num_branches(model) and all(len(r) == 2 for r in rows)
    assert all(r[0] == pytest.approx(1.0) and r[1] < 0.999 for r in rows)


def test_the_embedded_dit_samples_under_a_schedule_with_guidance(tmp_path, capsys):
    """digits-dit end to end through `repro sample`: class labels, CFG on the doubled batch,
    a transformer schedule; partial steps change the images, all-F is the teacher."""
    import numpy as np

    from repro.cli.main import main

    def sample(schedule: str, name: str) -> np.ndarray:
        out = tmp_path / f"{name}.npz"
        assert (
            main(
                [
                    "sample",
                    "--model",
                    "digits-dit",
                    "--steps",
                    "4",
                    "--seeds",
                    "0:6",
                    "--guidance",
                    "2",
                    "--schedule",
                    schedule,
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
        return np.load(out)["images"]

    full, partial = sample("F F F F", "full"), sample("F P1 P3 N", "partial")
    assert np.isfinite(partial).all() and not np.allclose(full, partial)
    assert np.array_equal(sample("F F F F", "again"), full)


def test_the_pixart_suite_times_its_rows_on_random_weights_of_its_architecture(capsys, monkeypatch):
    """`repro bench --suite pixart_coco --weights random` on PixArt-alpha's own classes and
    sampler, shrunk (one call of the real 0.6B transformer is ~1.2 TFLOPs): the teacher,
    uniform partial steps, every diffusers cache and DPM-Solver++ at fewer steps, timed on
    the doubled CFG batch with its learned variance split off."""
    import json
    from dataclasses import replace

    from repro.cli.main import main
    from repro.models import registry

    spec = registry.get("pixart-alpha-512")
    small = {
        "num_layers": 5,
        "num_attention_heads": 4,
        "attention_head_dim": 16,
        "cross_attention_dim": 64,
        "caption_channels": 16,
        "sample_size": 16,
        "norm_num_groups": 4,
    }
    monkeypatch.setitem(
        registry._REGISTRY,
        spec.id,
        replace(spec, unet_config={**spec.unet_config, **small}, context_tokens=5),
    )
    assert (
        main(
            [
                "bench",
                "--suite",
                "pixart_coco",
                "--batch",
                "1",
                "--steps",
                "4",
                "--repeats",
                "2",
                "--threads",
                "1",
                "--clock",
                "cpu",
                "--json",
                "--no-tracking",
            ]
        )
        == 0
    )
    (experiment,) = json.loads(capsys.readouterr().out)["experiments"]
    assert (experiment["scheduler"], experiment["unet_batch"]) == ("DPMSolverMultistepScheduler", 2)
    rows = {row["name"]: row for row in experiment["rows"]}
    for technique in (
        "first-block-cache",
        "taylorseer",
        "magcache",
        "fastercache",
        "pyramid-attention-broadcast",
        "seacache",
    ):
        cached = [row for name, row in rows.items() if name.startswith(technique + " ")]
        assert len(cached) == 2 and all(row["predicted_speedup"] > 0 for row in cached)
    assert rows["deepcache N=2 b=4"]["schedule"] == "F P4 | F P4"
    assert rows["sampler-steps @2x"]["steps"] == 2


def test_pixart_without_its_pipeline_fails_in_one_line(tmp_path):
    from repro.models.loading import MissingWeightsError, load_model

    with pytest.raises(MissingWeightsError, match="weights directory .*absent does not exist"):
        load_model("pixart-alpha-512", str(tmp_path / "absent"))
    with pytest.raises(MissingWeightsError, match="no PixArtAlphaPipeline weights in directory"):
        load_model("pixart-alpha-512", str(tmp_path))
