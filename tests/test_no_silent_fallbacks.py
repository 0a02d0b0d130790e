"""Errors instead of silent fallbacks (issue 16): each case below once went on quietly with
something else than what was asked for."""

import json
from dataclasses import replace

import numpy as np
import pytest

from repro import models, search
from repro.config import suite
from repro.core.schedule import CostTable
from repro.metrics.latency import latency_inputs
from repro.models import guidance
from repro.sampling.generate import generate
from repro.sampling.samples import SampleSet, SamplesFileError


# -- guidance: one rule, and no guessing when the model card is missing ---------------------
def test_a_missing_model_card_is_an_error_not_unguided_timing(tmp_path, monkeypatch):
    import repro.models.zoo

    monkeypatch.setattr(repro.models.zoo, "WEIGHTS_DIR", tmp_path)  # no digits-cond.json here
    with pytest.raises(models.MissingWeightsError, match="digits-cond.*model card"):
        guidance.cfg_scale(models.get("digits-cond"), None)
    assert guidance.cfg_scale(models.get("digits-cond"), 3.0) == 3.0  # given: no card needed


def test_sampling_latency_and_records_share_one_guidance_rule():
    cond = models.load_model("digits-cond", "random")
    plain = models.load_model("digits-ddpm", "random")
    # random weights sample with the card's guidance, as `repro bench --suite` times them
    # (the runner once ran them unguided while the bench timed them at 2.0)
    assert cond.default_guidance == guidance.cfg_scale(models.get("digits-cond"), None) == 2.0
    assert guidance.model_scale(cond, None) == 2.0 and guidance.model_scale(cond, 1.0) == 1.0
    assert guidance.model_scale(plain, 3.0) is None  # no conditioning: guidance does not apply
    for scale, cfg in ((None, True), (2.5, True), (1.0, False)):
        samples = generate(cond, 2, seeds=[0, 1], guidance=scale)
        latents, kwargs = latency_inputs(cond, 2, scale)
        assert samples.guidance == guidance.model_scale(cond, scale)
        assert (kwargs["guidance_scale"] is not None) == cfg  # CFG exactly when the scale is not 1
        assert len(kwargs["encoder_hidden_states"]) == (4 if cfg else 2)
    assert generate(plain, 2, seeds=[0], guidance=3.0).guidance is None
    assert latency_inputs(plain, 2, 3.0)[1] == {}


# -- weights that are there but do not fit are not "missing" --------------------------------
def test_weights_that_do_not_fit_are_not_reported_missing(tmp_path):
    spec = models.get("digits-ddpm")
    unet = models.build_unet(spec, "random")
    unet.save_pretrained(tmp_path / "unet")
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    config["block_out_channels"] = [32, 32, 64, 128]  # the last block's shapes no longer fit
    (tmp_path / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(models.WeightsMismatchError, match="do not load: Cannot load") as error:
        models.build_unet(spec, str(tmp_path / "unet"))
    assert "\n" not in str(error.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(models.MissingWeightsError, match="no UNet2DModel weights in directory"):
        models.build_unet(spec, str(tmp_path / "empty"))


# -- an unknown search method is not segment evolution ---------------------------------------
def test_an_unknown_search_method_is_refused():
    space = search.SegmentSpace.of(6, [0])
    with pytest.raises(ValueError, match="unknown search method 'segment-evolutoin'; known: "):
        search.run_method(
            "segment-evolutoin",
            space,
            fitness=lambda s: 0.0,
            n_eval=1,
            budget=search.Budget(2.0, CostTable({0: 0.5}, "t")),
        )


# -- samples files of another format are refused, not misread --------------------------------
def samples_file(tmp_path, version) -> str:
    path = SampleSet(
        images=np.zeros((2, 4, 4, 1), np.uint8),
        seeds=np.arange(2),
        labels=None,
        model="m",
        schedule="F",
        steps=1,
        guidance=None,
    ).save(tmp_path / "s.npz")
    with np.load(path) as data:
        fields = dict(data)
    if version is None:
        del fields["format_version"]
    else:
        fields["format_version"] = np.array(version)
    np.savez(path, **fields)
    return path


@pytest.mark.parametrize(
    ("version", "needle"),
    [
        (2, "has format 2; this repro reads format 1..1"),
        ("two", "format_version 'two' is not a number"),
        (0, "has format 0"),
    ],
)
def test_a_samples_file_of_another_format_is_refused(tmp_path, version, needle):
    with pytest.raises(SamplesFileError, match=needle):
        SampleSet.load(samples_file(tmp_path, version))


def test_samples_files_of_this_format_and_older_ones_load(tmp_path):
    assert SampleSet.load(samples_file(tmp_path, 1)).model == "m"
    assert SampleSet.load(samples_file(tmp_path, None)).model == "m"  # before the field


# -- the suite digest is over the resolved settings ------------------------------------------
HEAD = "name: d\nversion: 1\nmodel: digits-ddpm\nsteps: 20\n"


def digest(tmp_path, text: str, name: str = "s.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return suite.load(path).digest


def test_the_digest_follows_the_settings_not_their_spelling(tmp_path):
    implicit = digest(tmp_path, HEAD)
    n_eval = suite.Search().n_eval  # the default, written out
    assert digest(tmp_path, HEAD + f"search: {{n_eval: {n_eval}}}\n") == implicit
    assert digest(tmp_path, "# a comment\n" + HEAD.replace("steps: 20", "steps:    20")) == implicit
    (tmp_path / "base.yaml").write_text(HEAD)
    assert digest(tmp_path, "include: base.yaml\n", "child.yaml") == implicit
    assert digest(tmp_path, HEAD + f"search: {{n_eval: {n_eval + 1}}}\n") != implicit
    assert digest(tmp_path, HEAD + "evaluation: {latency_batch: 8}\n") != implicit
    # the gate's tolerances change no result: a run resumes under new ones
    assert digest(tmp_path, HEAD + "regression: {confidence: 0.9}\n") == implicit


def test_a_changed_default_changes_the_digest(tmp_path, monkeypatch):
    """A suite that relies on a default does not resume a run made under the old default."""
    before = digest(tmp_path, HEAD)
    loaded = suite.load(tmp_path / "s.yaml")
    changed = replace(
        loaded,
        experiments=tuple(
            replace(e, search=replace(e.search, n_eval=e.search.n_eval + 1))
            for e in loaded.experiments
        ),
    )
    assert suite.settings_digest(changed) != before == suite.settings_digest(loaded)
