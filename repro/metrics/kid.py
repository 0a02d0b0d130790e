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
over many resamples at once. Beyond :data:`EXACT_ROWS` seeds the n x n pair matrix does not
fit in memory (50,000 seeds: 20 GB); there the resampled value is the U-statistic's
per-seed decomposition (its Hoeffding projection: twice the resampled mean of each seed's
mean pair value, minus the value), which has the same mean and, to first order, the same
spread, from row sums computed in blocks. numpy only: ``repro.results.compare`` and the gate use
these without torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from repro.metrics.errors import StatisticsError
from repro.metrics.result import MetricResult

DEGREE, COEF0 = 3, 1.0  # torch-fidelity's kid_kernel_poly_degree / _coef0; gamma = 1 / d
# Rows of the reference its own kernel mean is taken over at most (a fixed random subset
# beyond: the same unbiased estimate, a constant of the reference that every difference
# cancels), so a 50,000-image reference costs 10,000^2 kernel values, not 50,000^2.
REFERENCE_SELF_ROWS = 10_000
CHUNK_ROWS = 512  # kernel blocks of CHUNK_ROWS x (rows of a set): 200 MB at 50,000 rows
# Seeds up to which resamples use the exact pair matrix (4096^2 float64: 134 MB)
EXACT_ROWS = 4096
BATCH_RESAMPLES = 100  # resamples whose seed counts are in memory at once

Quality = Callable[[np.ndarray], np.ndarray]  # as repro.results.compare.Quality


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """torch-fidelity's ``kernel_poly`` at its defaults, in float64."""
    return (x @ y.T / x.shape[1] + COEF0) ** DEGREE


def kid(samples, reference: str, extractor, features: np.ndarray | None = None) -> MetricResult:
    """``kid:<extractor>`` of a samples file against the named reference's images;
    ``features``: the samples' features when already extracted (for FID)."""
    from repro.metrics.references import reference_features

    features = extractor.features(samples.images) if features is None else features
    value = kid_value(features, reference_features(reference, extractor), f"kid:{extractor.name}")
    return MetricResult(
        f"kid:{extractor.name}",
        value,
        len(features),
        {"reference": reference, "extractor_weights": extractor.weights_digest},
        features,
    )


def rkid(candidate, teacher, extractor, features: np.ndarray | None = None) -> MetricResult:
    """``rkid:<extractor>``: KID of the candidate's samples against the teacher's samples of
    the same seeds and conditions (the teacher's features cached as rFID caches them);
    ``features``: the candidate's features when already extracted (for rFID)."""
    from repro.metrics.fid import TEACHER_FEATURES, paired_rows

    rows = paired_rows(candidate, teacher)
    features = extractor.features(candidate.images) if features is None else features
    value = rkid_value(
        features, TEACHER_FEATURES.features(teacher, extractor)[rows], f"rkid:{extractor.name}"
    )
    return MetricResult(
        f"rkid:{extractor.name}",
        value,
        len(features),
        {"teacher_schedule": teacher.schedule, "extractor_weights": extractor.weights_digest},
        features,
    )


def kid_value(features: np.ndarray, reference: np.ndarray, protocol: str = "kid") -> float:
    """Unbiased KID of ``features`` against ``reference`` (independent sets, any sizes)."""
    return float(kid_quality(features, reference, protocol)(np.arange(len(features))))


def rkid_value(candidate: np.ndarray, teacher: np.ndarray, protocol: str = "rkid") -> float:
    """KID of ``candidate`` against ``teacher``, row i of both from one seed (U-statistic)."""
    return float(rkid_quality(candidate, teacher, protocol)(np.arange(len(candidate))))


def kid_quality(
    features: np.ndarray,
    reference: np.ndarray,
    protocol: str = "kid",
    self_term: float | None = None,
) -> Quality:
    """KID against a fixed reference on resampled seeds: seed indices of shape (..., n) ->
    KID of shape (...). The reference is not resampled: its own term is a constant
    (``self_term``: :func:`reference_self_term` of it, when computed once for many rows)."""
    x, y = _checked(features, protocol), _checked(reference, protocol)
    _same_width(x, y, protocol)
    within = _pair_mean(len(x), lambda rows: polynomial_kernel(x[rows], x))
    across = _kernel_row_means(x, y)  # mean kernel of each seed against the reference
    self_term = reference_self_term(y) if self_term is None else self_term

    def quality(counts: np.ndarray, n: int) -> np.ndarray:
        return within(counts, n) - 2 * counts @ across / n + self_term

    return _resampled(quality, len(x))


def rkid_quality(candidate: np.ndarray, teacher: np.ndarray, protocol: str = "rkid") -> Quality:
    """rKID on resampled seeds, candidate and teacher rows of one seed drawn together:
    seed indices of shape (..., n) -> rKID of shape (...)."""
    x, y = _checked(candidate, protocol), _checked(teacher, protocol)
    _same_width(x, y, protocol)
    if len(x) != len(y):
        raise StatisticsError(
            f"{protocol}: {len(x)} candidate rows for {len(y)} teacher "
            "rows; rKID pairs them by seed"
        )

    def pairs(rows: slice) -> np.ndarray:  # h(i, j) of the MMD U-statistic, rows i
        return (
            polynomial_kernel(x[rows], x)
            + polynomial_kernel(y[rows], y)
            - polynomial_kernel(x[rows], y)
            - polynomial_kernel(y[rows], x)
        )

    return _resampled(_pair_mean(len(x), pairs), len(x))


def interval(
    quality: Quality, n: int, resamples: int, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of a KID quality over ``n`` evaluation seeds: an
    interval of KID on n seeds (the estimator is unbiased, so the resamples centre on the
    value; KID may be negative, and so may the interval)."""
    rng = np.random.default_rng(seed)
    batches = [
        min(BATCH_RESAMPLES, resamples - start) for start in range(0, resamples, BATCH_RESAMPLES)
    ]
    draws = np.concatenate([quality(rng.integers(0, n, size=(b, n))) for b in batches])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def _checked(features: np.ndarray, protocol: str) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise StatisticsError(
            f"{protocol}: need an N x d feature matrix with N >= 2, got shape {features.shape}"
        )
    if not np.isfinite(features).all():
        raise StatisticsError(f"{protocol}: features have NaN or infinite entries")
    return features


def _same_width(x: np.ndarray, y: np.ndarray, protocol: str) -> None:
    if x.shape[1] != y.shape[1]:
        raise StatisticsError(
            f"{protocol}: feature dimensions differ ({x.shape[1]} vs {y.shape[1]})"
        )


def _kernel_row_means(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean kernel of each row of ``x`` against all of ``y``, in blocks of ``x``."""
    return np.concatenate(
        [
            polynomial_kernel(x[start : start + CHUNK_ROWS], y).mean(axis=1)
            for start in range(0, len(x), CHUNK_ROWS)
        ]
    )


def reference_self_term(reference: np.ndarray) -> float:
    """Mean kernel over the distinct pairs of the reference (of a fixed random subset of
    :data:`REFERENCE_SELF_ROWS` rows when larger), in blocks."""
    y = _checked(reference, "kid")
    if len(y) > REFERENCE_SELF_ROWS:
        y = y[np.random.default_rng(0).choice(len(y), REFERENCE_SELF_ROWS, replace=False)]
    total = 0.0
    for start in range(0, len(y), CHUNK_ROWS):
        block = y[start : start + CHUNK_ROWS]
        total += polynomial_kernel(block, y).sum()
    total -= (((y * y).sum(axis=1) / y.shape[1] + COEF0) ** DEGREE).sum()  # the diagonal
    return total / (len(y) * (len(y) - 1))


def _pair_mean(
    n_seeds: int, pairs: Callable[[slice], np.ndarray]
) -> Callable[[np.ndarray, int], np.ndarray]:
    """Mean of a symmetric pair function over the distinct pairs of each resample: from
    seed counts (B, n_seeds) and the resample size n to (B,). ``pairs(rows)``: its values
    for a block of rows against all seeds. Exact (sum c_i c_j h_ij / (n^2 - sum c_i^2),
    i != j) up to :data:`EXACT_ROWS` seeds, the per-seed decomposition beyond."""
    blocks = [slice(start, start + CHUNK_ROWS) for start in range(0, n_seeds, CHUNK_ROWS)]
    if n_seeds <= EXACT_ROWS:
        matrix = np.concatenate([pairs(rows) for rows in blocks])
        np.fill_diagonal(matrix, 0.0)
        return lambda counts, n: (
            ((counts @ matrix) * counts).sum(axis=1) / (n * n - (counts * counts).sum(axis=1))
        )
    sums = np.empty(n_seeds)
    for rows in blocks:
        block = pairs(rows)
        own = np.arange(rows.start, rows.start + len(block))
        sums[rows] = block.sum(axis=1) - block[np.arange(len(block)), own]
    per_seed = sums / (n_seeds - 1)  # seed i's mean pair value; their mean is the value
    value = per_seed.mean()
    return lambda counts, n: 2 * counts @ per_seed / n - value


def _resampled(quality: Callable[[np.ndarray, int], np.ndarray], n_seeds: int) -> Quality:
    """``quality(counts, n)`` as a quality of seed indices of any shape (..., n)."""

    def of_indices(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        flat = idx.reshape(-1, idx.shape[-1])
        b, n = flat.shape
        offsets = (flat + n_seeds * np.arange(b)[:, None]).ravel()
        counts = np.bincount(offsets, minlength=b * n_seeds).reshape(b, n_seeds)
        return quality(counts.astype(np.float64), n).reshape(idx.shape[:-1])

    return of_indices
