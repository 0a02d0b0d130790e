"""``repro validate``: check suites without running them"""

from __future__ import annotations

import argparse
import logging

from repro.cli.common import SUITE_HELP, Command, suite_path


def add_parser(command: Command) -> None:
    validate = command("validate", cmd_validate, "check suites without running them")
    validate.add_argument("suite", nargs="+", help=SUITE_HELP)


def cmd_validate(args: argparse.Namespace) -> int:
    from repro.config import suite

    for text in args.suite:
        loaded = suite.load(suite_path(text))
        plans = suite.check(loaded)
        for line in suite.cautions(loaded):
            logging.getLogger("repro").warning(f"warning: {line}")
        rows = sum(len(plan) for plan in plans.values())
        print(
            f"{loaded.file}: ok (suite {loaded.name!r} v{loaded.version}, "
            f"{len(plans)} experiments, {rows} rows, {loaded.digest})"
        )
    return 0
