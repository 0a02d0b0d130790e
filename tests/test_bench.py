import json
import statistics

import pytest
from test_bench_suite import speedup_by_hand

from repro.cli.main import main
from repro.core.schedule import CostTable


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_bench_times_schedules_against_all_full_and_the_helper(capsys, tmp_path):
    out_file = tmp_path / "bench.md"
    code, out, _ = run_cli(
        capsys,
        "bench",
        "--model",
        "ddpm-cifar10",
        "--steps",
        "4",
        "--repeats",
        "1",
        "--deepcache",
        "2:0",
        "--schedule",
        "F N P3 N",
        "--calibrate",
        "--oracle",
        "--plain",
        "--threads",
        "1",
        "--json",
        "--out",
        str(out_file),
        "--no-tracking",
    )
    assert code == 0
    report = json.loads(out)
    rows = {row["name"]: row for row in report["loops"]}
    fit = [
        "all-F",
        "F then N",
        "fewer-steps keep=2",
        *(f"DeepCache N={n} b={b}" for b in (0, 3) for n in (2, 3, 5, 10)),
    ]
    assert report["calibration_loops"] == fit
    assert set(rows) == {*fit, "F N P3 N", "plain diffusers loop", "DeepCacheSDHelper N=2 b=0"}
    base = statistics.median(rows["all-F"]["seconds"])
    for row in rows.values():  # the helper's and the plain loop too, over the engine's all-F
        assert row["measured_speedup"] == pytest.approx(base / statistics.median(row["seconds"]))
    table = CostTable.from_dict(report["cost_table"])
    assert sorted(table.partial) == list(range(12))
    assert rows["F N P3 N"]["predicted_speedup"] == pytest.approx(
        speedup_by_hand("F N P3 N", table, calls=4)
    )
    assert rows["F N P3 N"]["predicted_speedup_kinds"] == pytest.approx(
        speedup_by_hand("F N P3 N", table, calls=4, overheads=False)
    )
    assert "predicted_speedup_kinds" not in rows["plain diffusers loop"]
    assert rows["DeepCache N=2 b=0"]["schedule"] == "F P0 | F P0"
    assert set(report["helper_partial_median_s"]) == {"P0"}
    assert set(report["engine_partial_median_s"]) == {"P0"}
    assert report["environment"]["batch"] == 1 and report["unet_calls"] == 4
    markdown = out_file.read_text()
    assert markdown.startswith(
        "# repro bench: ddpm-cifar10 (random weights)\n\nCommand: `repro "
        "bench --model ddpm-cifar10 --steps 4 --repeats 1 --deepcache "
        "2:0 --schedule 'F N P3 N' --calibrate"
    )  # main's argv, not pytest's
    assert "DeepCacheSDHelper N=2 b=0" in markdown and "torch threads" in markdown
    assert "F then N (fit)" in markdown and "per sampler step" in markdown
    assert any(line.startswith("1 timing repeat") for line in report["cautions"])
    assert "**Measurement warnings:**" in markdown and "- 1 timing repeat" in markdown


def test_an_unhooked_loop_far_from_the_hooked_one_is_a_warning():
    from repro.speed.loops import PLAIN, LoopTiming, plain_caution

    def timings(plain_speedup):
        return [
            LoopTiming("all-F", "F F", [1.0], measured_speedup=1.0),
            LoopTiming(PLAIN, "(no hooks)", [1 / plain_speedup], measured_speedup=plain_speedup),
        ]

    assert plain_caution(timings(1.03)) == [] and plain_caution(timings(0.97)) == []
    assert plain_caution(timings(1.0)[:1]) == []  # no plain row
    (slow,) = plain_caution(timings(0.89))
    assert slow.startswith("the unhooked diffusers loop ran at 0.89x") and "noise" in slow
    (fast,) = plain_caution(timings(1.2))
    assert "hooks cost more" in fast


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--schedule", "F X"], "'X' at step 2"),
        (["--schedule", "F P12"], "'P12' at step 2: the model has branches 0..11"),
        (["--deepcache", "five"], "--deepcache expects N or N:B"),
        (["--schedule", "F N N"], "has 3 steps but ddpm-cifar10 runs 2 UNet calls"),
        (["--model", "sd-15"], "unknown model 'sd-15'"),
    ],
)
def test_bench_bad_input_exits_2_with_one_line(capsys, argv, needle):
    base = {"--model": "ddpm-cifar10"}
    args = ["bench", "--steps", "2", "--repeats", "1"]
    for flag, value in base.items():
        if flag not in argv:
            args += [flag, value]
    code, _, err = run_cli(capsys, *args, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and needle in err
