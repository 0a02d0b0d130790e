"""Search cost with and without prefix reuse: the same seeded segment-wise search on
digits-ddpm (DDIM, T=100), once with every candidate sampled from the start and once through
a PrefixStore; UNet calls and wall time per candidate, and the fitness values side by side.

    python benchmarks/search_cost.py --evaluations 60 --out results/search-cost.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from repro import models, search
from repro.costs import model_cost_table
from repro.fitness import RFIDFitness
from repro.timing import device_name


def run(model, reuse: bool, args) -> list[dict]:
    """One search; per scored candidate its schedule, fitness, UNet calls and seconds."""
    calls: list[int] = []
    model.unet.conv_in.register_forward_pre_hook(lambda *_: calls.append(1))
    seeds = range(args.seeds)
    batches = -(-args.seeds // args.batch)
    fitness = RFIDFitness(model, args.steps, seeds, batch_size=args.batch,
                          reuse_prefixes=reuse)
    spec = models.get(model.name)
    table = model_cost_table(spec, model.unet)
    space = search.SegmentSpace.of(args.steps, range(spec.num_branches))
    rows: list[dict] = []

    def scored(schedule):
        before, start = len(calls), time.perf_counter()
        value = fitness(schedule)
        rows.append({"schedule": str(schedule), "fitness": value,
                     "calls": (len(calls) - before) / batches,
                     "seconds": time.perf_counter() - start})
        return value

    search.run_method("segment-evolution", space, fitness=scored,
                      budget=search.Budget(args.budget, table, 0.1), n_eval=args.evaluations,
                      seed=args.seed, evolution=search.Evolution(
                          population=args.population, parents=args.parents,
                          mutations=args.mutations, crossovers=args.crossovers))
    model.unet.conv_in._forward_pre_hooks.clear()
    return rows


def report(plain: list[dict], reused: list[dict], args, command: str) -> str:
    same = [a["schedule"] == b["schedule"] and a["fitness"] == b["fitness"]
            for a, b in zip(plain, reused, strict=True)]
    calls = sum(r["calls"] for r in plain), sum(r["calls"] for r in reused)
    seconds = sum(r["seconds"] for r in plain), sum(r["seconds"] for r in reused)
    tail = len(plain) - args.population  # children of the evolution, after the seeded population
    later = (sum(r["calls"] for r in plain[args.population:]) / max(tail, 1),
             sum(r["calls"] for r in reused[args.population:]) / max(tail, 1))
    lines = [
        "# Search cost: prefix reuse",
        "",
        f"Command: `{command}`  ",
        f"Device: {device_name('cpu')}, {platform.machine()}, torch {torch.__version__}.  ",
        f"Search: segment-wise evolution on digits-ddpm, DDIM T={args.steps}, budget "
        f"{args.budget}x (FLOP-ratio cost table), {args.evaluations} evaluations, population "
        f"{args.population}, seed {args.seed}; fitness rFID (digits-cnn) on {args.seeds} "
        f"seeds in batches of {args.batch}.",
        "",
        "| | from the start | prefix reuse | ratio |",
        "|---|---:|---:|---:|",
        f"| UNet calls per candidate (mean, per batch) | {calls[0] / len(plain):.1f} | "
        f"{calls[1] / len(reused):.1f} | {calls[0] / max(calls[1], 1e-9):.2f}x |",
        f"| seconds per candidate (median) | "
        f"{statistics.median(r['seconds'] for r in plain):.2f} | "
        f"{statistics.median(r['seconds'] for r in reused):.2f} | "
        f"{seconds[0] / seconds[1]:.2f}x (total) |",
        f"| UNet calls per candidate after the first {args.population} (the last "
        f"{len(plain) - args.population}) | {later[0]:.1f} | {later[1]:.1f} | "
        f"{later[0] / max(later[1], 1e-9):.2f}x |",
        f"| identical schedule and fitness, candidate by candidate | | "
        f"{sum(same)} of {len(same)} | |",
        "",
        "The teacher (all-F) is sampled once per run before the first candidate and counts "
        "in neither column; with reuse its states are in the store. Wall time includes "
        "feature extraction and the Frechet distance, which prefix reuse does not shorten.",
        "",
        "| # | schedule | rFID | calls (start) | calls (reuse) |",
        "|---:|---|---:|---:|---:|",
    ]
    lines += [f"| {i} | `{a['schedule']}` | {a['fitness']:.4f} | {a['calls']:.0f} | "
              f"{b['calls']:.0f} |" for i, (a, b) in enumerate(zip(plain, reused, strict=True))]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--evaluations", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=96)
    parser.add_argument("--batch", type=int, default=96)
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
    plain = run(model, False, args)
    reused = run(model, True, args)
    command = "python benchmarks/search_cost.py " + " ".join(argv if argv is not None
                                                            else sys.argv[1:])
    args.out.write_text(report(plain, reused, args, command.strip()))
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
