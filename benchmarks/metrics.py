"""Does rFID rank schedules like full FID, at a fraction of the evaluation time?

For each candidate schedule on an embedded model this generates one image per digit in the
dataset (1797, the ground-truth protocol), timing each batch. The first ``n`` images are
exactly what an rFID evaluation of ``n`` images generates (each image's noise comes from
its own seed), so one generation gives both:

- full FID eval time = generating 1797 images + ``fid`` against the cached reference;
- rFID eval time = generating the first ``n`` + ``rfid`` against the cached teacher.

Run: ``python benchmarks/metrics.py --threads 1 --out results/bench-metrics.md`` (the
committed table was made when this script was ``python -m repro.metrics.bench``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from repro.core.schedule import CostTable, Schedule
from repro.infra.atomic import atomic_path
from repro.infra.timing import environment
from repro.metrics.extractors import load_extractor
from repro.metrics.fid import TeacherFeatureCache, fid, rfid
from repro.metrics.references import reference_statistics
from repro.models import get, load_model
from repro.sampling.generate import generate
from repro.sampling.samples import SampleSet
from repro.speed.costs import model_cost_table

DATASET_SIZE = 1797


def candidate_schedules(steps: int = 20) -> dict[str, Schedule]:
    """DeepCache uniform/non-uniform, fewer DDIM steps and segment genes: at 20 steps about
    1.5x-6x predicted speedup on digits-ddpm. Segment schedules of another length are left
    out."""
    named = {f"DeepCache N={n} b=0": Schedule.deepcache(steps, n, 0) for n in (2, 3, 5, 10)}
    named |= {f"DeepCache N=10 b={b}": Schedule.deepcache(steps, 10, b) for b in (1, 2)}
    named |= {
        f"DeepCache non-uniform N={n} b=0": Schedule.deepcache_nonuniform(
            steps, n, 0, center=steps // 2, power=1.4
        )
        for n in (4, 6)
    }
    named |= {f"DDIM {k} of {steps} steps": Schedule.fewer_steps(steps, k) for k in (10, 7, 5, 4)}
    segments = {
        4: [[(2, 3)] * 5, [(4, 2), (2, 0), (1, 0), (1, 0), (1, 0)]],
        5: [[(5, 1), (4, 0), (2, 0), (1, 0)], [(2, 0), (1, 0), (1, 0), (1, 0)]],
        10: [[(10, 0), (3, 0)]],
    }
    for length, gene_sets in segments.items():
        for genes in gene_sets:
            schedule = Schedule.from_segments(length, genes)
            if len(schedule) == steps:
                text = "".join(f"({i},{b})" for i, b in genes)
                named[f"segments L={length} {text}"] = schedule
    return named


def timed_generation(
    model,
    steps: int,
    schedule: Schedule | None,
    batch: int,
) -> tuple[SampleSet, list[float]]:
    """1797 images from seeds 0..1796 in batches, with each batch's wall time."""
    parts, seconds = [], []
    for start in range(0, DATASET_SIZE, batch):
        seeds = list(range(start, min(start + batch, DATASET_SIZE)))
        began = time.perf_counter()
        parts.append(generate(model, steps, schedule, seeds, batch_size=batch))
        seconds.append(time.perf_counter() - began)
    first = parts[0]
    return SampleSet(
        images=np.concatenate([p.images for p in parts]),
        seeds=np.concatenate([p.seeds for p in parts]),
        labels=None,
        model=first.model,
        schedule=first.schedule,
        steps=steps,
        guidance=first.guidance,
    ), seconds


def _timed(fn):
    began = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - began


def _subset(samples: SampleSet, n: int) -> SampleSet:
    return SampleSet(
        images=samples.images[:n],
        seeds=samples.seeds[:n],
        labels=None,
        model=samples.model,
        schedule=samples.schedule,
        steps=samples.steps,
        guidance=samples.guidance,
    )


def run_benchmark(
    model_id: str = "digits-ddpm",
    weights: str = "pretrained",
    steps: int = 20,
    sizes: tuple[int, ...] = (128, 256, 512),
    batch: int = 128,
    progress=print,
) -> dict:
    """Evaluate every candidate by full FID and by rFID at each size in ``sizes``."""
    from scipy.stats import kendalltau

    if any(n % batch for n in sizes):
        raise ValueError(f"rFID sizes {sizes} must be multiples of the batch {batch}")
    model = load_model(model_id, weights)
    table: CostTable = model_cost_table(get(model_id), model.unet)
    extractor = load_extractor("digits-cnn")
    reference, reference_s = _timed(lambda: reference_statistics("digits", extractor))
    teacher, teacher_seconds = timed_generation(model, steps, None, batch)
    cache = TeacherFeatureCache()
    _, teacher_features_s = _timed(lambda: cache.features(teacher, extractor))
    teacher_fid = fid(teacher, "digits", extractor).value
    progress(f"teacher: {sum(teacher_seconds):.1f} s to generate, FID {teacher_fid:.3f}")
    rows = []
    for name, schedule in candidate_schedules(steps).items():
        samples, seconds = timed_generation(model, steps, schedule, batch)
        full, fid_s = _timed(lambda s=samples: fid(s, "digits", extractor))
        row = {
            "name": name,
            "schedule": str(schedule),
            "predicted_speedup": schedule.speedup(table),
            "fid": full.value,
            "fid_eval_s": sum(seconds) + fid_s,
            "rfid": {},
            "rfid_eval_s": {},
        }
        for n in sizes:
            result, rfid_s = _timed(
                lambda s=samples, n=n: rfid(_subset(s, n), teacher, extractor, cache)
            )
            row["rfid"][n] = result.value
            row["rfid_eval_s"][n] = sum(seconds[: n // batch]) + rfid_s
        rows.append(row)
        progress(
            f"{name}: {row['predicted_speedup']:.2f}x FID {full.value:.3f} "
            f"rFID@{sizes[0]} {row['rfid'][sizes[0]]:.3f}"
        )
    fids = [r["fid"] for r in rows]
    by_size = {}
    for n in sizes:
        tau, p_value = kendalltau([r["rfid"][n] for r in rows], fids)
        ratios = [r["rfid_eval_s"][n] / r["fid_eval_s"] for r in rows]
        by_size[n] = {
            "kendall_tau": float(tau),
            "p_value": float(p_value),
            "time_ratio_median": statistics.median(ratios),
            "time_ratio_max": max(ratios),
        }
    return {
        "model": model_id,
        "weights": weights,
        "steps": steps,
        "batch": batch,
        "dataset_size": DATASET_SIZE,
        "protocols": ["fid:digits-cnn", "rfid:digits-cnn"],
        "reference": "digits",
        "reference_n": reference.n,
        "cost_table": table.to_dict(),
        "teacher": {
            "generate_s": sum(teacher_seconds),
            "features_s": teacher_features_s,
            "fid": teacher_fid,
        },
        "reference_statistics_s": reference_s,
        "environment": environment("cpu", "float32", batch),
        "cpus": os.cpu_count(),
        "schedules": rows,
        "by_size": by_size,
    }


def report_markdown(report: dict, command: str) -> str:
    import pandas as pd

    env, sizes = report["environment"], list(report["by_size"])
    lines = [
        f"# rFID vs full FID: {report['model']} ({report['weights']} weights)",
        "",
        f"Command: `{command}`",
        "",
        f"- machine: {env['device']}, {report['cpus']} CPUs shared with other processes; "
        f"torch {env['torch']}, diffusers {env['diffusers']}, "
        f"Python {env['python']}",
        f"- sampler: DDIM {report['steps']} steps, batch {report['batch']}, float32; seeds "
        f"0..{report['dataset_size'] - 1}",
        f"- full FID: `fid:digits-cnn`, {report['dataset_size']} generated images vs the "
        f"`digits` reference ({report['reference_n']} real images); eval time = generation "
        "+ features + Frechet distance (reference statistics cached)",
        "- rFID: `rfid:digits-cnn`, the first n images (seeds 0..n-1) vs the all-F teacher's "
        "images of the same seeds; eval time = generating those n + features + Frechet "
        "distance (teacher features cached)",
        f"- one-off costs: teacher generation {report['teacher']['generate_s']:.1f} s, teacher "
        f"features {report['teacher']['features_s']:.2f} s, reference statistics "
        f"{report['reference_statistics_s']:.2f} s; teacher FID {report['teacher']['fid']:.3f}",
        f"- predicted speedup: cost table '{report['cost_table']['source']}'",
        "",
        "## Summary",
        "",
        pd.DataFrame(
            [
                {
                    "rFID n": n,
                    "Kendall tau (rFID, FID)": f"{s['kendall_tau']:.3f}",
                    "p-value": f"{s['p_value']:.1e}",
                    "rFID / FID eval time (median)": f"{100 * s['time_ratio_median']:.1f}%",
                    "(max)": f"{100 * s['time_ratio_max']:.1f}%",
                }
                for n, s in report["by_size"].items()
            ]
        ).to_markdown(index=False),
        "",
        *_reading(report),
        "",
        f"## {len(report['schedules'])} schedules",
        "",
    ]
    rows = [
        {
            "schedule": r["name"],
            "pred. speedup": f"{r['predicted_speedup']:.2f}x",
            "FID": f"{r['fid']:.3f}",
            "FID eval s": f"{r['fid_eval_s']:.1f}",
            **{f"rFID@{n}": f"{r['rfid'][n]:.3f}" for n in sizes},
            **{f"rFID@{n} s": f"{r['rfid_eval_s'][n]:.1f}" for n in sizes},
        }
        for r in sorted(report["schedules"], key=lambda r: r["predicted_speedup"])
    ]
    lines += [pd.DataFrame(rows).to_markdown(index=False), "", "Schedule texts:", ""]
    lines += [f"- {r['name']}: `{r['schedule']}`" for r in report["schedules"]]
    return "\n".join(lines) + "\n"


def _reading(report: dict) -> list[str]:
    """The targets (tau >= 0.8, rFID eval <= 10% of FID eval) checked per n, and why."""
    rows = report["schedules"]
    fids = [r["fid"] for r in rows]
    lines = []
    for n, s in report["by_size"].items():
        tau_ok, time_ok = s["kendall_tau"] >= 0.8, s["time_ratio_median"] <= 0.10
        lines.append(
            f"- n={n}: tau {s['kendall_tau']:.3f} ({'meets' if tau_ok else 'misses'} "
            f">= 0.8), eval time {100 * s['time_ratio_median']:.1f}% of full FID "
            f"({'meets' if time_ok else 'misses'} <= 10%)"
        )
    return (
        lines
        + [
            f"- generation dominates both evaluations, so the time ratio is about n / "
            f"{report['dataset_size']}; the 10% target needs n <= "
            f"{int(0.1 * report['dataset_size'])}",
            f"- full FID spans {min(fids):.1f}..{max(fids):.1f} over these schedules (teacher "
            f"{report['teacher']['fid']:.1f}), so most pairs are far apart",
        ]
        + [
            f"- pairs rFID@{n} orders unlike FID: "
            + (
                "; ".join(
                    f"{a['name']} vs {b['name']} (FID {a['fid']:.1f} vs {b['fid']:.1f})"
                    for i, a in enumerate(rows)
                    for b in rows[i + 1 :]
                    if (a["rfid"][n] - b["rfid"][n]) * (a["fid"] - b["fid"]) < 0
                )
                or "none"
            )
            for n in report["by_size"]
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/metrics.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="digits-ddpm")
    parser.add_argument("--weights", default="pretrained")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[128, 256, 512],
        help="rFID image counts (multiples of --batch)",
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the markdown report here")
    parser.add_argument("--json", type=Path, help="write the raw report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = run_benchmark(
        args.model,
        args.weights,
        args.steps,
        tuple(args.sizes),
        args.batch,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    command = "python benchmarks/metrics.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    markdown = report_markdown(report, command)
    for path, text in ((args.out, markdown), (args.json, json.dumps(report, indent=2))):
        if path:
            with atomic_path(path) as tmp:
                tmp.write_text(text)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
