"""The command line itself: light to start, one-line errors, shared flags, version, env,
output levels and progress bars."""

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import repro
from repro.cli import main as cli
from repro.config import suite
from repro.infra import progress
from repro.infra.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "transformers", "mlflow", "open_clip", "torch_fidelity")


def modules_loaded_by(argv: list[str]) -> tuple[int, list[str]]:
    """The exit code of ``repro ARGV`` in a fresh interpreter and the heavy packages it
    imported."""
    script = (
        f"import json, sys\nfrom repro.cli.main import main\n"
        f"try:\n    code = main({argv!r})\n"
        "except SystemExit as exit:\n    code = exit.code\n"
        f"print(json.dumps([code, sorted({{m.split('.')[0] for m in sys.modules}} & "
        f"{set(HEAVY)!r})]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        timeout=600,
    )  # a loaded machine; the check is the import, not the time
    code, heavy = json.loads(done.stdout.splitlines()[-1])
    return code, heavy


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["run", "--help"],
        ["bench", "--help"],
        ["eval", "--help"],
        ["validate", *suite.packaged()],  # every packaged suite, by name
    ],
)
def test_help_and_validate_import_no_torch(argv):
    assert modules_loaded_by(argv) == (0, [])


def test_the_import_check_sees_torch():
    code, heavy = modules_loaded_by(["env"])
    assert code == 0 and "torch" in heavy


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run"], "repro run: error: the following arguments are required: suite"),
        (["bench", "--batch", "two"], "repro bench: error: argument --batch: invalid int value"),
        (["sample", "--dtype", "float8"], "argument --dtype: invalid choice: 'float8'"),
        (["frobnicate"], "repro: error: argument COMMAND: invalid choice: 'frobnicate'"),
        (["run", "smoke", "-q", "-v"], "argument -v/--verbose: not allowed with argument -q"),
        (
            ["run", "smoke", "--frob"],
            "repro run: error: unrecognized arguments: --frob (see repro run --help)",
        ),
        (
            ["zoo", "train", "digits-dit", "--frob"],
            "repro zoo train: error: unrecognized arguments: --frob (see repro zoo train --help)",
        ),
    ],
)
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
    argv = [
        "sample",
        "--model",
        "digits-ddpm",
        "--weights",
        "random",
        "--steps",
        "2",
        "--seeds",
        "0:2",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    assert "2 images of digits-ddpm" in capsys.readouterr().out
    assert logging.getLogger("repro").level == logging.INFO
    assert cli.main([*argv, "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert logging.getLogger("repro").level == logging.WARNING
    assert cli.main([*argv, "-v"]) == 0
    assert logging.getLogger("repro").level == logging.DEBUG


@pytest.mark.parametrize(
    ("argv", "defaults"),
    [
        (["search", "--budget", "2"], {"weights": "pretrained", "batch": 128, "seeds": "0:128"}),
        (["bench"], {"weights": "random", "batch": None, "threads": 0}),
        (["sample", "--out", "x"], {"weights": "pretrained", "batch": 64, "seeds": "0:64"}),
        (["eval", "x", "--metric", "latency"], {"weights": "pretrained", "batch": 64}),
        (["zoo", "train", "digits-ddpm"], {"threads": 1}),
    ],
)
def test_each_command_keeps_its_own_defaults_of_shared_flags(argv, defaults):
    args = cli.build_parser().parse_args(argv)
    assert {key: getattr(args, key) for key in defaults} == defaults


def test_a_shared_flag_is_required_where_a_command_needs_it(capsys):
    assert cli.main(["sample", "--steps", "2", "--out", "x.npz"]) == 2
    assert capsys.readouterr().err == "repro: error: sample needs --model\n"


def test_progress_bars_on_a_terminal_lines_in_a_log_and_nothing_when_quiet(monkeypatch, caplog):
    """A terminal gets a tqdm bar; a CI log (stderr a file) one line per EVERY_S seconds of
    a loop that runs that long, and a last one; a short loop and --quiet say nothing."""
    logger = logging.getLogger(progress.LOGGER)
    level = logger.level
    clock = iter(range(0, 1000, 20))  # each call to the clock: 20 s later
    try:
        logger.setLevel(logging.INFO)  # setLevel: the logger caches isEnabledFor
        with caplog.at_level(logging.INFO, logger=progress.LOGGER):
            assert list(progress.bar(range(3), desc="fast")) == [0, 1, 2]
            assert not caplog.records  # pytest's stderr is not a terminal: lines, none yet
            monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
            assert list(progress.bar(range(4), desc="timing 3 loops", unit="repeat")) == [
                0,
                1,
                2,
                3,
            ]
        lines = [record.getMessage() for record in caplog.records]
        assert lines == [
            "timing 3 loops: 2/4 repeats (50%), 40 s, about 40 s left",
            "timing 3 loops: 4/4 repeats (100%), 80 s",
        ]
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
    argv = ["sample", "--model", "digits-ddpm", "--steps", "2", "--seeds", "0:2", "--out", str(out)]
    assert cli.main([*argv, "--labels", "3"]) == 2
    assert capsys.readouterr().err == (
        "repro: error: model 'digits-ddpm' is unconditional: --labels does not apply\n"
    )

    def buggy(*args, **kwargs):
        raise ValueError("an internal shape mismatch")

    monkeypatch.setattr(generate, "generate", buggy)
    with pytest.raises(ValueError, match="internal shape mismatch"):
        cli.main(argv)


def test_run_flags_shrink_every_experiment_and_change_the_digest(monkeypatch):
    """--seeds, --search-seeds, --evaluations, --batch and --weights override each
    experiment's fields, checked against the suite schema's bounds (one line naming the
    flag) and digested, so a shrunk run never resumes a full one; metric weights reach the
    variables their loaders read."""
    from repro.cli.run import _overridden
    from repro.config import suite as suites
    from repro.metrics.protocols import CLIP_ENV

    monkeypatch.delenv(CLIP_ENV, raising=False)
    parser = cli.build_parser()
    loaded = suites.load(suites.find("smoke"))
    args = parser.parse_args(
        [
            "run",
            "smoke",
            "--seeds",
            "10000:10096",
            "--search-seeds",
            "0:16",
            "--evaluations",
            "3",
            "--batch",
            "32",
            "--weights",
            "random",
            "--clip-weights",
            "/x/clip.safetensors",
        ]
    )
    shrunk = _overridden(loaded, args)
    for e in shrunk.experiments:
        assert (e.evaluation.seeds, e.search.seeds, e.search.n_eval) == ("10000:10096", "0:16", 3)
        assert (e.evaluation.batch_size, e.weights) == (32, "random")
    assert shrunk.digest != loaded.digest == suites.settings_digest(loaded)
    assert shrunk.digest == suites.settings_digest(shrunk)
    assert os.environ[CLIP_ENV] == "/x/clip.safetensors"
    assert _overridden(loaded, parser.parse_args(["run", "smoke"])) is loaded
    with pytest.raises(UserError, match=r"^--evaluations 0: Input should be greater than 0$"):
        _overridden(loaded, parser.parse_args(["run", "smoke", "--evaluations", "0"]))


def test_every_flag_in_the_docs_is_one_its_command_takes():
    """Each `repro COMMAND ... --flag` in README.md and docs/*.md names a flag that
    COMMAND's parser accepts (docs and --help agree)."""
    import re

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in path.read_text().splitlines():
            for match in re.finditer(r"\brepro ([a-z]+)\b([^`#|]*)", line):
                name, rest = match.groups()
                if name not in commands:
                    continue
                sub = commands[name]
                nested = next(
                    (
                        a
                        for a in sub._actions
                        if a.choices and a.dest != "help" and isinstance(a.choices, dict)
                    ),
                    None,
                )
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
                    accepts = set(sub._option_string_actions)
                    if nested is not None:
                        for child in nested.choices.values():
                            accepts |= set(child._option_string_actions)
                    found.append((path.name, name, flag, flag in accepts))
    unknown = [(p, c, f) for p, c, f, ok in found if not ok]
    assert len(found) > 50 and not unknown
