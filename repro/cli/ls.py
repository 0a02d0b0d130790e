"""``repro ls``: list the packaged suites, models, baseline techniques and metrics"""

from __future__ import annotations

import argparse

from repro.cli.common import Command


def add_parser(command: Command) -> None:
    command("ls", cmd_ls, "list the packaged suites, models, techniques and metrics")


def cmd_ls(args: argparse.Namespace) -> int:
    from repro import models, techniques
    from repro.config.suite import find, packaged
    from repro.metrics.protocols import METRICS

    print("suites (repro run NAME):")
    for name in packaged():
        print(f"  {name:<18} {find(name)}")
    print("models:")
    for model_id in models.model_ids():
        spec = models.get(model_id)
        print(f"  {model_id:<14} {spec.description} [{spec.source}]")
    print("baseline techniques (baselines[].technique):")
    for name, technique in techniques.TECHNIQUES.items():
        print(f"  {name:<28} {technique.about}")
    print("metrics:")
    for name in METRICS:
        print(f"  {name}")
    return 0
