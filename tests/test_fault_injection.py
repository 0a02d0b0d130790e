"""Fault injection (issue 17): valid suites mutated at random, by value and by byte, must be
validated to exit 0 or exit 2 with one line on stderr, never a traceback, in bounded memory
(and time: a validation that hangs fails the test by pytest-timeout)."""

import tracemalloc

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability import SMALL

from repro.cli import main as cli

BASE = yaml.safe_load(SMALL)

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(
        [
            "0:4",
            "1,1",
            "0:2000000000",
            "digits-cond",
            "segment",
            "rfid:digits-cnn",
            "F N F N",
            "../../x",
            "",
            "DDIMScheduler",
            "x" * 500,
        ]
    ),
    st.lists(st.integers(-3, 40), max_size=5),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
)


def _paths(data, prefix=()):
    """Every key path of the nested mappings and lists of ``data``."""
    items = (
        data.items()
        if isinstance(data, dict)
        else (enumerate(data) if isinstance(data, list) else ())
    )
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


PATHS = list(_paths(BASE))


def _mutated(path: tuple, value, delete: bool) -> dict:
    data = yaml.safe_load(SMALL)
    *parents, last = path
    target = data
    for key in parents:
        target = target[key]
    if delete:
        del target[last]
    else:
        target[last] = value
    return data


MEMORY_LIMIT = 64 * 2**20  # bytes of Python allocations at the peak of one validation


@pytest.fixture(scope="module", autouse=True)
def imported(tmp_path_factory):
    """Validate the valid suite once first: the modules a validation imports (diffusers for
    the sampler checks) are then loaded and do not count against the memory bound."""
    path = tmp_path_factory.mktemp("warm") / "suite.yaml"
    path.write_text(SMALL)
    assert cli.main(["validate", str(path)]) == 0


def _validate(tmp_path, capsys, text: bytes) -> None:
    path = tmp_path / "suite.yaml"
    path.write_bytes(text)
    tracemalloc.start()
    try:
        code = cli.main(["validate", str(path)])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = capsys.readouterr().err
    assert peak < MEMORY_LIMIT, f"{peak / 2**20:.0f} MiB"
    assert code == 0 or (code == 2 and len(err.strip().splitlines()) == 1), err
    assert "Traceback" not in err


SETTINGS = settings(
    max_examples=75,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.mark.timeout(600)
@SETTINGS
@given(st.sampled_from(PATHS), VALUES, st.booleans())
def test_a_suite_with_any_value_replaced_validates_or_fails_in_one_line(
    tmp_path, capsys, path, value, delete
):
    text = yaml.safe_dump(_mutated(path, value, delete), allow_unicode=True)
    _validate(tmp_path, capsys, text.encode())


@pytest.mark.timeout(600)
@SETTINGS
@given(st.data())
def test_a_suite_with_bytes_flipped_cut_or_inserted_validates_or_fails_in_one_line(
    tmp_path, capsys, data
):
    text = bytearray(SMALL.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "cut":
            del text[at:]
        elif kind == "insert":
            text[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif at < len(text):
            text[at] ^= data.draw(st.integers(1, 255))
    _validate(tmp_path, capsys, bytes(text))
