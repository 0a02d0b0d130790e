"""The verdict stage: each search against every baseline front and every other search method
at equal speed, with intervals over seeds, repeats and timing."""

from __future__ import annotations

from repro import search, techniques
from repro.config.suite import (
    RowPlan,
    technique_label,
)
from repro.results.schema import Row


# -- outputs ----------------------------------------------------------------------------
def family(row: RowPlan) -> str | None:
    """The front a row belongs to: its search method, or its baseline technique (each
    solver of sampler-steps apart); None for the teacher and fixed schedules."""
    if row.kind == "searched":
        return row.method
    if row.kind == "baseline" and techniques.get(row.baseline.technique).knob is not None:
        return technique_label(row.baseline)
    return None


class VerdictStage:
    """A stage of :class:`repro.run.experiment.ExperimentRun`: its methods use the run's
    state (``self.e``, ``self.model``, ``self.work``, ...)."""

    def verdicts(self, rows: list[Row]) -> tuple[list[dict], dict[str, dict]]:
        """Each search method and budget against every baseline family's front at equal
        speed and every other search method at the same budget, with intervals
        (:mod:`repro.results.verdicts`; labelled primary or exploratory, Holm-adjusted later
        across the run), and the interval of every judged protocol (and the KID beside each
        FID) by this experiment's row name. ``rows`` are read, not changed."""
        from repro.results import verdicts

        ev = self.e.evaluation
        mine = [row for row in rows if row.experiment == self.e.name]
        protocols = verdicts.judged(ev.metrics)
        if not ev.bootstrap or not protocols:
            return [], {}
        self.log(f"verdicts: {len(protocols)} metrics, {ev.bootstrap} bootstrap resamples")
        features = {row.name: self._stored_features(row) for row in mine}
        teacher = next(row.name for row in mine if row.kind == "teacher")
        references = {}
        for protocol in protocols:
            kind, _, name = protocol.partition(":")
            if kind == "fid":
                from repro.metrics.references import reference_statistics

                references[protocol] = reference_statistics(ev.reference, self._extractor(name))
        qualities = verdicts.point_qualities(features, protocols, teacher, references)
        records, intervals = verdicts.verdicts(mine, qualities, ev.bootstrap, self._primary())
        by_row = {row.name: {m: list(intervals[(row.name, m)]) for m in protocols} for row in mine}
        for name, kid in self._kid_intervals(mine, features, teacher).items():
            by_row[name].update(kid)
        return [{"experiment": self.e.name, **record} for record in records], by_row

    def _primary(self) -> list[dict] | None:
        """The suite's primary comparisons with methods named as in results (None: the
        default)."""
        if self.e.evaluation.primary is None:
            return None
        named = {name: method.result_name for name, method in search.METHODS.items()}
        return [
            {
                "method": named.get(p.method, p.method),
                "family": named.get(p.against, p.against),
                "budget": p.budget,
                "metric": p.metric,
                "speed": p.speed,
            }
            for p in self.e.evaluation.primary
        ]

    def _kid_intervals(
        self,
        rows: list[Row],
        features: dict,
        teacher: str,
    ) -> dict[str, dict]:
        """Each row's 95% interval of the KID beside each of its FID protocols (kid against
        the reference's features, rkid against the teacher row's), a percentile bootstrap
        over the evaluation seeds (:func:`repro.metrics.kid.interval`)."""
        from repro.metrics.kid import interval, kid_quality, reference_self_term, rkid_quality
        from repro.metrics.protocols import KID_OF

        ev = self.e.evaluation
        found: dict[str, dict] = {row.name: {} for row in rows}
        for protocol in ev.metrics:
            kind, _, name = protocol.partition(":")
            if kind == "fid":
                from repro.metrics.references import reference_features

                reference = reference_features(ev.reference, self._extractor(name))
                self_term = reference_self_term(reference)
            for row in rows if kind in KID_OF else ():
                x = features[row.name][name]
                quality = (
                    kid_quality(x, reference, self_term=self_term)
                    if kind == "fid"
                    else rkid_quality(x, features[teacher][name])
                )
                found[row.name][f"{KID_OF[kind]}:{name}"] = list(
                    interval(quality, len(x), ev.bootstrap)
                )
        return found
