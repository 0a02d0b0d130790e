"""Text-to-image (SD v1.5 path) end to end on a tiny random StableDiffusionPipeline saved to a
directory: prompts from COCO/Parti files -> per-seed sampling through the real pipeline under
a schedule -> `repro run` with CLIP and rFID -> results, samples files and MLflow. The CLIP and
Inception networks are tiny stand-ins (no weights on this machine); their protocols are the
real ones, so the suite path is exercised unchanged."""

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    assert_speedup_is_the_ratio_of_medians,
    error_lines,
    logged_runs,
    tiny_open_clip,
    tiny_sd_pipeline,
)
from test_prompts import COCO, COCO_ORDER, PARTI

from repro import models
from repro.cli import main as cli
from repro.config.suite import SuiteError, check, load
from repro.core.schedule import Schedule
from repro.metrics.clip import CLIP_PROTOCOL, ClipScorer
from repro.metrics.extractors import INCEPTION, FeatureExtractor
from repro.sampling.generate import generate
from repro.sampling.samples import SampleSet

SUITES = Path(__file__).resolve().parent.parent / "suites"
RFID = f"rfid:{INCEPTION}"
SUITE = """
name: tiny-sd
version: 1
model: sd15
weights: {weights}
steps: 5            # PNDM (PLMS): 6 UNet calls
guidance: 7.5
prompts: {{file: {prompts}}}
search: {{methods: [segment], budgets: [2], n_eval: 2, population: 2, seeds: "0:6",
          branches: [0, 1, 2], extractor: {inception}, fitness: kid}}
baselines:
  - {{technique: deepcache, intervals: [2], branch: 0}}
  - {{technique: sampler-steps, steps: [3]}}   # PLMS 3: 4 UNet calls
evaluation:
  seeds: "100:106"
  metrics: ["{clip}", "{rfid}"]
  batch_size: 4
  latency_batch: 2
  latency_repeats: 1
  grid: 4
tracking: {{experiment: tiny-sd-test}}
"""


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    """A tiny random SD pipeline (real classes, offline tokenizer) saved like a checkpoint."""
    tmp = tmp_path_factory.mktemp("sd")
    tiny_sd_pipeline(tmp).save_pretrained(tmp / "pipeline")
    return tmp / "pipeline"


@pytest.fixture(scope="module")
def sd_model(sd_dir):
    return models.load_model("sd15", str(sd_dir))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data")
    (tmp / "captions_val2017.json").write_text(json.dumps(COCO))
    (tmp / "PartiPrompts.tsv").write_text(PARTI)
    (tmp / "w").write_bytes(b"stand-in weights file")
    return tmp


class TinyExtractor(FeatureExtractor):
    """Deterministic 4-d features under the Inception protocol name (no weights needed)."""

    name = INCEPTION

    def __init__(self):
        torch.manual_seed(0)
        super().__init__(torch.nn.Conv2d(3, 4, 4, stride=4))

    def _features(self, batch):
        return self.network(batch.float() / 255).mean(dim=(2, 3))


def tiny_clip_scorer() -> ClipScorer:
    return ClipScorer(*tiny_open_clip())


@pytest.fixture(scope="module")
def stand_ins(data, tmp_path_factory):
    """The CLIP and Inception networks replaced by tiny ones; their weights 'present'."""
    scorer = tiny_clip_scorer()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REPRO_CLIP_WEIGHTS", str(data / "w"))
        patch.setenv("REPRO_INCEPTION_WEIGHTS", str(data / "w"))
        patch.setenv("REPRO_CACHE", str(tmp_path_factory.mktemp("cache")))
        patch.setattr(ClipScorer, "load", classmethod(lambda cls, *args, **kwargs: scorer))
        for module in ("repro.search.fitness", "repro.metrics.evaluate"):
            patch.setattr(
                importlib.import_module(module),
                "load_extractor",
                lambda name, **kwargs: TinyExtractor(),
            )
        yield scorer


def write_suite(directory: Path, weights, prompts, **replace) -> Path:
    text = SUITE.format(
        weights=weights, prompts=prompts, inception=INCEPTION, clip=CLIP_PROTOCOL, rfid=RFID
    )
    for old, new in replace.items():
        text = text.replace(old, new)
    path = directory / "tiny_sd.yaml"
    path.write_text(text)
    return path


# -- sampling -------------------------------------------------------------------------------
def test_text_samples_cycle_prompts_and_do_not_depend_on_batch_size(sd_model, tmp_path):
    prompts = ["a cat", "a dog", "three apples"]
    whole = generate(sd_model, 4, None, [0, 1, 2, 3], prompts=prompts, batch_size=4)
    split = generate(sd_model, 4, None, [2, 3], prompts=["three apples", "a cat"], batch_size=1)
    assert whole.images.shape == (4, 16, 16, 3) and whole.images.dtype == np.uint8
    assert whole.prompts == ("a cat", "a dog", "three apples", "a cat")
    assert np.array_equal(whole.images[2:], split.images)
    assert whole.guidance == 7.5 and whole.labels is None
    assert whole.schedule == "F F F F F"  # PLMS: steps + 1 UNet calls
    scheduled = generate(sd_model, 4, "F P0 N | F P2", [0, 1, 2, 3], prompts=prompts)
    assert not np.array_equal(scheduled.images, whole.images)
    loaded = SampleSet.load(whole.save(tmp_path / "s.npz"))
    assert loaded.prompts == whole.prompts and loaded.guidance == 7.5
    assert np.array_equal(loaded.images, whole.images)


def test_samples_files_without_prompts_still_load(tmp_path):
    old = tmp_path / "old.npz"  # written before samples files carried prompts
    np.savez(
        old,
        images=np.zeros((2, 4, 4, 3), np.uint8),
        seeds=np.arange(2),
        model="m",
        schedule="F",
        steps=1,
        guidance=np.nan,
    )
    assert SampleSet.load(old).prompts is None


def test_cli_sample_reads_a_prompts_file(tmp_path, sd_dir, data, capsys):
    out = tmp_path / "parti.npz"
    code = cli.main(
        [
            "sample",
            "--model",
            "sd15",
            "--weights",
            str(sd_dir),
            "--steps",
            "2",
            "--schedule",
            "F P0 N",
            "--seeds",
            "0:4",
            "--prompts",
            str(data / "PartiPrompts.tsv"),
            "--out",
            str(out),
        ]
    )
    assert code == 0 and "4 images of sd15" in capsys.readouterr().out
    loaded = SampleSet.load(out)
    assert loaded.prompts[0] == loaded.prompts[3] == "bond" and loaded.schedule == "F P0 N"
    code = cli.main(
        [
            "sample",
            "--model",
            "sd15",
            "--weights",
            str(sd_dir),
            "--steps",
            "2",
            "--out",
            str(tmp_path / "none.npz"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "needs prompts" in err and not (tmp_path / "none.npz").exists()


def test_search_sizes_a_text_to_image_space_by_the_samplers_unet_calls(
    sd_dir, data, stand_ins, capsys
):
    argv = [
        "search",
        "--model",
        "sd15",
        "--weights",
        str(sd_dir),
        "--steps",
        "5",
        "--prompts",
        str(data / "PartiPrompts.tsv"),
        "--seeds",
        "0:6",
        "--budget",
        "2",
        "--n-eval",
        "2",
        "--population",
        "2",
        "--branches",
        "0,1",
        "--extractor",
        INCEPTION,
        "--batch",
        "6",
        "--json",
    ]
    for scheduler, calls in ((None, 6), ("DDIMScheduler", 5)):  # PLMS: steps + 1 calls
        extra = ["--scheduler", scheduler] if scheduler else []
        assert cli.main([*argv, *extra]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["unet_calls"] == calls
        assert summary["sampler"]["scheduler"] == (scheduler or "PNDMScheduler")
        (best,) = summary["budgets"]
        assert len(Schedule.parse(best["schedule"])) == calls and best["evaluated"] == 2
        assert best["predicted_speedup"] >= 2


def test_samples_go_through_the_pipeline_under_the_schedule(sd_model):
    calls = []
    handle = sd_model.unet.conv_in.register_forward_hook(lambda *args: calls.append(1))
    try:
        generate(sd_model, 4, "F P0 N N N", [0, 1], prompts=["a"], batch_size=2)
    finally:
        handle.remove()
    assert len(calls) == 2  # F and P0 run the UNet's shallow path, N runs nothing
    assert sd_model.pipeline.unet is sd_model.unet
    assert type(sd_model.pipeline.scheduler).__name__ == "PNDMScheduler"


def test_prompts_and_labels_are_checked_against_the_model(sd_model):
    with pytest.raises(ValueError, match="text-conditioned: it needs prompts"):
        generate(sd_model, 2, seeds=[0])
    with pytest.raises(ValueError, match="labels do not apply"):
        generate(sd_model, 2, seeds=[0], labels=[1], prompts=["a"])
    with pytest.raises(ValueError, match="not text-conditioned"):
        generate(models.load_model("digits-ddpm", "random"), 2, seeds=[0], prompts=["a"])


def test_latency_inputs_encode_prompts_with_the_empty_prompt_for_guidance(sd_model):
    from repro.metrics.latency import latency_inputs

    latents, kwargs = latency_inputs(sd_model, 3, 7.5, prompts=["a cat", "a dog"])
    assert latents.shape == (3, 4, 16, 16) and kwargs["guidance_scale"] == 7.5
    states = kwargs["encoder_hidden_states"]
    cond, uncond = sd_model.pipeline.encode_prompt(["a cat", "a dog", "a cat"], "cpu", 1, True)
    assert states.shape[0] == 6 and torch.equal(states, torch.cat([uncond, cond]))
    _, plain = latency_inputs(sd_model, 2, 1.0, prompts=["a cat"])
    assert plain["guidance_scale"] is None and plain["encoder_hidden_states"].shape[0] == 2


def test_sd15_without_its_weights_names_the_id(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(models.MissingWeightsError) as error:
        models.load_model("sd15", "pretrained")
    message = str(error.value)
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in message and "hf download" in message
    assert "\n" not in message
    with pytest.raises(models.MissingWeightsError, match="--weights random builds only the UNet"):
        models.load_model("sd15", "random")


# -- suites ---------------------------------------------------------------------------------
def test_published_sd15_suites_validate_without_their_data(capsys):
    assert (
        cli.main(["validate", str(SUITES / "sd15_coco.yaml"), str(SUITES / "sd15_parti.yaml")]) == 0
    )
    assert capsys.readouterr().out.count(": ok") == 2
    coco, parti = load(SUITES / "sd15_coco.yaml"), load(SUITES / "sd15_parti.yaml")
    (c,), (p,) = coco.experiments, parti.experiments
    assert (c.prompts.format, c.prompts.limit, c.guidance, c.steps) == ("coco", 5000, 7.5, 50)
    assert (p.prompts.format, p.prompts.limit, p.prompts.file) == (
        "parti",
        None,
        "data/PartiPrompts.tsv",
    )
    assert c.baselines == p.baselines and c.search == p.search
    rows = {r.name for r in check(coco)["sd15"]}
    assert {
        "teacher",
        "segment @5.1x",
        "deepcache N=8 b=0",
        "deepcache-nonuniform N=2 b=0",
        "sampler-steps 25",
        "sampler-steps @2x",
        "sampler-steps @5.1x",
    } <= rows


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        ({"prompts: {file: P}\n": ""}, "field 'prompts': model 'sd15' is text-conditioned"),
        ({"model: sd15": "model: digits-ddpm"}, "field 'prompts': model 'digits-ddpm' is not"),
        (
            {"prompts: {file: P}\n": "", "model: sd15": "model: digits-ddpm"},
            "field 'evaluation.metrics': clip:ViT-g-14/laion2b_s34b_b88k scores images",
        ),
        ({"{file: P}": "{file: P, format: csv}"}, "field 'prompts.format': unknown value 'csv'"),
        ({"{file: P}": "{file: P, limit: 0}"}, "prompts.limit"),
    ],
)
def test_suite_checks_prompts_against_the_model(tmp_path, edit, needle):
    path = write_suite(tmp_path, "W", "P", **edit)
    with pytest.raises(SuiteError) as error:
        check(load(path))
    assert needle in str(error.value)


def test_missing_prompts_file_stops_the_run_before_anything_is_written(
    tmp_path, sd_dir, stand_ins, capsys
):
    path = write_suite(tmp_path, sd_dir, tmp_path / "nowhere" / "captions_val2017.json")
    code = cli.main(
        [
            "run",
            str(path),
            "--results",
            str(tmp_path / "results"),
            "--tracking-uri",
            f"sqlite:///{tmp_path}/mlflow.db",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "prompts.file" in err and str(tmp_path / "nowhere" / "captions_val2017.json") in err
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()


def test_missing_sd15_weights_stop_the_run_naming_the_id(
    tmp_path, data, stand_ins, capsys, monkeypatch
):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    path = write_suite(tmp_path, "pretrained", data / "PartiPrompts.tsv")
    code = cli.main(["run", str(path), "--results", str(tmp_path / "results"), "--no-tracking"])
    (err,) = error_lines(capsys.readouterr().err)
    assert code == 2 and "stable-diffusion-v1-5/stable-diffusion-v1-5" in err
    assert not (tmp_path / "results").exists()


# -- the whole suite path -------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_run(tmp_path_factory, sd_dir, data, stand_ins):
    tmp = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{tmp}/mlflow.db"
    path = write_suite(tmp, sd_dir, data / "captions_val2017.json")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)  # MLflow's sqlite store keeps artifacts under ./mlruns
        code = cli.main(
            [
                "run",
                str(path),
                "--results",
                str(tmp / "results"),
                "--tracking-uri",
                uri,
                "--dtype",
                "float32",
                "--quiet",
            ]
        )
    assert code == 0
    (run_dir,) = (tmp / "results" / "tiny-sd").iterdir()
    return run_dir, uri, json.loads((run_dir / "results.json").read_text())


def test_text_suite_rows_carry_clip_rfid_guidance_and_speedups(text_run):
    _, _, results = text_run
    rows = {row["name"]: row for row in results["rows"]}
    assert list(rows) == ["teacher", "segment @2x", "deepcache N=2 b=0", "sampler-steps 3"]
    assert [row["steps"] for row in rows.values()] == [5, 5, 5, 3]
    for row in rows.values():
        assert row["model"] == "sd15" and row["guidance"] == 7.5
        assert set(row["metrics"]) == {CLIP_PROTOCOL, RFID, f"rkid:{INCEPTION}"}
        assert row["metric_n"][CLIP_PROTOCOL] == 6 and row["latency"]["batch"] == 2
        assert_speedup_is_the_ratio_of_medians(row, rows["teacher"])
    assert rows["teacher"]["schedule"] == "F F F F F F"
    assert abs(rows["teacher"]["metrics"][RFID]) < 1e-6
    assert rows["deepcache N=2 b=0"]["schedule"] == "F P0 | F P0 | F P0"
    fewer = rows["sampler-steps 3"]  # the pipeline run at 3 PLMS steps: 4 of 6 UNet calls
    assert fewer["schedule"] == "F F F F" and fewer["predicted_speedup"] == pytest.approx(1.5)
    searched = rows["segment @2x"]
    assert searched["search"]["protocol"] == f"rkid:{INCEPTION}" and searched["search"]["n"] == 6
    assert 2.0 <= searched["predicted_speedup"] <= 2.2


def test_a_sampler_steps_row_is_the_pipeline_at_its_own_steps(text_run, sd_model, tmp_path):
    from PIL import Image

    from repro.reporting.report import sample_grid

    run_dir, _, results = text_run
    rows = {row["name"]: row for row in results["rows"]}
    teacher = SampleSet.load(run_dir / "work" / "sd15" / "teacher-eval.npz")
    plms3 = generate(sd_model, 3, None, list(teacher.seeds), prompts=teacher.prompts, batch_size=4)
    sample_grid(plms3.images[:4], tmp_path / "plms3.png")
    pixels = [
        np.asarray(Image.open(path))
        for path in (
            tmp_path / "plms3.png",
            run_dir / rows["sampler-steps 3"]["grid"],
            run_dir / rows["teacher"]["grid"],
        )
    ]
    assert np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[0], pixels[2])


def test_prompts_reach_the_samples_and_clip_scores_them(text_run, stand_ins):
    run_dir, _, results = text_run
    work = run_dir / "work" / "sd15"
    teacher = SampleSet.load(work / "teacher-eval.npz")
    expected = tuple(COCO_ORDER[i % 4] for i in range(6))  # the i-th seed: prompt i mod n
    assert teacher.prompts == expected and teacher.guidance == 7.5
    assert SampleSet.load(work / "teacher-search.npz").prompts == expected
    teacher_row = next(r for r in results["rows"] if r["kind"] == "teacher")
    clip = stand_ins.score(teacher.images, teacher.prompts).value
    assert teacher_row["metrics"][CLIP_PROTOCOL] == pytest.approx(clip)
    logged = [json.loads(line) for line in (work / "search.jsonl").read_text().splitlines()]
    assert logged and all(entry["context"]["prompts"].startswith("sha256:") for entry in logged)
    resolved = load(run_dir / "suite.yaml").experiments[0]
    assert resolved.prompts.file.endswith("captions_val2017.json")


def test_text_suite_is_in_mlflow(text_run):
    _, uri, results = text_run
    runs = logged_runs(uri, "tiny-sd-test")
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(runs) - len(children) == 1 and len(children) == len(results["rows"])
    assert set(children["params.guidance"]) == {"7.5"}
    assert children["params.model"].eq("sd15").all()
