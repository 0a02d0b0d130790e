"""The step path can be compiled and captured: no host synchronisation inside a hooked UNet
call, torch.compile makes one graph per step kind under the hooks, and CUDA graphs refuse
to start without CUDA (one line, exit 2)."""

import statistics

import pytest
import torch
from conftest import ddim, tiny_unet2d, tiny_unet_cond
from torch.overrides import TorchFunctionMode

from repro.cli import main as cli
from repro.core.schedule import Schedule
from repro.engine import accel
from repro.engine.hooks import set_step_runner, step_runner
from repro.engine.loop import denoise, scheduled
from repro.speed import loops

SCHEDULE = "F P0 N F P4 N"  # every step kind: full, two partial branches, null
SYNCS = {torch.Tensor.item, torch.Tensor.cpu, torch.Tensor.tolist, torch.Tensor.__bool__}


class HostSync(AssertionError):
    pass


class NoHostSync(TorchFunctionMode):
    """Any ``.item()``, ``.cpu()``, ``.tolist()`` or ``bool(tensor)`` raises."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in SYNCS:
            raise HostSync(f"host synchronisation: Tensor.{func.__name__}")
        return func(*args, **(kwargs or {}))


def guard_calls(unet):
    """NoHostSync for the whole of every call of ``unet`` (hooks included), nothing else:
    the scheduler's step between calls may synchronise."""
    mode = NoHostSync()
    unet.register_forward_pre_hook(lambda module, args: mode.__enter__() and None)
    unet.register_forward_hook(
        lambda module, args, output: mode.__exit__(None, None, None), always_call=True
    )  # also when the call raises
    return unet


def test_the_hooked_step_path_makes_no_host_synchronisation():
    unet = guard_calls(tiny_unet2d())
    denoise(unet, ddim(6), torch.randn(2, 3, 16, 16), SCHEDULE)
    cond = guard_calls(tiny_unet_cond(num_class_embeds=10))
    denoise(
        cond,
        ddim(6),
        torch.randn(2, 4, 16, 16),
        SCHEDULE,
        encoder_hidden_states=torch.randn(2, 3, 8),
        class_labels=torch.tensor([1, 2]),
    )


def test_the_guard_catches_a_synchronising_hook():
    """A timestep that is not a view of the scheduler's timesteps is located by its value
    (``_position``'s fallback): the guard sees that read."""
    unet = guard_calls(tiny_unet2d())
    scheduler = ddim(6)
    with (
        scheduled(unet, SCHEDULE, scheduler),
        torch.inference_mode(),
        pytest.raises(HostSync, match="item"),
    ):
        unet(torch.randn(2, 3, 16, 16), scheduler.timesteps[0].clone())


def test_compiled_steps_are_the_eager_ones_with_one_graph_per_step_kind():
    from torch._dynamo.utils import counters

    unet, scheduler = tiny_unet2d(), ddim(6)
    with torch.inference_mode():  # as generate.generate makes it (dynamo guards on the kind)
        noise = torch.randn(2, 3, 16, 16)
    eager = denoise(unet, scheduler, noise, SCHEDULE)
    torch._dynamo.reset()
    accel.apply(unet, "compile", backend="eager")  # dynamo's tracing, no code generation
    try:
        graphs = []
        for _ in range(2):  # the second call attaches new hooks: nothing is compiled again
            scheduler.set_timesteps(6)
            before = counters["stats"]["unique_graphs"]
            assert torch.equal(denoise(unet, scheduler, noise, SCHEDULE), eager)
            graphs.append(counters["stats"]["unique_graphs"] - before)
    finally:
        set_step_runner(unet, None)
    assert graphs == [3, 0]  # F, P0 and P4; N makes no call


def test_cuda_graphs_need_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(accel.AccelError, match="needs the model on a CUDA device"):
        accel.apply(tiny_unet2d(), "cuda-graphs")
    code = cli.main(
        [
            "sample",
            "--model",
            "digits-ddpm",
            "--steps",
            "2",
            "--seeds",
            "0:2",
            "--cuda-graphs",
            "--out",
            str(tmp_path / "s.npz"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--cuda-graphs" in err
    assert not (tmp_path / "s.npz").exists()
    code = cli.main(["bench", "--model", "digits-ddpm", "--steps", "2", "--cuda-graphs"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--cuda-graphs" in err


def test_bench_times_every_row_eager_and_in_each_step_mode(monkeypatch):
    """Rows of each mode are interleaved with the eager ones, with speedups over both
    teachers; the UNet runs eagerly again afterwards."""

    def runner_for(mode, unet, backend="inductor"):
        return None if mode == "eager" else accel.Compiled("eager")  # dynamo, no codegen

    monkeypatch.setattr(accel, "runner_for", runner_for)
    torch._dynamo.reset()
    unet = tiny_unet2d()
    with torch.inference_mode():
        noise = torch.randn(2, 3, 16, 16)
        timings = loops.time_loops(
            unet,
            lambda: ddim(6),
            noise,
            {},
            {"all-F": Schedule.full(6), "cached": Schedule.parse(SCHEDULE)},
            repeats=2,
            warmup=1,
            table=None,
            modes=["compile"],
        )
    by_name = {t.name: t for t in timings}
    assert list(by_name) == ["all-F", "cached", "all-F [compile]", "cached [compile]"]
    assert [t.mode for t in timings] == ["eager", "eager", "compile", "compile"]
    median = {name: statistics.median(t.seconds) for name, t in by_name.items()}
    for name, timing in by_name.items():  # over the eager teacher, and over its mode's
        assert len(timing.seconds) == 2
        assert timing.measured_speedup == pytest.approx(median["all-F"] / median[name])
        teacher = "all-F [compile]" if timing.mode == "compile" else "all-F"
        assert timing.speedup_in_mode == pytest.approx(median[teacher] / median[name])
    compiled = by_name["cached [compile]"]
    assert compiled.measured_speedup == pytest.approx(
        compiled.speedup_in_mode * by_name["all-F [compile]"].measured_speedup
    )
    assert step_runner(unet) is None
