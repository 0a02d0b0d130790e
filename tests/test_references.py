"""FID references in the formats users have, each written here in a tiny form: a folder of
images, an .npz of uint8 images, CIFAR-10's cifar-10-batches-py, ADM's reference batches; and
suites/ddpm_cifar10.yaml computing FID end to end on a tiny CIFAR-format copy."""

import hashlib
import importlib
import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_unet2d
from PIL import Image
from torchvision.datasets import CIFAR10

from repro.cli import main as cli
from repro.metrics import MetricInputError
from repro.metrics import references as refs
from repro.metrics.extractors import DIGITS_CNN, INCEPTION, FeatureExtractor
from repro.metrics.frechet import FeatureStatistics, frechet_distance
from repro.metrics.references import reference_statistics
from repro.sampling.samples import SampleSet

SUITES = Path(__file__).resolve().parent.parent / "suites"
FID = f"fid:{INCEPTION}"


class TinyExtractor(FeatureExtractor):
    """Deterministic 4-d features under the Inception protocol name (no weights needed);
    counts the images it is given."""

    name = INCEPTION

    def __init__(self):
        torch.manual_seed(0)
        super().__init__(torch.nn.Conv2d(3, 4, 4, stride=4))
        self.seen = 0

    def features(self, images, batch_size=256):
        self.seen += len(images)
        return super().features(images, batch_size)

    def _features(self, batch):
        return self.network(batch.float() / 255).mean(dim=(2, 3))


class TinyDigitsProtocol(TinyExtractor):
    name = DIGITS_CNN


def images(n: int = 10, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def write_cifar(folder: Path, pictures: np.ndarray, monkeypatch=None) -> Path:
    """``pictures`` (10 = 5 x 2 of them) as the training batches of cifar-10-batches-py, with
    a test batch; with ``monkeypatch``, torchvision's expected md5s become these files'."""
    batches = folder / refs.CIFAR10_FOLDER
    batches.mkdir(parents=True)
    rows = pictures.transpose(0, 3, 1, 2).reshape(len(pictures), -1)  # CHW rows, as CIFAR
    parts = {f"data_batch_{k}": part for k, part in enumerate(np.split(rows, 5), start=1)}
    for name, part in {**parts, "test_batch": rows[:2] // 2}.items():
        with open(batches / name, "wb") as file:
            pickle.dump({"data": part, "labels": [0] * len(part)}, file)
    with open(batches / "batches.meta", "wb") as file:
        pickle.dump({"label_names": ["a"] * 10}, file)
    if monkeypatch is not None:
        md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in batches.iterdir()}
        for listed in ("train_list", "test_list"):
            monkeypatch.setattr(
                CIFAR10, listed, [[name, md5[name]] for name, _ in getattr(CIFAR10, listed)]
            )
        monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    return batches


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No data folders, torch home or cache outside ``tmp_path``; cwd is ``tmp_path``."""
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(refs.DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def expected(extractor: FeatureExtractor, pictures: np.ndarray) -> FeatureStatistics:
    return FeatureStatistics.of(TinyExtractor.features(extractor, pictures), INCEPTION)


def same(a: FeatureStatistics, b: FeatureStatistics) -> bool:
    return a.n == b.n and np.allclose(a.mean, b.mean) and np.allclose(a.cov, b.cov)


# -- folders and npz of images --------------------------------------------------------------
def test_a_folder_of_images_and_an_npz_of_them_give_their_statistics(isolated):
    pictures = images()
    folder = isolated / "pngs"
    folder.mkdir()
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(folder / f"{i:02d}.png")
    np.savez(isolated / "refs.npz", pictures)  # arr_0, as ADM's evaluator reads batches
    extractor = TinyExtractor()
    want = expected(TinyExtractor(), pictures)
    assert same(reference_statistics(str(folder), extractor), want)
    assert same(reference_statistics(str(isolated / "refs.npz"), extractor), want)
    assert refs.locate(str(folder)).format == "images-folder"


def test_statistics_are_cached_by_the_bytes_of_the_files(isolated):
    np.savez(isolated / "refs.npz", images())
    extractor = TinyExtractor()
    first = reference_statistics(str(isolated / "refs.npz"), extractor)
    assert extractor.seen == 10
    assert same(reference_statistics(str(isolated / "refs.npz"), extractor), first)
    assert extractor.seen == 10  # read from the cache
    np.savez(isolated / "refs.npz", images(seed=1))
    changed = reference_statistics(str(isolated / "refs.npz"), extractor)
    assert extractor.seen == 20 and not same(changed, first)


def test_bad_image_data_is_named(isolated):
    np.savez(isolated / "float.npz", images().astype(np.float32))
    np.savez(isolated / "other.npz", x=images())
    (isolated / "mixed").mkdir()
    Image.fromarray(images(1, 8)[0]).save(isolated / "mixed" / "a.png")
    Image.fromarray(images(1, 4)[0]).save(isolated / "mixed" / "b.png")
    (isolated / "empty").mkdir()
    for path, needle in (
        ("float.npz", "arr_0 must be uint8 NHWC"),
        ("other.npz", "neither uint8 images (arr_0) nor ADM statistics"),
        ("mixed", "images differ in size"),
        ("empty", "holds no images"),
        ("nowhere.npz", "does not exist"),
    ):
        with pytest.raises(MetricInputError, match=re.escape(needle)) as error:
            reference_statistics(str(isolated / path), TinyExtractor())
        assert str(isolated / path) in str(error.value)


# -- CIFAR-10 -------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["REPRO_DATA", "./data", "torch-fidelity root", "path"])
def test_cifar10_batches_are_found_and_read_as_torchvision_reads_them(isolated, monkeypatch, where):
    folder = {
        "REPRO_DATA": isolated / "mine",
        "./data": isolated / "data",
        "torch-fidelity root": isolated / "torch" / "fidelity_datasets",
        "path": isolated / "elsewhere",
    }[where]
    pictures = images(size=32)
    batches = write_cifar(folder, pictures, monkeypatch)
    monkeypatch.setenv(refs.DATA_ENV, str(isolated / "mine"))
    name = str(batches) if where == "path" else "cifar10-train"
    assert refs.locate(name) == refs.Source("cifar10", batches)
    statistics = reference_statistics(name, TinyExtractor())
    assert same(statistics, expected(TinyExtractor(), pictures))


def test_a_cifar10_copy_that_fails_its_checksums_is_named(isolated, monkeypatch):
    write_cifar(isolated / "data", images(size=32))  # the real md5s stay expected
    with pytest.raises(MetricInputError, match="missing or corrupted") as error:
        reference_statistics("cifar10-train", TinyExtractor())
    assert str(isolated / "data" / refs.CIFAR10_FOLDER) in str(error.value)


def test_missing_cifar10_offline_exits_2_naming_the_folder_and_where(isolated, monkeypatch, capsys):
    monkeypatch.setattr(refs, "_online", lambda url: False)
    monkeypatch.setenv(refs.DATA_ENV, str(isolated / "mine"))
    samples = SampleSet(images(2, 32), np.arange(2), None, "ddpm-cifar10", "F", 1, None)
    samples.save(isolated / "s.npz")
    code = cli.main(
        [
            "eval",
            str(isolated / "s.npz"),
            "--metric",
            "fid:digits-cnn",
            "--reference",
            "cifar10-train",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    for needle in (
        "cifar-10-batches-py",
        str(isolated / "mine"),
        str(isolated / "data"),
        str(isolated / "torch" / "fidelity_datasets"),
        "REPRO_DATA",
        "torch-fidelity's cifar10-train is unreachable",
    ):
        assert needle in err


def test_cifar10_is_fetched_through_torch_fidelity_when_online(isolated, monkeypatch):
    from torch_fidelity.registry import DATASETS_REGISTRY

    pictures = images(size=32)
    calls = []

    def fetch(root, download):  # what the registered input's download leaves behind
        calls.append((root, download))
        write_cifar(Path(root), pictures, monkeypatch)

    monkeypatch.setattr(refs, "_online", lambda url: url == CIFAR10.url)
    monkeypatch.setitem(DATASETS_REGISTRY, "cifar10-train", fetch)
    statistics = reference_statistics("cifar10-train", TinyExtractor())
    assert calls == [(str(isolated / "torch" / "fidelity_datasets"), True)]
    assert same(statistics, expected(TinyExtractor(), pictures))


# -- ADM reference batches ------------------------------------------------------------------
def write_adm_batch(path: Path, dim: int = refs.ADM_FEATURE_DIM, n: int = 3):
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=dim), np.diag(rng.random(dim) + 0.5)
    np.savez(path, arr_0=images(n, 4), mu=mu, sigma=sigma, mu_s=mu[:7], sigma_s=sigma[:7, :7])
    return mu, sigma


def test_adm_reference_batch_statistics_are_its_precomputed_mu_sigma(isolated, monkeypatch):
    batch = isolated / "refs" / "VIRTUAL_imagenet64_labeled.npz"
    batch.parent.mkdir()
    mu, sigma = write_adm_batch(batch)
    monkeypatch.setenv(refs.DATA_ENV, str(batch.parent))
    extractor = TinyExtractor()
    for name in ("imagenet-64", str(batch)):
        statistics = reference_statistics(name, extractor)
        assert np.array_equal(statistics.mean, mu) and np.array_equal(statistics.cov, sigma)
        assert statistics.n == 3 and statistics.protocol == INCEPTION
    assert extractor.seen == 0  # no image is read
    with pytest.raises(MetricInputError, match="VIRTUAL_imagenet256_labeled.npz, not found in"):
        reference_statistics("imagenet-256", extractor)


def test_adm_statistics_of_another_width_or_protocol_are_refused(isolated):
    write_adm_batch(isolated / "narrow.npz", dim=64)
    with pytest.raises(
        MetricInputError,
        match=r"mu \(64,\) and sigma \(64, 64\) are not the "
        r"2048-d features",
    ):
        reference_statistics(str(isolated / "narrow.npz"), TinyExtractor())
    write_adm_batch(isolated / "wide.npz")
    with pytest.raises(MetricInputError, match="fid:digits-cnn cannot use them"):
        reference_statistics(str(isolated / "wide.npz"), TinyDigitsProtocol())


def test_unknown_reference_names_the_known_ones():
    with pytest.raises(
        MetricInputError, match="known: digits, cifar10-train, imagenet-256, imagenet-64, or a path"
    ):
        reference_statistics("mnist", TinyExtractor())


def test_a_suite_takes_a_reference_path_and_still_refuses_unknown_names(tmp_path):
    from repro.config.suite import SuiteError, check, load

    text = (SUITES / "ddpm_cifar10.yaml").read_text()
    for reference, error in (
        ("data/refs.npz", None),
        ("refs/pngs/", None),
        ("cifar10-trian", "did you mean 'cifar10-train'?"),
    ):
        path = tmp_path / "suite.yaml"
        path.write_text(text.replace("reference: cifar10-train", f"reference: {reference}"))
        if error is None:
            assert load(path).experiments[0].evaluation.reference == reference
            check(load(path))
        else:
            with pytest.raises(SuiteError, match=re.escape(error)):
                check(load(path))


# -- suites/ddpm_cifar10.yaml end to end ----------------------------------------------------
SHRINK = {
    "steps: 100": "steps: 10",
    "budgets: [2, 3]": "budgets: [2]",
    "methods: [segment, stepwise, random]": "methods: [segment]",
    "n_eval: 60": "n_eval: 2",
    "population: 16": "population: 2",
    '"0:5000"': '"0:4"\n  fitness: kid',  # rFID on 4 seeds is refused
    '"100000:150000"': '"100000:100010"',
    "intervals: [2, 3, 5, 10]": "intervals: [2]",
    "steps: [50, 20, 10]": "steps: [5]",
    "batch_size: 500": "batch_size: 10",
    "latency_batch: 128": "latency_batch: 2",
    "latency_repeats: 5": "latency_repeats: 1",
}


def test_ddpm_cifar10_suite_computes_fid_against_cifar10(isolated, monkeypatch):
    text = (SUITES / "ddpm_cifar10.yaml").read_text()
    for old, new in SHRINK.items():
        assert old in text
        text = text.replace(old, new)
    dropped = (
        'row: "deepcache N=3',
        'row: "deepcache N=5',
        'row: "deepcache N=10',
        'row: "sampler-steps',
    )  # published rows of settings shrunk away
    text = "\n".join(line for line in text.splitlines() if not any(d in line for d in dropped))
    tiny_unet2d().save_pretrained(isolated / "ddpm")
    text = text.replace("model: ddpm-cifar10", f"model: ddpm-cifar10\nweights: {isolated}/ddpm")
    (isolated / "suite.yaml").write_text(text)
    pictures = images(size=32)
    write_cifar(isolated / "data", pictures, monkeypatch)
    (isolated / "w").write_bytes(b"stand-in weights file")
    monkeypatch.setenv("REPRO_INCEPTION_WEIGHTS", str(isolated / "w"))
    for module in ("repro.search.fitness", "repro.metrics.evaluate"):
        monkeypatch.setattr(
            importlib.import_module(module),
            "load_extractor",
            lambda name, **kwargs: TinyExtractor(),
        )
    code = cli.main(
        [
            "run",
            str(isolated / "suite.yaml"),
            "--results",
            str(isolated / "out"),
            "--no-tracking",
            "--quiet",
        ]
    )
    assert code == 0
    (run_dir,) = (isolated / "out" / "ddpm-cifar10").iterdir()
    rows = {row["name"]: row for row in json.loads((run_dir / "results.json").read_text())["rows"]}
    teacher = SampleSet.load(run_dir / "work" / "ddpm-cifar10" / "teacher-eval.npz")
    assert teacher.images.shape == (10, 32, 32, 3)
    cifar = expected(TinyExtractor(), pictures)
    want = frechet_distance(expected(TinyExtractor(), teacher.images), cifar)
    # near 0 the trace term cancels: the extractor's batching moves digits below 1e-6
    assert rows["teacher"]["metrics"][FID] == pytest.approx(want, abs=1e-6)
    assert all(np.isfinite(row["metrics"][FID]) for row in rows.values())
