import numpy as np
import pytest
import torch

from repro import models
from repro.cli.main import main
from repro.sampling.generate import generate
from repro.sampling.samples import NonFiniteSamplesError, SampleSet, SamplesFileError, parse_seeds


@pytest.fixture(scope="module")
def cond_model():
    return models.load_model("digits-cond", "random")


@pytest.fixture(scope="module")
def ddpm_model():
    return models.load_model("digits-ddpm", "random")


def test_same_seed_same_image_whatever_the_batch_size(ddpm_model):
    whole = generate(ddpm_model, 3, seeds=[5, 6, 7, 8], batch_size=4)
    split = generate(ddpm_model, 3, seeds=[7, 8], batch_size=1)
    assert whole.images.shape == (4, 16, 16, 1) and whole.images.dtype == np.uint8
    assert np.array_equal(whole.images[2:], split.images)
    assert whole.labels is None and whole.schedule == "F F F"


def test_conditional_samples_carry_labels_and_guidance(cond_model):
    result = generate(cond_model, 4, "F P3 N F", seeds=list(range(12)), guidance=2.0)
    assert result.labels.tolist() == [s % 10 for s in range(12)]
    assert result.guidance == 2.0 and result.schedule == "F P3 N | F"
    full = generate(cond_model, 4, None, seeds=list(range(12)), guidance=2.0)
    assert not np.array_equal(result.images, full.images)
    unguided = generate(cond_model, 4, None, seeds=list(range(12)), guidance=1.0)
    assert not np.array_equal(unguided.images, full.images)


def test_labels_are_checked_against_the_model(cond_model, ddpm_model):
    with pytest.raises(ValueError, match=r"labels \[12\] outside 0\.\.9"):
        generate(cond_model, 2, seeds=[0], labels=[12])
    with pytest.raises(ValueError, match="unconditional"):
        generate(ddpm_model, 2, seeds=[0], labels=[1])


def test_nan_samples_fail_loudly_naming_model_and_schedule():
    model = models.load_model("digits-ddpm", "random")
    with torch.no_grad():
        model.unet.conv_out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteSamplesError, match=r"'digits-ddpm' produced NaN.*'F N'"):
        generate(model, 2, "F N", seeds=[0, 1])


def test_samples_file_round_trips_and_is_written_atomically(tmp_path, cond_model):
    result = generate(cond_model, 2, seeds=[3, 4], guidance=None)
    path = result.save(tmp_path / "s.npz")
    loaded = SampleSet.load(path)
    assert np.array_equal(loaded.images, result.images) and loaded.labels.tolist() == [3, 4]
    assert (loaded.model, loaded.schedule, loaded.steps) == ("digits-cond", "F F", 2)
    assert loaded.guidance == result.guidance
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_bad_samples_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(SamplesFileError, match="bad.npz"):
        SampleSet.load(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, images=np.zeros((1, 2, 2, 1), np.uint8))
    with pytest.raises(SamplesFileError, match="partial.npz lacks guidance, model"):
        SampleSet.load(partial)


def test_seed_ranges():
    assert parse_seeds("3:6") == [3, 4, 5] and parse_seeds("1,9") == [1, 9]
    for text in ("a:b", "5:5"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(text)


def test_cli_sample_writes_the_file_contract(tmp_path, capsys):
    out = tmp_path / "samples.npz"
    code = main(
        [
            "sample",
            "--model",
            "digits-cond",
            "--weights",
            "random",
            "--steps",
            "3",
            "--schedule",
            "F P0 N",
            "--seeds",
            "0:5",
            "--labels",
            "7",
            "--out",
            str(out),
        ]
    )
    assert code == 0 and "5 images of digits-cond" in capsys.readouterr().out
    loaded = SampleSet.load(out)
    assert loaded.labels.tolist() == [7] * 5 and loaded.schedule == "F P0 N"
    assert loaded.images.shape == (5, 16, 16, 1)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--seeds", "x"], "--seeds expects"),
        (["--schedule", "F Q"], "'Q' at step 2"),
        (["--labels", "3"], "unconditional"),
    ],
)
def test_cli_sample_bad_input_exits_2(tmp_path, capsys, argv, needle):
    code = main(
        [
            "sample",
            "--model",
            "digits-ddpm",
            "--weights",
            "random",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "x.npz"),
            *argv,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


def test_trained_digits_cond_through_the_engine_draws_the_requested_digits():
    """The committed weights, sampled by `generate` (engine path, default guidance): the
    classifier recognises the requested class, as the model card reports for the plain loop."""
    from repro.models.zoo import load_classifier

    model = models.load_model("digits-cond")
    result = generate(model, 10, seeds=list(range(40)))
    images = torch.from_numpy(result.images).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        predicted = load_classifier()(images).argmax(1)
    accuracy = (predicted == torch.from_numpy(result.labels)).float().mean().item()
    assert accuracy >= 0.9
