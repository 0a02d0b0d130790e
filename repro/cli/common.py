"""What every ``repro`` command shares: exit codes, flags defined once (argparse parents),
the checks of flag combinations, and a parser whose errors are one line with exit 2."""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
from collections.abc import Iterator
from pathlib import Path

from repro.infra.errors import UserError
from repro.metrics.protocols import CLIP_ENV, INCEPTION_ENV, LPIPS_ENV

EXIT_BAD_INPUT = 2
SUITE_HELP = "suite file, or the name of a packaged suite (see `repro ls`)"


def log_for(name: str):
    """A ``log(message)`` callable for the library's long-running functions."""
    return logging.getLogger(f"repro.{name}").info


def suite_path(text: str) -> Path:
    from repro.config.suite import find

    return find(text)


def command_line(args: argparse.Namespace) -> str:
    """The command as a user would type it again."""
    return "repro " + shlex.join(args.argv)


def required_flags(args: argparse.Namespace, *flags: str) -> None:
    """Shared flags that this command cannot run without."""
    for flag in flags:
        if getattr(args, flag) is None:
            raise UserError(f"{args.command} needs --{flag.replace('_', '-')}")


def at_least_one(args: argparse.Namespace, *flags: str) -> None:
    """Counts given on the command line are positive (``--steps 0`` samples nothing and
    ``--steps -1`` pure noise)."""
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")


def replaceable(path: Path | None, flag: str) -> None:
    """A file the command will write is a regular file or nothing yet, checked before any
    work (a directory, a FIFO, a device or a symlink there is never replaced)."""
    from repro.infra.atomic import target_problem

    problem = path is not None and target_problem(path)
    if problem:
        raise UserError(f"{flag}: {problem}")


def step_mode(args: argparse.Namespace) -> str:
    """The one step mode a run or sampling uses (:data:`repro.engine.accel.MODES`), checked
    against ``--device`` before anything is loaded."""
    if args.compile and args.cuda_graphs:
        raise UserError("--compile and --cuda-graphs: choose one")
    return checked_mode(
        args, "compile" if args.compile else "cuda-graphs" if args.cuda_graphs else "eager"
    )


def checked_mode(args: argparse.Namespace, mode: str) -> str:
    from repro.engine.accel import check_device

    check_device(mode, args.device)
    return mode


@contextlib.contextmanager
def writing(path) -> Iterator[None]:
    """A file the user named that cannot be written is bad input: one line naming it."""
    try:
        yield
    except OSError as error:
        raise UserError(f"cannot write {path}: {error.strerror or error}") from None


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2, like every other bad input."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


DTYPES = ("float32", "float16", "bfloat16")


def flag_groups() -> dict[str, ArgumentParser]:
    """The flags several commands share, each defined once with one name: commands take
    them as argparse parents (a fresh set each) and override a default with
    ``set_defaults``."""
    groups = {
        name: ArgumentParser(add_help=False)
        for name in (
            "output",
            "device",
            "threads",
            "batch",
            "weights",
            "model",
            "steps",
            "seeds",
            "prompts",
            "scheduler",
            "step_mode",
            "metric_weights",
        )
    }
    output = groups["output"].add_mutually_exclusive_group()
    output.add_argument(
        "-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars"
    )
    output.add_argument("-v", "--verbose", action="store_true", help="debug messages too")
    groups["device"].add_argument(
        "--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ... (default cpu)"
    )
    groups["device"].add_argument(
        "--dtype",
        default="float32",
        choices=DTYPES,
        help="weights and sampling dtype (default float32)",
    )
    groups["threads"].add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default: torch's)"
    )
    groups["batch"].add_argument("--batch", type=int, help="images per batch")
    groups["weights"].add_argument(
        "--weights",
        default="pretrained",
        help="pretrained (Hugging Face cache or the zoo's), random "
        "(architecture only), or a local directory "
        "(default %(default)s)",
    )
    groups["model"].add_argument("--model", help="model id (see `repro ls`)")
    groups["steps"].add_argument("--steps", type=int, help="sampler steps")
    groups["seeds"].add_argument(
        "--seeds", default="0:64", help="A:B (B excluded) or a comma list (default %(default)s)"
    )
    groups["prompts"].add_argument(
        "--prompts",
        type=Path,
        help="text-conditioned models: COCO captions JSON, "
        "PartiPrompts TSV or one prompt per line, cycled over the "
        "seeds",
    )
    groups["prompts"].add_argument("--prompts-limit", type=int, help="use the first N prompts")
    groups["scheduler"].add_argument(
        "--scheduler", help="diffusers scheduler class (default: the model's)"
    )
    groups["metric_weights"].add_argument(
        "--inception-weights",
        type=Path,
        help=f"InceptionV3 weights file (default: ${INCEPTION_ENV} or the torch hub cache)",
    )
    groups["metric_weights"].add_argument(
        "--clip-weights",
        type=Path,
        help=f"open_clip weights file (default: ${CLIP_ENV} or the Hugging Face cache)",
    )
    groups["metric_weights"].add_argument(
        "--lpips-weights",
        type=Path,
        help=f"torchvision's AlexNet weights for lpips:alex (default: ${LPIPS_ENV} or the "
        "torch hub cache)",
    )
    groups["step_mode"].add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the UNet under the schedule's hooks (one graph per step kind)",
    )
    groups["step_mode"].add_argument(
        "--cuda-graphs",
        action="store_true",
        help="capture each step kind (F, each P<b>) once as a CUDA graph and replay it (CUDA only)",
    )
    return groups


def add_tracking_uri(parser: ArgumentParser) -> None:
    """``--tracking-uri``, one flag with one meaning for every command that logs or reads
    MLflow runs."""
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking URI (default: the suite's "
        "`tracking.uri` where a suite is given, else MLFLOW_TRACKING_URI, else "
        "MLflow's default sqlite:///mlflow.db)",
    )


class Command:
    """What a command module's ``add_parser`` gets: ``command(name, func, help, *groups)``
    adds a subcommand with the output flags and the named shared flag groups; ``sub`` and
    ``parents(*groups)`` for nested commands."""

    def __init__(self, sub):
        self.sub = sub

    def parents(self, *groups: str) -> list[ArgumentParser]:
        # fresh parents per command: argparse shares a parent's actions, so one command's
        # set_defaults would change every other command's default
        fresh = flag_groups()
        return [fresh["output"], *(fresh[x] for x in groups)]

    def __call__(self, name: str, func, help: str, *groups: str) -> ArgumentParser:
        parser = self.sub.add_parser(
            name, help=help, description=help, parents=self.parents(*groups)
        )
        parser.set_defaults(func=func)
        return parser
