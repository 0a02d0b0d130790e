"""KID (repro.metrics.kid): torch-fidelity's estimator on feature arrays, its resampled
form for bootstrap intervals, and the search fitness built on it."""

import numpy as np
import pytest
import torch
from torch_fidelity.metric_kid import kernel_poly, kid_features_to_metric, mmd2

from repro import models
from repro.core.schedule import Schedule
from repro.metrics.errors import StatisticsError
from repro.metrics.kid import kid_quality, kid_value, rkid_quality, rkid_value
from repro.search import search_log
from repro.search.fitness import KIDFitness, RFIDFitness
from repro.search.loop import Record

FIDELITY_KERNEL = {
    "kid_kernel_poly_degree": 3,
    "kid_kernel_poly_gamma": None,
    "kid_kernel_poly_coef0": 1,
}


def features(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, d)) * (1 + shift) + shift).astype(np.float32)


@pytest.mark.parametrize("n, d, shift", [(50, 8, 0.0), (200, 64, 0.3), (64, 2048, 0.1)])
def test_kid_is_torch_fidelitys_unbiased_kid_on_one_subset_of_all_rows(n, d, shift):
    x, y = features(1, n, d), features(2, n, d, shift)
    theirs = kid_features_to_metric(
        torch.from_numpy(x),
        torch.from_numpy(y),
        kid_subsets=1,
        kid_subset_size=n,
        verbose=False,
        rng_seed=0,
    )
    # torch-fidelity sums its kernels in the features' float32; this is float64
    assert kid_value(x, y) == pytest.approx(
        theirs["kernel_inception_distance_mean"], rel=1e-5, abs=1e-6
    )


def test_kid_against_a_larger_reference_is_the_unbiased_mmd_of_different_sizes():
    x, y = features(1, 30, 6), features(2, 70, 6, 0.2)
    k = lambda a, b: (a.astype(np.float64) @ b.T.astype(np.float64) / 6 + 1) ** 3  # noqa: E731
    within = lambda a: (k(a, a).sum() - np.trace(k(a, a))) / (len(a) * (len(a) - 1))  # noqa: E731
    assert kid_value(x, y) == pytest.approx(within(x) + within(y) - 2 * k(x, y).mean(), rel=1e-12)


def test_rkid_is_torch_fidelitys_u_statistic_leaving_out_same_seed_pairs():
    """Row i of candidate and teacher come from one seed: the cross term leaves out the
    dependent pairs (i, i), which torch-fidelity's ``unbiased`` estimator would count."""
    x = features(1, 80, 16)
    y = (x + 0.3 * features(2, 80, 16)).astype(np.float64)  # each row close to its own seed's
    x = x.astype(np.float64)
    kxx, kxy, kyy = (kernel_poly(a, b, **FIDELITY_KERNEL) for a, b in ((x, x), (x, y), (y, y)))
    assert rkid_value(x, y) == pytest.approx(mmd2(kxx, kxy, kyy, mmd_est="u-statistic"), rel=1e-10)
    assert mmd2(kxx, kxy, kyy, mmd_est="unbiased") < rkid_value(x, y)  # same-seed pairs
    assert rkid_value(x, x) == 0.0  # the teacher against itself


@pytest.mark.parametrize("paired", [True, False])
def test_resampled_kid_is_unbiased_about_the_value_on_the_seeds_drawn(paired):
    """Resamples repeat seeds; the resampled quality drops the pairs of a seed with its own
    copies, so its mean over resamples stays at the value on the seeds as drawn (a naive
    recomputation on the resampled rows counts k(x, x) among the pairs and is far off)."""
    x, y = features(3, 120, 32), features(4, 120, 32, 0.15)
    value = rkid_value(x, y) if paired else kid_value(x, y)
    quality = rkid_quality(x, y) if paired else kid_quality(x, y)
    resamples = np.random.default_rng(5).integers(0, len(x), size=(4000, len(x)))
    draws = quality(resamples)
    standard_error = draws.std() / np.sqrt(len(draws))
    assert abs(draws.mean() - value) < 4 * standard_error + 0.01 * draws.std()
    naive = np.array(
        [rkid_value(x[i], y[i]) if paired else kid_value(x[i], y) for i in resamples[:200]]
    )
    assert abs(naive.mean() - value) > 5 * draws.std() / np.sqrt(200)
    assert quality(np.arange(len(x))) == pytest.approx(value, rel=1e-12)


def test_resampled_kid_keeps_the_shape_of_the_index_array():
    x, y = features(1, 20, 4), features(2, 20, 4, 0.5)
    idx = np.random.default_rng(0).integers(0, 20, size=(3, 5, 20))
    quality = rkid_quality(x, y)
    values = quality(idx)
    assert values.shape == (3, 5)
    assert values[2, 4] == pytest.approx(quality(idx[2, 4][None])[0], rel=1e-12)
    assert np.ndim(quality(np.arange(20))) == 0


def test_kid_refuses_mismatched_inputs_in_one_line():
    with pytest.raises(StatisticsError, match="feature dimensions differ"):
        kid_value(features(1, 10, 4), features(2, 10, 5))
    with pytest.raises(StatisticsError, match="rKID pairs them by seed"):
        rkid_value(features(1, 10, 4), features(2, 11, 4))
    with pytest.raises(StatisticsError, match="N >= 2"):
        kid_value(features(1, 1, 4), features(2, 10, 4))


@pytest.fixture(scope="module")
def digits():
    return models.load_model("digits-ddpm")


def test_kid_fitness_scores_where_rfid_is_undefined_and_never_reuses_rfid_scores(digits, tmp_path):
    """On 12 seeds of 64-d features rKID ranks candidates (the teacher scores 0, a cached
    schedule more); an rFID log of the same schedules gives the kid search nothing."""
    rfid = RFIDFitness(digits, 10, range(12), batch_size=12)
    kid = KIDFitness(digits, 10, range(12), batch_size=12, teacher=rfid.teacher)
    assert {k: v for k, v in kid.context.items() if k != "protocol"} == {
        k: v for k, v in rfid.context.items() if k != "protocol"
    }
    assert (rfid.context["protocol"], kid.context["protocol"]) == (
        "rfid:digits-cnn",
        "rkid:digits-cnn",
    )
    cached = Schedule.parse("F P1 P1 P1 P1 | F P1 P1 P1 P1")
    assert kid(Schedule.full(10)) == 0.0
    scores = kid.score_many([cached, Schedule.fewer_steps(10, 3)])
    assert all(0 < score < float("inf") for score in scores)

    log = tmp_path / "search.jsonl"
    search_log.appender(log, rfid.context)(
        Record(str(cached), "segment-evolution", 2.0, 2.0, rfid(cached), 0.1)
    )
    assert search_log.read_scores(log, rfid.context) == {str(cached): rfid(cached)}
    assert search_log.read_scores(log, kid.context) == {}


def test_beyond_the_exact_rows_resamples_use_the_per_seed_decomposition(monkeypatch):
    """Past EXACT_ROWS seeds (no n x n matrix in memory) the resampled KID is the
    U-statistic's projection on the seeds: the same value on the seeds drawn, the same mean
    over resamples and nearly the same spread as the exact resampling."""
    from repro.metrics import kid as kid_module

    x, y = features(3, 300, 16), features(4, 300, 16, 0.3)
    resamples = np.random.default_rng(5).integers(0, 300, size=(2000, 300))
    exact = [rkid_quality(x, y)(resamples), kid_quality(x, y)(resamples)]
    monkeypatch.setattr(kid_module, "EXACT_ROWS", 100)
    monkeypatch.setattr(kid_module, "CHUNK_ROWS", 64)  # blocks that do not divide the rows
    assert rkid_quality(x, y)(np.arange(300)) == pytest.approx(rkid_value(x, y), rel=1e-10)
    assert kid_quality(x, y)(np.arange(300)) == pytest.approx(kid_value(x, y), rel=1e-10)
    for quality, reference in zip((rkid_quality(x, y), kid_quality(x, y)), exact, strict=True):
        projected = quality(resamples)
        assert abs(projected.mean() - reference.mean()) < 0.05 * reference.std()
        assert projected.std() == pytest.approx(reference.std(), rel=0.1)


def test_interval_is_a_percentile_interval_around_the_estimate():
    from repro.metrics.kid import interval

    x, y = features(3, 100, 8), features(4, 100, 8, 0.2)
    low, high = interval(rkid_quality(x, y), 100, 999)
    assert low < rkid_value(x, y) < high
    assert interval(rkid_quality(x, x), 100, 50) == (0.0, 0.0)  # the teacher against itself
    assert interval(rkid_quality(x, y), 100, 250) == interval(rkid_quality(x, y), 100, 250)


def test_every_fid_protocol_brings_its_kid():
    from repro.metrics.protocols import METRICS, with_kid

    assert with_kid(["fid:digits-cnn", "acc:digits-cnn", "rfid:digits-cnn", "kid:digits-cnn"]) == (
        "fid:digits-cnn",
        "kid:digits-cnn",
        "acc:digits-cnn",
        "rfid:digits-cnn",
        "rkid:digits-cnn",
    )
    assert {"kid:digits-cnn", "rkid:inception-2015-12-05"} <= set(METRICS)


def test_repro_eval_reports_kid_and_rkid_and_ls_lists_them(tmp_path, capsys):
    import json

    from repro.cli import main as cli
    from repro.metrics.extractors import load_extractor
    from repro.metrics.references import reference_features
    from repro.models.zoo.data import digits_images
    from repro.sampling.samples import SampleSet, to_uint8

    images = to_uint8(digits_images()[0])
    rng = np.random.default_rng(0)

    def save(name, rows):
        SampleSet(
            images=images[rows],
            seeds=np.arange(len(rows), dtype=np.int64),
            labels=None,
            model="digits-ddpm",
            schedule="F F",
            steps=2,
            guidance=None,
        ).save(tmp_path / name)

    save("teacher.npz", rng.permutation(len(images))[:150])
    save("cand.npz", rng.permutation(len(images))[:150])
    argv = [
        "eval",
        str(tmp_path / "cand.npz"),
        "--metric",
        "kid:digits-cnn",
        "--reference",
        "digits",
        "--metric",
        "rkid:digits-cnn",
        "--teacher",
        str(tmp_path / "teacher.npz"),
        "--json",
    ]
    assert cli.main(argv) == 0
    values = {m["protocol"]: m for m in json.loads(capsys.readouterr().out)["metrics"]}
    cnn = load_extractor("digits-cnn")
    cand = cnn.features(np.load(tmp_path / "cand.npz")["images"])
    teacher = cnn.features(np.load(tmp_path / "teacher.npz")["images"])
    assert values["kid:digits-cnn"]["value"] == pytest.approx(
        kid_value(cand, reference_features("digits", cnn)), rel=1e-6
    )
    assert values["rkid:digits-cnn"]["value"] == pytest.approx(rkid_value(cand, teacher), rel=1e-6)
    assert values["kid:digits-cnn"]["n"] == 150
    assert cli.main(["eval", str(tmp_path / "cand.npz"), "--metric", "rkid:digits-cnn"]) == 2
    assert "rkid:digits-cnn needs --teacher" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "cand.npz"), "--metric", "kid:digits-cnn"]) == 2
    assert "kid:digits-cnn needs --reference" in capsys.readouterr().err
    assert cli.main(["ls"]) == 0
    listed = capsys.readouterr().out.split()
    assert {"kid:digits-cnn", "rkid:digits-cnn", "kid:inception-2015-12-05"} <= set(listed)
