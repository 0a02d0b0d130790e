"""Reference statistics: the ground-truth side of ``fid:<extractor>``.

A reference is a registered name, looked for in the usual data folders, or a path to data in
a format users have: a folder of images or an ``.npz`` of uint8 images (``arr_0``, as ADM's
evaluator reads batches), CIFAR-10's ``cifar-10-batches-py`` folder, or one of ADM's reference
batches, whose precomputed ``mu``/``sigma`` are used as its evaluator uses them. Statistics of
images are cached under the user cache dir, keyed by the bytes of the files they came from,
the protocol and the extractor's weights, so a changed file is never read from a stale entry.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from repro.infra.atomic import atomic_save_npz
from repro.infra.digests import key_digest
from repro.infra.files import InputFileError, check_npz, open_regular, read_npz
from repro.metrics.cache import cache_dir, read_cached
from repro.metrics.errors import MetricInputError
from repro.metrics.extractors import FeatureExtractor
from repro.metrics.frechet import FeatureStatistics
from repro.metrics.protocols import CIFAR10_FOLDER, INCEPTION, REFERENCES, is_path

DATA_ENV = "REPRO_DATA"
IMAGE_SUFFIXES = "png,jpg,jpeg"  # torch-fidelity's default for folders of samples
# Width of the Inception pool_3 features ADM's evaluator stores as mu / sigma.
ADM_FEATURE_DIM = 2048
NETWORK_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Source:
    """Where a reference's data is, and its format: ``digits``, ``cifar10``, ``images-npz``,
    ``images-folder`` or ``adm-statistics``."""

    format: str
    path: Path | None = None


def data_folders() -> list[Path]:
    """Where named references are looked for: ``$REPRO_DATA``, ``./data`` (torchvision's
    usual root) and torch-fidelity's dataset root."""
    folders = [Path(os.environ[DATA_ENV])] if os.environ.get(DATA_ENV) else []
    return [*folders, Path.cwd() / "data", fidelity_root()]


def fidelity_root() -> Path:
    """torch-fidelity's default ``datasets_root``, where its registered inputs download."""
    import torch

    return Path(torch.hub._get_torch_home()) / "fidelity_datasets"


def locate(reference: str) -> Source:
    """The data of ``reference`` on this machine; CIFAR-10 is fetched through torch-fidelity's
    ``cifar10-train`` input when missing and the network is reachable."""
    if is_path(reference):
        return source_at(Path(reference))
    try:
        ref = REFERENCES[reference]
    except KeyError:
        raise MetricInputError(
            f"unknown reference {reference!r}; known: {', '.join(REFERENCES)}, or a path to data"
        ) from None
    if not ref.file:
        return Source(ref.name)
    folders = data_folders()
    for folder in folders:
        if (folder / ref.file).exists():
            return source_at(folder / ref.file)
    fetch = ""
    if ref.name == "cifar10-train":
        if _fetch_cifar10():
            return source_at(fidelity_root() / CIFAR10_FOLDER)
        fetch = ", and the network to fetch it with torch-fidelity's cifar10-train is unreachable"
    raise MetricInputError(
        f"reference {ref.name!r} ({ref.description}) needs {ref.file}, not found in "
        f"{', '.join(str(f) for f in folders)} (set {DATA_ENV} to its folder){fetch}"
    )


def source_at(path: Path) -> Source:
    """The format of the reference data at ``path``."""
    if path.is_dir():
        if path.name == CIFAR10_FOLDER:
            return Source("cifar10", path)
        if (path / CIFAR10_FOLDER).is_dir():
            return Source("cifar10", path / CIFAR10_FOLDER)
        return Source("images-folder", path)
    if path.suffix == ".npz" and path.is_file():
        keys = set(_npz_shapes(path))
        if {"mu", "sigma"} <= keys:
            return Source("adm-statistics", path)
        if "arr_0" in keys:
            return Source("images-npz", path)
        raise MetricInputError(
            f"reference {path} has neither uint8 images (arr_0) nor ADM "
            f"statistics (mu, sigma); its arrays: {', '.join(sorted(keys))}"
        )
    raise MetricInputError(
        f"reference {path} is not a folder of images or an .npz file"
        if path.exists()
        else f"reference {path} does not exist"
    )


def _fetch_cifar10() -> bool:
    """Download CIFAR-10 into torch-fidelity's root with its registered input, if online."""
    from torch_fidelity.registry import DATASETS_REGISTRY
    from torchvision.datasets import CIFAR10

    if not _online(CIFAR10.url):
        return False
    DATASETS_REGISTRY["cifar10-train"](str(fidelity_root()), True)
    return True


def _online(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname
    try:
        socket.create_connection((host, 443), timeout=NETWORK_TIMEOUT_S).close()
    except OSError:
        return False
    return True


def reference_digest(name: str) -> str | None:
    """Digest of the bytes of reference ``name``'s files (None for the embedded digits
    set, which the package's code fixes): a file changed at the same path is another
    reference, so work keyed by it is made again."""
    source = locate(name)
    if source.path is None:
        return None
    return _files_digest(_files(source), source.path)


def reference_statistics(name: str, extractor: FeatureExtractor) -> FeatureStatistics:
    """Statistics of reference ``name`` (a registered name or a path) under ``extractor``."""
    source = locate(name)
    if source.format == "digits":
        return _digits_statistics(extractor)
    if source.format == "adm-statistics":
        return adm_statistics(source.path, extractor)
    return _image_statistics(source, extractor)


def reference_features(name: str, extractor: FeatureExtractor) -> np.ndarray:
    """Features (float32) of reference ``name``'s images, cached like its statistics: the
    input of precision / recall. An ADM reference batch gives its ``arr_0`` images, as its
    evaluator reads them for precision / recall."""
    source = locate(name)
    if source.format == "digits":
        from repro.models.zoo.data import digits_images
        from repro.sampling.samples import to_uint8

        return extractor.features(to_uint8(digits_images()[0])).astype(np.float32)
    files = _files(source)
    path = cache_dir() / "references" / _cache_name(source, files, extractor, "features")
    if path.is_file():
        return read_cached(path, load_features)
    features = extractor.features(_images(source, files)).astype(np.float32)
    atomic_save_npz(path, features=features)
    return features


def load_features(path: Path) -> np.ndarray:
    """The ``features`` array of a cache file."""
    return read_npz(path, ("features",))["features"]


def adm_statistics(path: Path, extractor: FeatureExtractor) -> FeatureStatistics:
    """``mu``/``sigma`` of an ADM reference batch, read as guided-diffusion's evaluator reads
    them; they are pool_3 features of the 2015-12-05 Inception graph, so only that protocol
    may use them."""
    if extractor.name != INCEPTION:
        raise MetricInputError(
            f"reference {path} holds ADM's Inception pool_3 statistics; "
            f"fid:{extractor.name} cannot use them (use fid:{INCEPTION})"
        )
    mu, sigma = _reference_arrays(path, "mu", "sigma")
    dim = ADM_FEATURE_DIM
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise MetricInputError(
            f"reference {path}: mu {mu.shape} and sigma {sigma.shape} are "
            f"not the {dim}-d features of fid:{INCEPTION}"
        )
    return FeatureStatistics(mu, sigma, _npz_rows(path, "arr_0"), extractor.name)


def _npz_rows(path: Path, key: str) -> int:
    """Rows of one array of an ``.npz``, from its header (the images are not read)."""
    shapes = _npz_shapes(path)
    if key not in shapes or not shapes[key][0]:
        raise MetricInputError(f"reference {path} has no {key} (the reference images)")
    return shapes[key][0][0]


def _npz_shapes(path: Path) -> dict:
    try:
        return check_npz(path)
    except InputFileError as error:
        raise MetricInputError(f"reference {error}") from None


def _reference_arrays(path: Path, *names: str) -> list[np.ndarray]:
    try:
        arrays = read_npz(path, names)
    except InputFileError as error:
        raise MetricInputError(f"reference {error}") from None
    return [arrays[name] for name in names]


def _image_statistics(source: Source, extractor: FeatureExtractor) -> FeatureStatistics:
    files = _files(source)
    return _cached(
        _cache_name(source, files, extractor, "statistics"),
        lambda: extractor.features(_images(source, files)),
        extractor,
    )


def _cache_name(source: Source, files: list[Path], extractor: FeatureExtractor, what: str) -> str:
    """Cache file name keyed by the files' bytes, the protocol and the extractor weights."""
    identity = {
        "format": source.format,
        "files": _files_digest(files, source.path),
        "protocol": extractor.name,
        "weights": extractor.weights_digest,
    }
    return f"{source.path.name}-{extractor.name}-{what}-{key_digest(identity)}.npz"


def _cached(name: str, features, extractor: FeatureExtractor) -> FeatureStatistics:
    """Statistics of ``features()`` stored under the references cache as ``name``."""
    path = cache_dir() / "references" / name
    if path.is_file():
        return read_cached(path, FeatureStatistics.load)
    statistics = FeatureStatistics.of(features(), extractor.name)
    statistics.save(path)
    return statistics


def _files(source: Source) -> list[Path]:
    """The files whose bytes make up the reference."""
    if source.format == "cifar10":
        from torchvision.datasets import CIFAR10

        return [
            source.path / name
            for name, _ in (*CIFAR10.train_list, (CIFAR10.meta["filename"], None))
        ]
    if source.format == "images-folder":
        from torch_fidelity.utils import glob_samples_paths

        files = glob_samples_paths(str(source.path), False, IMAGE_SUFFIXES, verbose=False)
        if not files:
            raise MetricInputError(f"reference {source.path} holds no images ({IMAGE_SUFFIXES})")
        return [Path(f) for f in files]
    return [source.path]


def _files_digest(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(os.path.relpath(file, root).encode())
        try:
            with open_regular(file) as fd, open(fd, "rb", closefd=False) as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
        except InputFileError as error:
            raise MetricInputError(f"reference {error}") from None
    return digest.hexdigest()[:16]


def _images(source: Source, files: list[Path]) -> np.ndarray:
    """The reference's images as one uint8 NHWC array."""
    if source.format == "cifar10":
        from torch_fidelity.datasets import Cifar10_RGB

        try:
            return Cifar10_RGB(str(source.path.parent), train=True, download=False).data
        except RuntimeError:
            raise MetricInputError(
                f"reference {source.path} is missing or corrupted: torchvision checks the md5 "
                "of each of its files (data_batch_1..5, test_batch, batches.meta)"
            ) from None
    if source.format in ("images-npz", "adm-statistics"):
        (images,) = _reference_arrays(source.path, "arr_0")
        if images.dtype != np.uint8 or images.ndim != 4:
            raise MetricInputError(
                f"reference {source.path}: arr_0 must be uint8 NHWC "
                f"images, got {images.dtype} {images.shape}"
            )
        return images
    return _folder_images(files, source.path)


def _folder_images(files: list[Path], folder: Path) -> np.ndarray:
    from torch_fidelity.datasets import ImagesPathDataset

    dataset = ImagesPathDataset([str(f) for f in files])
    images = [dataset[i].permute(1, 2, 0).numpy() for i in range(len(dataset))]
    sizes = {image.shape for image in images}
    if len(sizes) > 1:
        raise MetricInputError(
            f"reference {folder}: images differ in size "
            f"({', '.join(str(s[:2]) for s in sorted(sizes))})"
        )
    return np.stack(images)


def _digits_statistics(extractor: FeatureExtractor) -> FeatureStatistics:
    from repro.models.zoo.data import PREPROCESSING, digits_images
    from repro.sampling.samples import to_uint8

    images, _ = digits_images()
    identity = {
        "dataset": "digits",
        "split": "all",
        "n": len(images),
        "protocol": extractor.name,
        "weights": extractor.weights_digest,
        "preprocessing": PREPROCESSING,
        "quantised": "uint8 like samples files",
    }
    # Through uint8 like every samples file, so both sides of FID see the same rounding.
    return _cached(
        f"digits-all-{extractor.name}-n{len(images)}-{key_digest(identity)}.npz",
        lambda: extractor.features(to_uint8(images)),
        extractor,
    )
