"""`repro` command line. Bad input exits 2 with one line naming the culprit."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    """Raised for user errors; reported as one line, exit code 2."""


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from .models import MissingWeightsError, UnknownModelError
    from .samples import SamplesFileError
    from .schedule import ScheduleError

    return (BadInput, ScheduleError, UnknownModelError, MissingWeightsError, SamplesFileError)


def cmd_ls(args: argparse.Namespace) -> int:
    from . import models

    print("models:")
    for model_id in models.model_ids():
        spec = models.get(model_id)
        print(f"  {model_id:<14} {spec.description} [{spec.source}]")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from . import models, samples

    try:
        seeds = samples.parse_seeds(args.seeds)
        labels = [int(x) for x in args.labels.split(",")] if args.labels else None
    except ValueError as error:
        raise BadInput(str(error)) from None
    model = models.load_model(args.model, args.weights, device=args.device)
    try:
        result = samples.generate(model, args.steps, args.schedule, seeds, labels,
                                  args.guidance, batch_size=args.batch_size)
    except ValueError as error:  # labels that do not fit the model
        raise BadInput(str(error)) from None
    path = result.save(args.out)
    if not args.quiet:
        print(f"{len(result.images)} images of {result.model} under '{result.schedule}' "
              f"-> {path}")
    return 0


def cmd_zoo_train(args: argparse.Namespace) -> int:
    from .zoo import WEIGHTS_DIR, ZOO_NAMES
    from .zoo.train import train

    if args.name not in ZOO_NAMES:
        raise BadInput(f"unknown zoo model {args.name!r}; known: {', '.join(ZOO_NAMES)}")
    print(train(args.name, args.out or WEIGHTS_DIR, seed=args.seed, minutes=args.minutes,
                threads=args.threads))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench
    from .atomic import atomic_path

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        deepcache = [f"{i}:{b}" for i, b in map(bench.parse_deepcache, args.deepcache)]
    except ValueError as error:
        raise BadInput(str(error)) from None
    report = bench.bench_model(
        args.model, weights=args.weights, device=args.device, dtype=args.dtype,
        batch=args.batch, steps=args.steps, repeats=args.repeats, warmup=args.warmup,
        schedules=args.schedule, deepcache=deepcache, do_calibrate=args.calibrate,
        oracle=args.oracle, plain=args.plain, scheduler=args.scheduler, seed=args.seed,
    )
    command = "repro " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    markdown = bench.report_markdown(report, command)
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(markdown)
    print(json.dumps(report, indent=2) if args.json else markdown)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="repro", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("ls", help="list registered models")
    ls.set_defaults(func=cmd_ls)

    sample = sub.add_parser("sample", help="generate images under a schedule into FILE.npz")
    sample.add_argument("--model", required=True, help="model id (see `repro ls`)")
    sample.add_argument("--steps", type=int, required=True, help="DDIM steps")
    sample.add_argument("--schedule", help="schedule text (default: all F)")
    sample.add_argument("--seeds", default="0:64", help="A:B (B excluded) or a comma list")
    sample.add_argument("--labels", help="comma list of class labels, cycled over the seeds "
                        "(default: seed mod classes)")
    sample.add_argument("--guidance", type=float, help="classifier-free guidance scale "
                        "(default: the model's)")
    sample.add_argument("--weights", default="pretrained",
                        help="pretrained (default), random, or a local dir")
    sample.add_argument("--device", default="cpu")
    sample.add_argument("--batch-size", type=int, default=64)
    sample.add_argument("--out", type=Path, required=True, help="samples file (.npz)")
    sample.add_argument("--quiet", action="store_true")
    sample.set_defaults(func=cmd_sample)

    zoo = sub.add_parser("zoo", help="the embedded digits models")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    train = zoo_sub.add_parser("train", help="train an embedded model (seeded, CPU)")
    train.add_argument("name", help="digits-ddpm, digits-cond or digits-cnn")
    train.add_argument("--out", type=Path, help="output dir (default: repro/zoo/weights)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--minutes", type=float, help="stop training after this wall time")
    train.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads (the committed weights used 1)")
    train.set_defaults(func=cmd_zoo_train)

    bench = sub.add_parser("bench", help="time a model's UNet loop under schedules")
    bench.add_argument("--model", required=True, help="model id (see `repro ls`)")
    bench.add_argument("--weights", default="random",
                       help="random (default: architecture only), pretrained, or a local dir")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    bench.add_argument("--batch", type=int, default=1, help="UNet batch size")
    bench.add_argument("--steps", type=int, default=50, help="sampler inference steps")
    bench.add_argument("--scheduler", help="diffusers scheduler class (default: the model's)")
    bench.add_argument("--repeats", type=int, default=3)
    bench.add_argument("--warmup", type=int, default=1)
    bench.add_argument("--schedule", action="append", default=[], metavar="TEXT",
                       help="schedule text to time (repeatable)")
    bench.add_argument("--deepcache", action="append", default=[], metavar="N[:B]",
                       help="DeepCache uniform interval N at branch B (repeatable)")
    bench.add_argument("--calibrate", action="store_true",
                       help="measure the P<b>/F cost table instead of using MAC ratios")
    bench.add_argument("--oracle", action="store_true",
                       help="also time DeepCache's own DeepCacheSDHelper (per call and loop)")
    bench.add_argument("--plain", action="store_true",
                       help="also time the unhooked diffusers loop")
    bench.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--out", type=Path, help="also write the markdown report here")
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    bench.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .samples import NonFiniteSamplesError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _bad_input_types() as error:
        print(f"repro: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteSamplesError as error:
        print(f"repro: failed: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
