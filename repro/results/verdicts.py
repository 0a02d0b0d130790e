"""A run's verdicts at equal speed, from its rows and their stored per-seed features.

Every evaluated row is a point (speed, quality) with an interval over the evaluation seeds;
baseline rows form one family per technique (DeepCache over interval and branch, fewer
steps, each solver at fewer steps) and every search method forms one too (its rows of every
budget and search repeat). Each search method and budget is compared, at predicted and at
measured speed, with every baseline family's front at its rows' own speeds
(:func:`repro.results.compare.compare`) and with every other search method at the same budget
(:func:`repro.results.compare.compare_methods`, repeat means on both sides).

Verdicts are generic over a protocol's quality (a function of resampled seed indices): the
protocol kinds in :data:`QUALITIES` are judged, each from the row's stored features.
A suite's primary comparisons (``evaluation.primary``; by default each search method at
each budget against each baseline family, first FID protocol, predicted speed) are labelled
"primary" and Holm-adjusted across the whole run by :func:`adjust`; the rest "exploratory".

For a study that needs verdicts without a run (``benchmarks/verdict_calibration.py``):
:func:`primary_verdicts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial

import numpy as np
from scipy import stats

from repro.results import compare
from repro.results.compare import Point
from repro.results.schema import Row

CONFIDENCE = 0.95
SPEEDS = {"predicted": "predicted_speedup", "measured": "measured_speedup"}
PRIMARY, EXPLORATORY = "primary", "exploratory"


def memoised(quality: compare.Quality) -> compare.Quality:
    """``quality`` computed once per resample: every verdict draws the same resamples
    (one fixed rng seed), so a row's FID on a resample is shared by all its comparisons."""
    seen: dict[bytes, float] = {}

    def cached(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        flat = idx.reshape(-1, idx.shape[-1])
        values = []
        for row in flat:
            key = row.tobytes()
            if key not in seen:
                seen[key] = float(quality(row[None])[0])
            values.append(seen[key])
        return np.array(values).reshape(idx.shape[:-1])

    return cached


def fid_quality(features: np.ndarray, reference, protocol: str) -> compare.Quality:
    """FID of the resampled rows' features against fixed reference statistics."""
    from repro.metrics.frechet import FeatureStatistics, frechet_distance

    return compare.set_statistic(
        lambda rows: frechet_distance(FeatureStatistics.of(features[rows], protocol), reference)
    )


def _fid(features, extractor, teacher, references, protocol):
    return fid_quality(features, references[protocol], extractor)


def _rfid(features, extractor, teacher, references, protocol):
    return compare.rfid_quality(features, teacher, extractor)


# protocol kind -> quality of a row from (its features of the protocol's extractor, the
# extractor, the teacher's features, {protocol: reference statistics}, the protocol)
QUALITIES: dict[str, Callable[..., compare.Quality]] = {"fid": _fid, "rfid": _rfid}


def judged(protocols: Sequence[str]) -> list[str]:
    """The protocols verdicts are made on: those whose kind has a quality here."""
    return [p for p in protocols if p.partition(":")[0] in QUALITIES]


def point_qualities(
    features: Mapping[str, Mapping[str, np.ndarray]],
    protocols: Sequence[str],
    teacher: str,
    references: Mapping[str, object] | None = None,
) -> dict[str, Callable[[str], Point]]:
    """protocol -> (row name -> the row's memoised point at unit speed), from ``features``
    (row name -> extractor -> per-seed features, rows in seed order); ``teacher`` names the
    row rFID is measured against; ``references``: the reference statistics of each
    ``fid:`` protocol."""
    qualities = {}
    for protocol in judged(protocols):
        kind, _, extractor = protocol.partition(":")
        make = partial(
            QUALITIES[kind],
            extractor=extractor,
            teacher=features[teacher][extractor],
            references=references or {},
            protocol=protocol,
        )
        points = {
            row: Point(row, 1.0, memoised(make(f[extractor])), len(f[extractor]))
            for row, f in features.items()
        }
        qualities[protocol] = points.__getitem__
    return qualities


def interval(point: Point, resamples: int) -> tuple[float, float]:
    """The 95% interval of a row's metric at its n evaluation seeds (the value a fresh set
    of n seeds would give on average, not the population metric): the value as drawn plus
    or minus the normal quantile times the bootstrap standard deviation, drawn as the
    verdicts draw their resamples (so a memoised quality computes each once), not below 0
    where the value is not.

    A resample repeats about a third of the seeds and inflates a Frechet distance, so the
    percentile interval lay wholly above the value (smoke: 80.8 vs [94.6, 171.3]); the
    spread is what the bootstrap estimates well, and this interval always holds the value."""
    draws = compare._Draws([point], True, resamples, 0)
    half = stats.norm.ppf(0.5 + CONFIDENCE / 2) * float(np.std(draws.quality[0], ddof=1))
    value = point.observed  # an rFID of the teacher itself rounds to about -1e-5
    return (max(value - half, 0.0) if value >= 0 else value - half), value + half


def family(row: Row) -> str | None:
    """The front a row belongs to: its search method or baseline technique (teacher and
    fixed schedules belong to none)."""
    return row.family if row.kind in ("searched", "baseline") else None


def verdicts(
    rows: Sequence[Row],
    qualities: Mapping[str, Callable[[str], Point]],
    resamples: int,
    primary: Sequence[Mapping] | None = None,
) -> tuple[list[dict], dict[tuple[str, str], tuple[float, float]]]:
    """Verdicts of one experiment's rows and the interval of every row and metric.

    ``qualities``: metric protocol -> (row name -> the row's point at unit speed), as
    :func:`point_qualities` makes them; ``resamples``: bootstrap resamples of every
    interval; ``primary``: the experiment's primary comparisons (records with ``method``,
    ``family`` and optional ``budget``, ``metric``, ``speed``; None: the default of
    :func:`is_primary`). Returns the verdict records, each labelled primary or exploratory
    (not yet Holm-adjusted: :func:`adjust` does that across a run), and
    {(row, metric): interval}."""
    records, intervals = [], {}
    by_family: dict[str, list[Row]] = {}
    for row in rows:
        if family(row):
            by_family.setdefault(family(row), []).append(row)
    teacher = next((r for r in rows if r.kind == "teacher"), None)
    for metric, point_of in qualities.items():
        for row in rows:
            intervals[(row.name, metric)] = interval(point_of(row.name), resamples)
        for method, budget in dict.fromkeys(
            (r.family, r.budget) for r in rows if r.kind == "searched"
        ):
            searched = [r for r in by_family[method] if r.budget == budget]
            for other, members in by_family.items():
                if other == method:
                    continue
                kind = members[0].kind
                if kind == "searched":
                    members = [r for r in members if r.budget == budget]
                    if not members:
                        continue
                for speed in SPEEDS:
                    record = _verdict(
                        searched, members, other, kind, speed, metric, point_of, teacher, resamples
                    )
                    records.append({"method": method, "budget": budget, **record})
    first = _first_fid(list(qualities))
    for record in records:
        record["label"] = PRIMARY if is_primary(record, primary, first) else EXPLORATORY
    return records, intervals


def _first_fid(protocols: Sequence[str]) -> str | None:
    return next((p for p in protocols if p.startswith("fid:")), protocols[0] if protocols else None)


def is_primary(record: Mapping, primary: Sequence[Mapping] | None, first_fid: str | None) -> bool:
    """Whether a verdict record is one of the primary comparisons: one of ``primary``'s
    entries (``method`` and ``family`` as named in results; ``budget`` None: every budget;
    ``metric`` None: the first FID protocol; ``speed`` default predicted), or by default
    (``primary`` None) a search method against a baseline family on ``first_fid`` at
    predicted speed."""
    if primary is None:
        return (
            record["family_kind"] == "baseline"
            and record["metric"] == first_fid
            and record["speed"] == "predicted"
        )
    return any(
        record["method"] == p["method"]
        and record["family"] == p["family"]
        and p.get("budget") in (None, record["budget"])
        and record["metric"] == (p.get("metric") or first_fid)
        and record["speed"] == (p.get("speed") or "predicted")
        for p in primary
    )


def adjust(records: Sequence[dict], confidence: float = CONFIDENCE) -> list[dict]:
    """The run's verdict records with Holm's adjustment across all its primary ones:
    ``p_holm`` and ``adjusted`` (better / worse when the adjusted p is below 1 -
    ``confidence``, else a tie; an inconclusive or out-of-range primary keeps its outcome
    and counts as p = 1). Exploratory records get None for both."""
    records = [dict(r) for r in records]
    chosen = [r for r in records if r.get("label") == PRIMARY]
    adjusted = compare.holm([1.0 if r.get("p") is None else r["p"] for r in chosen])
    for record in records:
        record["p_holm"] = record["adjusted"] = None
    for record, p in zip(chosen, adjusted, strict=True):
        record["p_holm"] = float(p)
        sided = record["outcome"] in (compare.BETTER, compare.WORSE)
        record["adjusted"] = record["outcome"] if not sided or p < 1 - confidence else compare.TIE
    return records


def primary_verdicts(
    rows: Sequence[Row],
    features: Mapping[str, Mapping[str, np.ndarray]],
    protocols: Sequence[str],
    *,
    teacher: str = "teacher",
    references: Mapping[str, object] | None = None,
    resamples: int = 200,
    primary: Sequence[Mapping] | None = None,
) -> list[dict]:
    """The Holm-adjusted primary verdict records of one experiment's ``rows`` (results.json
    rows: name, kind, family, budget, predicted_speedup, measured_speedup, latency) from
    per-seed ``features`` (as :func:`point_qualities`): what a run writes, for studies that
    judge rows without running a suite."""
    qualities = point_qualities(features, protocols, teacher, references)
    records, _ = verdicts(rows, qualities, resamples, primary)
    return [r for r in adjust(records) if r["label"] == PRIMARY]


def _timing(row: Row, teacher: Row | None, speed: str) -> dict:
    """The per-repeat times of a row and of the teacher, where a measured speed has both."""
    if speed != "measured" or teacher is None:
        return {}
    own = (row.latency or {}).get("seconds")
    ref = (teacher.latency or {}).get("seconds")
    if not own or not ref or len(own) != len(ref):
        return {}
    return {"seconds": np.asarray(own, float), "reference_seconds": np.asarray(ref, float)}


def _verdict(
    searched: Sequence[Row],
    members: Sequence[Row],
    other: str,
    kind: str,
    speed: str,
    metric: str,
    point_of: Callable[[str], Point],
    teacher: Row | None,
    resamples: int,
) -> dict:
    field = SPEEDS[speed]

    def at(row: Row) -> Point | None:
        value = getattr(row, field)
        if value is None:
            return None
        return Point(
            row.name,
            float(value),
            point_of(row.name).quality,
            point_of(row.name).n,
            **_timing(row, teacher, speed),
        )

    points = [at(r) for r in searched]
    others = [at(r) for r in members]
    record = {
        "family": other,
        "family_kind": kind,
        "speed": speed,
        "metric": metric,
        "searched": float(np.mean([p.observed for p in points if p is not None]))
        if any(points)
        else None,
        "n_search_seeds": len(searched),
        "timing_repeats": max((p.timing_repeats for p in points if p is not None), default=0),
    }
    empty = {
        "outcome": compare.OUT_OF_RANGE,
        "at_speed": None,
        "difference": None,
        "low": None,
        "high": None,
        "basis": None,
        "p": None,
        "df": None,
    }
    if None in points or (kind == "searched" and None in others):
        return record | empty
    others = [p for p in others if p is not None]
    if not others:
        return record | empty
    if kind == "searched":
        result = compare.compare_methods(
            points, others, other, by_speed=speed == "measured", n_resamples=resamples, rng=0
        )
        at_speed = float(np.mean([p.observed for p in others]))
    else:
        result = compare.compare(points, others, other, n_resamples=resamples, rng=0)
        curve = compare.front(others)
        read = [compare.quality_at(curve, p.speed) for p in points]
        at_speed = None if None in read else float(np.mean(read))
    return record | {
        "outcome": result.outcome,
        "difference": result.difference,
        "low": result.low,
        "high": result.high,
        "basis": result.basis,
        "p": result.p,
        "df": None if result.df is None or np.isinf(result.df) else result.df,
        "at_speed": at_speed,
    }
