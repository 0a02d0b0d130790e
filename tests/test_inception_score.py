"""is:inception-2015-12-05: torch-fidelity's Inception Score on the logits of the same
Inception network FID uses (random weights here: the numbers are checked, not their size)."""

import types

import numpy as np
import pytest
import torch
from test_metrics import random_inception_weights

from repro.cli import main as cli
from repro.metrics import MetricInputError
from repro.metrics.extractors import InceptionExtractor
from repro.metrics.inception_score import IS_PROTOCOL, inception_score
from repro.sampling.samples import SampleSet


def samples(n: int) -> SampleSet:
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return SampleSet(images, np.arange(n), None, "m", "F", 1, None)


def test_inception_logits_are_the_networks_unbiased_logits(tmp_path, monkeypatch):
    extractor = InceptionExtractor(random_inception_weights(tmp_path / "w.pth", monkeypatch))
    images = samples(3).images
    logits = extractor.logits(images)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    with torch.no_grad():
        features, unbiased = extractor.network(batch)
    assert logits.shape == (3, 1008) and np.allclose(logits, unbiased.double().numpy())
    assert np.allclose(extractor.features(images), features.double().numpy())


def test_inception_score_is_exp_mean_kl_of_the_class_posteriors(monkeypatch):
    logits = np.random.default_rng(1).normal(0, 3, (12, 1008))
    extractor = types.SimpleNamespace(logits=lambda images: logits, weights_digest="w")
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)

    def score(rows):
        kl = np.sum(p[rows] * (np.log(p[rows]) - np.log(p[rows].mean(axis=0))), axis=1)
        return np.exp(kl.mean())

    result = inception_score(samples(12), extractor, splits=1)
    assert result.protocol == IS_PROTOCOL and result.n == 12
    assert result.value == pytest.approx(score(np.arange(12)), rel=1e-9) and result.value > 2
    assert "ADM evaluator" in result.details["implementation"]
    order = np.random.RandomState(2020).permutation(12)  # torch-fidelity's shuffle
    halves = inception_score(samples(12), extractor, splits=2)
    assert halves.value == pytest.approx((score(order[:6]) + score(order[6:])) / 2, rel=1e-9)
    with pytest.raises(MetricInputError, match="at least 10 images"):
        inception_score(samples(6), extractor)


def test_repro_eval_reports_the_inception_score(tmp_path, monkeypatch, capsys):
    weights = random_inception_weights(tmp_path / "w.pth", monkeypatch)
    samples(10).save(tmp_path / "s.npz")
    code = cli.main(
        [
            "eval",
            str(tmp_path / "s.npz"),
            "--metric",
            IS_PROTOCOL,
            "--inception-weights",
            str(weights),
        ]
    )
    assert code == 0 and IS_PROTOCOL in capsys.readouterr().out
