"""diffusers' own caches in the harness's loops (repro.engine.caches), against a loop written
here the way diffusers' docs apply them: ``apply_*(model, config)``, a ``cache_context`` per
call, the callbacks their configs ask for. The harness's loop under each cache gives the
same latents bit for bit, counts the work the cache let run, and leaves no hook behind."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DiTTransformer2DModel, UNet2DModel
from diffusers import hooks as dh
from diffusers.models.cache_utils import CacheMixin

from repro.core.schedule import Schedule, ScheduleError
from repro.engine import caches
from repro.engine.loop import denoise
from repro.techniques.caches import KNOBS

STEPS = 8
LABELS = torch.tensor([1, 7, 3])


def _cache(technique: str, value: float, options: tuple = ()) -> caches.Cache:
    return caches.Cache(technique, KNOBS[technique].field, value, options)


@pytest.fixture(scope="module")
def dit():
    torch.manual_seed(0)
    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        num_layers=4,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
        norm_num_groups=4,
    ).eval()


def _scheduler():
    scheduler = DDIMScheduler(clip_sample=False, timestep_spacing="trailing")
    scheduler.set_timesteps(STEPS)
    return scheduler


def _noise():
    return torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))


def _harness(model, cache=None):
    """The harness's loop (denoise) under ``cache``, and its work counter."""
    scheduler, x = _scheduler(), _noise()
    with (
        torch.inference_mode(),
        caches.under(cache, model, scheduler, x, {"class_labels": LABELS}, cfg=False) as work,
    ):
        out = denoise(model, scheduler, x, Schedule.full(STEPS), class_labels=LABELS)
    return out, work


def _sigma(scheduler, t) -> float:
    a = float(scheduler.alphas_cumprod[int(t)])
    return math.sqrt(1 - a) / (math.sqrt(a) + math.sqrt(1 - a))


def _reference(model, config_for):
    """A user's loop with the cache applied as diffusers documents it; ``config_for(now)``
    builds the config, ``now()`` giving the current timestep."""
    scheduler, x = _scheduler(), _noise()
    current = {"t": 0}
    dh_apply = {
        dh.FirstBlockCacheConfig: dh.apply_first_block_cache,
        dh.TaylorSeerCacheConfig: dh.apply_taylorseer_cache,
        dh.MagCacheConfig: dh.apply_mag_cache,
        dh.FasterCacheConfig: dh.apply_faster_cache,
        dh.PyramidAttentionBroadcastConfig: dh.apply_pyramid_attention_broadcast,
        dh.SeaCacheConfig: dh.apply_sea_cache,
    }
    config = config_for(lambda: current["t"])
    registries = [m for m in model.modules() if hasattr(m, "_diffusers_hook")]
    assert not registries
    dh_apply[type(config)](model, config)
    try:
        with torch.inference_mode():
            for i, t in enumerate(scheduler.timesteps):
                current["t"] = int(t)
                with CacheMixin.cache_context(
                    model,
                    "cond",
                    step_index=i,
                    sigma=_sigma(scheduler, t),
                    timestep=int(t),
                    num_inference_steps=STEPS,
                ):
                    eps = model(
                        hidden_states=x, timestep=t.expand(len(x)), class_labels=LABELS
                    ).sample
                x = scheduler.step(eps, t, x).prev_sample
    finally:
        caches._remove_added(model, {})
    return x


def _latents(module, args, kwargs):
    return [sample.unsqueeze(1) for sample in kwargs["hidden_states"]]


RATIOS = [1.0, 1.0, 0.99, 0.98, 0.97, 0.95, 0.9, 0.8]
SETTINGS = {  # technique, knob, options -> the config a user would write for it
    "first-block-cache": (0.3, (), lambda now: dh.FirstBlockCacheConfig(threshold=0.3)),
    "taylorseer": (
        2,
        (),
        lambda now: dh.TaylorSeerCacheConfig(
            cache_interval=2, cache_identifiers=[r"[^.]*blocks\.\d+\.(attn\d*|ff)"]
        ),
    ),
    "magcache": (
        0.5,
        (("mag_ratios", RATIOS),),
        lambda now: dh.MagCacheConfig(threshold=0.5, mag_ratios=RATIOS, num_inference_steps=STEPS),
    ),
    "fastercache": (
        2,
        (),
        lambda now: dh.FasterCacheConfig(
            spatial_attention_block_skip_range=2,
            current_timestep_callback=now,
            tensor_format="BCHW",
            is_guidance_distilled=True,
        ),
    ),
    "pyramid-attention-broadcast": (
        2,
        (),
        lambda now: dh.PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2, current_timestep_callback=now
        ),
    ),
    "seacache": (
        1.0,
        (),
        lambda now: dh.SeaCacheConfig(threshold=1.0, raw_vision_callback=_latents),
    ),
}


@pytest.mark.parametrize("technique", list(SETTINGS))
def test_each_cache_in_the_harness_loop_is_the_cache_as_diffusers_applies_it(dit, technique):
    """Same latents bit for bit as the documented loop; less work than full calls (the cache
    skipped something); every hook gone after."""
    knob, options, config_for = SETTINGS[technique]
    full, _ = _harness(dit)
    out, work = _harness(dit, _cache(technique, knob, options))
    assert torch.equal(out, _reference(dit, config_for))
    assert not torch.equal(out, full)
    assert work.calls == STEPS and 0 < work.total < STEPS - 0.1
    assert not [m for m in dit.modules() if hasattr(m, "_diffusers_hook")]
    assert "forward" not in dit.__dict__


def test_work_counts_the_blocks_first_block_cache_let_run(dit):
    """A threshold of 0 never skips: one full call of work per call. A skipping threshold:
    per call 1 when the head block decided to compute, else the rest of the call without
    blocks 1..L-1, read from the FBC head hook's own decisions."""
    _, never = _harness(dit, _cache("first-block-cache", 0.0))
    assert never.total == pytest.approx(STEPS, abs=1e-9)

    decisions = []
    head = dit.transformer_blocks[0]

    def note(module, args, output):
        state = module._diffusers_hook.get_hook("fbc_leader_block_hook").state_manager
        decisions.append(state.get_state().should_compute)

    handle = head.register_forward_hook(note)
    try:
        _, work = _harness(dit, _cache("first-block-cache", 0.3))
    finally:
        handle.remove()
    costs = work.costs
    rest = [name for name in costs if name and not name.startswith("transformer_blocks.0")]
    skipped = sum(costs[name] for name in rest)
    assert True in decisions and False in decisions
    expected = sum(1.0 if computed else 1.0 - skipped for computed in decisions)
    assert work.total == pytest.approx(expected, rel=1e-9)


def test_each_cache_knob_and_default_is_diffusers_own():
    """The static table `repro validate` reads (no diffusers import there) agrees with the
    installed diffusers: the config class, its swept field, and the field's default (PAB's
    config skips nothing by default; 2 is its docs' example)."""
    from dataclasses import fields

    assert set(KNOBS) == set(caches.KINDS)
    for technique, knob in KNOBS.items():
        config, _ = caches.KINDS[technique]
        default = {f.name: f.default for f in fields(config)}[knob.field]
        assert config.__name__ == knob.config
        assert default == (None if technique == "pyramid-attention-broadcast" else knob.default)


def test_unit_costs_share_one_full_call(dit):
    costs = caches.unit_costs(dit, _noise(), torch.tensor(500), {"class_labels": LABELS})
    assert sum(costs.values()) == pytest.approx(1.0)
    assert all(value >= 0 for value in costs.values())
    assert costs["transformer_blocks.0.attn1"] > 0 and costs["transformer_blocks.0.ff"] > 0


def test_one_cache_after_another_leaves_nothing_of_the_first(dit):
    """diffusers relinks a removed hook's successor by ``forward`` only: removed in the wrong
    order, a cache stayed in the model's chain. SeaCache after FBC is SeaCache alone."""
    sea = _cache("seacache", 1.0)
    alone, _ = _harness(dit, sea)
    _harness(dit, _cache("first-block-cache", 0.3))
    _harness(dit, _cache("pyramid-attention-broadcast", 2))
    again, _ = _harness(dit, sea)
    assert torch.equal(alone, again)
    assert torch.equal(_harness(dit)[0], _harness(dit)[0])


def test_hooks_leave_on_errors_too(dit):
    scheduler, x = _scheduler(), _noise()
    with pytest.raises(RuntimeError, match="boom"):
        with caches.under(
            _cache("magcache", 0.1, (("mag_ratios", RATIOS),)),
            dit,
            scheduler,
            x,
            {"class_labels": LABELS},
            cfg=False,
        ):
            raise RuntimeError("boom")
    assert not [m for m in dit.modules() if hasattr(m, "_diffusers_hook")]


def test_magcache_ratios_come_from_its_calibration_mode(dit, capsys):
    scheduler = _scheduler()
    ratios = caches.mag_ratios(dit, scheduler, _noise(), {"class_labels": LABELS})
    assert len(ratios) == STEPS and ratios[0] == 1.0 and all(r > 0 for r in ratios[1:])
    assert capsys.readouterr().out == ""  # its print of the ratios stays out of the log


def test_a_unet_and_a_bad_config_are_refused_in_one_line():
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8),
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=4,
    )
    with pytest.raises(ScheduleError, match="runs on diffusers transformers, not UNet2DModel"):
        with caches.under(
            _cache("first-block-cache", 0.1),
            unet,
            _scheduler(),
            torch.zeros(1, 3, 8, 8),
            {},
            cfg=False,
        ):
            pass
    assert caches.problem(_cache("taylorseer", 2, (("no_such", 1),))) == (
        "taylorseer: TaylorSeerCacheConfig has no field 'no_such'"
    )
    assert "max_consecutive_cached" in caches.problem(
        _cache("seacache", 0.2, (("max_consecutive_cached", -1),))
    )
    assert caches.problem(_cache("magcache", 0.1)) is None  # ratios come later


# -- as baselines of a suite -----------------------------------------------------------------
SUITE = """
name: caches
version: 1
steps: 10
search: {methods: [segment], budgets: [2], n_eval: 3, population: 3, seeds: "0:16",
         fitness: kid}
baselines:
  - {technique: first-block-cache, settings: [0, 0.3]}
  - {technique: magcache}
  - {technique: fewer-steps}
evaluation:
  seeds: "100:124"
  metrics: ["rfid:digits-cnn", "psnr", "ssim", "lpips:alex"]
  batch_size: 16
  latency_batch: 4
  latency_repeats: 1
  grid: 8
  bootstrap: 50
experiments:
  - {name: dit, model: digits-dit, guidance: 1.0}
"""


def test_a_suite_runs_diffusers_caches_as_fronts_priced_by_their_work(tmp_path, monkeypatch):
    """Each setting is a row sampled and timed under its cache, priced by the work it
    counted while sampling; threshold 0 never skips (the teacher's images, one call of work
    per call); MagCache gets its ratios from its calibration mode; verdicts judge the
    search against each cache's front. LPIPS runs on a random AlexNet in torchvision's file
    layout, given by --lpips-weights."""
    import json

    import numpy as np
    import torchvision
    from PIL import Image

    from repro.cli import main as cli
    from repro.metrics.protocols import LPIPS_ENV

    monkeypatch.delenv(LPIPS_ENV, raising=False)
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    weights = tmp_path / "alexnet.pth"
    torch.save({f"features.{k}": v for k, v in features.items()}, weights)
    path = tmp_path / "caches.yaml"
    path.write_text(SUITE)
    assert (
        cli.main(
            [
                "run",
                str(path),
                "--results",
                str(tmp_path / "results"),
                "--no-tracking",
                "--quiet",
                "--lpips-weights",
                str(weights),
            ]
        )
        == 0
    )
    (run_dir,) = (tmp_path / "results" / "caches").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    rows = {row["name"]: row for row in results["rows"]}
    never, skips = rows["first-block-cache threshold=0"], rows["first-block-cache threshold=0.3"]
    teacher = rows["teacher"]
    assert never["cache"]["work"] == pytest.approx(10, abs=1e-9)
    # per-image fidelity to the teacher: identical images, then less
    assert never["metrics"]["ssim"] == 1.0 == teacher["metrics"]["ssim"]
    assert never["metrics"]["psnr"] == teacher["metrics"]["psnr"] > skips["metrics"]["psnr"]
    assert never["metrics"]["lpips:alex"] == 0 == teacher["metrics"]["lpips:alex"]
    assert skips["metrics"]["lpips:alex"] > 0
    assert skips["computed"] == {"calls": 10, "work": skips["cache"]["work"]}
    assert "lpips_weights" in results["inputs"]["dit"]["metrics"]
    assert never["predicted_speedup"] == pytest.approx(1.0, abs=1e-9)
    pixels = [np.asarray(Image.open(run_dir / row["grid"])) for row in (never, teacher, skips)]
    assert np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[1], pixels[2])
    assert skips["cache"] == {
        "technique": "first-block-cache",
        "config": {"threshold": 0.3},
        "work": skips["cache"]["work"],
    }
    assert skips["predicted_speedup"] == pytest.approx(10 / skips["cache"]["work"])  # FLOPs
    assert skips["predicted_speedup"] > 1.05 and skips["measured_speedup"] > 0
    assert skips["schedule"].startswith(
        "F F F F F F F F F F under first-block-cache threshold=0.3 #"
    )
    mag = rows["magcache threshold=0.06"]
    assert len(mag["cache"]["config"]["mag_ratios"]) == 10
    assert {v["family"] for v in results["verdicts"]} >= {
        "first-block-cache",
        "magcache",
        "fewer-steps",
    }


def test_suites_refuse_caches_where_they_cannot_run(tmp_path, capsys):
    """One line naming the field: a UNet model, a negative or fractional knob, a config
    field the cache does not have, options on a technique that takes none."""
    from repro.cli import main as cli

    def error(baseline: str, model: str = "digits-dit") -> str:
        text = SUITE.replace(
            "  - {technique: first-block-cache, settings: [0, 0.3]}\n", f"  - {baseline}\n"
        ).replace("model: digits-dit", f"model: {model}")
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        assert cli.main(["bench", "--suite", str(path), "--no-tracking"]) == 2
        lines = [
            line
            for line in capsys.readouterr().err.splitlines()
            if not line.startswith("warning: ")
        ]
        assert len(lines) == 1
        return lines[0]

    assert error("{technique: first-block-cache}", "digits-ddpm").endswith(
        "field 'baselines[0]': first-block-cache is one of diffusers' transformer caches; "
        "model 'digits-ddpm' is a unet"
    )
    assert error("{technique: first-block-cache, settings: [-1]}").endswith(
        "field 'baselines[0].settings': -1 is not a number >= 0 (threshold)"
    )
    assert error("{technique: taylorseer, settings: [1.5]}").endswith(
        "field 'baselines[0].settings': 1.5 is not a whole number >= 0 (cache_interval)"
    )
    assert error("{technique: seacache, options: {power: 2}}").endswith(  # diffusers' check
        "field 'baselines[0].options': seacache: SeaCacheConfig has no field 'power'"
    )
    assert "field 'baselines[0].options': 'options' applies to first-block-cache and" in error(
        "{technique: deepcache, options: {threshold: 1}}"
    )
    assert cli.main(["validate", str(tmp_path / "bad.yaml")]) == 2  # the light checks too
    capsys.readouterr()
    path = tmp_path / "unknown-field.yaml"
    path.write_text(SUITE.replace("settings: [0, 0.3]}", "options: {power: 2}}"))
    assert (
        cli.main(["run", str(path), "--results", str(tmp_path / "results"), "--no-tracking"]) == 2
    )
    assert "FirstBlockCacheConfig has no field 'power'" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # before the run directory


# -- on a text pipeline ------------------------------------------------------------------------
def _tiny_pixart():
    """A PixArtAlphaPipeline of the real classes, tiny and random, offline: a word-level T5
    tokenizer built in memory, a 4-level VAE (x8, so PixArt's 256 px resolution bins fit
    32x32 latents)."""
    from diffusers import AutoencoderKL, PixArtAlphaPipeline, PixArtTransformer2DModel
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    from repro import models

    words = ["<pad>", "</s>", "<unk>", *"a red cat on the blue mat".split()]
    backend = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    encoder = T5EncoderModel(
        T5Config(vocab_size=len(words), d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)
    ).eval()
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=3,
        sample_size=32,
        patch_size=4,
        cross_attention_dim=16,
        caption_channels=16,
        norm_num_groups=4,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(4, 4, 4, 4),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=2,
    ).eval()
    spec = models.get("pixart-alpha-512")
    scheduler = models.build_scheduler(spec)
    pipe = PixArtAlphaPipeline(
        tokenizer=tokenizer,
        text_encoder=encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return models.LoadedModel(
        name=spec.id,
        unet=transformer,
        scheduler=scheduler,
        resolution=32,
        pipeline=pipe,
        default_guidance=4.5,
    )


def test_a_cache_on_a_text_pipelines_transformer_counts_its_work():
    """PixArt-alpha's own pipeline (CFG on the doubled batch, learned variance) under
    First Block Cache: threshold 0 is the plain pipeline bit for bit with one call of work
    per call; a skipping threshold changes the images for less work."""
    from repro.sampling.generate import generate

    model = _tiny_pixart()

    def sample(cache=None):
        return generate(
            model,
            4,
            None,
            seeds=[0, 1],
            prompts=["a red cat", "the blue mat"],
            batch_size=2,
            cache=cache,
        )

    plain = sample()
    never = sample(_cache("first-block-cache", 0.0))
    skips = sample(_cache("first-block-cache", 0.5))
    assert plain.work is None and np.array_equal(never.images, plain.images)
    assert never.work.tolist() == pytest.approx([4.0, 4.0], abs=1e-9)
    assert not np.array_equal(skips.images, plain.images) and skips.work[0] < 3.9
