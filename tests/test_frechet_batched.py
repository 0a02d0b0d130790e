"""The batched Frechet distance of bootstrap resamples against the one-at-a-time one (itself
checked against torch-fidelity in test_metrics)."""

import numpy as np

from repro.metrics.frechet import FeatureStatistics, frechet_distance, frechet_distances


def _features(seed, n=96, d=24):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3


def test_against_fixed_statistics_it_equals_frechet_distance_per_resample():
    features = _features(0)
    reference = FeatureStatistics.of(_features(1, n=500) * 1.2 + 0.1, "x")
    rows = np.random.default_rng(2).integers(0, len(features), (70, len(features)))
    expected = [frechet_distance(FeatureStatistics.of(features[r], "x"), reference) for r in rows]
    np.testing.assert_allclose(
        frechet_distances(features, rows, reference), expected, rtol=1e-9, atol=1e-9
    )


def test_against_paired_features_both_sides_are_drawn_on_the_same_rows():
    a = _features(3)
    b = a + np.random.default_rng(4).normal(size=a.shape) * 0.4
    rows = np.random.default_rng(5).integers(0, len(a), (70, len(a)))
    expected = [
        frechet_distance(FeatureStatistics.of(a[r], "x"), FeatureStatistics.of(b[r], "x"))
        for r in rows
    ]
    np.testing.assert_allclose(frechet_distances(a, rows, b), expected, rtol=1e-9, atol=1e-9)


def test_singular_covariances_give_the_clipped_value_not_nan():
    few = _features(6, n=10, d=24)  # 10 samples in 24 dimensions: rank 9 covariances
    rows = np.random.default_rng(7).integers(0, 10, (5, 10))
    values = frechet_distances(few, rows, few[::-1].copy())
    assert np.isfinite(values).all() and (values > -1e-9).all()
