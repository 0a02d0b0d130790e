"""`repro convert`: original checkpoints -> diffusers directories. The original key layouts
and shapes come from tiny models of CompVis/latent-diffusion and openai/guided-diffusion,
recorded by tests/data/original_layouts.py (which also checks, where those repositories are
checked out, that converted and original models agree numerically)."""

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from repro import cli, models
from repro.convert import CIN256_V2, ConversionError, convert_adm, convert_ldm
from repro.schedule import Schedule

LAYOUTS = Path(__file__).parent / "data" / "original_layouts.json"

# cin256-v2 and 64x64_diffusion.pt with narrow channels; every structural setting is theirs.
LDM_TINY = copy.deepcopy(CIN256_V2)
_params = LDM_TINY["model"]["params"]
_params["unet_config"]["params"].update(image_size=16, model_channels=32, context_dim=8)
_params["first_stage_config"]["params"].update(n_embed=16)
_params["first_stage_config"]["params"]["ddconfig"].update(ch=32, resolution=32)
_params["cond_stage_config"]["params"].update(n_classes=11, embed_dim=8)
ADM_TINY = {"image_size": 16, "in_channels": 3, "model_channels": 32, "out_channels": 6,
            "num_res_blocks": 3, "attention_resolutions": (2, 4, 8), "dropout": 0.0,
            "channel_mult": (1, 2, 3, 4), "num_classes": 10, "num_head_channels": 16,
            "use_scale_shift_norm": True, "resblock_updown": True,
            "use_new_attention_order": True}


def tiny_specs():
    """The registry's LDM-4-G and ADM ImageNet 64 specs at the tiny widths above."""
    ldm = dataclasses.replace(models.LDM4G_IMAGENET256, unet_config={
        **models.LDM4G_IMAGENET256.unet_config, "sample_size": 16,
        "block_out_channels": (32, 64, 96, 160), "cross_attention_dim": 8})
    adm = dataclasses.replace(models.ADM_IMAGENET64, unet_config={
        **models.ADM_IMAGENET64.unet_config, "sample_size": 16,
        "block_out_channels": (32, 64, 96, 128), "attention_head_dim": 16,
        "num_class_embeds": 10})
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
        v.numel() for k, v in state.items() if k.startswith("model.diffusion_model."))
    assert torch.equal(vq.quantize.embedding.weight,
                       state["first_stage_model.quantize.embedding.weight"])
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
        v.numel() for v in state.values())
    q, k, v = state["middle_block.1.qkv.weight"].chunk(3)
    assert torch.equal(unet.mid_block.attentions[0].to_k.weight, k[:, :, 0])
    out = unet(torch.randn(2, 3, 16, 16), torch.tensor([3, 900]),
               class_labels=torch.tensor([0, 9]))
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
    import repro.convert

    spec = tiny_specs()[1]
    monkeypatch.setitem(repro.convert.CONVERTERS, "adm", (spec, convert_adm))
    torch.save(random_state("adm"), tmp_path / "64x64_diffusion.pt")
    assert cli.main(["convert", "adm", str(tmp_path / "64x64_diffusion.pt"),
                     str(tmp_path / "adm")]) == 0
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

    from repro.engine import scheduled

    spec = models.LDM4G_IMAGENET256
    with torch.device("meta"):
        unet = models._diffusers_class(spec.unet_class).from_config(dict(spec.unet_config))
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
