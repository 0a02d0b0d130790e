"""Verdicts of a run at equal speed (repro.results.verdicts) on synthetic per-seed qualities: a
searched method clearly better than a family's front, one equal to it, one outside it."""

import numpy as np
import pytest

from repro.results import verdicts
from repro.results.compare import Point, per_seed_mean
from repro.results.schema import Results, Row

N = 400
RNG = np.random.default_rng(0)
NOISE = RNG.normal(0, 1, N)  # shared by every row: paired by seed


def row(name, kind, family, budget, speed, level):
    values = level + NOISE + RNG.normal(0, 0.2, N)
    return (
        Row(
            experiment="x",
            name=name,
            kind=kind,
            family=family,
            budget=budget,
            predicted_speedup=speed,
            measured_speedup=speed * 1.1,
            metrics={"fid:x": float(values.mean())},
        ),
        values,
    )


def test_a_searched_method_far_below_two_fronts_is_better_at_both_speeds():
    made = [
        row("teacher", "teacher", None, None, 1.0, 0.0),
        *(row(f"dc {s}", "baseline", "deepcache", None, s, 10 * s) for s in (1.5, 2.5, 4.0)),
        *(row(f"fs {s}", "baseline", "fewer-steps", None, s, 5 + 10 * s) for s in (2.0, 3.0)),
        *(row(f"seg {k}", "searched", "segment-evolution", 2.5, 2.5, 5.0) for k in range(3)),
    ]
    rows = [r for r, _ in made]
    points = {r.name: Point(r.name, 1.0, verdicts.memoised(per_seed_mean(v)), N) for r, v in made}
    records, intervals = verdicts.verdicts(rows, {"fid:x": points.__getitem__}, 199)
    by = {(r["family"], r["speed"]): r for r in records}
    better = by[("deepcache", "predicted")]  # front at 2.5x: 25, searched 5
    assert better["outcome"] == "better" and better["high"] < 0
    assert abs(better["difference"] + 20) < 0.5 and abs(better["at_speed"] - 25) < 0.5
    # measured speeds are all 1.1x the predicted: the front is read at 2.75x among 1.65x,
    # 2.75x, 4.4x, where it is 25 again
    assert abs(by[("deepcache", "measured")]["at_speed"] - 25) < 0.5
    fewer = by[("fewer-steps", "predicted")]  # its front (2x: 25, 3x: 35) is 30 at 2.5x
    assert fewer["outcome"] == "better" and abs(fewer["at_speed"] - 30) < 0.5
    assert {r["family"] for r in records} == {"deepcache", "fewer-steps"}
    low, high = intervals[("seg 0", "fid:x")]
    assert low < rows[-3].metrics["fid:x"] < high and high - low < 0.5


def test_a_searched_method_level_with_the_front_is_a_tie_and_beyond_it_dominance_counts():
    made = [
        *(row(f"dc {s}", "baseline", "deepcache", None, s, 10 * s) for s in (1.5, 2.5)),
        *(row(f"seg {k}", "searched", "segment-evolution", 2.0, 2.0, 20.0) for k in range(3)),
        *(row(f"step {k}", "searched", "stepwise-evolution", 5.0, 5.0, 1.0) for k in range(3)),
    ]
    rows = [r for r, _ in made]
    points = {r.name: Point(r.name, 1.0, verdicts.memoised(per_seed_mean(v)), N) for r, v in made}
    records, _ = verdicts.verdicts(rows, {"fid:x": points.__getitem__}, 199)
    by = {(r["method"], r["family"], r["speed"]): r for r in records}
    assert by[("segment-evolution", "deepcache", "predicted")]["outcome"] == "tie"
    assert by[("segment-evolution", "deepcache", "predicted")]["basis"] == "equal speed"
    beyond = by[("stepwise-evolution", "deepcache", "predicted")]  # 5x at 1.0: dominates 2.5x
    assert (beyond["outcome"], beyond["basis"]) == ("better", "a slower point")
    assert abs(beyond["difference"] + 24) < 0.5 and beyond["at_speed"] is None
    # search methods are compared at the same budget only, never one against the other's
    # rows of another budget
    assert ("segment-evolution", "stepwise-evolution", "predicted") not in by


def test_memoised_quality_computes_each_resample_once():
    calls = []

    def quality(idx):
        calls.append(len(np.atleast_2d(idx)))
        return np.asarray(idx).sum(axis=-1).astype(float)

    cached = verdicts.memoised(quality)
    idx = np.array([[0, 1, 2], [2, 2, 0]])
    assert cached(idx).tolist() == [3.0, 4.0] and cached(idx[::-1]).tolist() == [4.0, 3.0]
    assert sum(calls) == 2


def _verdict(family, outcome, difference):
    return {
        "experiment": "e",
        "method": "segment-evolution",
        "budget": 2.0,
        "family": family,
        "metric": "fid:x",
        "speed": "measured",
        "searched": 1.0,
        "at_speed": 2.0,
        "difference": difference,
        "low": None,
        "high": None,
        "outcome": outcome,
    }


def _run(*records):
    return Results(run_id="r", rows=(), verdicts=records)


def test_verdict_changes_pair_two_runs_by_method_budget_family_metric_and_speed(tmp_path):
    from repro.reporting import verdict_report

    old = _run(_verdict("deepcache", "better", -1.0), _verdict("fewer-steps", "tie", 0.1))
    new = _run(_verdict("deepcache", "tie", -0.2), _verdict("random", "worse", 2.0))
    changes = verdict_report.verdict_changes(old, new).set_index("family")["changed"]
    assert changes.to_dict() == {
        "deepcache": "better -> tie",
        "random": "only in new",
        "fewer-steps": "only in old",
    }
    paths = verdict_report.write_verdicts(new, tmp_path)
    assert [p.name for p in paths] == ["verdicts.md", "verdicts.csv"]
    assert "| worse" in (tmp_path / "verdicts.md").read_text()
    assert verdict_report.write_verdicts(_run(), tmp_path / "none") == []


def test_convergence_is_the_best_fitness_so_far():
    from repro.reporting.verdict_report import convergence

    row = Row(
        experiment="x", name="s", kind="searched", search={"trace": [5.0, 7.0, 3.0, 4.0, 1.0]}
    )
    assert convergence(row).tolist() == [5.0, 5.0, 3.0, 3.0, 1.0]


def test_a_rows_fid_interval_covers_what_other_seed_sets_give():
    """A resample repeats seeds and inflates a Frechet distance; the row's interval is
    centred on its value. Over 20 independent sets of 128 seeds (32-d Gaussian features, a
    fixed reference), its interval holds its value and the median FID of 200 other seed
    sets at least 15 times; the plain percentile interval, which lies above the values, at
    most 5 times."""
    from scipy import stats

    from repro.metrics.frechet import FeatureStatistics

    d, n = 32, 128
    rng = np.random.default_rng(0)
    reference = FeatureStatistics.of(rng.normal(size=(20000, d)), "x")

    def quality():
        return verdicts.memoised(verdicts.fid_quality(rng.normal(0.5, 1, (n, d)), reference, "x"))

    median = float(np.median([quality()(np.arange(n)) for _ in range(200)]))
    shifted = plain = 0
    for _ in range(20):
        q = quality()
        low, high = verdicts.interval(Point("row", 1.0, q, n), 199)
        assert low <= q(np.arange(n)) <= high
        shifted += low <= median <= high
        ci = stats.bootstrap(
            (np.arange(n),),
            lambda s, axis=-1, q=q: q(s),
            n_resamples=199,
            vectorized=True,
            method="percentile",
            rng=0,
        ).confidence_interval
        plain += ci.low <= median <= ci.high
    assert shifted >= 15 and plain <= 5


def judged(made, primary=None, resamples=99):
    rows = [r for r, _ in made]
    points = {r.name: Point(r.name, 1.0, per_seed_mean(v), N) for r, v in made}
    return verdicts.verdicts(
        rows, {"fid:x": points.__getitem__, "rfid:x": points.__getitem__}, resamples, primary
    )[0]


def two_searches_and_a_baseline():
    return [
        *(row(f"dc {s}", "baseline", "deepcache", None, s, 10 * s) for s in (1.5, 2.5)),
        *(row(f"seg {k}", "searched", "segment-evolution", 2.0, 2.0, 5.0) for k in range(3)),
        *(row(f"step {k}", "searched", "stepwise-evolution", 2.0, 2.0, 5.0) for k in range(3)),
    ]


def test_two_search_methods_are_compared_by_their_repeat_means_and_labelled():
    """Methods at the same budget meet on both sides' repeat means (equal budget), not one
    against the other's front; by default the primary comparisons are each method against
    each baseline family on the first FID protocol at predicted speed, the rest exploratory."""
    records = judged(two_searches_and_a_baseline())
    by = {(r["method"], r["family"], r["metric"], r["speed"]): r for r in records}
    method = by[("segment-evolution", "stepwise-evolution", "fid:x", "predicted")]
    assert (method["basis"], method["family_kind"], method["outcome"]) == (
        "equal budget",
        "searched",
        "tie",
    )
    assert abs(method["at_speed"] - 5.0) < 0.1 and method["p"] > 0.05
    primary = {key for key, r in by.items() if r["label"] == "primary"}
    assert primary == {
        ("segment-evolution", "deepcache", "fid:x", "predicted"),
        ("stepwise-evolution", "deepcache", "fid:x", "predicted"),
    }
    assert {r["label"] for r in records} == {"primary", "exploratory"}


def test_named_primary_comparisons_replace_the_default():
    records = judged(
        two_searches_and_a_baseline(),
        primary=[
            {
                "method": "segment-evolution",
                "family": "stepwise-evolution",
                "metric": "rfid:x",
                "speed": "measured",
            }
        ],
    )
    chosen = [
        (r["method"], r["family"], r["metric"], r["speed"])
        for r in records
        if r["label"] == "primary"
    ]
    assert chosen == [("segment-evolution", "stepwise-evolution", "rfid:x", "measured")]
    assert not [
        r for r in judged(two_searches_and_a_baseline(), primary=[]) if r["label"] == "primary"
    ]


def test_holm_adjusts_primary_verdicts_across_the_run_and_leaves_exploratory_ones():
    """Three primary verdicts of two experiments, each significant at 5% alone: Holm makes
    the weakest (p 0.04, times 1) still better but the middle one (p 0.03 times 2) a tie;
    the exploratory verdict keeps its outcome and gets no adjustment."""

    def record(experiment, p, label, outcome="better"):
        return {"experiment": experiment, "p": p, "label": label, "outcome": outcome}

    run = [
        record("a", 0.001, "primary"),
        record("a", 0.03, "primary"),
        record("b", 0.04, "exploratory"),
        record("b", 0.02, "primary"),
        record("b", None, "primary", "inconclusive: 1 repeat"),
    ]
    adjusted = verdicts.adjust(run)
    p_holm = [r["p_holm"] for r in adjusted]
    assert p_holm[:2] + p_holm[3:] == pytest.approx([0.004, 0.06, 0.06, 1.0])
    assert adjusted[2]["p_holm"] is None and adjusted[2]["adjusted"] is None
    assert [r["adjusted"] for r in adjusted] == [
        "better",
        "tie",
        None,
        "tie",
        "inconclusive: 1 repeat",
    ]
    assert run[1].get("adjusted") is None  # the records passed in are left as they were


def test_measured_speed_verdicts_resample_timing_and_need_five_repeats():
    """A row's measured-speed verdict reads its and the teacher's per-repeat times; with 3
    timing repeats it is inconclusive, with 7 noisy ones it is judged and its interval is
    wider than the predicted-speed one on the same qualities."""

    def timed(made, repeats, noise):
        out = []
        for r, v in made:
            times = 1 / r.measured_speedup * (1 + noise * RNG.normal(0, 1, repeats))
            times *= (1 / r.measured_speedup) / np.median(times)  # keep the median
            out.append((r.model_copy(update={"latency": {"seconds": times.tolist()}}), v))
        return out

    base = [
        row("teacher", "teacher", None, None, 1.0 / 1.1, 0.0),
        *(row(f"dc {s}", "baseline", "deepcache", None, s, 10 * s) for s in (1.5, 2.5)),
        *(row(f"seg {k}", "searched", "segment-evolution", 2.0, 2.0, 19.0) for k in range(4)),
    ]
    few = {(r["speed"], r["metric"]): r for r in judged(timed(base, 3, 0.2))}
    assert few[("measured", "fid:x")]["outcome"] == "inconclusive: 3 timing repeats"
    assert few[("measured", "fid:x")]["timing_repeats"] == 3
    assert few[("predicted", "fid:x")]["outcome"] != "inconclusive: 3 timing repeats"
    many = {(r["speed"], r["metric"]): r for r in judged(timed(base, 7, 0.2), resamples=299)}
    measured, predicted = many[("measured", "fid:x")], many[("predicted", "fid:x")]
    assert not measured["outcome"].startswith("inconclusive")
    assert measured["high"] - measured["low"] > 1.5 * (predicted["high"] - predicted["low"])


def test_primary_verdicts_of_rows_from_per_seed_features():
    """The calibration study's entry: rows and per-seed features in, the Holm-adjusted
    primary verdicts out (rFID against the teacher's features of the same seeds)."""
    rng = np.random.default_rng(5)
    teacher = rng.normal(size=(150, 3))
    features = {"teacher": {"x": teacher}}
    rows = [Row(experiment="x", name="teacher", kind="teacher", predicted_speedup=1.0)]
    for name, kind, fam, speed, noise in (
        ("dc 1.5", "baseline", "deepcache", 1.5, 0.3),
        ("dc 2.5", "baseline", "deepcache", 2.5, 1.0),
        *((f"seg {k}", "searched", "segment-evolution", 2.0, 0.1) for k in range(3)),
    ):
        features[name] = {"x": teacher + rng.normal(0, noise, teacher.shape)}
        rows.append(
            Row(
                experiment="x",
                name=name,
                kind=kind,
                family=fam,
                budget=2.0 if kind == "searched" else None,
                predicted_speedup=speed,
            )
        )
    out = verdicts.primary_verdicts(rows, features, ["rfid:x"], resamples=49)
    assert [(r["method"], r["family"], r["metric"], r["speed"], r["label"]) for r in out] == [
        ("segment-evolution", "deepcache", "rfid:x", "predicted", "primary")
    ]
    assert out[0]["adjusted"] == out[0]["outcome"] == "better" and out[0]["p_holm"] < 0.05


def test_tables_and_mlflow_tags_show_the_label_and_the_adjusted_verdict(tmp_path):
    from repro.reporting import verdict_report
    from repro.reporting.tracking import verdict_tags

    run = _run(
        *verdicts.adjust(
            [
                _verdict("deepcache", "better", -1.0) | {"p": 0.001, "label": "primary"},
                _verdict("fewer-steps", "better", -0.5) | {"p": 0.04, "label": "primary"},
                _verdict("sampler-steps", "worse", 0.5) | {"p": 0.03, "label": "primary"},
                _verdict("segment-random", "worse", 2.0) | {"p": 0.01, "label": "exploratory"},
            ]
        )
    )
    table = verdict_report.verdict_table(run).set_index("family")
    assert table["label"].to_dict() == {
        "deepcache": "primary",
        "fewer-steps": "primary",
        "sampler-steps": "primary",
        "segment-random": "exploratory",
    }
    assert table.loc["fewer-steps", "adjusted verdict"] == "tie"
    assert table.loc["fewer-steps", "Holm p"] == pytest.approx(0.06)
    verdict_report.write_verdicts(run, tmp_path)
    text = (tmp_path / "verdicts.csv").read_text()
    assert "label" in text and "exploratory" in text and "adjusted verdict" in text
    assert verdict_tags(run) == {
        "repro.verdicts.primary": "better 1, tie 2",
        "repro.verdicts.exploratory": "worse 1",
    }
    old = verdict_report.verdict_table(_run(_verdict("deepcache", "tie", 0.1)))
    assert old["label"].isna().all()  # a run from before labels still renders
