"""The command line itself: light to start, one-line errors, shared flags, version, env,
output levels and progress bars."""

import importlib.metadata
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import repro
from repro.cli import main as cli
from repro.config import suite
from repro.infra import progress

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "mlflow", "open_clip", "torch_fidelity")


def modules_loaded_by(argv: list[str]) -> tuple[int, list[str]]:
    """The exit code of ``repro ARGV`` in a fresh interpreter and the heavy packages it
    imported."""
    script = (f"import json, sys\nfrom repro.cli.main import main\n"
              f"try:\n    code = main({argv!r})\n"
              "except SystemExit as exit:\n    code = exit.code\n"
              f"print(json.dumps([code, sorted({{m.split('.')[0] for m in sys.modules}} & "
              f"{set(HEAVY)!r})]))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
                          timeout=600)  # a loaded machine; the check is the import, not the time
    code, heavy = json.loads(done.stdout.splitlines()[-1])
    return code, heavy


@pytest.mark.parametrize("argv", [
    ["--help"], ["run", "--help"], ["bench", "--help"], ["eval", "--help"],
    ["validate", *suite.packaged()],  # every packaged suite, by name
])
def test_help_and_validate_import_no_torch(argv):
    assert modules_loaded_by(argv) == (0, [])


def test_the_import_check_sees_torch():
    code, heavy = modules_loaded_by(["env"])
    assert code == 0 and "torch" in heavy


@pytest.mark.parametrize(("argv", "needle"), [
    (["run"], "repro run: error: the following arguments are required: suite"),
    (["bench", "--batch", "two"], "repro bench: error: argument --batch: invalid int value"),
    (["sample", "--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
    (["frobnicate"], "repro: error: argument COMMAND: invalid choice: 'frobnicate'"),
    (["run", "smoke", "-q", "-v"], "argument -v/--verbose: not allowed with argument -q"),
])
def test_argparse_errors_are_one_line_with_exit_2(capsys, argv, needle):
    with pytest.raises(SystemExit) as exit:
        cli.main(argv)
    out, err = capsys.readouterr()
    assert exit.value.code == 2 and out == ""
    assert len(err.splitlines()) == 1 and needle in err and "--help" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"repro {repro.__version__}\n"


def test_env_says_what_a_bug_report_needs(capsys, monkeypatch):
    import diffusers
    import torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__ and info["diffusers"] == diffusers.__version__
    for package in ("transformers", "mlflow", "torch-fidelity", "open_clip_torch"):
        assert info[package] == importlib.metadata.version(package)
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["devices"][0].startswith("cpu: ")
    assert len(info["devices"]) == 1 + torch.cuda.device_count()
    assert info["torch threads"] == torch.get_num_threads()
    assert info["environment"]["HF_HUB_OFFLINE"] == "1" and info["platform"]
    assert cli.main(["env"]) == 0
    assert f"- torch: {torch.__version__}\n" in capsys.readouterr().out


def test_quiet_and_verbose_set_the_message_level(capsys, tmp_path):
    out = tmp_path / "s.npz"
    argv = ["sample", "--model", "digits-ddpm", "--weights", "random", "--steps", "2",
            "--seeds", "0:2", "--out", str(out)]
    assert cli.main(argv) == 0
    assert "2 images of digits-ddpm" in capsys.readouterr().out
    assert logging.getLogger("repro").level == logging.INFO
    assert cli.main([*argv, "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert logging.getLogger("repro").level == logging.WARNING
    assert cli.main([*argv, "-v"]) == 0
    assert logging.getLogger("repro").level == logging.DEBUG


@pytest.mark.parametrize(("argv", "defaults"), [
    (["search", "--budget", "2"], {"weights": "pretrained", "batch": 128, "seeds": "0:128"}),
    (["bench"], {"weights": "random", "batch": None, "threads": 0}),
    (["sample", "--out", "x"], {"weights": "pretrained", "batch": 64, "seeds": "0:64"}),
    (["eval", "x", "--metric", "latency"], {"weights": "pretrained", "batch": 64}),
    (["zoo", "train", "digits-ddpm"], {"threads": 1}),
])
def test_each_command_keeps_its_own_defaults_of_shared_flags(argv, defaults):
    args = cli.build_parser().parse_args(argv)
    assert {key: getattr(args, key) for key in defaults} == defaults


def test_a_shared_flag_is_required_where_a_command_needs_it(capsys):
    assert cli.main(["sample", "--steps", "2", "--out", "x.npz"]) == 2
    assert capsys.readouterr().err == "repro: error: sample needs --model\n"


def test_progress_bars_only_on_a_terminal_and_not_when_quiet(monkeypatch):
    logger = logging.getLogger(progress.LOGGER)
    level = logger.level
    try:
        logger.setLevel(logging.INFO)  # setLevel: the logger caches isEnabledFor
        assert progress.bar(range(3)).disable  # pytest's stderr is not a terminal
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
        assert not progress.bar(range(3)).disable
        logger.setLevel(logging.WARNING)  # --quiet
        assert progress.bar(range(3)).disable
    finally:
        logger.setLevel(level)


def test_a_reader_that_leaves_the_pipe_ends_the_command_quietly(monkeypatch, capfd):
    """`repro env | head -1`: the rest of the output has nowhere to go; no traceback."""
    def env(args):
        raise BrokenPipeError(32, "Broken pipe")  # what print() raises once the reader left

    from repro.cli import env as env_command

    monkeypatch.setattr(env_command, "cmd_env", env)
    assert cli.main(["env"]) == 1  # (capfd puts the real stdout back afterwards)
    assert capfd.readouterr().err == ""


def test_user_errors_exit_2_and_library_bugs_keep_their_traceback(capsys, monkeypatch, tmp_path):
    """Bad input is any UserError (labels an unconditional model cannot take); a ValueError
    from deeper down is a bug, not "bad input": it propagates instead of exiting 2."""
    from repro.sampling import generate

    out = tmp_path / "s.npz"
    argv = ["sample", "--model", "digits-ddpm", "--steps", "2", "--seeds", "0:2",
            "--out", str(out)]
    assert cli.main([*argv, "--labels", "3"]) == 2
    assert capsys.readouterr().err == ("repro: error: model 'digits-ddpm' is unconditional: "
                                       "--labels does not apply\n")

    def buggy(*args, **kwargs):
        raise ValueError("an internal shape mismatch")

    monkeypatch.setattr(generate, "generate", buggy)
    with pytest.raises(ValueError, match="internal shape mismatch"):
        cli.main(argv)
