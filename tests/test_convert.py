"""`repro convert`: original checkpoints -> diffusers directories, and the registry loading
and sampling them. The original key layouts and shapes come from tiny models of
CompVis/latent-diffusion and openai/guided-diffusion, recorded by
tests/data/original_layouts.py (which also checks, where those repositories are checked out,
that converted and original models agree numerically)."""

import copy
import dataclasses
import functools
import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import repro.models.convert
from repro import models
from repro.cli import main as cli
from repro.core.schedule import Schedule
from repro.metrics.extractors import INCEPTION, FeatureExtractor
from repro.models.convert import CIN256_V2, ConversionError, convert_adm, convert_ldm
from repro.sampling import samples
from repro.sampling.generate import generate

LAYOUTS = Path(__file__).parent / "data" / "original_layouts.json"
SUITES = Path(__file__).resolve().parent.parent / "suites"

# cin256-v2 and 64x64_diffusion.pt with narrow channels; every structural setting is theirs.
LDM_TINY = copy.deepcopy(CIN256_V2)
_params = LDM_TINY["model"]["params"]
_params["unet_config"]["params"].update(image_size=16, model_channels=32, context_dim=8)
_params["first_stage_config"]["params"].update(n_embed=16)
_params["first_stage_config"]["params"]["ddconfig"].update(ch=32, resolution=32)
_params["cond_stage_config"]["params"].update(n_classes=11, embed_dim=8)
ADM_TINY = {
    "image_size": 16,
    "in_channels": 3,
    "model_channels": 32,
    "out_channels": 6,
    "num_res_blocks": 3,
    "attention_resolutions": (2, 4, 8),
    "dropout": 0.0,
    "channel_mult": (1, 2, 3, 4),
    "num_classes": 10,
    "num_head_channels": 16,
    "use_scale_shift_norm": True,
    "resblock_updown": True,
    "use_new_attention_order": True,
}


def tiny_specs():
    """The registry's LDM-4-G and ADM ImageNet 64 specs at the tiny widths above."""
    ldm = dataclasses.replace(
        models.LDM4G_IMAGENET256,
        unet_config={
            **models.LDM4G_IMAGENET256.unet_config,
            "sample_size": 16,
            "block_out_channels": (32, 64, 96, 160),
            "cross_attention_dim": 8,
        },
    )
    adm = dataclasses.replace(
        models.ADM_IMAGENET64,
        unet_config={
            **models.ADM_IMAGENET64.unet_config,
            "sample_size": 16,
            "block_out_channels": (32, 64, 96, 128),
            "attention_head_dim": 16,
            "num_class_embeds": 10,
        },
    )
    return ldm, adm


def random_state(model: str, seed: int = 0) -> dict:
    """Random tensors in the recorded original layout of ``model`` (ldm or adm)."""
    generator = torch.Generator().manual_seed(seed)
    layout = json.loads(LAYOUTS.read_text())[model]
    return {key: torch.randn(shape, generator=generator) for key, shape in layout.items()}


def test_ldm4g_spec_is_cin256_v2_as_diffusers_reads_it():
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm

    derived = create_unet_diffusers_config_from_ldm(CIN256_V2, {})
    spec = models.LDM4G_IMAGENET256.unet_config
    for key, value in derived.items():
        if key != "sample_size" and value is not None:
            assert spec.get(key) == (tuple(value) if isinstance(value, list) else value), key


def test_ldm_checkpoint_converts_every_key_of_unet_vq_and_class_embedder():
    state = random_state("ldm")
    converted = convert_ldm(state, tiny_specs()[0], LDM_TINY)
    unet, vq, embedder = converted["unet"], converted["vqvae"], converted["class_embedder"]
    assert sum(v.numel() for v in unet.state_dict().values()) == sum(
        v.numel() for k, v in state.items() if k.startswith("model.diffusion_model.")
    )
    assert torch.equal(
        vq.quantize.embedding.weight, state["first_stage_model.quantize.embedding.weight"]
    )
    labels = torch.tensor([3, embedder.null_class])
    tokens = embedder(labels)
    assert tokens.shape == (2, 1, 8)
    assert torch.equal(tokens[1, 0], state["cond_stage_model.embedding.weight"][10])
    out = unet(torch.randn(2, 3, 16, 16), torch.tensor([1, 997]), encoder_hidden_states=tokens)
    assert out.sample.shape == (2, 3, 16, 16)
    assert vq.decode(torch.randn(1, 3, 8, 8)).sample.shape == (1, 3, 32, 32)


def test_adm_checkpoint_converts_every_key():
    state = random_state("adm")
    unet = convert_adm(state, tiny_specs()[1])["unet"]
    assert sum(v.numel() for v in unet.state_dict().values()) == sum(
        v.numel() for v in state.values()
    )
    q, k, v = state["middle_block.1.qkv.weight"].chunk(3)
    assert torch.equal(unet.mid_block.attentions[0].to_k.weight, k[:, :, 0])
    out = unet(torch.randn(2, 3, 16, 16), torch.tensor([3, 900]), class_labels=torch.tensor([0, 9]))
    assert out.sample.shape == (2, 6, 16, 16)


def test_a_checkpoint_of_another_architecture_is_refused():
    state = random_state("adm")
    del state["output_blocks.0.0.in_layers.0.weight"]
    with pytest.raises(ConversionError, match="1 missing keys"):
        convert_adm(state, tiny_specs()[1])
    state = random_state("adm")
    state["label_emb.weight"] = torch.zeros(5, 128)
    with pytest.raises(ConversionError, match="class_embedding.weight"):
        convert_adm(state, tiny_specs()[1])
    with pytest.raises(ConversionError, match=r"no time_embed.0.\* keys"):
        convert_adm({}, tiny_specs()[1])


def test_repro_convert_writes_a_directory_the_registry_loads(tmp_path, monkeypatch, capsys):
    import repro.models.convert

    spec = tiny_specs()[1]
    monkeypatch.setitem(repro.models.convert.CONVERTERS, "adm", (spec, convert_adm))
    torch.save(random_state("adm"), tmp_path / "64x64_diffusion.pt")
    assert (
        cli.main(["convert", "adm", str(tmp_path / "64x64_diffusion.pt"), str(tmp_path / "adm")])
        == 0
    )
    assert str(tmp_path / "adm") in capsys.readouterr().out
    unet = models.build_unet(spec, str(tmp_path / "adm"))
    assert unet.config.num_class_embeds == 10
    assert (tmp_path / "adm" / "scheduler" / "scheduler_config.json").is_file()
    code = cli.main(["convert", "ldm", str(tmp_path / "model.ckpt"), str(tmp_path / "ldm")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith(f"checkpoint file {tmp_path / 'model.ckpt'} does not exist")
    assert not (tmp_path / "ldm").exists()


def test_ldm4g_macs_per_step_are_deepcaches_table():
    """DeepCache's LDM-4-G MACs column (99.82G full; uniform N at its branch 1 = our P0). Its
    counter (torch-pruning's) counts convolutions and linear layers, not the attention
    products QK^T and AV (4.46 G of a full step here), so neither is counted here."""
    from torch.utils.flop_counter import FlopCounterMode

    from repro.engine.loop import scheduled

    spec = models.LDM4G_IMAGENET256
    with torch.device("meta"):
        unet = models.diffusers_class(spec.unet_class).from_config(dict(spec.unet_config))
        x, context = torch.randn(1, *spec.sample_shape), torch.randn(1, 1, 512)

    def gmacs(schedule: str) -> float:
        """MACs of the schedule's second call, attention products left out."""
        with torch.no_grad(), scheduled(unet, schedule):
            unet(x, torch.tensor(1), encoder_hidden_states=context)
            with FlopCounterMode(display=False) as counter:
                unet(x, torch.tensor(1), encoder_hidden_states=context)
        counts = counter.get_flop_counts()["Global"]
        return sum(v for op, v in counts.items() if str(op) != "aten.bmm") / 2e9

    full, partial = gmacs("F F"), gmacs("F P0")
    assert full == pytest.approx(99.82, rel=2e-3)
    for n, published in ((2, 52.12), (3, 36.48), (5, 23.50), (10, 13.97), (20, 9.39)):
        fulls = str(Schedule.deepcache(250, n, 0)).split().count("F")  # 250 DDIM steps
        mean = (fulls * full + (250 - fulls) * partial) / 250
        assert mean == pytest.approx(published, rel=2e-3), n
    assert sum(v.numel() for v in unet.parameters()) == pytest.approx(400.9e6, rel=1e-3)


# -- converted directories, loaded and sampled ---------------------------------------------
@pytest.fixture
def converted(tmp_path, monkeypatch):
    """``converted(kind)``: random weights in the original key layout at tiny widths (scaled
    down so that activations stay finite through the untrained networks), saved as the
    authors' file and turned into a directory by `repro convert`."""
    ldm, adm = tiny_specs()
    monkeypatch.setitem(
        repro.models.convert.CONVERTERS,
        "ldm",
        (ldm, functools.partial(convert_ldm, original=LDM_TINY)),
    )
    monkeypatch.setitem(repro.models.convert.CONVERTERS, "adm", (adm, convert_adm))

    def make(kind: str) -> Path:
        original = tmp_path / f"{kind}.ckpt"
        state = {key: 0.1 * value for key, value in random_state(kind).items()}
        torch.save({"state_dict": state}, original)
        assert cli.main(["convert", kind, str(original), str(tmp_path / kind)]) == 0
        return tmp_path / kind

    return make


def calls_of(module: torch.nn.Module) -> list:
    """Appends to the returned list on every forward of ``module``."""
    seen: list = []
    module.register_forward_hook(lambda *_: seen.append(1))
    return seen


def test_converted_ldm4g_samples_as_ldm_does_with_guidance_and_partial_steps(converted):
    model = models.load_model("ldm4g-imagenet256", str(converted("ldm")))
    assert (model.num_classes, model.null_label, model.default_guidance) == (10, 10, 1.5)
    deep = calls_of(model.unet.mid_block.resnets[0])  # inside what P steps replace
    teacher = generate(model, 4, None, seeds=[0, 1], labels=[3, 7], batch_size=2)
    assert teacher.images.shape == (2, 64, 64, 3)  # 16x16 latents through the f4 VQ decoder
    assert (teacher.guidance, len(deep)) == (1.5, 4)

    # LDM's DDIMSampler with unconditional_guidance_scale, written out on diffusers parts
    scheduler = models.build_scheduler(models.LDM4G_IMAGENET256)
    scheduler.set_timesteps(4)
    assert scheduler.timesteps.tolist() == [751, 501, 251, 1]  # range(0, 1000, 250) + 1
    x = torch.stack(
        [torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    )
    context = model.encoder(torch.tensor([10, 10, 3, 7]))
    with torch.no_grad():
        for t in scheduler.timesteps:
            uncond, cond = model.unet(
                torch.cat([x, x]), t, encoder_hidden_states=context
            ).sample.chunk(2)
            x = scheduler.step(uncond + 1.5 * (cond - uncond), t, x).prev_sample
        decoded = model.decoder.decode(x).sample
    assert np.array_equal(teacher.images, samples.to_uint8(decoded))

    deep.clear()
    cached = generate(model, 4, "F P0 F P0", seeds=[0, 1], labels=[3, 7], batch_size=2)
    assert len(deep) == 2  # the deep path runs on F steps only
    assert not np.array_equal(cached.images, teacher.images)
    unguided = generate(model, 4, None, seeds=[0, 1], labels=[3, 7], guidance=1.0)
    assert not np.array_equal(unguided.images, teacher.images)


def test_converted_adm_samples_ddpm_with_per_image_noise(converted):
    model = models.load_model("adm-imagenet64", str(converted("adm")))
    assert (model.num_classes, model.null_label, model.encoder, model.decoder) == (
        10,
        None,
        None,
        None,
    )
    assert type(model.scheduler).__name__ == "DDPMScheduler"
    pair = generate(model, 3, "F P0 P0", seeds=[0, 1], batch_size=2)
    assert pair.images.shape == (2, 16, 16, 3) and pair.labels.tolist() == [0, 1]
    # ancestral noise comes from each image's seed: the same image alone, in another batch
    alone = generate(model, 3, "F P0 P0", seeds=[1], batch_size=1)
    assert np.array_equal(alone.images[0], pair.images[1])
    with pytest.raises(ValueError, match="no null class"):
        generate(model, 3, None, seeds=[0], guidance=2.0)


def test_missing_converted_weights_are_named_with_where_and_how(converted, tmp_path):
    def problem(model: str, weights: str) -> str:
        with pytest.raises(models.MissingWeightsError) as error:
            models.check_weights(model, weights)
        return str(error.value)

    make = "`repro convert ldm model.ckpt DIR`"
    assert make in problem("ldm4g-imagenet256", "pretrained")
    assert "has no Hugging Face id" in problem("ldm4g-imagenet256", "pretrained")
    assert "--weights random builds only the UNet" in problem("ldm4g-imagenet256", "random")
    models.check_weights("adm-imagenet64", "random")  # the UNet is the whole model
    (tmp_path / "model.ckpt").write_bytes(b"")
    assert "is a file, not a converted directory" in problem(
        "ldm4g-imagenet256", str(tmp_path / "model.ckpt")
    )
    missing = problem("ldm4g-imagenet256", str(tmp_path / "nowhere"))
    assert f"weights directory {tmp_path / 'nowhere'} does not exist" in missing
    directory = converted("ldm")
    models.check_weights("ldm4g-imagenet256", str(directory))
    (directory / "vqvae" / "diffusion_pytorch_model.safetensors").unlink()
    assert "lacks vqvae/diffusion_pytorch_model.safetensors" in problem(
        "ldm4g-imagenet256", str(directory)
    )
    (directory / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"torn")
    (directory / "vqvae" / "diffusion_pytorch_model.safetensors").write_bytes(b"torn")
    with pytest.raises(
        models.MissingWeightsError, match="unet does not load as a UNet2DConditionModel"
    ):
        models.load_model("ldm4g-imagenet256", str(directory))


class TinyExtractor(FeatureExtractor):
    """Stands in for the Inception network under its protocol name (no weights here)."""

    name = INCEPTION

    def __init__(self):
        torch.manual_seed(0)
        super().__init__(torch.nn.Conv2d(3, 4, 8, stride=8))

    def _features(self, batch):
        return self.network(batch.float() / 255).mean(dim=(2, 3))


LDM_SUITE_SHRUNK = {  # suites/ldm4g_imagenet256.yaml at 13 steps (13/5 = 2.6x), 2 images, rFID
    "steps: 250": "steps: 13",
    "n_eval: 40": "n_eval: 2",
    "population: 16": "population: 2",
    '"0:256"': '"0:2"',
    "intervals: [2, 3, 5, 10, 20]": "intervals: [2]",
    "intervals: [10, 20]": "intervals: [10]",
    '"100000:150000"': '"100000:100002"',
    "batch_size: 50": "batch_size: 2",
    "latency_batch: 16": "latency_batch: 1",
    "latency_repeats: 5": "latency_repeats: 1",
    "grid: 16": "grid: 2",
    "  reference: imagenet-256\n": "",
}


def test_ldm4g_suite_runs_end_to_end_on_a_converted_directory(converted, tmp_path, monkeypatch):
    text = (SUITES / "ldm4g_imagenet256.yaml").read_text()
    for old, new in LDM_SUITE_SHRUNK.items():
        assert old in text
        text = text.replace(old, new)
    text = re.sub(r"  metrics: \[[^]]*\]", '  metrics: ["rfid:inception-2015-12-05"]', text)
    kept = ("teacher", "deepcache N=2 b=0", "deepcache-quad N=10 b=0", "segment @2.6x")
    text = "\n".join(
        line
        for line in text.splitlines()  # published rows of settings shrunk away
        if "{row:" not in line or any(f'row: "{r}"' in line or f"row: {r}," in line for r in kept)
    )
    text = text.replace("weights: checkpoints/ldm4g-imagenet256", f"weights: {converted('ldm')}")
    (tmp_path / "suite.yaml").write_text(text)
    (tmp_path / "w").write_bytes(b"stand-in")
    monkeypatch.setenv("REPRO_INCEPTION_WEIGHTS", str(tmp_path / "w"))
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    for module in ("repro.search.fitness", "repro.metrics.evaluate"):
        monkeypatch.setattr(
            importlib.import_module(module),
            "load_extractor",
            lambda name, **kwargs: TinyExtractor(),
        )
    assert (
        cli.main(
            [
                "run",
                str(tmp_path / "suite.yaml"),
                "--results",
                str(tmp_path / "out"),
                "--no-tracking",
                "--quiet",
            ]
        )
        == 0
    )
    (run_dir,) = (tmp_path / "out" / "ldm4g-imagenet256").iterdir()
    rows = {r["name"]: r for r in json.loads((run_dir / "results.json").read_text())["rows"]}
    assert {"teacher", "segment @2.6x", "deepcache N=2 b=0", "deepcache-quad N=10 b=0"} <= set(rows)
    assert rows["teacher"]["guidance"] == 1.5
    assert rows["deepcache N=2 b=0"]["schedule"].split()[:3] == ["F", "P0", "|"]
    teacher = samples.SampleSet.load(run_dir / "work" / "ldm4g-imagenet256" / "teacher-eval.npz")
    assert teacher.images.shape == (2, 64, 64, 3) and teacher.labels.tolist() == [0, 1]
    assert all(np.isfinite(r["metrics"][f"rfid:{INCEPTION}"]) for r in rows.values())
