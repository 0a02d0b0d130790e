import pytest
import torch

from repro import models
from repro.cli.main import main
from repro.speed.costs import flop_cost_table


def test_unknown_model_suggests_the_closest_id():
    with pytest.raises(models.UnknownModelError, match="did you mean 'ddpm-cifar10'"):
        models.get("ddpm-cifar")


def test_missing_pretrained_weights_name_the_id(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(models.MissingWeightsError, match="google/ddpm-cifar10-32"):
        models.build_unet(models.get("ddpm-cifar10"), "pretrained")
    with pytest.raises(models.MissingWeightsError, match="does not exist"):
        models.build_unet(models.get("sd15"), str(tmp_path / "nowhere"))


def test_a_local_directory_loads(tmp_path):
    spec = models.get("ddpm-cifar10")
    models.build_unet(spec, "random", seed=3).save_pretrained(tmp_path / "ckpt")
    loaded = models.build_unet(spec, str(tmp_path / "ckpt"))
    reference = models.build_unet(spec, "random", seed=3)
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), reference.state_dict().values(), strict=True)
    )


def test_embedded_ddpm_config_is_the_published_architecture():
    """MAC ratios of every branch equal those measured on google/ddpm-cifar10-32 (PUBLISHED.md):
    this pins both the embedded config and the branch numbering."""
    spec = models.get("ddpm-cifar10")
    unet = models.build_unet(spec, "random")
    latents, kwargs = models.example_inputs(spec, unet, batch=1)
    table = flop_cost_table(unet, latents, kwargs)
    assert [round(table.partial[b], 3) for b in range(12)] == list(spec.mac_ratios)


def test_cli_reports_missing_weights_in_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code = main(["bench", "--model", "ddpm-cifar10", "--weights", "pretrained", "--steps", "2"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "google/ddpm-cifar10-32" in err and "--weights random" in err


def test_spec_branch_count_matches_the_built_unet():
    from repro.engine.branches import num_branches

    for model_id in models.model_ids():
        spec = models.get(model_id)
        meta = torch.device("meta")
        with meta:
            unet = models.diffusers_class(spec.unet_class).from_config(dict(spec.unet_config))
        expected = {"adm-imagenet64": 16, "digits-dit": 6, "pixart-alpha-512": 28}.get(
            model_id, 12
        )  # a UNet: 3 per down block; a transformer: its blocks
        assert spec.num_branches == num_branches(unet) == expected


@torch.no_grad()
def test_example_inputs_label_a_class_embedded_unet():
    """ADM-style UNets carry their class embedding: timing them needs class labels."""
    from dataclasses import replace

    from conftest import tiny_unet2d
    from diffusers import UNet2DModel

    config = {**tiny_unet2d().config, "num_class_embeds": 7, "in_channels": 1, "out_channels": 1}
    config.pop("_use_default_values", None)  # else from_config restores the defaults
    unet = UNet2DModel.from_config(config).eval()
    spec = replace(models.get("digits-ddpm"), unet_config=config)
    latents, kwargs = models.example_inputs(spec, unet, batch=5)
    labels = kwargs["class_labels"]
    assert labels.shape == (5,) and 0 <= labels.min() and labels.max() < 7
    assert unet(latents, 10, **kwargs).sample.shape == latents.shape
    assert (
        "class_labels" not in models.example_inputs(spec, tiny_unet2d(), batch=2)[1]
    )  # no embedding, no labels


def test_each_spec_names_a_loader_that_fits_its_weights():
    """load_model dispatches on the spec's loader (no model ids special-cased); a spec whose
    loader contradicts its pipeline or converted weights is refused when written."""
    import dataclasses

    assert {models.get(i).loader for i in models.model_ids()} == {
        "unet",
        "pipeline",
        "converted",
        "zoo",
    }
    with pytest.raises(ValueError, match="pipeline_class exactly when loader is 'pipeline'"):
        dataclasses.replace(models.SD15, loader="unet")
    with pytest.raises(ValueError, match="loader 'hub' is not one of"):
        dataclasses.replace(models.DDPM_CIFAR10, loader="hub")


def test_every_registry_loader_name_has_a_loader_and_every_model_one_of_them():
    from repro.models import registry
    from repro.models.loading import LOAD

    assert set(LOAD) == set(registry.LOADERS)
    assert {registry.get(model_id).loader for model_id in registry.model_ids()} <= set(LOAD)
