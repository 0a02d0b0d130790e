"""``repro sample``: generate images under a schedule into FILE.npz"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.cli.common import Command, at_least_one, replaceable, required_flags, step_mode
from repro.infra.errors import UserError


def add_parser(command: Command) -> None:
    sample = command(
        "sample",
        cmd_sample,
        "generate images under a schedule into FILE.npz",
        "model",
        "steps",
        "seeds",
        "prompts",
        "weights",
        "device",
        "threads",
        "batch",
        "step_mode",
    )
    sample.add_argument("--schedule", help="schedule text (default: all F)")
    sample.add_argument(
        "--labels",
        help="comma list of class labels, cycled over the seeds (default: seed mod classes)",
    )
    sample.add_argument(
        "--guidance", type=float, help="classifier-free guidance scale (default: the model's)"
    )
    sample.add_argument("--out", type=Path, required=True, help="samples file (.npz)")
    sample.set_defaults(batch=64)


def cmd_sample(args: argparse.Namespace) -> int:
    from repro import models
    from repro.engine import accel
    from repro.sampling import samples
    from repro.sampling.generate import generate
    from repro.sampling.prompts import read_prompts

    required_flags(args, "model", "steps")
    at_least_one(args, "steps", "batch", "prompts_limit")
    replaceable(args.out, "--out")
    try:
        seeds = samples.parse_seeds(args.seeds)
        labels = [int(x) for x in args.labels.split(",")] if args.labels else None
    except ValueError as error:
        raise UserError(str(error)) from None
    prompts = read_prompts(args.prompts, limit=args.prompts_limit) if args.prompts else None
    mode = step_mode(args)
    model = models.load_model(args.model, args.weights, device=args.device, dtype=args.dtype)
    accel.apply(model.unet, mode)
    result = generate(
        model,
        args.steps,
        args.schedule,
        seeds,
        labels,
        args.guidance,
        batch_size=args.batch,
        prompts=prompts,
    )
    path = result.save(args.out)
    if not args.quiet:
        print(f"{len(result.images)} images of {result.model} under '{result.schedule}' -> {path}")
    return 0
