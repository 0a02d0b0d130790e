"""The latency stage: each distinct loop timed in interleaved repeats, and a cost table
calibrated on the device before a search where the suite asks for one."""

from __future__ import annotations

from repro import models
from repro.core.schedule import Schedule
from repro.engine import accel
from repro.infra.faults import checkpoint
from repro.run.work import RowLoop, read_keyed, write_keyed


class LatencyStage:
    """A stage of :class:`repro.run.experiment.ExperimentRun`: its methods use the run's
    state (``self.e``, ``self.model``, ``self.work``, ...)."""

    def _timed_schedule(self, row: RowLoop) -> Schedule:
        if self._on_training_grid(row):
            return Schedule.full(row.schedule.count("F"))
        return row.schedule

    def _timed_sampler(self, row: RowLoop, device):
        """The sampler a row's timed loop runs on. A training-grid row runs DDIM at its F
        count on DDIM's own grid: the UNet and a DDIM step cost the same at any timestep,
        so this is the cost of DDIM at exactly its F timesteps, which diffusers' DDIM cannot
        be set to (another solver that can, e.g. DPM-Solver++ of order 1, has a dearer
        step: measured 1.79x against 2.06x for the same 25 calls on the digits CPU run)."""
        steps = row.schedule.count("F") if self._on_training_grid(row) else row.steps
        return models.scheduler_factory(self.spec, row.sampler or self.e.sampler, steps, device)

    def _latency(self, rows: list[RowLoop]) -> dict[str, dict]:
        """Sampled loop (``RowLoop.key``) -> measured speedup and latency, all rows timed
        interleaved in one process (cached as one table: speedups are only comparable
        within one timing): on rank 0's device while the other ranks wait at a barrier."""
        if not self.e.evaluation.latency:
            return {}
        with self._stage("latency"):
            return self.world.share("latency: rank 0 timing", lambda: self._timed(rows))

    def _timed(self, rows: list[RowLoop]) -> dict[str, dict]:
        from repro.infra.timing import device_name
        from repro.metrics.latency import latency_inputs
        from repro.speed.loops import time_loops

        ev = self.e.evaluation
        unique = {row.key: self._timed_schedule(row) for row in rows}
        caches = {row.key: row.cache for row in rows if row.cache is not None}
        unet = self.model.unet
        path = self.work / "latency.json"
        key = self._key(
            rows=sorted(unique),
            batch=ev.latency_batch,
            repeats=ev.latency_repeats,
            device=device_name(unet.device),
            dtype=str(unet.dtype),
        )
        done = read_keyed(path, key)
        if done is not None:
            return done
        import torch

        latents, kwargs = latency_inputs(
            self.model, ev.latency_batch, self.e.guidance, prompts=self.prompts
        )
        device = unet.device
        make_scheduler = models.scheduler_factory(self.spec, self.e.sampler, self.e.steps, device)
        own_steps = {
            row.key: self._timed_sampler(row, device)
            for row in rows
            if row.steps != self.e.steps or row.sampler
        }
        self.log(
            f"latency: {len(unique)} schedules x {ev.latency_repeats} repeats, "
            f"batch {ev.latency_batch}"
        )
        with torch.inference_mode():
            timings = time_loops(
                unet,
                make_scheduler,
                latents,
                kwargs,
                unique,
                ev.latency_repeats,
                1,
                self.table,
                schedulers=own_steps,
                caches=caches,
            )
        import statistics

        done = {
            t.name: {
                "measured_speedup": t.measured_speedup,
                "latency": {
                    "median_s": statistics.median(t.seconds),
                    "seconds": t.seconds,
                    "images_per_s": ev.latency_batch / statistics.median(t.seconds),
                    "peak_memory_mb": t.peak_memory_mb,
                    "host_memory_mb": t.host_memory_mb,
                    "batch": ev.latency_batch,
                    "device": device_name(unet.device),
                    "dtype": str(unet.dtype).removeprefix("torch."),
                    "step_mode": accel.mode_of(unet),
                },
            }
            for t in timings
        }
        write_keyed(path, key, done)
        checkpoint("latency")
        return done

    def _calibrated(self) -> dict:
        """:func:`repro.speed.loops.fit_on_device` at the latency batch and repeats, kept under a
        key of the device, so a resumed run searches under the same table."""
        from repro.config.plan import deepcache_branch
        from repro.infra.timing import device_name
        from repro.metrics.latency import latency_inputs
        from repro.speed.loops import fit_on_device

        ev, unet = self.e.evaluation, self.model.unet
        path = self.work / "cost-table.json"
        key = self._key(
            calibration="fit_on_device",
            batch=ev.latency_batch,
            repeats=ev.latency_repeats,
            device=device_name(unet.device),
            dtype=str(unet.dtype),
        )
        done = read_keyed(path, key)
        if done is not None:
            return done
        import torch

        latents, kwargs = latency_inputs(
            self.model, ev.latency_batch, self.e.guidance, prompts=self.prompts
        )
        unet_batch = 2 * len(latents) if kwargs.get("guidance_scale") else len(latents)
        calls = models.example_inputs(self.spec, unet, unet_batch)
        make_scheduler = models.scheduler_factory(
            self.spec, self.e.sampler, self.e.steps, unet.device
        )
        self.log(
            f"calibrating the cost table: batch {ev.latency_batch}, {ev.latency_repeats} repeats"
        )
        with torch.inference_mode():
            table = fit_on_device(
                unet,
                make_scheduler,
                calls,
                (latents, kwargs),
                self.calls,
                deepcache_branch(self.e),
                ev.latency_repeats,
            ).table
        from repro.speed.costs import cost_cautions

        for line in cost_cautions(table, ev.latency_repeats):
            self.log(f"warning: calibrated cost table: {line}")
        done = table.to_dict()
        write_keyed(path, key, done)
        checkpoint("calibration")
        return done
