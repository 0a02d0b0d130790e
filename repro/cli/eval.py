"""``repro eval FILE.npz --metric M ...``: metrics of a samples file, with protocols.

Bad input raises :class:`MetricInputError` (missing weights included), which the main CLI
reports as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from repro.metrics.protocols import METRICS, REFERENCES
from repro.metrics.result import MetricResult


def add_parser(command) -> argparse.ArgumentParser:
    """``eval``, with the command line's shared flags (weights, device, threads, batch: the
    latency batch)."""
    parser = command.sub.add_parser(
        "eval",
        help="metrics of a samples file, with protocols",
        parents=command.parents("weights", "device", "threads", "batch", "metric_weights"),
    )
    parser.add_argument("file", type=Path, help="samples file (.npz) from `repro sample`")
    parser.add_argument(
        "--metric",
        action="append",
        required=True,
        metavar="M",
        help=f"repeatable; one of: {', '.join(METRICS)}",
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        help="teacher samples (.npz, all-F, same seeds) for rfid and speedup",
    )
    parser.add_argument(
        "--reference",
        help=f"reference for fid: {', '.join(REFERENCES)}, a folder "
        "of images, an .npz (uint8 arr_0 or ADM mu/sigma) or a "
        "cifar-10-batches-py folder",
    )
    parser.add_argument(
        "--prompts",
        type=Path,
        help="clip: one prompt per image (default: the "
        "samples file's own); COCO captions JSON, PartiPrompts TSV or lines",
    )
    parser.add_argument("--repeats", type=int, default=5, help="latency repeats")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_eval, batch=64)
    return parser


def run_eval(args: argparse.Namespace) -> int:
    from repro.metrics.evaluate import EvalOptions, evaluate
    from repro.sampling.prompts import read_prompts
    from repro.sampling.samples import SampleSet, check_samples

    def checked(path: Path) -> SampleSet:
        samples = SampleSet.load(path)
        check_samples(samples, path)
        return samples

    samples = checked(args.file)
    options = EvalOptions(
        teacher=checked(args.teacher) if args.teacher else None,
        reference=args.reference,
        prompts=read_prompts(args.prompts) if args.prompts else None,
        inception_weights=args.inception_weights,
        clip_weights=args.clip_weights,
        lpips_weights=args.lpips_weights,
        device=args.device,
        dtype=args.dtype,
        model_weights=args.weights,
        latency_batch=args.batch,
        latency_repeats=args.repeats,
    )
    results = evaluate(samples, args.metric, options)
    if args.json:
        print(
            json.dumps(
                {
                    "file": str(args.file),
                    "model": samples.model,
                    "schedule": samples.schedule,
                    "steps": samples.steps,
                    "metrics": [r.to_dict() for r in results],
                }
            )
        )
    else:
        print(f"{args.file}: {samples.model}, {samples.steps} steps, '{samples.schedule}'")
        for result in results:
            print(format_result(result))
    return 0


def format_result(result: MetricResult) -> str:
    context = {
        "unit": "{}",
        "reference": "vs reference {}",
        "teacher_schedule": "vs teacher '{}'",
        "speedup": "speedup {:.2f}x",
        "device": "on {}",
    }
    said = [
        template.format(result.details[key])
        for key, template in context.items()
        if key in result.details
    ]
    return "  ".join([f"{result.protocol:<34} {result.value:10.4f}", f"n={result.n}", *said])
