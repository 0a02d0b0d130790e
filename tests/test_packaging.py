"""The package's dependency ranges and the constraints that `tox -e lower-bounds` installs:
every dependency pinned at the lowest release of its `>=` range (torch and torchvision
excepted: they stay the build on this machine's disk)."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ON_DISK = {"torch", "torchvision"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lower_bounds_file_pins_every_dependency_at_the_bottom_of_its_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ranges = {canonical(r.name): r.specifier for r in map(Requirement, project["dependencies"])}
    pins = {}
    for line in (ROOT / "constraints-lower.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            (pin,) = requirement.specifier
            if canonical(requirement.name) not in ranges:  # a dependency's dependency:
                assert pin.operator == "<", line  # only capped at the floors' time
                continue
            assert pin.operator == "==", line
            pins[canonical(requirement.name)] = Version(pin.version)
    assert set(pins) == set(ranges) - ON_DISK
    for name, version in pins.items():
        (floor,) = (Version(s.version) for s in ranges[name] if s.operator == ">=")
        assert version in ranges[name], name
        # the floor's own series (2.26 -> 2.26.1 where no 2.26.0 was released), not a later one
        assert version.release[: len(floor.release)] == floor.release, (name, version, floor)
