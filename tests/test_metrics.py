"""Metrics: Frechet distance, fid/rfid with their caches, CLIP score, accuracy, latency, CLI.

Offline and fast: real digits images and the committed digits classifier, tiny random
open_clip and InceptionV3 networks; no weights are downloaded.
"""

import json

import numpy as np
import pytest
import torch
from conftest import tiny_open_clip

from repro.cli.eval import run_eval
from repro.metrics import (
    FeatureStatistics,
    MetricInputError,
    MissingMetricWeightsError,
    StatisticsError,
    frechet_distance,
)
from repro.metrics.clip import ClipScorer, clip_scores
from repro.metrics.evaluate import EvalOptions, evaluate
from repro.metrics.extractors import (
    INCEPTION_FILE,
    DigitsCNNExtractor,
    InceptionExtractor,
    load_extractor,
)
from repro.metrics.fid import TeacherFeatureCache, paired_rows, rfid
from repro.metrics.references import reference_statistics
from repro.models.zoo.data import digits_images
from repro.sampling.samples import SampleSet, to_uint8


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def digits():
    images, labels = digits_images()
    return to_uint8(images), labels.numpy()


@pytest.fixture(scope="module")
def cnn():
    return load_extractor("digits-cnn")


def sample_set(images, seeds=None, labels=None, schedule="F F", model="digits-cond"):
    seeds = np.arange(len(images)) if seeds is None else np.asarray(seeds)
    return SampleSet(
        images=images,
        seeds=seeds.astype(np.int64),
        labels=None if labels is None else np.asarray(labels, dtype=np.int64),
        model=model,
        schedule=schedule,
        steps=2,
        guidance=None,
    )


def direct_frechet(x, y):
    """FD from the definition, via the symmetric form tr sqrt(S1^1/2 S2 S1^1/2)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return (
        (mu1 - mu2) @ (mu1 - mu2)
        + np.trace(s1)
        + np.trace(s2)
        - 2 * np.sqrt(np.clip(inner, 0, None)).sum()
    )


# -- statistics and Frechet distance ---------------------------------------------------------
def test_frechet_distance_agrees_with_a_direct_float64_computation():
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(12, 12))
    x = rng.normal(size=(400, 12)) @ mixing
    y = rng.normal(size=(300, 12)) @ (mixing + 0.3 * rng.normal(size=(12, 12))) + 0.5
    a, b = FeatureStatistics.of(x, "p"), FeatureStatistics.of(y, "p")
    assert frechet_distance(a, b) == pytest.approx(direct_frechet(x, y), rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert abs(frechet_distance(a, a)) < 1e-9


@pytest.fixture(scope="module")
def digits_features():
    """digits-cnn features (dead ReLU units: singular covariances) of the real digits and of
    the same digits with their pixels shuffled, as the zoo card's baselines draw them."""
    from repro.models.zoo import load_classifier
    from repro.training.evaluate import EVAL_SEED, classifier_features

    reference, _ = digits_images()
    generator = torch.Generator().manual_seed(EVAL_SEED)
    real = reference[torch.randperm(len(reference), generator=generator)[:500]]
    shuffled = torch.stack(
        [
            image.flatten()[torch.randperm(image.numel(), generator=generator)].view_as(image)
            for image in real
        ]
    )
    classifier = load_classifier()
    return {
        name: classifier_features(classifier, images)
        for name, images in (("reference", reference), ("real", real), ("shuffled", shuffled))
    }


@pytest.mark.parametrize("candidate", ["real", "shuffled", "few"])
def test_frechet_distance_agrees_with_torch_fidelity(digits_features, candidate):
    """The same statistics through torch-fidelity's own FID (fid_statistics_to_metric);
    'few': 40 images of 64-d features, a rank-deficient covariance."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    reference = digits_features["reference"]
    features = digits_features["real"][:40] if candidate == "few" else digits_features[candidate]
    ours = frechet_distance(
        FeatureStatistics.of(features, "p"), FeatureStatistics.of(reference, "p")
    )
    theirs = fid_statistics_to_metric(
        *({"mu": f.mean(axis=0), "sigma": np.cov(f, rowvar=False)} for f in (features, reference)),
        False,
    )["frechet_inception_distance"]
    assert ours == pytest.approx(theirs, rel=1e-9)


def test_the_zoo_cards_fid_is_the_metrics_packages(digits_features):
    """fid:digits-cnn has one implementation: the zoo's card numbers come out of it."""
    from repro.models.zoo import read_card
    from repro.training.evaluate import frechet_distance as zoo_frechet

    card = read_card("digits-ddpm")["quality"]
    assert card["protocol"] == "fid:digits-cnn"
    # the card was written under another scipy/numpy: sqrtm's rounding moves the 9th digit
    assert zoo_frechet(digits_features["real"], digits_features["reference"]) == pytest.approx(
        card["frechet_distance"]["real_digits"], rel=1e-7
    )
    assert zoo_frechet(digits_features["shuffled"], digits_features["reference"]) == pytest.approx(
        card["frechet_distance"]["pixel_shuffled_digits"], rel=1e-7
    )


def test_frechet_distance_has_the_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    got = frechet_distance(
        FeatureStatistics(mu1, np.diag(s1), 100, "p"), FeatureStatistics(mu2, np.diag(s2), 100, "p")
    )
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("mean", "cov", "needle"),
    [
        ([0.0, np.nan], np.eye(2), "NaN or infinite"),
        ([0.0, 0.0], np.diag([1.0, np.inf]), "NaN or infinite"),
        ([0.0, 1j], np.eye(2), "complex"),
        ([0.0, 0.0], np.eye(3), "one d-dimensional Gaussian"),
    ],
)
def test_statistics_refuse_non_finite_complex_or_misshapen_values(mean, cov, needle):
    with pytest.raises(StatisticsError, match=needle):
        FeatureStatistics(np.array(mean), np.array(cov), 10, "p")


def test_frechet_distance_refuses_other_protocols_and_significant_imaginary_parts():
    a = FeatureStatistics(np.zeros(2), np.eye(2), 10, "p")
    with pytest.raises(MetricInputError, match="'p' with 'q'"):
        frechet_distance(a, FeatureStatistics(np.zeros(2), np.eye(2), 10, "q"))
    not_psd = FeatureStatistics(np.zeros(2), np.diag([-1.0, 1.0]), 10, "p")
    with pytest.raises(StatisticsError, match="imaginary"):
        frechet_distance(a, not_psd)


def test_statistics_survive_a_save_load_round_trip(tmp_path):
    stats = FeatureStatistics.of(np.random.default_rng(2).normal(size=(20, 3)), "p")
    again = FeatureStatistics.load(stats.save(tmp_path / "s.npz"))
    assert again.protocol == "p" and again.n == 20
    assert np.array_equal(again.cov, stats.cov) and not again.mean.flags.writeable


# -- extractors and reference statistics ----------------------------------------------------
def test_digits_features_do_not_depend_on_the_batch_size(cnn, digits):
    images = digits[0][:300]
    small = FeatureStatistics.of(cnn.features(images, batch_size=7), cnn.name)
    large = FeatureStatistics.of(cnn.features(images, batch_size=300), cnn.name)
    assert np.allclose(small.mean, large.mean, atol=1e-6)
    assert abs(frechet_distance(small, large)) < 1e-6


def test_digits_extractor_rejects_images_of_another_shape(cnn):
    with pytest.raises(MetricInputError, match="16 x 16 x 1"):
        cnn.features(np.zeros((2, 32, 32, 3), np.uint8))


def test_digits_reference_is_cached_atomically_and_keyed_by_the_weights(
    cnn, user_cache, monkeypatch
):
    stats = reference_statistics("digits", cnn)
    files = list((user_cache / "references").iterdir())
    assert stats.n == 1797 and stats.protocol == "digits-cnn" and len(files) == 1
    assert files[0].name.startswith("digits-all-digits-cnn-n1797-")
    monkeypatch.setattr(DigitsCNNExtractor, "features", lambda *a, **k: pytest.fail("recomputed"))
    assert np.array_equal(reference_statistics("digits", cnn).cov, stats.cov)


def test_reference_cache_key_changes_with_the_extractor_weights(cnn, user_cache):
    reference_statistics("digits", cnn)
    perturbed = type(cnn.network)()
    perturbed.load_state_dict(cnn.network.state_dict())
    with torch.no_grad():
        perturbed.head.bias.add_(1.0)  # not used by features, but it is other weights
    reference_statistics("digits", DigitsCNNExtractor(perturbed))
    assert len(list((user_cache / "references").iterdir())) == 2


def random_inception_weights(path, monkeypatch):
    """A randomly initialised torch-fidelity InceptionV3 state dict saved to ``path``."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    torch.save({}, path)
    with monkeypatch.context() as patch:
        patch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        network = FeatureExtractorInceptionV3(
            "random", ["2048"], feature_extractor_weights_path=str(path)
        )
    torch.save(network.state_dict(), path)
    return path


def test_inception_features_come_from_a_local_weights_file(tmp_path, monkeypatch, digits):
    path = random_inception_weights(tmp_path / "random-inception.pth", monkeypatch)
    extractor = load_extractor("inception-2015-12-05", inception_weights=path)
    assert isinstance(extractor, InceptionExtractor)
    grey = digits[0][:3]
    features = extractor.features(grey, batch_size=2)
    assert features.shape == (3, 2048) and features.dtype == np.float64
    rgb = np.repeat(grey, 3, axis=3)
    assert np.allclose(extractor.features(rgb), features, atol=1e-5)


@pytest.mark.parametrize("content", [b"", b"not a pickle", None])
def test_inception_weights_that_do_not_fit_are_bad_input(tmp_path, content):
    path = tmp_path / "wrong.pth"
    if content is None:
        torch.save({"fc.weight": torch.zeros(1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(MetricInputError, match="wrong.pth is not a usable " + INCEPTION_FILE):
        load_extractor("inception-2015-12-05", inception_weights=path)


def test_inception_weights_are_found_in_the_torch_hub_cache(tmp_path, monkeypatch):
    from repro.metrics.extractors import inception_weights_path

    monkeypatch.delenv("REPRO_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / INCEPTION_FILE).write_bytes(b"")
    assert inception_weights_path() == tmp_path / "checkpoints" / INCEPTION_FILE


# -- rFID ---------------------------------------------------------------------------------
def test_rfid_of_the_teacher_against_itself_is_zero_and_grows_with_damage(cnn, digits):
    images, labels = digits
    teacher = sample_set(images[:400], labels=labels[:400])
    cache = TeacherFeatureCache()
    assert abs(rfid(teacher, teacher, cnn, cache).value) < 1e-6
    rng = np.random.default_rng(0)
    values = []
    for sigma in (8, 24, 64):
        noisy = np.clip(images[:400] + rng.normal(0, sigma, images[:400].shape), 0, 255)
        candidate = sample_set(noisy.astype(np.uint8), labels=labels[:400], schedule="F N")
        result = rfid(candidate, teacher, cnn, cache)
        assert result.protocol == "rfid:digits-cnn" and result.n == 400
        values.append(result.value)
    assert values == sorted(values) and values[0] > 0


def test_rfid_uses_the_teachers_images_of_the_candidates_seeds(cnn, digits):
    images, labels = digits
    teacher = sample_set(images[:300], seeds=np.arange(100, 400), labels=labels[:300])
    order = np.random.default_rng(1).permutation(200)  # a shuffled subset of the seeds
    candidate = sample_set(
        images[:200][order],
        seeds=np.arange(100, 300)[order],
        labels=labels[:200][order],
        schedule="F N",
    )
    assert np.array_equal(paired_rows(candidate, teacher), order)
    assert abs(rfid(candidate, teacher, cnn, TeacherFeatureCache()).value) < 1e-6


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"seeds": np.arange(5, 105)}, "5 candidate seeds are not in the teacher"),
        ({"labels": np.roll(np.arange(100) % 10, 1)}, "labels differ from the teacher's"),
        ({"labels": None}, "one of candidate and teacher has labels"),
        ({"model": "digits-ddpm"}, "candidate model 'digits-ddpm'"),
    ],
)
def test_rfid_refuses_candidates_from_other_seeds_or_conditions(digits, change, needle):
    images = digits[0][:100]
    teacher = sample_set(images, labels=np.arange(100) % 10)
    fields = {"seeds": np.arange(100), "labels": np.arange(100) % 10, **change}
    with pytest.raises(MetricInputError, match=needle):
        paired_rows(sample_set(images, schedule="F N", **fields), teacher)


def test_teacher_features_are_cached_in_memory_and_on_disk(cnn, digits, user_cache, monkeypatch):
    teacher = sample_set(digits[0][:200], labels=digits[1][:200])
    first = TeacherFeatureCache().features(teacher, cnn)
    assert len(list((user_cache / "teacher-features").glob("*.npz"))) == 1
    monkeypatch.setattr(DigitsCNNExtractor, "features", lambda *a, **k: pytest.fail("recomputed"))
    assert np.array_equal(TeacherFeatureCache().features(teacher, cnn), first)  # from disk
    other = sample_set(digits[0][:200], labels=digits[1][:200], schedule="F F F")
    with pytest.raises(pytest.fail.Exception):  # another teacher identity is not a hit
        TeacherFeatureCache().features(other, cnn)


def test_rfid_grows_as_deepcache_caches_longer_on_digits_ddpm(cnn):
    from repro.core.schedule import Schedule
    from repro.models import load_model
    from repro.sampling.generate import generate

    model = load_model("digits-ddpm")
    seeds, steps = list(range(128)), 10
    teacher = generate(model, steps, None, seeds, batch_size=128)
    cache = TeacherFeatureCache()
    assert abs(rfid(teacher, teacher, cnn, cache).value) < 1e-6
    values = [
        rfid(
            generate(model, steps, Schedule.deepcache(steps, n), seeds, batch_size=128),
            teacher,
            cnn,
            cache,
        ).value
        for n in (2, 5, 10)
    ]
    assert 0 < values[0] < values[1] < values[2]


# -- accuracy, CLIP score, latency --------------------------------------------------------
def test_class_accuracy_counts_samples_of_the_requested_class(cnn, digits):
    from repro.metrics.accuracy import class_accuracy

    images, labels = digits
    right = class_accuracy(sample_set(images[:500], labels=labels[:500]), cnn)
    wrong = class_accuracy(sample_set(images[:500], labels=(labels[:500] + 1) % 10), cnn)
    assert right.protocol == "acc:digits-cnn" and right.value > 0.97 and wrong.value < 0.05
    assert set(right.details["per_class"]) == set(range(10))
    with pytest.raises(MetricInputError, match="no labels"):
        class_accuracy(sample_set(images[:10]), cnn)


def test_clip_score_is_100_cosine_clamped_at_zero():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [3.0, 4.0]])
    text = torch.tensor([[2.0, 2.0], [-1.0, 0.5], [3.0, 4.0]])
    assert np.allclose(clip_scores(image, text), [100 / np.sqrt(2), 0.0, 100.0])


def test_clip_scorer_matches_the_open_clip_model_it_wraps():
    model, preprocess, tokenizer = tiny_open_clip()
    scorer = ClipScorer(model, preprocess, tokenizer, protocol="clip:tiny-random")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    texts = ["a photo of a cat", "a red car", "digits", "three", "an empty room"]
    from PIL import Image

    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.fromarray(im)) for im in images])
        img = model.encode_image(pixels).double()
        txt = model.encode_text(tokenizer(texts)).double()
    cosine = (img / img.norm(dim=1, keepdim=True) * txt / txt.norm(dim=1, keepdim=True)).sum(1)
    expected = (100 * cosine).clamp(min=0).numpy()
    assert np.allclose(scorer.scores(images, texts, batch_size=2), expected, atol=1e-4)
    result = scorer.score(images, texts)
    assert result.protocol == "clip:tiny-random" and result.value == pytest.approx(
        expected.mean(), abs=1e-4
    )
    with pytest.raises(MetricInputError, match="4 prompts for 5 images"):
        scorer.scores(images, texts[:4])


def test_latency_reports_the_median_with_its_environment():
    from repro.metrics.latency import sampler_latency
    from repro.models import load_model

    model = load_model("digits-cond", "random")
    result = sampler_latency(model, 3, "F P0 N", 2, guidance=2.0, repeats=3)
    details = result.details
    assert result.protocol == "latency" and result.n == 2 and len(details["seconds"]) == 3
    assert result.value == sorted(details["seconds"])[1]
    assert details["schedule"] == "F P0 N" and details["dtype"] == "float32"
    assert {"device", "torch", "diffusers", "batch"} <= set(details)


# -- the eval command ---------------------------------------------------------------------
def eval_args(*argv):
    from repro.cli.main import build_parser

    return build_parser().parse_args(["eval", *map(str, argv)])


def test_eval_prints_one_json_object_with_protocols(tmp_path, capsys, digits):
    images, labels = digits
    sample_set(images[:300], labels=labels[:300]).save(tmp_path / "teacher.npz")
    sample_set(images[:200], labels=labels[:200], schedule="F N").save(tmp_path / "cand.npz")
    code = run_eval(
        eval_args(
            tmp_path / "cand.npz",
            "--metric",
            "rfid:digits-cnn",
            "--metric",
            "acc:digits-cnn",
            "--metric",
            "fid:digits-cnn",
            "--teacher",
            tmp_path / "teacher.npz",
            "--reference",
            "digits",
            "--json",
        )
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["schedule"] == "F N"
    values = {m["protocol"]: m for m in report["metrics"]}
    assert list(values) == ["rfid:digits-cnn", "acc:digits-cnn", "fid:digits-cnn"]
    assert abs(values["rfid:digits-cnn"]["value"]) < 1e-6
    assert values["fid:digits-cnn"]["details"]["reference"] == "digits"
    run_eval(eval_args(tmp_path / "cand.npz", "--metric", "acc:digits-cnn"))
    assert "acc:digits-cnn" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--metric", "fid:vgg"], "unknown metric 'fid:vgg'"),
        (["--metric", "rfid:digits-cnn"], "needs --teacher"),
        (["--metric", "fid:digits-cnn"], "needs --reference"),
        (["--metric", "clip:ViT-g-14/laion2b_s34b_b88k"], "needs --prompts"),
    ],
)
def test_eval_rejects_incomplete_requests(tmp_path, digits, argv, needle):
    sample_set(digits[0][:4]).save(tmp_path / "s.npz")
    with pytest.raises(MetricInputError, match=needle):
        run_eval(eval_args(tmp_path / "s.npz", *argv))


def test_eval_names_the_missing_inception_and_clip_weights(tmp_path, digits, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("REPRO_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.delenv("REPRO_CLIP_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    sample_set(digits[0][:4]).save(tmp_path / "s.npz")
    (tmp_path / "prompts.txt").write_text("a\nb\nc\nd\n")
    cases = [
        (
            ["--metric", "fid:inception-2015-12-05", "--reference", "digits"],
            f"{INCEPTION_FILE}: put it in {tmp_path / 'hub' / 'checkpoints'}/",
        ),
        (
            [
                "--metric",
                "rfid:inception-2015-12-05",
                "--teacher",
                tmp_path / "s.npz",
                "--inception-weights",
                tmp_path / "nowhere.pth",
            ],
            "nowhere.pth does not exist",
        ),
        (
            ["--metric", "clip:ViT-g-14/laion2b_s34b_b88k", "--prompts", tmp_path / "prompts.txt"],
            "open_clip_model.safetensors",
        ),
    ]
    for argv, needle in cases:
        with pytest.raises(MissingMetricWeightsError) as error:
            run_eval(eval_args(tmp_path / "s.npz", *argv))
        assert needle in str(error.value) and "\n" not in str(error.value)


def test_evaluate_is_usable_without_the_cli(cnn, digits):
    images, labels = digits
    teacher = sample_set(images[:100], labels=labels[:100])
    (result,) = evaluate(teacher, ["rfid:digits-cnn"], EvalOptions(teacher=teacher))
    assert result.protocol == "rfid:digits-cnn" and abs(result.value) < 1e-6


def test_every_known_metric_kind_has_one_way_to_compute_it():
    from repro.metrics.evaluate import _KINDS
    from repro.metrics.protocols import METRICS

    assert {name.partition(":")[0] for name in METRICS} == set(_KINDS)


def test_psnr_and_ssim_against_the_teachers_image_of_each_seed(digits):
    """Per image against the teacher's image of the same seed (any order): PSNR is
    10 log10(1 / MSE) on [0, 1] pixels, an identical image counts as one level in one
    pixel; SSIM is 1 for an identical image and falls with noise; both keep per-image values
    and refuse a seed the teacher lacks."""
    from repro.metrics import fidelity
    from repro.metrics.evaluate import EvalOptions, evaluate

    images = digits[0][:40]
    teacher = sample_set(images)
    rng = np.random.default_rng(0)
    noisy = np.clip(images.astype(int) + rng.integers(-20, 21, images.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    order = rng.permutation(40)
    candidate = sample_set(noisy[order], seeds=order)
    psnr, ssim = evaluate(candidate, ["psnr", "ssim"], EvalOptions(teacher=teacher))
    mse = ((noisy[order] / 255.0 - images[order] / 255.0) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(psnr.per_seed, 10 * np.log10(1 / mse), rtol=1e-6)
    assert psnr.value == pytest.approx(psnr.per_seed.mean()) and psnr.n == 40
    same = fidelity.psnr(teacher, teacher)
    pixels = np.prod(images.shape[1:])
    assert same.value == pytest.approx(10 * np.log10(pixels * 255**2))
    assert same.details["identical"] == 40 and psnr.value < same.value
    assert fidelity.ssim(teacher, teacher).value == pytest.approx(1.0)
    assert 0 < ssim.value < 0.99 and len(ssim.per_seed) == 40
    with pytest.raises(MetricInputError, match="psnr needs --teacher"):
        evaluate(candidate, ["psnr"], EvalOptions())
    with pytest.raises(MetricInputError, match="not in the teacher"):
        fidelity.ssim(sample_set(images, seeds=np.arange(40) + 100), teacher)


def test_lpips_against_the_teachers_image_with_a_backbone_from_a_local_file(
    digits, tmp_path, monkeypatch
):
    """lpips:alex loads AlexNet's feature layers from a local file in torchvision's layout (a
    random AlexNet built from torchvision's config here; never downloaded): 0 for an
    identical image, larger with more noise, paired by seed in any order; a missing or
    foreign file fails in one line naming it."""
    import torchvision

    from repro.metrics.errors import MissingMetricWeightsError
    from repro.metrics.lpips import LpipsNetwork
    from repro.metrics.protocols import LPIPS_ENV

    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features.state_dict()
    weights = tmp_path / "alexnet.pth"
    torch.save({f"features.{k}": v for k, v in features.items()}, weights)
    images = digits[0][:24]
    teacher = sample_set(images)
    rng = np.random.default_rng(0)

    def noisy(level):
        shifted = images.astype(int) + rng.integers(-level, level + 1, images.shape)
        return np.clip(shifted, 0, 255).astype(np.uint8)

    order = rng.permutation(24)
    options = EvalOptions(teacher=teacher, lpips_weights=str(weights))
    networks = {}
    low, high = (
        evaluate(sample_set(noisy(level)[order], seeds=order), ["lpips:alex"], options, networks)[0]
        for level in (10, 60)
    )
    network = networks["lpips:alex"]
    assert torch.equal(network.network.net.slice1[0].weight, features["0.weight"])
    assert low.n == 24 and low.value == pytest.approx(low.per_seed.mean())
    assert 0 < low.value < high.value and (low.per_seed < high.per_seed).mean() > 0.9
    (same,) = evaluate(teacher, ["lpips:alex"], options, networks)
    assert np.all(same.per_seed == 0)
    alone = network.distances(noisy(10)[order][:1], images[order][:1])
    assert alone.shape == (1,) and alone[0] > 0
    monkeypatch.delenv(LPIPS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MissingMetricWeightsError, match="--lpips-weights PATH"):
        evaluate(teacher, ["lpips:alex"], EvalOptions(teacher=teacher))
    torch.save({"features.0.weight": features["0.weight"]}, tmp_path / "partial.pth")
    with pytest.raises(MetricInputError, match="lack features.0.bias"):
        LpipsNetwork.load(tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(MetricInputError, match="junk.pth is not a usable"):
        LpipsNetwork.load(tmp_path / "junk.pth")
