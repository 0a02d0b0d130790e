"""The caching probe: the deep feature it traces is the one a partial step replays, and on
the embedded digits model it reports per-branch rFID against null steps and a heatmap."""

import json

import numpy as np
import pytest
import torch
from conftest import ddim, tiny_unet2d

from repro import models
from repro.engine.branches import num_branches
from repro.engine.loop import denoise
from repro.metrics.extractors import load_extractor
from repro.metrics.fid import TeacherFeatureCache
from repro.search import probe


def traced(unet, schedule: str) -> list[list[float]]:
    latents = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with probe.deep_feature_similarity(unet) as rows:
        denoise(unet, ddim(2), latents, schedule)
    return rows


@pytest.mark.parametrize("branch", [0, 4, 11])
def test_the_traced_feature_is_the_one_a_partial_step_replays(branch):
    unet = tiny_unet2d()
    assert traced(unet, f"F P{branch}")[branch] == [pytest.approx(1.0, abs=1e-6)]
    assert traced(unet, "F F")[branch][0] < 1.0 - 1e-4  # a full step recomputes it
    assert not any(
        hasattr(m, "_forward_pre_hooks") and m._forward_pre_hooks for m in unet.modules()
    )


def test_probe_on_digits_reports_branches_against_null_steps(tmp_path):
    model = models.load_model("digits-ddpm")
    result = probe.probe(
        model,
        steps=6,
        interval=3,
        seeds=list(range(8)),
        extractor=load_extractor("digits-cnn"),
        cache=TeacherFeatureCache(tmp_path / "teacher"),
    )
    branches = num_branches(model.unet)
    assert result.similarity.shape == (branches, 5)
    assert np.all(np.abs(result.similarity) <= 1.0 + 1e-6)
    assert sorted(result.partial_rfid) == list(range(branches))
    # the deepest branch recomputes all but the mid block: far closer to the teacher than N
    assert result.partial_rfid[branches - 1] < result.null_rfid
    assert json.loads(json.dumps(result.to_dict()))["similarity"] == result.similarity.tolist()
    path = probe.plot_similarity(result, tmp_path / "probe.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_repro_probe_writes_its_data_and_heatmap(tmp_path, capsys):
    from repro.cli.main import main

    out = tmp_path / "probe"
    assert (
        main(
            [
                "probe",
                "digits-ddpm",
                "--steps",
                "6",
                "--interval",
                "3",
                "--seeds",
                "0:8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    data = json.loads((out / "probe.json").read_text())
    assert (data["steps"], data["interval"], data["seeds"]) == (6, 3, list(range(8)))
    assert len(data["partial_rfid"]) == len(data["similarity"]) == 12  # every branch
    assert (out / "similarity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out_err = capsys.readouterr()
    assert f"null steps {data['null_rfid']:.2f}" in out_err.out
    assert (
        "warning: --seeds: 8 seeds for 64-dimensional digits-cnn features: the probe's "
        "rFIDs are biased (singular covariances); use at least 128"
    ) in out_err.err
    assert main(["probe", "digits-ddpm", "--interval", "0", "--out", str(out)]) == 2
