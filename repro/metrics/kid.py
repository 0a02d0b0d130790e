"""Kernel Inception Distance: the squared MMD of two feature sets under torch-fidelity's
polynomial kernel ``k(x, y) = (x.y / d + 1) ** 3`` (its defaults: degree 3, gamma 1/d,
coef0 1), estimated without bias, so that unlike FID its expectation does not depend on
the number of samples: it is defined at a few dozen seeds in 2048 dimensions.

Two estimators (``kid_value``, ``rkid_value``; ``kid`` and ``rkid`` apply them to samples
files), both on all rows (torch-fidelity averages random subsets; one subset of
all rows is the same estimator with less variance):

- ``kid`` (against a reference data set: independent samples) is torch-fidelity's
  ``unbiased`` estimator, generalised to sets of different sizes: the mean kernel within
  each set over distinct pairs, minus twice the mean kernel across the sets.
- ``rkid`` (against the teacher's samples of the same seeds: row i of both comes from one
  seed) is torch-fidelity's ``u-statistic``: the cross term also leaves out the same-seed
  pairs, which are dependent (a candidate looks like its own seed's teacher image), so
  counting them would bias the distance down.

Bootstrap resamples of seeds repeat seeds; a repeated seed paired with itself would put a
kernel diagonal term (``k(x, x)``, large) among the off-diagonal ones. The qualities here
therefore weight each seed by its count in the resample and drop the pairs of a seed with
its own copies (the U-statistic over the distinct pairs the resample holds), vectorised
over many resamples at once. numpy only: ``repro.compare`` and the gate use these without
torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import StatisticsError
from .result import MetricResult

DEGREE, COEF0 = 3, 1.0  # torch-fidelity's kid_kernel_poly_degree / _coef0; gamma = 1 / d
# Rows of the reference its own kernel mean is taken over at most (a fixed random subset
# beyond: the same unbiased estimate, a constant of the reference that every difference
# cancels), so a 50,000-image reference costs 10,000^2 kernel values, not 50,000^2.
REFERENCE_SELF_ROWS = 10_000
CHUNK_ROWS = 2048  # kernel blocks of at most CHUNK_ROWS x CHUNK_ROWS values in memory

Quality = Callable[[np.ndarray], np.ndarray]  # as repro.compare.Quality


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """torch-fidelity's ``kernel_poly`` at its defaults, in float64."""
    return (x @ y.T / x.shape[1] + COEF0) ** DEGREE


def kid(samples, reference: str, extractor) -> MetricResult:
    """``kid:<extractor>`` of a samples file against the named reference's images."""
    from .references import reference_features

    features = extractor.features(samples.images)
    value = kid_value(features, reference_features(reference, extractor),
                      f"kid:{extractor.name}")
    return MetricResult(f"kid:{extractor.name}", value, len(features),
                        {"reference": reference, "extractor_weights": extractor.weights_digest},
                        features)


def rkid(candidate, teacher, extractor) -> MetricResult:
    """``rkid:<extractor>``: KID of the candidate's samples against the teacher's samples of
    the same seeds and conditions (the teacher's features cached as rFID caches them)."""
    from .fid import TEACHER_FEATURES, paired_rows

    rows = paired_rows(candidate, teacher)
    features = extractor.features(candidate.images)
    value = rkid_value(features, TEACHER_FEATURES.features(teacher, extractor)[rows],
                       f"rkid:{extractor.name}")
    return MetricResult(f"rkid:{extractor.name}", value, len(features),
                        {"teacher_schedule": teacher.schedule,
                         "extractor_weights": extractor.weights_digest}, features)


def kid_value(features: np.ndarray, reference: np.ndarray, protocol: str = "kid") -> float:
    """Unbiased KID of ``features`` against ``reference`` (independent sets, any sizes)."""
    return float(kid_quality(features, reference, protocol)(np.arange(len(features))))


def rkid_value(candidate: np.ndarray, teacher: np.ndarray, protocol: str = "rkid") -> float:
    """KID of ``candidate`` against ``teacher``, row i of both from one seed (U-statistic)."""
    return float(rkid_quality(candidate, teacher, protocol)(np.arange(len(candidate))))


def kid_quality(features: np.ndarray, reference: np.ndarray, protocol: str = "kid") -> Quality:
    """KID against a fixed reference on resampled seeds: seed indices of shape (..., n) ->
    KID of shape (...). The reference is not resampled (its own term is a constant)."""
    x, y = _checked(features, protocol), _checked(reference, protocol)
    _same_width(x, y, protocol)
    within = _zero_diagonal(polynomial_kernel(x, x))
    across = _kernel_row_means(x, y)  # mean kernel of each seed against the reference
    self_term = _reference_self_term(y)

    def quality(idx: np.ndarray) -> np.ndarray:
        counts, n = _counts(idx, len(x))
        return _distinct_pair_mean(counts, within, n) - 2 * counts @ across / n + self_term
    return _shaped(quality)


def rkid_quality(candidate: np.ndarray, teacher: np.ndarray, protocol: str = "rkid") -> Quality:
    """rKID on resampled seeds, candidate and teacher rows of one seed drawn together:
    seed indices of shape (..., n) -> rKID of shape (...)."""
    x, y = _checked(candidate, protocol), _checked(teacher, protocol)
    _same_width(x, y, protocol)
    if len(x) != len(y):
        raise StatisticsError(f"{protocol}: {len(x)} candidate rows for {len(y)} teacher "
                              "rows; rKID pairs them by seed")
    across = polynomial_kernel(x, y)
    pair = _zero_diagonal(polynomial_kernel(x, x) + polynomial_kernel(y, y)
                          - across - across.T)

    def quality(idx: np.ndarray) -> np.ndarray:
        counts, n = _counts(idx, len(x))
        return _distinct_pair_mean(counts, pair, n)
    return _shaped(quality)


def _checked(features: np.ndarray, protocol: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise StatisticsError(f"{protocol}: need an N x d feature matrix with N >= 2, got "
                              f"shape {features.shape}")
    if not np.isfinite(features).all():
        raise StatisticsError(f"{protocol}: features have NaN or infinite entries")
    return features


def _same_width(x: np.ndarray, y: np.ndarray, protocol: str) -> None:
    if x.shape[1] != y.shape[1]:
        raise StatisticsError(f"{protocol}: feature dimensions differ ({x.shape[1]} vs "
                              f"{y.shape[1]})")


def _zero_diagonal(matrix: np.ndarray) -> np.ndarray:
    np.fill_diagonal(matrix, 0.0)
    return matrix


def _kernel_row_means(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean kernel of each row of ``x`` against all of ``y``, in blocks of ``y``."""
    total = np.zeros(len(x))
    for start in range(0, len(y), CHUNK_ROWS):
        total += polynomial_kernel(x, y[start:start + CHUNK_ROWS]).sum(axis=1)
    return total / len(y)


def _reference_self_term(y: np.ndarray) -> float:
    """Mean kernel over the distinct pairs of the reference (of a fixed random subset of
    :data:`REFERENCE_SELF_ROWS` rows when larger), in blocks."""
    if len(y) > REFERENCE_SELF_ROWS:
        y = y[np.random.default_rng(0).choice(len(y), REFERENCE_SELF_ROWS, replace=False)]
    total = 0.0
    for start in range(0, len(y), CHUNK_ROWS):
        block = y[start:start + CHUNK_ROWS]
        total += polynomial_kernel(block, y).sum()
    total -= (((y * y).sum(axis=1) / y.shape[1] + COEF0) ** DEGREE).sum()  # the diagonal
    return total / (len(y) * (len(y) - 1))


def _counts(idx: np.ndarray, n_seeds: int) -> tuple[np.ndarray, int]:
    """Resamples (B, n) of seed indices -> each seed's count (B, n_seeds), and n."""
    b, n = idx.shape
    offsets = (idx + n_seeds * np.arange(b)[:, None]).ravel()
    return np.bincount(offsets, minlength=b * n_seeds).reshape(b, n_seeds).astype(np.float64), n


def _distinct_pair_mean(counts: np.ndarray, pair: np.ndarray, n: int) -> np.ndarray:
    """Mean of ``pair`` (zero diagonal) over the ordered pairs of resample positions that
    hold two different seeds: sum c_i c_j pair_ij / (n^2 - sum c_i^2)."""
    return ((counts @ pair) * counts).sum(axis=1) / (n * n - (counts * counts).sum(axis=1))


def _shaped(quality: Callable[[np.ndarray], np.ndarray]) -> Quality:
    """``quality`` of flat resamples (B, n) applied to indices of any shape (..., n)."""
    def shaped(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        flat = idx.reshape(-1, idx.shape[-1])
        return quality(flat).reshape(idx.shape[:-1])
    return shaped
