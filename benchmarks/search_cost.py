"""Search cost with and without prefix reuse, one candidate at a time and in batched passes:
the same seeded segment-wise search on digits-ddpm (DDIM, T=100) four times; UNet calls,
UNet forward passes (samples through the UNet, in candidate-batches of the seeds) and wall
time per evaluated candidate, and the fitness values side by side.

    python benchmarks/search_cost.py --evaluations 60 --out results/search-cost.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from repro import models, search
from repro.core.schedule import Schedule
from repro.infra.timing import device_name
from repro.sampling.generate import DEFAULT_PASS_SAMPLES
from repro.search.fitness import RFIDFitness
from repro.speed.costs import model_cost_table

WHOLE = "batched + prefix reuse, a generation a pass"
VARIANTS = (
    ("from the start", False, False),
    ("prefix reuse", True, False),
    ("batched", False, True),
    ("batched + prefix reuse", True, True),
    (WHOLE, True, True),
)


class Counted:
    """The fitness as the search sees it, counting UNet calls and samples through the UNet
    (rows) while it scores: per candidate one at a time, per batch (a generation) batched;
    the teacher, sampled before, counts in neither."""

    def __init__(self, fitness: RFIDFitness, batched: bool):
        self.fitness, self.rows = fitness, []
        self.rows_per_call: list[int] = []
        fitness.model.unet.conv_in.register_forward_pre_hook(
            lambda _, args: self.rows_per_call.append(args[0].shape[0])
        )
        if batched:
            self.score_many = self._score_many
        self.batches: list[dict] = []

    def _measured(self, score, schedules):
        calls, rows, start = len(self.rows_per_call), sum(self.rows_per_call), time.perf_counter()
        values = score(schedules)
        self.batches.append(
            {
                "schedules": [str(s) for s in schedules],
                "fitness": values,
                "calls": len(self.rows_per_call) - calls,
                "rows": sum(self.rows_per_call) - rows,
                "seconds": time.perf_counter() - start,
            }
        )
        return values

    def __call__(self, schedule):
        return self._measured(lambda s: [self.fitness(s[0])], [schedule])[0]

    def _score_many(self, schedules):
        return self._measured(self.fitness.score_many, schedules)


def run(model, reuse: bool, pass_samples: int | None, args) -> dict:
    """One search: per candidate its schedule and fitness, and the cost totals."""
    batched = pass_samples is not None
    fitness = RFIDFitness(
        model,
        args.steps,
        range(args.seeds),
        batch_size=args.batch,
        reuse_prefixes=reuse,
        pass_samples=pass_samples,
    )
    counted = Counted(fitness, batched)
    spec = models.get(model.name)
    table = model_cost_table(spec, model.unet)
    space = search.SegmentSpace.of(args.steps, range(spec.num_branches))
    load = os.getloadavg()[0]
    search.run_method(
        "segment-evolution",
        space,
        fitness=counted,
        budget=search.Budget(args.budget, table, 0.1),
        n_eval=args.evaluations,
        seed=args.seed,
        evolution=search.Evolution(
            population=args.population,
            parents=args.parents,
            mutations=args.mutations,
            crossovers=args.crossovers,
        ),
    )
    model.unet.conv_in._forward_pre_hooks.clear()
    candidates = [
        (s, v) for b in counted.batches for s, v in zip(b["schedules"], b["fitness"], strict=True)
    ]
    total = {key: sum(b[key] for b in counted.batches) for key in ("calls", "rows", "seconds")}
    per_candidate = [b for b in counted.batches if len(b["schedules"]) == 1]
    store = fitness.prefixes
    return {
        "candidates": candidates,
        "batches": counted.batches,
        **total,
        "load": (load, os.getloadavg()[0]),
        "store": store and (store.bytes, store.max_bytes, store.evicted),
        "median_seconds": statistics.median(b["seconds"] for b in per_candidate)
        if per_candidate
        else None,
    }


def unbounded(schedules: list[str], steps: int) -> list[int]:
    """Per candidate, the UNet calls (per seed batch) prefix reuse would leave with a store
    that never fills: its non-null tokens after the longest prefix it shares with the
    teacher or an earlier candidate."""
    seen = [Schedule.full(steps).steps]
    left = []
    for text in schedules:
        tokens = Schedule.parse(text).steps
        shared = max(
            next(
                (i for i, (a, b) in enumerate(zip(tokens, other, strict=True)) if a != b),
                len(tokens),
            )
            for other in seen
        )
        left.append(sum(token != "N" for token in tokens[shared:]))
        seen.append(tokens)
    return left


def report(runs: dict[str, dict], args, command: str) -> str:
    n = len(runs["from the start"]["candidates"])
    batches = -(-args.seeds // args.batch)
    reference = runs["from the start"]["candidates"]
    same = {
        name: sum(a == b for a, b in zip(reference, r["candidates"], strict=True))
        for name, r in runs.items()
    }
    plain, reused = runs["from the start"], runs["prefix reuse"]
    tail = n - args.population  # the evolution's children, after the seeded population

    def later(r):
        return sum(b["calls"] for b in r["batches"][args.population :]) / max(tail, 1) / batches

    ideal = unbounded([text for text, _ in reference], args.steps)
    row = " | ".join
    lines = [
        "# Search cost: prefix reuse and batched candidates",
        "",
        f"Command: `{command}` (under `nice`, OMP_NUM_THREADS=1)  ",
        f"Device: {device_name('cpu')}, {platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}.  ",
        f"Search: segment-wise evolution on digits-ddpm, DDIM T={args.steps}, budget "
        f"{args.budget}x (FLOP-ratio cost table), {args.evaluations} evaluations, population "
        f"{args.population}, seed {args.seed}; fitness rFID (digits-cnn) on {args.seeds} "
        f"seeds in batches of {args.batch}; batched passes of at most {args.pass_samples} "
        f"candidates x seeds (the last column: {args.population * args.batch}, a whole "
        "generation).",
        "",
        "| per evaluated candidate | " + row(runs) + " |",
        "|---|" + "---:|" * len(runs),
        "| UNet calls (per seed batch) | "
        + row(f"{r['calls'] / n / batches:.1f}" for r in runs.values())
        + " |",
        "| UNet forward passes (samples through the UNet / seeds) | "
        + row(f"{r['rows'] / n / args.seeds:.1f}" for r in runs.values())
        + " |",
        "| wall seconds (total / candidates) | "
        + row(f"{r['seconds'] / n:.2f}" for r in runs.values())
        + " |",
        "| load average (1 min) before, after | "
        + row(f"{r['load'][0]:.1f}, {r['load'][1]:.1f}" for r in runs.values())
        + " |",
        "| prefix store at the end: GiB held of the cap, states evicted | "
        + row(
            r["store"]
            and f"{r['store'][0] / 2**30:.2f} of {r['store'][1] / 2**30:.0f}, {r['store'][2]}"
            or ""
            for r in runs.values()
        )
        + " |",
        "| same schedule and fitness as from the start, candidate by candidate | "
        + row(f"{same[name]} of {n}" for name in runs)
        + " |",
        "",
        f"Prefix reuse, one candidate at a time: {plain['calls'] / reused['calls']:.2f}x fewer "
        f"UNet calls ({later(plain):.1f} vs {later(reused):.1f} per candidate after the first "
        f"{args.population}, {later(plain) / max(later(reused), 1e-9):.2f}x). Batched: "
        f"{plain['calls'] / runs['batched']['calls']:.2f}x fewer calls than from the start "
        f"without reuse, {plain['calls'] / runs['batched + prefix reuse']['calls']:.2f}x with "
        "it; wall time from the start over batched with reuse "
        f"{plain['seconds'] / runs['batched + prefix reuse']['seconds']:.2f}x (above 1: "
        "faster). A store that never fills would leave "
        f"{sum(ideal) / n:.1f} calls per candidate ({plain['calls'] / batches / sum(ideal):.2f}x "
        f"fewer than from the start; {sum(ideal[args.population :]) / max(tail, 1):.1f} after "
        f"the first {args.population}): what the candidates share with what was sampled "
        "before them.",
        "",
        "A UNet call is one invocation of the UNet, whatever its batch; forward passes count "
        "samples through the UNet in units of the seeds (one candidate's full step), which "
        "batching does not reduce and prefix reuse does. The teacher (all-F) is sampled once "
        "per run before the first candidate and counts in no column; with reuse its states "
        "are in the store. Batched runs time a generation as a whole and give each candidate "
        "an equal share. Wall time includes feature extraction and the Frechet distance.",
        "",
        "| # | schedule | rFID | calls (start) | calls (reuse) | calls (store never full) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {i} | `{a['schedules'][0]}` | {a['fitness'][0]:.4f} | "
        f"{a['calls'] / batches:.0f} | {b['calls'] / batches:.0f} | {left} |"
        for i, (a, b, left) in enumerate(
            zip(plain["batches"], reused["batches"], ideal, strict=True)
        )
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--evaluations", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=96)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--pass-samples", type=int, default=DEFAULT_PASS_SAMPLES)
    parser.add_argument("--population", type=int, default=20)
    parser.add_argument("--parents", type=int, default=5)
    parser.add_argument("--mutations", type=int, default=10)
    parser.add_argument("--crossovers", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/search-cost.md"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = models.load_model("digits-ddpm")
    runs = {}
    for name, reuse, batched in VARIANTS:
        pass_samples = (
            (args.population * args.batch if name == WHOLE else args.pass_samples)
            if batched
            else None
        )
        runs[name] = run(model, reuse, pass_samples, args)
        print(
            f"{name}: {runs[name]['calls']} UNet calls, {runs[name]['seconds']:.0f} s",
            file=sys.stderr,
        )
    command = "python benchmarks/search_cost.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    args.out.write_text(report(runs, args, command.strip()))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
