"""suites/ldm4g_imagenet256.yaml and suites/adm_imagenet64.yaml: they validate without their
data, plan DeepCache's LDM rows and AutoDiffusion's 4-step setting, and `repro run` stops in
seconds with one line naming what is missing, before anything is written."""

from pathlib import Path

import numpy as np
import pytest
from conftest import error_lines

from repro import models
from repro.cli import main as cli
from repro.config.suite import check, load

SUITES = Path(__file__).resolve().parent.parent / "suites"
LDM, ADM = SUITES / "ldm4g_imagenet256.yaml", SUITES / "adm_imagenet64.yaml"


def test_imagenet_suites_validate_and_plan_the_published_rows(capsys):
    assert cli.main(["validate", str(LDM), str(ADM)]) == 0
    assert capsys.readouterr().out.count(": ok") == 2
    (ldm,) = load(LDM).experiments
    assert (ldm.steps, ldm.guidance, ldm.evaluation.reference) == (250, 1.5, "imagenet-256")
    assert [m.partition(":")[0] for m in ldm.evaluation.metrics] == [
        "fid",
        "rfid",
        "is",
        "precision",
        "recall",
    ]  # the published columns but sFID
    rows = {row.name: row for row in check(load(LDM))["ldm4g-imagenet256"]}
    assert {f"deepcache N={n} b=0" for n in (2, 3, 5, 10, 20)} <= set(rows)
    assert {"segment @2.6x", "deepcache-quad N=10 b=0", "deepcache-quad N=20 b=0"} <= set(rows)
    assert {p.row for p in ldm.published} <= set(rows)
    adm = check(load(ADM))
    assert [r.name for r in adm["adm-imagenet64-4-steps"]] == [
        "teacher",
        "stepwise @62.5x",
        "sampler-steps 4",
    ]


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """Nothing of the suites' data here: no Inception weights, reference or checkpoint."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("REPRO_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("REPRO_DATA", raising=False)
    monkeypatch.delenv("REPRO_INCEPTION_WEIGHTS", raising=False)
    return tmp_path


def run(suite: Path, tmp_path: Path, capsys) -> str:
    """`repro run` exits 2 with one line and writes nothing anywhere under ``tmp_path``."""
    before = sorted(tmp_path.rglob("*"))
    code = cli.main(["run", str(suite), "--results", str(tmp_path / "results"), "--no-tracking"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(error_lines(err)) == 1
    assert sorted(tmp_path.rglob("*")) == before
    return err


@pytest.mark.parametrize(
    ("suite", "original", "batch"),
    [
        (LDM, "ldm model.ckpt", "VIRTUAL_imagenet256_labeled.npz"),
        (ADM, "adm 64x64_diffusion.pt", "VIRTUAL_imagenet64_labeled.npz"),
    ],
)
def test_run_without_the_data_names_each_missing_file_in_turn(
    bare, capsys, monkeypatch, suite, original, batch
):
    (experiment,) = load(suite).experiments[:1]
    weights = experiment.weights
    err = run(suite, bare, capsys)
    assert f"weights directory {weights} does not exist (looked for at {bare / weights})" in err
    assert f"`repro convert {original} DIR`" in err
    for network in models.get(experiment.model).converted.networks:  # named, not loadable
        (bare / weights / network).mkdir(parents=True)
        (bare / weights / network / "config.json").write_text("{}")
        (bare / weights / network / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert "pt_inception-2015-12-05-6726825d.pth" in run(suite, bare, capsys)
    (bare / "w").write_bytes(b"stand-in")
    monkeypatch.setenv("REPRO_INCEPTION_WEIGHTS", str(bare / "w"))
    err = run(suite, bare, capsys)
    assert batch in err and str(bare / "data") in err
    (bare / "data").mkdir()
    np.savez(
        bare / "data" / batch,
        arr_0=np.zeros((2, 4, 4, 3), np.uint8),
        mu=np.zeros(2048),
        sigma=np.eye(2048),
    )
    assert f"{weights}/unet does not load as a {models.get(experiment.model).unet_class}" in run(
        suite, bare, capsys
    )


def test_a_stepwise_training_grid_past_the_trained_timesteps_fails_validation(tmp_path, capsys):
    """LDM's DDIM grid (steps_offset 1) at 1000 steps reaches t=1000: refused up front instead
    of an IndexError in the middle of the search."""
    text = LDM.read_text()
    assert "stepwise_grid: teacher" in text
    (tmp_path / "suite.yaml").write_text(
        text.replace("stepwise_grid: teacher", "stepwise_grid: training")
    )
    assert cli.main(["validate", str(tmp_path / "suite.yaml")]) == 2
    err = capsys.readouterr().err
    assert "'search.stepwise_grid'" in err and "reaches timestep 1000" in err
