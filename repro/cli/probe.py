"""``repro probe``: does a model suit caching? P<b> vs N at the same full"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from repro.cli.common import Command, at_least_one
from repro.infra.errors import UserError


def add_parser(command: Command) -> None:
    prb = command(
        "probe",
        cmd_probe,
        "does a model suit caching? P<b> vs N at the same full "
        "steps (rFID) and the deep feature's similarity between steps",
        "steps",
        "seeds",
        "weights",
        "device",
        "threads",
    )
    prb.add_argument("model", help="model id (see `repro ls`)")
    prb.add_argument("--interval", type=int, default=5, help="DeepCache N (default 5)")
    prb.add_argument(
        "--extractor",
        default="digits-cnn",
        help="rFID features (default digits-cnn; inception-2015-12-05 for real images)",
    )
    prb.add_argument(
        "--out",
        type=Path,
        default=Path("probe"),
        help="directory for probe.json and similarity.png (default ./probe)",
    )
    prb.set_defaults(steps=20)


def cmd_probe(args: argparse.Namespace) -> int:

    from repro import models
    from repro.infra.atomic import atomic_path
    from repro.metrics.extractors import load_extractor
    from repro.sampling import samples
    from repro.search.probe import plot_similarity, probe

    at_least_one(args, "steps", "interval")
    try:
        seeds = samples.parse_seeds(args.seeds)
    except ValueError as error:
        raise UserError(str(error)) from None
    from repro.metrics.protocols import FEATURE_DIMS

    dims = FEATURE_DIMS.get(args.extractor, 0)
    if len(seeds) < 2 * dims:  # the evolution's rFID fitness needs twice as many (suites)
        why = (
            "singular covariances"
            if len(seeds) <= dims
            else "fewer seeds than twice the dimensions"
        )
        logging.getLogger("repro").warning(
            f"warning: --seeds: {len(seeds)} seeds for {dims}-dimensional {args.extractor} "
            f"features: the probe's rFIDs are biased ({why}); use at least {2 * dims}"
        )
    model = models.load_model(args.model, args.weights, device=args.device, dtype=args.dtype)
    result = probe(model, args.steps, args.interval, seeds, load_extractor(args.extractor))
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "probe.json") as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=1))
    plot_similarity(result, args.out / "similarity.png")
    if not args.quiet:
        print(
            f"{result.protocol} at the full steps of DeepCache N={result.interval}: null "
            f"steps {result.null_rfid:.2f}; partial "
            + ", ".join(f"P{b} {v:.2f}" for b, v in sorted(result.partial_rfid.items()))
        )
        print(
            "adjacent-step cosine of the deep feature per branch (mean): "
            + ", ".join(f"{b} {row.mean():.3f}" for b, row in enumerate(result.similarity))
        )
        print(f"-> {args.out / 'probe.json'}, {args.out / 'similarity.png'}")
    return 0
