"""The host memory one call adds at its peak (Linux's high-water mark, reset per call)."""

import sys

import pytest
import torch

from repro.infra import host_memory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@linux
def test_peak_growth_sees_a_transient_allocation_and_forgets_earlier_ones():
    def holds(mib):
        def fn():
            block = torch.ones(mib * 2**18)  # float32: mib MiB, freed on return
            return float(block[-1])

        return fn

    big, small = host_memory.peak_growth_mib(holds(256)), host_memory.peak_growth_mib(holds(32))
    assert 250 <= big < 300 and 30 <= small < 60  # the big block's freed pages do not count
    assert host_memory.peak_growth_mib(lambda: None) < 8


def test_no_answer_where_the_peak_cannot_be_reset(monkeypatch, tmp_path):
    monkeypatch.setattr(host_memory, "_CLEAR", tmp_path / "absent" / "clear_refs")
    ran = []
    assert host_memory.peak_growth_mib(lambda: ran.append(1)) is None and ran == [1]
