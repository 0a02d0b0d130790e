"""precision:<extractor> / recall:<extractor>: torch-fidelity's improved precision and recall
(k = 3) of samples against a reference's images, in every reference format that has images."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from test_references import TinyExtractor, images, isolated, write_adm_batch  # noqa: F401

from repro.cli import main as cli
from repro.config.suite import SuiteError, check, load
from repro.metrics import MetricInputError
from repro.metrics.precision_recall import precision_recall
from repro.metrics.references import reference_features
from repro.sampling.samples import SampleSet


def sample_set(pictures: np.ndarray) -> SampleSet:
    return SampleSet(pictures, np.arange(len(pictures)), None, "m", "F", 1, None)


def improved_precision_recall(generated: np.ndarray, real: np.ndarray, k: int = 3):
    """Kynkaanniemi et al.: a point is inside a set's manifold when it is within some set
    point's distance to that point's k-th nearest neighbour."""

    def radii(x):
        return np.sort(cdist(x, x), axis=1)[:, k]  # column 0 is the point itself

    precision = (cdist(generated, real) <= radii(real)[None, :]).any(axis=1).mean()
    recall = (cdist(real, generated) <= radii(generated)[None, :]).any(axis=1).mean()
    return precision, recall


def test_reference_features_of_images_and_of_an_adm_batch_are_cached(isolated):  # noqa: F811
    np.savez(isolated / "refs.npz", images())
    write_adm_batch(isolated / "adm.npz", n=5)
    extractor = TinyExtractor()
    for name in ("refs.npz", "adm.npz"):
        features = reference_features(str(isolated / name), extractor)
        with np.load(isolated / name) as data:
            want = TinyExtractor().features(data["arr_0"])
        assert features.dtype == np.float32 and np.allclose(features, want, atol=1e-6)
        seen = extractor.seen
        assert np.array_equal(reference_features(str(isolated / name), extractor), features)
        assert extractor.seen == seen  # from the cache


def test_precision_and_recall_are_torch_fidelitys_improved_estimator(isolated):  # noqa: F811
    real = images(12, size=8, seed=0)
    generated = np.concatenate([real[:5], np.zeros_like(real[:7])])  # 7 outside
    np.savez(isolated / "refs.npz", real)
    extractor = TinyExtractor()
    results = precision_recall(sample_set(generated), str(isolated / "refs.npz"), extractor)
    want = improved_precision_recall(
        TinyExtractor().features(generated), TinyExtractor().features(real)
    )
    got = (
        results["precision:inception-2015-12-05"].value,
        results["recall:inception-2015-12-05"].value,
    )
    assert got == pytest.approx(want, abs=1e-6) and got[0] < 1
    assert results["recall:inception-2015-12-05"].details["reference_n"] == 12
    with pytest.raises(MetricInputError, match="more than 3 images in the samples"):
        precision_recall(sample_set(generated[:3]), str(isolated / "refs.npz"), extractor)


def test_repro_eval_gives_both_from_one_pass_and_needs_a_reference(tmp_path, capsys):
    from repro.models.zoo.data import digits_images
    from repro.sampling.samples import to_uint8

    sample_set(to_uint8(digits_images()[0][:40])).save(tmp_path / "s.npz")
    metrics = ["--metric", "precision:digits-cnn", "--metric", "recall:digits-cnn"]
    assert cli.main(["eval", str(tmp_path / "s.npz"), *metrics, "--reference", "digits"]) == 0
    out = capsys.readouterr().out
    assert "precision:digits-cnn" in out and "recall:digits-cnn" in out
    assert cli.main(["eval", str(tmp_path / "s.npz"), *metrics]) == 2
    assert "needs --reference NAME or PATH" in capsys.readouterr().err


def test_a_suite_with_precision_needs_a_reference(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: s\nversion: 1\nmodel: digits-ddpm\nsteps: 4\n"
        "evaluation: {metrics: ['precision:digits-cnn']}\n"
    )
    with pytest.raises(SuiteError, match="fid metrics need a reference"):
        check(load(path))
