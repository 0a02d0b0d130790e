"""Features -> statistics -> Frechet distance, in float64.

The statistics object is the stage boundary: whatever produced the features (any extractor,
any batch size), a metric only sees a validated mean and covariance tagged with the
extractor's protocol, and refuses to compare statistics of different protocols.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import linalg

from repro.infra.atomic import atomic_save_npz
from repro.infra.files import read_npz
from repro.metrics.errors import MetricInputError, StatisticsError

# Imaginary parts of sqrtm's diagonal below this are rounding noise (pytorch-fid's tolerance).
IMAGINARY_TOLERANCE = 1e-3
# Diagonal offset tried once when sqrtm of a singular product is not finite.
SINGULAR_OFFSET = 1e-6


@dataclass(frozen=True, eq=False)
class FeatureStatistics:
    """Mean and covariance (float64, read-only) of ``n`` feature vectors of ``protocol``."""

    mean: np.ndarray
    cov: np.ndarray
    n: int
    protocol: str

    def __post_init__(self) -> None:
        mean, cov = (_real_float64(a, name) for a, name in ((self.mean, "mean"), (self.cov, "cov")))
        if mean.ndim != 1 or cov.shape != (len(mean), len(mean)):
            raise StatisticsError(
                f"{self.protocol}: mean {mean.shape} and covariance "
                f"{cov.shape} do not describe one d-dimensional Gaussian"
            )
        if self.n < 2:
            raise StatisticsError(
                f"{self.protocol}: statistics need at least 2 features, got {self.n}"
            )
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "cov", cov)

    @classmethod
    def of(cls, features: np.ndarray, protocol: str) -> FeatureStatistics:
        """Statistics of an N x d feature matrix (unbiased covariance, as FID does)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise StatisticsError(
                f"{protocol}: need an N x d feature matrix with N >= 2, got shape {features.shape}"
            )
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), len(features), protocol)

    @property
    def dim(self) -> int:
        return len(self.mean)

    def save(self, path: Path) -> Path:
        return atomic_save_npz(
            Path(path),
            mean=self.mean,
            cov=self.cov,
            n=np.array(self.n),
            protocol=np.array(self.protocol),
        )

    @classmethod
    def load(cls, path: Path) -> FeatureStatistics:
        data = read_npz(path, ("mean", "cov", "n", "protocol"))
        return cls(data["mean"], data["cov"], int(data["n"]), str(data["protocol"]))


def _real_float64(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if np.iscomplexobj(array):
        raise StatisticsError(f"feature {name} is complex")
    array = np.array(array, dtype=np.float64)
    if not np.isfinite(array).all():
        raise StatisticsError(f"feature {name} has NaN or infinite entries")
    array.setflags(write=False)
    return array


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b))`` between two Gaussians."""
    if a.protocol != b.protocol:
        raise MetricInputError(
            f"cannot compare statistics of protocol {a.protocol!r} with {b.protocol!r}"
        )
    if a.dim != b.dim:
        raise MetricInputError(f"{a.protocol}: feature dimensions differ ({a.dim} vs {b.dim})")
    diff = a.mean - b.mean
    trace_sqrt = _trace_sqrtm_product(a.cov, b.cov, a.protocol)
    distance = float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * trace_sqrt)
    if not np.isfinite(distance):
        raise StatisticsError(f"{a.protocol}: Frechet distance is not finite ({distance})")
    return distance


def _trace_sqrtm_product(cov_a: np.ndarray, cov_b: np.ndarray, protocol: str) -> float:
    """tr(sqrtm(S_a S_b)): real part kept only when the imaginary part is rounding noise.

    Singular covariances are normal (dead ReLU units, fewer images than dimensions), so
    scipy's singularity warning is silenced; the result is checked here instead.
    """
    root = _sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        offset = SINGULAR_OFFSET * np.eye(len(cov_a))
        root = _sqrtm((cov_a + offset) @ (cov_b + offset))
        if not np.isfinite(root).all():
            raise StatisticsError(f"{protocol}: sqrtm of the covariance product is not finite")
    if np.iscomplexobj(root):
        imaginary = np.abs(np.diagonal(root).imag).max()
        if imaginary > IMAGINARY_TOLERANCE:
            raise StatisticsError(
                f"{protocol}: sqrtm of the covariance product has a significant imaginary "
                f"part ({imaginary:.3g}); use more images than feature dimensions"
            )
        root = root.real
    return float(np.trace(root))


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return linalg.sqrtm(matrix)


def frechet_distances(
    features: np.ndarray, rows: np.ndarray, other: FeatureStatistics | np.ndarray, chunk: int = 64
) -> np.ndarray:
    """The Frechet distance of ``features[rows[i]]`` against ``other`` for every index row
    ``i`` of ``rows`` (B, n) at once: what a bootstrap over evaluation seeds recomputes
    thousands of times. ``other``: fixed statistics (FID against a reference) or a feature
    matrix drawn on the same rows (rFID: candidate and teacher of a seed stay paired).

    The trace term is ``sum sqrt(eig(R S R))`` with ``R`` the symmetric root of the other
    covariance (the eigenvalues of ``S_a S_b`` for two covariances), batched with
    ``eigh``/``eigvalsh`` instead of one ``sqrtm`` per resample; rounding below zero is
    clipped. Same values as :func:`frechet_distance` to rounding (tested)."""
    features = np.asarray(features, dtype=np.float64)
    rows = np.asarray(rows)
    out = np.empty(len(rows))
    fixed = isinstance(other, FeatureStatistics)
    if fixed:
        root = _symmetric_root(other.cov[None])[0]
    for start in range(0, len(rows), chunk):
        idx = rows[start : start + chunk]
        mean_a, cov_a = _batched_moments(features[idx])
        if fixed:
            mean_b, cov_b, roots = other.mean[None], other.cov[None], root[None]
        else:
            mean_b, cov_b = _batched_moments(np.asarray(other, dtype=np.float64)[idx])
            roots = _symmetric_root(cov_b)
        eig = np.linalg.eigvalsh(roots @ cov_a @ roots)
        trace_sqrt = np.sqrt(np.clip(eig, 0, None)).sum(axis=-1)
        diff = mean_a - mean_b
        out[start : start + chunk] = (
            np.einsum("bi,bi->b", diff, diff)
            + np.trace(cov_a, axis1=-2, axis2=-1)
            + np.trace(cov_b, axis1=-2, axis2=-1)
            - 2 * trace_sqrt
        )
    return out


def _batched_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means (B, d) and unbiased covariances (B, d, d) of feature sets (B, n, d)."""
    mean = x.mean(axis=1)
    centred = x - mean[:, None]
    return mean, np.swapaxes(centred, 1, 2) @ centred / (x.shape[1] - 1)


def _symmetric_root(cov: np.ndarray) -> np.ndarray:
    """Symmetric square roots of covariances (B, d, d), negative rounding clipped."""
    values, vectors = np.linalg.eigh(cov)
    return (vectors * np.sqrt(np.clip(values, 0, None))[:, None, :]) @ np.swapaxes(vectors, -1, -2)
