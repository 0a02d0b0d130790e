"""``repro zoo train NAME``: train an embedded digits model (seeded, CPU)."""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.cli.common import Command, at_least_one
from repro.infra.errors import UserError


def add_parser(command: Command) -> None:
    zoo = command.sub.add_parser("zoo", help="the embedded digits models")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    train = zoo_sub.add_parser(
        "train", help="train an embedded model (seeded, CPU)", parents=command.parents("threads")
    )
    train.add_argument("name", help="digits-ddpm, digits-cond, digits-dit or digits-cnn")
    train.add_argument("--out", type=Path, help="output dir (default: repro/models/zoo/weights)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--minutes", type=float, help="stop training after this wall time")
    train.set_defaults(func=cmd_zoo_train, threads=1)  # the committed weights used 1


def cmd_zoo_train(args: argparse.Namespace) -> int:
    from repro.models.zoo import WEIGHTS_DIR, ZOO_NAMES
    from repro.training.train import train

    if args.name not in ZOO_NAMES:
        raise UserError(f"unknown zoo model {args.name!r}; known: {', '.join(ZOO_NAMES)}")
    at_least_one(args, "threads")
    print(
        train(
            args.name,
            args.out or WEIGHTS_DIR,
            seed=args.seed,
            minutes=args.minutes,
            threads=args.threads,
        )
    )
    return 0
