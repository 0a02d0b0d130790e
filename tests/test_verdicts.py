"""Verdicts of a run at equal speed (repro.verdicts) on synthetic per-seed qualities: a
searched method clearly better than a family's front, one equal to it, one outside it."""

import numpy as np

from repro import verdicts
from repro.compare import Point, per_seed_mean

N = 400
RNG = np.random.default_rng(0)
NOISE = RNG.normal(0, 1, N)  # shared by every row: paired by seed


def row(name, kind, family, budget, speed, level):
    values = level + NOISE + RNG.normal(0, 0.2, N)
    return ({"name": name, "kind": kind, "family": family, "budget": budget,
             "predicted_speedup": speed, "measured_speedup": speed * 1.1,
             "metrics": {"fid:x": float(values.mean())}}, values)


def test_a_searched_method_far_below_two_fronts_is_better_at_both_speeds():
    made = [
        row("teacher", "teacher", None, None, 1.0, 0.0),
        *(row(f"dc {s}", "baseline", "deepcache", None, s, 10 * s) for s in (1.5, 2.5, 4.0)),
        *(row(f"fs {s}", "baseline", "fewer-steps", None, s, 5 + 10 * s) for s in (2.0, 3.0)),
        *(row(f"seg {k}", "searched", "segment-evolution", 2.5, 2.5, 5.0) for k in range(3)),
    ]
    rows = [r for r, _ in made]
    points = {r["name"]: Point(r["name"], 1.0, verdicts.memoised(per_seed_mean(v)), N)
              for r, v in made}
    records, intervals = verdicts.verdicts(rows, {"fid:x": points.__getitem__}, 3, 199)
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
    assert low < rows[-3]["metrics"]["fid:x"] < high and high - low < 0.5


def test_a_searched_method_level_with_the_front_is_a_tie_and_beyond_it_dominance_counts():
    made = [
        *(row(f"dc {s}", "baseline", "deepcache", None, s, 10 * s) for s in (1.5, 2.5)),
        *(row(f"seg {k}", "searched", "segment-evolution", 2.0, 2.0, 20.0) for k in range(3)),
        *(row(f"step {k}", "searched", "stepwise-evolution", 5.0, 5.0, 1.0) for k in range(3)),
    ]
    rows = [r for r, _ in made]
    points = {r["name"]: Point(r["name"], 1.0, verdicts.memoised(per_seed_mean(v)), N)
              for r, v in made}
    records, _ = verdicts.verdicts(rows, {"fid:x": points.__getitem__}, 3, 199)
    by = {(r["method"], r["family"], r["speed"]): r for r in records}
    assert by[("segment-evolution", "deepcache", "predicted")]["outcome"] == "tie"
    assert by[("segment-evolution", "deepcache", "predicted")]["basis"] == "equal speed"
    beyond = by[("stepwise-evolution", "deepcache", "predicted")]  # 5x at 1.0: dominates 2.5x
    assert (beyond["outcome"], beyond["basis"]) == ("better", "a slower point")
    assert abs(beyond["difference"] + 24) < 0.5 and beyond["at_speed"] is None
    dominated = by[("segment-evolution", "stepwise-evolution", "predicted")]  # 2x at 20: 5x at 1
    assert (dominated["outcome"], dominated["basis"]) == ("worse", "a faster point")


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
    return {"experiment": "e", "method": "segment-evolution", "budget": 2.0, "family": family,
            "metric": "fid:x", "speed": "measured", "searched": 1.0, "at_speed": 2.0,
            "difference": difference, "low": None, "high": None, "outcome": outcome}


def test_verdict_changes_pair_two_runs_by_method_budget_family_metric_and_speed(tmp_path):
    from repro import comparison_report

    old = {"verdicts": [_verdict("deepcache", "better", -1.0), _verdict("fewer-steps", "tie", 0.1)]}
    new = {"verdicts": [_verdict("deepcache", "tie", -0.2), _verdict("random", "worse", 2.0)]}
    changes = comparison_report.verdict_changes(old, new).set_index("family")["changed"]
    assert changes.to_dict() == {"deepcache": "better -> tie", "random": "only in new",
                                 "fewer-steps": "only in old"}
    paths = comparison_report.write_verdicts(new, tmp_path)
    assert [p.name for p in paths] == ["verdicts.md", "verdicts.csv"]
    assert "| worse" in (tmp_path / "verdicts.md").read_text()
    assert comparison_report.write_verdicts({"verdicts": []}, tmp_path / "none") == []


def test_convergence_is_the_best_fitness_so_far():
    from repro.comparison_report import convergence

    row = {"search": {"trace": [5.0, 7.0, 3.0, 4.0, 1.0]}}
    assert convergence(row).tolist() == [5.0, 5.0, 3.0, 3.0, 1.0]


def test_a_rows_fid_interval_covers_what_other_seed_sets_give():
    """A resample repeats seeds and inflates a Frechet distance; the row's interval takes
    that inflation out. Over 20 independent sets of 128 seeds (32-d Gaussian features, a
    fixed reference), its interval holds the median FID of 200 other seed sets at least 15
    times; the plain percentile interval, which lies above the values, at most 5 times."""
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
        low, high = verdicts.interval(Point("row", 1.0, q, n), 1, 199)
        shifted += low <= median <= high
        ci = stats.bootstrap((np.arange(n),), lambda s, axis=-1, q=q: q(s), n_resamples=199,
                             vectorized=True, method="percentile", rng=0).confidence_interval
        plain += ci.low <= median <= ci.high
    assert shifted >= 15 and plain <= 5
