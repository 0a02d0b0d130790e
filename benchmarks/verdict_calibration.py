"""Issue 24's calibration study: how often the harness's verdicts and ``repro gate`` are
wrong, measured on the digits models' real per-seed features; writes
``results/verdict-calibration.md``.

The data is one run of ``benchmarks/verdict_calibration.yaml``: the smoke suite's rows on
both digits models with 8 independent repeats of the segment search per budget, 1024
evaluation seeds and 10 interleaved timing repeats. The runs are committed under
``results/verdict-calibration/`` (results.json and per-seed features, no samples), so the
study reruns in minutes: ``python benchmarks/verdict_calibration.py``; with ``--sample`` it
first runs the suite (about an hour on 2 CPU cores).

The 1024 seeds stand in for the population. A trial draws evaluation seed sets of 256 (the
protocol's n) from them, disjoint where it simulates two runs, and judges them with the
harness's own code (:mod:`repro.results.compare`, :mod:`repro.results.verdicts`,
:mod:`repro.reporting.gate`):

- (a) A/A: one method as two. Two disjoint groups of search repeats of the segment search
  at one budget (method against method, paired seeds); the same repeats on two disjoint
  seed sets; a baseline row against its own family's front on another seed set.
- (b) power: a known fraction of one group's samples replaced by a worse row's samples of
  the same seeds, the true difference measured on all 1024 seeds.
- (c) the gate: a whole run's checks (every row's FID, rFID, accuracy and measured speedup
  with the smoke suite's tolerances) of two runs on disjoint seed sets and timing halves
  (A/A), and with one row made worse by 1x and 2x its tolerance.
- (d) coverage of a row's interval and of a difference's interval of the value at n = 256
  seeds (the mean over 64 seed sets of the pool: drawn without replacement from 1024, the
  truth moves less than from a population, so these coverages lean high), and on fresh
  draws of a Gaussian with the real rows' joint mean and covariance (an exact population).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import stats

from repro.config.suite import load
from repro.metrics.frechet import FeatureStatistics, frechet_distances
from repro.reporting import gate
from repro.reporting.report import load_results
from repro.results import compare, per_seed, verdicts
from repro.results.compare import Point

SUITE = Path("benchmarks/verdict_calibration.yaml")
DATA = Path("results/verdict-calibration")
OUT = Path("results/verdict-calibration.md")
SMOKE = Path("suites/smoke.yaml")  # the gate's tolerances
N = 256  # evaluation seeds per simulated run, as in the smoke and digits suites
EXTRACTOR = "digits-cnn"
FID, RFID, ACC = f"fid:{EXTRACTOR}", f"rfid:{EXTRACTOR}", f"acc:{EXTRACTOR}"
# gate power cells: (true change in tolerances, both runs on the same seeds)
GATE_CELLS = ((1.0, True), (2.0, True), (4.0, True), (8.0, True), (2.0, False), (8.0, False))


# -- data ------------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    kind: str
    schedule: str
    family: str | None
    budget: float | None
    predicted: float
    seconds: np.ndarray  # per timing repeat
    features: np.ndarray  # (seeds, d)
    accuracy: np.ndarray | None  # per-seed 0/1


@dataclass
class Experiment:
    name: str
    rows: dict[str, Row]
    reference: FeatureStatistics
    teacher: Row = field(init=False)

    def __post_init__(self):
        self.teacher = next(r for r in self.rows.values() if r.kind == "teacher")

    def repeats(self, budget: float) -> list[Row]:
        return [r for r in self.rows.values() if r.kind == "searched" and r.budget == budget]

    @property
    def budgets(self) -> list[float]:
        return sorted({r.budget for r in self.rows.values() if r.kind == "searched"})

    @property
    def pool(self) -> int:
        return len(self.teacher.features)


def load_experiments(data: Path) -> list[Experiment]:
    """Every experiment of every finished run under ``data``."""
    found = []
    for results_file in sorted(data.glob("*/results.json")):
        run = results_file.parent
        results = load_results(results_file)
        for name in results.experiments:
            rows = results.of_experiment(name)
            loaded = {}
            for row in rows:
                data_of = per_seed.load(run / row.per_seed)
                loaded[row.name] = Row(
                    row.name,
                    row.kind,
                    row.schedule,
                    row.family,
                    row.budget,
                    row.predicted_speedup,
                    np.asarray(row.latency["seconds"], float),
                    np.asarray(data_of.features[EXTRACTOR], np.float64),
                    data_of.values.get(ACC),
                )
            reference = FeatureStatistics.load(
                per_seed.reference_path(run / rows[0].per_seed, EXTRACTOR)
            )
            found.append(Experiment(name, loaded, reference))
    if not found:
        raise SystemExit(f"{data}: no finished run; run with --sample first")
    return found


# -- qualities on a seed set ----------------------------------------------------------------
def fid_point(
    exp: Experiment,
    row: Row,
    seeds: np.ndarray,
    speed: float | None = None,
    features: np.ndarray | None = None,
    timing: np.ndarray | None = None,
) -> Point:
    """The row's FID on ``seeds`` (pool indices), resampled as the verdicts resample it."""
    own = (row.features if features is None else features)[seeds]
    reference = exp.reference
    timed = (
        {}
        if timing is None
        else {"seconds": row.seconds[timing], "reference_seconds": exp.teacher.seconds[timing]}
    )
    return Point(
        row.name,
        row.predicted if speed is None else speed,
        lambda idx: _batched(own, idx, reference),
        len(seeds),
        **timed,
    )


def rfid_point(
    exp: Experiment, row: Row, seeds: np.ndarray, features: np.ndarray | None = None
) -> Point:
    own = (row.features if features is None else features)[seeds]
    teacher = exp.teacher.features[seeds]
    return Point(row.name, row.predicted, lambda idx: _batched(own, idx, teacher), len(seeds))


def acc_point(row: Row, seeds: np.ndarray) -> Point:
    return Point(row.name, row.predicted, compare.per_seed_mean(row.accuracy[seeds]), len(seeds))


def _batched(features: np.ndarray, idx: np.ndarray, other) -> np.ndarray:
    idx = np.asarray(idx)
    flat = idx.reshape(-1, idx.shape[-1])
    return frechet_distances(features, flat, other).reshape(idx.shape[:-1])


def seed_sets(rng: np.random.Generator, pool: int, count: int = 2) -> list[np.ndarray]:
    """``count`` disjoint sets of N seeds (pool indices)."""
    drawn = rng.permutation(pool)
    return [np.sort(drawn[i * N : (i + 1) * N]) for i in range(count)]


def planted(row: Row, worse: Row, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """``row``'s features with ``fraction`` of its seeds' replaced by ``worse``'s of the same
    seeds: a row whose samples are that much worse, image for image."""
    out = row.features.copy()
    swap = rng.random(len(out)) < fraction
    out[swap] = worse.features[swap]
    return out


def worst_row(exp: Experiment) -> Row:
    """The baseline row with the highest FID on the whole pool: what plants are made of."""
    rows = [r for r in exp.rows.values() if r.kind == "baseline"]
    values = [_batched(r.features, np.arange(exp.pool)[None], exp.reference)[0] for r in rows]
    return rows[int(np.argmax(values))]


# -- (a) A/A and (b) power --------------------------------------------------------------------
def method_vs_method(
    exp: Experiment,
    budget: float,
    k: int,
    trials: int,
    resamples: int,
    rng: np.random.Generator,
    plant: float = 0.0,
) -> dict:
    """Two disjoint groups of k repeats of one method, paired on one seed set per trial;
    ``plant``: the second group's samples made that much worse (:func:`planted`)."""
    repeats = exp.repeats(budget)
    worse = worst_row(exp) if plant else None
    outcomes, effects = [], []
    for trial in range(trials):
        order = rng.permutation(len(repeats))
        a, b = [repeats[i] for i in order[:k]], [repeats[i] for i in order[k : 2 * k]]
        (seeds,) = seed_sets(rng, exp.pool, 1)
        features = [planted(r, worse, plant, rng) if plant else None for r in b]
        if plant:
            everything = np.arange(exp.pool)[None]
            effects.append(
                np.mean(
                    [
                        _batched(f, everything, exp.reference)[0]
                        - _batched(r.features, everything, exp.reference)[0]
                        for r, f in zip(b, features, strict=True)
                    ]
                )
            )
        verdict = compare.compare_methods(
            [fid_point(exp, r, seeds, features=f) for r, f in zip(b, features, strict=True)],
            [fid_point(exp, r, seeds) for r in a],
            "A",
            n_resamples=resamples,
            rng=trial,
        )
        outcomes.append(verdict.outcome)
    return _rates(outcomes) | ({"effect": float(np.mean(effects))} if plant else {})


def same_rows_other_seeds(
    exp: Experiment, budget: float, k: int, trials: int, resamples: int, rng: np.random.Generator
) -> dict:
    """The same k repeats on two disjoint seed sets, as two methods (unpaired)."""
    repeats = exp.repeats(budget)
    outcomes = []
    for trial in range(trials):
        group = [repeats[i] for i in rng.permutation(len(repeats))[:k]]
        first, second = seed_sets(rng, exp.pool)
        verdict = compare.compare_methods(
            [fid_point(exp, r, second) for r in group],
            [fid_point(exp, r, first) for r in group],
            "A",
            paired=False,
            n_resamples=resamples,
            rng=trial,
        )
        outcomes.append(verdict.outcome)
    return _rates(outcomes)


def row_vs_own_front(
    exp: Experiment, trials: int, resamples: int, rng: np.random.Generator
) -> dict:
    """A baseline row on one seed set against its own family's front on another: a row on
    the front, judged at its own speed (the front read exactly at one of its points)."""
    families: dict[str, list[Row]] = {}
    for row in exp.rows.values():
        if row.kind == "baseline":
            families.setdefault(row.family, []).append(row)
    candidates = [(name, row) for name, rows in families.items() if len(rows) > 1 for row in rows]
    outcomes = []
    for trial in range(trials):
        name, row = candidates[rng.integers(len(candidates))]
        first, second = seed_sets(rng, exp.pool)
        family = [fid_point(exp, r, first) for r in families[name]]
        on_front = {p.label for p in compare.front(family)}
        if row.name not in on_front:
            continue  # a dominated row is not on the front it would be read from
        verdict = compare.compare(
            [fid_point(exp, row, second)],
            family,
            name,
            paired=False,
            repeats=False,
            n_resamples=resamples,
            rng=trial,
        )
        outcomes.append(verdict.outcome)
    return _rates(outcomes)


def _rates(outcomes: list[str]) -> dict:
    n = len(outcomes)
    sided = sum(o in (compare.BETTER, compare.WORSE) for o in outcomes)
    return {
        "n": n,
        "nontie": sided,
        "rate": sided / n if n else float("nan"),
        "worse": sum(o == compare.WORSE for o in outcomes) / n if n else float("nan"),
        "other": sorted(
            {o for o in outcomes if o not in (compare.BETTER, compare.WORSE, compare.TIE)}
        ),
    }


# -- (c) the gate -----------------------------------------------------------------------------
def gate_run(
    experiments: list[Experiment],
    regression,
    rng: np.random.Generator,
    trial: int,
    plant: tuple[Experiment, Row, np.ndarray] | None = None,
    paired: bool = False,
) -> tuple[bool, bool]:
    """One simulated pair of runs of every row: old on one seed set and timing half, new on
    another (``paired``: the same seed set, so only a planted row's images differ). Returns
    (the run failed, the planted row's FID check failed)."""
    checks = []
    half = rng.permutation(10)
    was_t, now_t = np.sort(half[:5]), np.sort(half[5:])
    for exp in experiments:
        first, second = seed_sets(rng, exp.pool)
        if paired:
            second = first
        for row in exp.rows.values():
            features = plant[2] if plant and plant[1] is row else None
            if not paired or features is not None:  # paired, unplanted: the same images
                checks.append(
                    gate.metric_check(
                        exp.name,
                        row.name,
                        FID,
                        fid_point(exp, row, second, features=features),
                        fid_point(exp, row, first),
                        regression,
                        paired=paired,
                    )
                )
                checks.append(
                    gate.metric_check(
                        exp.name,
                        row.name,
                        RFID,
                        rfid_point(exp, row, second, features),
                        rfid_point(exp, row, first),
                        regression,
                        paired=paired,
                    )
                )
            if row.accuracy is not None and not paired:
                checks.append(
                    gate.metric_check(
                        exp.name,
                        row.name,
                        ACC,
                        acc_point(row, second),
                        acc_point(row, first),
                        regression,
                        paired=paired,
                    )
                )
            if row.kind != "teacher":  # timed anew in every run
                speedups = exp.teacher.seconds / row.seconds
                was, now = speedups[was_t], speedups[now_t]
                checks.append(
                    gate.speed_check(
                        exp.name,
                        row.name,
                        (float(np.median(was)), float(np.median(now))),
                        list(was),
                        list(now),
                        regression,
                    )
                )
    decided = gate.decide(checks, 1 - regression.confidence)
    planted_failed = bool(plant) and any(
        c.regressed
        and c.row == plant[1].name
        and c.quantity == FID
        and c.experiment == plant[0].name
        for c in decided
    )
    return any(c.regressed for c in decided), planted_failed


def plant_for(
    exp: Experiment, row: Row, multiple: float, regression, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """Features of ``row`` made worse by about ``multiple`` x its FID tolerance at n = N
    (the mean change over 16 seed sets), found by bisection on the planted fraction."""
    worse = worst_row(exp)
    sets = [seed_sets(rng, exp.pool, 1)[0] for _ in range(16)]
    base = np.mean([_batched(row.features[s], np.arange(N)[None], exp.reference)[0] for s in sets])
    target = multiple * regression.tolerance(FID).allowed(base)
    swap_order = rng.permutation(exp.pool)
    low, high = 0.0, 1.0
    for _ in range(14):
        middle = (low + high) / 2
        features = row.features.copy()
        chosen = swap_order[: int(middle * exp.pool)]
        features[chosen] = worse.features[chosen]
        change = (
            np.mean([_batched(features[s], np.arange(N)[None], exp.reference)[0] for s in sets])
            - base
        )
        low, high = (middle, high) if change < target else (low, middle)
    return features, float(change), float(target)


# -- (d) coverage -----------------------------------------------------------------------------
def row_coverage(
    exp: Experiment,
    rows: list[Row],
    trials: int,
    resamples: int,
    rng: np.random.Generator,
    truth_sets: int = 64,
) -> dict:
    covered, total = 0, 0
    for row in rows:
        truth = np.mean(
            [
                _batched(row.features[s], np.arange(N)[None], exp.reference)[0]
                for s in (seed_sets(rng, exp.pool, 1)[0] for _ in range(truth_sets))
            ]
        )
        for _ in range(trials):
            (seeds,) = seed_sets(rng, exp.pool, 1)
            low, high = verdicts.interval(fid_point(exp, row, seeds), resamples)
            covered += low <= truth <= high
            total += 1
    return {"n": total, "coverage": covered / total}


def difference_coverage(
    exp: Experiment,
    pairs: list[tuple[Row, Row]],
    trials: int,
    resamples: int,
    rng: np.random.Generator,
    gaussian: bool = False,
    truth_sets: int = 64,
) -> dict:
    """Coverage of ``compare.difference``'s interval of FID(a) - FID(b) on the same seeds:
    on seed sets of the pool, or (``gaussian``) on fresh draws of a Gaussian with the two
    rows' joint mean and covariance (a true population, the truth its mean over 400)."""
    covered, total = 0, 0

    def fid(features):
        return _batched(features, np.arange(N)[None], exp.reference)[0]

    for a, b in pairs:
        draw = _drawer(exp, a, b, gaussian, rng)
        truth = np.mean(
            [fid(x) - fid(y) for x, y in (draw() for _ in range(400 if gaussian else truth_sets))]
        )
        for trial in range(trials):
            x, y = draw()
            new = Point("a", 0.0, lambda idx, x=x: _batched(x, idx, exp.reference), N)
            old = Point("b", 0.0, lambda idx, y=y: _batched(y, idx, exp.reference), N)
            verdict = compare.difference(new, old, "b", n_resamples=resamples, rng=trial)
            covered += verdict.low <= truth <= verdict.high
            total += 1
    return {"n": total, "coverage": covered / total}


# -- the study --------------------------------------------------------------------------------
def _drawer(exp: Experiment, a: Row, b: Row, gaussian: bool, rng: np.random.Generator):
    """Draws of (a's, b's) features of N seeds: seed sets of the pool, or a Gaussian with
    the rows' joint moments."""
    if not gaussian:

        def from_pool():
            (seeds,) = seed_sets(rng, exp.pool, 1)
            return a.features[seeds], b.features[seeds]

        return from_pool
    joint = np.hstack([a.features, b.features])
    mean, cov, d = joint.mean(axis=0), np.cov(joint, rowvar=False), a.features.shape[1]

    def from_gaussian():
        sample = rng.multivariate_normal(mean, cov, size=N)
        return sample[:, :d], sample[:, d:]

    return from_gaussian


def binomial(successes: int, n: int) -> str:
    """A count with its Clopper-Pearson 95% interval."""
    if not n:
        return "n/a"
    ci = stats.binomtest(successes, n).proportion_ci(0.95)
    return f"{successes / n:.3f} [{ci.low:.3f}, {ci.high:.3f}] ({successes}/{n})"


def study(experiments: list[Experiment], trials: int, resamples: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    regression = load(SMOKE).regression
    out: dict = {"aa": [], "power": [], "gate": {}, "coverage": [], "trivial": []}
    started = time.perf_counter()
    for exp in experiments:
        for budget in exp.budgets:
            if len({r.schedule for r in exp.repeats(budget)}) == 1:
                # every repeat found one schedule: two groups of them are one row twice,
                # a tie by construction that would only dilute the rate
                out["trivial"].append(f"{exp.name} @{budget:g}x")
            else:
                for k in (3, 4):
                    out["aa"].append(
                        {
                            "experiment": exp.name,
                            "budget": budget,
                            "k": k,
                            "test": "repeats of one method in two groups (paired)",
                            **method_vs_method(exp, budget, k, trials, resamples, rng),
                        }
                    )
            out["aa"].append(
                {
                    "experiment": exp.name,
                    "budget": budget,
                    "k": 4,
                    "test": "the same repeats on two seed sets (unpaired)",
                    **same_rows_other_seeds(exp, budget, 4, trials // 2, resamples, rng),
                }
            )
        for fraction in (0.1, 0.25, 0.5):  # power at the highest budget
            out["power"].append(
                {
                    "experiment": exp.name,
                    "budget": exp.budgets[-1],
                    "k": 4,
                    "fraction": fraction,
                    **method_vs_method(
                        exp, exp.budgets[-1], 4, trials // 2, resamples, rng, plant=fraction
                    ),
                }
            )
        out["aa"].append(
            {
                "experiment": exp.name,
                "budget": None,
                "k": 1,
                "test": "a front's row against its own front on other seeds",
                **row_vs_own_front(exp, trials, resamples, rng),
            }
        )
        log(f"{exp.name}: verdicts done, {time.perf_counter() - started:.0f} s")
    gate_trials = max(trials // 4, 20)
    regression = replace(regression, resamples=resamples)
    alarms = sum(gate_run(experiments, regression, rng, t)[0] for t in range(2 * gate_trials))
    out["gate"]["aa"] = (alarms, 2 * gate_trials)
    for multiple, paired in GATE_CELLS:
        hits, changes = 0, []
        for t in range(gate_trials):
            exp = experiments[t % len(experiments)]
            searched = [r for r in exp.rows.values() if r.kind == "searched"]
            row = searched[rng.integers(len(searched))]
            features, change, target = plant_for(exp, row, multiple, regression, rng)
            changes.append(change / (target / multiple))
            hits += gate_run(experiments, regression, rng, t, (exp, row, features), paired=paired)[
                1
            ]
        out["gate"][(multiple, paired)] = (hits, gate_trials, float(np.mean(changes)))
    log(f"gate done, {time.perf_counter() - started:.0f} s")
    for exp in experiments:
        searched = exp.repeats(exp.budgets[-1])
        baselines = [r for r in exp.rows.values() if r.kind == "baseline"]
        rows = [exp.teacher, searched[0], baselines[0], baselines[len(baselines) // 2]]
        out["coverage"].append(
            {
                "experiment": exp.name,
                "what": "a row's interval (pool)",
                **row_coverage(exp, rows, trials // 2, resamples, rng),
            }
        )
        pairs = [
            (searched[0], exp.teacher),
            (searched[1], baselines[len(baselines) // 2]),
            (baselines[0], baselines[-1]),
        ]
        for gaussian in (False, True):
            out["coverage"].append(
                {
                    "experiment": exp.name,
                    "what": "a difference's interval " + ("(Gaussian)" if gaussian else "(pool)"),
                    **difference_coverage(exp, pairs, trials // 2, resamples, rng, gaussian),
                }
            )
    log(f"coverage done, {time.perf_counter() - started:.0f} s")
    return out


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the page ---------------------------------------------------------------------------------
def page(
    out: dict,
    experiments: list[Experiment],
    trials: int,
    resamples: int,
    seconds: float,
    command: str,
) -> str:
    aa_hits = sum(c["nontie"] for c in out["aa"])
    aa_n = sum(c["n"] for c in out["aa"])
    alarms, gate_n = out["gate"]["aa"]
    power_2x = out["gate"][(2.0, True)]
    gaussian = [c for c in out["coverage"] if c["what"].endswith("(Gaussian)")]
    coverage = sum(c["coverage"] * c["n"] for c in gaussian) / sum(c["n"] for c in gaussian)
    lines = [
        "# Verdict calibration: measured error rates of the verdicts and the gate",
        "",
        "How often does a label of the harness say something the data does not hold? Each "
        "number below comes from the harness's own verdict and gate code run on simulated "
        "runs drawn from real per-seed features of the embedded digits models.",
        "",
        "## How it was run",
        f"- Data: `{SUITE}` (the smoke rows of digits-ddpm and digits-cond, DDIM 20 steps; "
        "8 independent repeats of the segment search at 2x and 3x, each on its own fitness "
        "seeds; 1024 evaluation seeds; 10 interleaved timing repeats at batch 64), run dirs "
        f"under [`{DATA.name}/`]({DATA.name}/).",
        f"- A trial draws evaluation seed sets of {N} (the protocol's n) from the 1024, "
        "disjoint where it simulates two runs; timing halves of 5 repeats stand for two runs' "
        f"timings. {trials} trials per A/A cell of two groups, {trials // 2} per other verdict "
        f"cell, {2 * max(trials // 4, 20)} A/A gate runs and {max(trials // 4, 20)} per gate "
        "power cell, "
        f"{resamples} bootstrap resamples per interval, 95% confidence.",
        f"- Command: `{command}`; {seconds / 60:.0f} min on this project's 2-core AMD EPYC "
        "box. Counts carry Clopper-Pearson 95% intervals.",
        "",
        "## (a) A/A: one method as two (target: non-tie rate <= 5%)",
        "",
        "| experiment | budget | repeats per side | what | non-tie rate | worse |",
        "|---|---:|---:|---|---|---:|",
    ]
    for c in out["aa"]:
        budget = "-" if c["budget"] is None else f"{c['budget']:g}x"
        other = f" (also: {', '.join(c['other'])})" if c["other"] else ""
        lines.append(
            f"| {c['experiment']} | {budget} | {c['k']} | {c['test']}{other} | "
            f"{binomial(c['nontie'], c['n'])} | {c['worse']:.3f} |"
        )
    if out["trivial"]:
        lines += [
            "",
            f"Not run: two groups of search repeats at {', '.join(out['trivial'])}. "
            "Every repeat of the calibration suite's small searches (8 evaluations each) "
            "found the same schedule there, so two groups are one row twice and tie by "
            "construction; such cells would only dilute the rate. The spread of real "
            "searches is judged in the search-digits runs.",
        ]
    lines += [
        "",
        f"All A/A verdicts together: {binomial(aa_hits, aa_n)}.",
        "",
        "## (b) Power: one group's samples made worse, image for image",
        "",
        "A fraction of each of the second group's repeats' samples replaced by the "
        "worst baseline row's samples of the same seeds; the effect is the mean FID "
        "change on all 1024 seeds.",
        "",
        "| experiment | budget | fraction replaced | FID effect | 'worse' rate |",
        "|---|---:|---:|---:|---|",
    ]
    for c in out["power"]:
        lines.append(
            f"| {c['experiment']} | {c['budget']:g}x | {c['fraction']:.2f} | "
            f"+{c['effect']:.2f} | {binomial(round(c['worse'] * c['n']), c['n'])} |"
        )
    lines += [
        "",
        "## (c) The gate (smoke tolerances: FID and rFID max(1, 5%), accuracy 0.01, speed 15%)",
        "",
        f"- A/A, two runs on disjoint seed sets and timing halves, every check of both "
        f"experiments (FID, rFID, accuracy, measured speedup; Holm across the run): "
        f"run-level false alarms {binomial(alarms, gate_n)} (target <= 5%).",
        "- Power: one searched row's FID made worse by a multiple of its tolerance "
        "(the mean change at n = 256 over 16 seed sets, in tolerances, shown).",
        "",
        "| true change | runs | detected | change reached |",
        "|---|---|---|---:|",
    ]
    for (multiple, paired), (hits, n, reached) in (
        (k, v) for k, v in out["gate"].items() if k != "aa"
    ):
        runs = (
            "same seeds (only the changed row's images differ)"
            if paired
            else "disjoint seed sets (every image differs)"
        )
        lines.append(f"| {multiple:g}x tolerance | {runs} | {binomial(hits, n)} | {reached:.2f}x |")
    lines += ["", _gate_reading(out["gate"])]
    lines += [
        "",
        "## (d) Coverage of 95% intervals (target: 0.95)",
        "",
        "| experiment | interval | coverage |",
        "|---|---|---|",
    ]
    for c in out["coverage"]:
        lines.append(
            f"| {c['experiment']} | {c['what']} | "
            f"{binomial(round(c['coverage'] * c['n']), c['n'])} |"
        )
    lines += [
        "",
        "Pool: the truth is the mean over 64 seed sets of 256 drawn from the 1024; "
        "such sets vary less than sets from a population would (without replacement), "
        "so these coverages lean high. Gaussian: fresh draws from a Gaussian with the "
        "two rows' joint mean and covariance, an exact population.",
        "",
        "## Summary",
        "",
        "```",
        f"aa_primary_nontie_rate: {aa_hits / aa_n:.4f}",
        f"aa_n: {aa_n}",
        f"gate_run_false_alarm_rate: {alarms / gate_n:.4f}",
        f"gate_n: {gate_n}",
        f"gate_power_at_2x_tolerance: {power_2x[0] / power_2x[1]:.4f}",
        f"difference_interval_coverage: {coverage:.4f}",
        "```",
        "",
    ]
    return "\n".join(lines)


def _gate_reading(cells: dict) -> str:
    """What the gate's power cells say, from the numbers: the target met or missed, the
    smallest change caught 80% of the time on the same seeds, and why."""
    hits, n, _ = cells[(2.0, True)]
    if hits / n >= 0.8:
        return "The gate meets the power target at 2x tolerance."
    power = {key: value for key, value in cells.items() if key != "aa"}
    caught = [m for (m, paired), (h, k, _) in power.items() if paired and h / k >= 0.8]
    enough = (
        f"about {min(caught):g}x its tolerance"
        if caught
        else "more than the largest change planted"
    )
    return (
        "**Missed: power at 2x tolerance.** The gate keeps its false-alarm rate, and "
        f"on the same seeds it catches a change of {enough} 80% of the time. The smoke "
        "tolerance (5% of a row's FID) lies inside the noise of a 256-seed FID: even "
        "with both runs on the same seeds, which images a change touches moves the "
        "difference by about the tolerance, and the check must clear the tolerance "
        "with 95% confidence after Holm across the run's checks. On disjoint seed sets "
        "every image differs and nothing planted here is caught. To gate changes of "
        "the tolerance's size, evaluate on more seeds or widen the tolerance to what "
        "this table shows is detectable."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument(
        "--sample",
        action="store_true",
        help=f"first run {SUITE} into --data (resumes an interrupted run)",
    )
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.sample:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "repro",
                "run",
                str(SUITE),
                "--results",
                str(args.data.parent),
                "--no-tracking",
            ],
            check=True,
        )
    started = time.perf_counter()
    experiments = load_experiments(args.data)
    out = study(experiments, args.trials, args.resamples, args.seed)
    command = "python benchmarks/verdict_calibration.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    args.out.write_text(
        page(out, experiments, args.trials, args.resamples, time.perf_counter() - started, command)
    )
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
