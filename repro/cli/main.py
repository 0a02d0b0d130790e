"""`repro` command line: the parser made of every command module, and one-line errors
(bad input exits 2 with the culprit named, a run that could not finish 1).

Parsing imports nothing heavy: `repro --help` and `repro validate` run without torch
(`tests/test_cli.py` checks); each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from repro.cli import (
    bench,
    convert,
    env,
    gate,
    ls,
    probe,
    report,
    run,
    sample,
    search,
    validate,
    zoo,
)
from repro.cli import eval as evaluate
from repro.cli.common import EXIT_BAD_INPUT, ArgumentParser, Command
from repro.infra.errors import RunFailure, UserError

EXIT_INTERRUPTED = 130  # the shell's code for a command ended by SIGINT
# in `repro --help` order
COMMANDS = (
    ls,
    env,
    run,
    validate,
    sample,
    probe,
    search,
    evaluate,
    zoo,
    convert,
    bench,
    report,
    gate,
)


def _configure_output(args: argparse.Namespace) -> None:
    """Messages go through the ``repro`` logger to stderr: warnings only with ``--quiet``,
    debug with ``-v``; progress bars follow it (:mod:`repro.infra.progress`)."""
    from repro.infra.progress import LOGGER

    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):  # main may run more than once in a process
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    from repro import __version__

    parser = ArgumentParser(
        prog="repro",
        description="Reproduce and benchmark training-free "
        "acceleration of diffusion models by per-step schedules (F / P<b> / "
        "N): searches, baselines, metrics and timing from declarative "
        "suites. Bad input exits 2 with one line naming the culprit.",
    )
    parser.add_argument("--version", action="version", version=f"repro {__version__}")
    command = Command(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    for module in COMMANDS:
        module.add_parser(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # named by the command that refused them, with its own --help
        commands = next(a for a in parser._actions if a.dest == "command").choices
        sub = commands[args.command]
        nested = [a for a in sub._actions if isinstance(a.choices, dict) and a.dest != "help"]
        for action in nested:  # `repro zoo train ...`: the innermost command's parser
            sub = action.choices.get(getattr(args, action.dest, None), sub)
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    args.argv = argv  # what `repro bench` reports as its command
    _configure_output(args)
    try:
        if getattr(args, "threads", 0) < 0:
            raise UserError(f"--threads must be 0 (torch's default) or more, got {args.threads}")
        if getattr(args, "threads", 0) and args.command != "zoo":
            import torch

            torch.set_num_threads(args.threads)
        return args.func(args)
    except UserError as error:
        print(f"repro: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RunFailure as error:
        print(f"repro: failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "repro: interrupted; finished work is kept (the same command resumes it)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `repro env | head`: the reader left; Python's documented way out
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
