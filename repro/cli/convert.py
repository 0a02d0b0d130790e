"""``repro convert``: convert an original checkpoint file into a"""

from __future__ import annotations

import argparse
from pathlib import Path

from repro.cli.common import Command
from repro.infra.errors import UserError


def add_parser(command: Command) -> None:
    convert = command(
        "convert",
        cmd_convert,
        "convert an original checkpoint file into a diffusers directory (once)",
    )
    convert.add_argument(
        "kind",
        choices=("ldm", "adm"),
        help="ldm: CompVis LDM-4-G model.ckpt (cin256-v2); adm: guided-diffusion "
        "64x64_diffusion.pt",
    )
    convert.add_argument("checkpoint", type=Path, help="the original checkpoint file")
    convert.add_argument("out", type=Path, help="new directory (unet/, scheduler/, ...)")


def cmd_convert(args: argparse.Namespace) -> int:
    from repro.models.convert import convert_file

    if args.out.exists():
        raise UserError(f"{args.out} already exists; convert writes a new directory")
    out = convert_file(args.kind, args.checkpoint, args.out)
    print(f"{args.kind} checkpoint {args.checkpoint} -> {out} (use it with --weights {out})")
    return 0
