"""The embedded digits zoo: data, committed weights and cards, loading errors, sampling."""

import hashlib
import json
import re

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from repro.models.zoo import (
    DIFFUSION_NAMES,
    WEIGHTS_DIR,
    ZOO_NAMES,
    ZooWeightsError,
    load,
    load_classifier,
    read_card,
)
from repro.models.zoo.data import digits_images, digits_split
from repro.training.evaluate import ddim_sample, frechet_distance, requested_class_accuracy
from repro.training.train import train


def test_digits_images_are_16x16_in_unit_range():
    images, labels = digits_images()
    assert images.shape == (1797, 1, 16, 16)
    assert images.dtype == torch.float32
    assert images.min() == -1.0 and images.max() == 1.0
    assert sorted(labels.unique().tolist()) == list(range(10))


def test_split_is_deterministic_disjoint_and_stratified():
    split = digits_split(seed=0)
    again = digits_split(seed=0)
    other = digits_split(seed=1)
    assert torch.equal(split.heldout_indices, again.heldout_indices)
    assert not torch.equal(split.heldout_indices, other.heldout_indices)
    assert (len(split.train_indices), len(split.heldout_indices)) == (1437, 360)
    assert set(split.train_indices.tolist()).isdisjoint(split.heldout_indices.tolist())
    images, labels = digits_images()
    assert torch.equal(split.heldout_images, images[split.heldout_indices])
    assert torch.equal(split.train_labels, labels[split.train_indices])
    heldout_share = split.heldout_labels.bincount() / labels.bincount()
    assert torch.all((heldout_share - 0.2).abs() < 0.01)


@pytest.mark.parametrize("name", DIFFUSION_NAMES)
def test_load_gives_an_eval_mode_model_with_a_fresh_unclipped_ddim(name):
    model = load(name)
    assert model.name == name and model.resolution == 16
    assert not model.unet.training
    assert isinstance(model.scheduler, DDIMScheduler)
    assert model.scheduler.config.clip_sample is False
    assert model.scheduler is not load(name).scheduler
    if name == "digits-cond":
        assert model.num_classes == 10 and 1.5 <= model.default_guidance <= 3
        assert model.encoder(torch.tensor([3, 10])).shape == (2, 1, 64)
    elif name == "digits-dit":  # labels go to the transformer itself; 10 is its null row
        assert model.num_classes == 10 and model.encoder is None
        assert (
            model.unet.transformer_blocks[0].norm1.emb.class_embedder.embedding_table.num_embeddings
            == 11
        )
    else:
        assert model.encoder is None and model.default_guidance is None


def test_load_rejects_the_classifier_and_unknown_names():
    with pytest.raises(ValueError, match="load_classifier"):
        load("digits-cnn")
    with pytest.raises(ValueError, match="digits-ddpm"):
        load("mnist")


def test_classifier_heldout_accuracy_is_at_least_97_percent():
    split = digits_split(seed=0)
    accuracy = requested_class_accuracy(
        load_classifier(), split.heldout_images, split.heldout_labels
    )
    assert accuracy >= 0.97


def test_committed_cards_meet_the_quality_gates_with_the_committed_classifier():
    classifier_sha = hashlib.sha256((WEIGHTS_DIR / "digits-cnn.safetensors").read_bytes())
    ddpm = read_card("digits-ddpm")["quality"]
    distances = ddpm["frechet_distance"]
    baselines = ("untrained", "pixel_shuffled_digits", "gaussian_noise_clipped")
    assert distances["trained"] < 0.2 * min(distances[key] for key in baselines)
    cond_card = read_card("digits-cond")
    accuracy = cond_card["quality"]["requested_class_accuracy_by_guidance"]
    assert accuracy[str(cond_card["default_guidance"])] >= 0.9
    dit_card = read_card("digits-dit")
    accuracy = dit_card["quality"]["requested_class_accuracy_by_guidance"]
    assert accuracy[str(dit_card["default_guidance"])] >= 0.9
    assert dit_card["training"]["stored_as"] == "float16"
    for quality in (ddpm, cond_card["quality"], dit_card["quality"]):
        assert quality["classifier"]["sha256"] == classifier_sha.hexdigest()


def test_committed_weights_fit_the_size_budget():
    files = [WEIGHTS_DIR / f"{name}.safetensors" for name in ZOO_NAMES]
    assert sum(path.stat().st_size for path in files) <= 20e6


def _naming(path):
    return re.escape(str(path))


def _copy_cards(tmp_path, name):
    (tmp_path / f"{name}.json").write_text((WEIGHTS_DIR / f"{name}.json").read_text())


def test_missing_weights_error_names_the_file(tmp_path):
    _copy_cards(tmp_path, "digits-ddpm")
    with pytest.raises(ZooWeightsError, match=_naming(tmp_path / "digits-ddpm.safetensors")):
        load("digits-ddpm", tmp_path)
    with pytest.raises(ZooWeightsError, match=_naming(tmp_path / "digits-cnn.safetensors")):
        load_classifier(tmp_path)
    with pytest.raises(ZooWeightsError, match=_naming(tmp_path / "digits-cond.json")):
        load("digits-cond", tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_weights_error_names_the_file(tmp_path, damage):
    _copy_cards(tmp_path, "digits-cond")
    original = (WEIGHTS_DIR / "digits-cond.safetensors").read_bytes()
    content = original[: len(original) // 2] if damage == "truncated" else b"not a tensor" * 99
    path = tmp_path / "digits-cond.safetensors"
    path.write_bytes(content)
    with pytest.raises(ZooWeightsError, match=_naming(path)):
        load("digits-cond", tmp_path)


def test_weights_of_another_model_are_refused_with_the_file_named(tmp_path):
    _copy_cards(tmp_path, "digits-cond")
    path = tmp_path / "digits-cond.safetensors"
    path.write_bytes((WEIGHTS_DIR / "digits-ddpm.safetensors").read_bytes())
    with pytest.raises(ZooWeightsError, match=_naming(path)):
        load("digits-cond", tmp_path)


def test_conditional_sampling_smoke():
    model = load("digits-cond")
    labels = torch.tensor([0, 3, 7])
    images = ddim_sample(model, num_steps=3, labels=labels, guidance=model.default_guidance)
    assert images.shape == (3, 1, 16, 16)
    assert torch.isfinite(images).all() and images.abs().max() <= 1.0
    unguided = ddim_sample(model, num_steps=3, labels=labels, guidance=1.0)
    assert not torch.allclose(images, unguided)


def test_frechet_distance_of_a_shift_is_its_squared_length():
    features = np.random.default_rng(0).normal(size=(400, 8))
    shift = np.arange(8.0) / 10
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(features, features + shift) == pytest.approx((shift**2).sum())


def test_classifier_training_is_reproducible(tmp_path):
    first = train("digits-cnn", tmp_path / "a", seed=0, steps=3)
    torch.manual_seed(99)  # the run must not depend on the caller's global RNG
    second = train("digits-cnn", tmp_path / "b", seed=0, steps=3)
    third = train("digits-cnn", tmp_path / "c", seed=1, steps=3)
    assert first.read_bytes() == second.read_bytes() != third.read_bytes()
    card = read_card("digits-cnn", first.parent)
    assert card["training"]["steps"] == 3 and card["training"]["stopped_by"] == "steps"
    assert card["training"]["command"] == "repro zoo train digits-cnn"


def test_a_card_without_its_unet_config_is_refused_with_the_card_named(tmp_path):
    card = read_card("digits-ddpm")
    del card["unet"]
    (tmp_path / "digits-ddpm.json").write_text(json.dumps(card))
    (tmp_path / "digits-ddpm.safetensors").write_bytes(
        (WEIGHTS_DIR / "digits-ddpm.safetensors").read_bytes()
    )
    with pytest.raises(ZooWeightsError, match=_naming(tmp_path / "digits-ddpm.json")):
        load("digits-ddpm", tmp_path)
