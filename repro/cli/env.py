"""``repro env``: what a bug report needs: versions, devices, threads,"""

from __future__ import annotations

import argparse
import json
import os

from repro.cli.common import Command


def add_parser(command: Command) -> None:
    env = command("env", cmd_env, "what a bug report needs: versions, devices, threads, platform")
    env.add_argument("--json", action="store_true", help="print one JSON object")


ENV_VARIABLES = (
    "HF_HUB_OFFLINE",
    "HF_HOME",
    "MLFLOW_TRACKING_URI",
    "REPRO_CACHE",
    "REPRO_DATA",
    "REPRO_INCEPTION_WEIGHTS",
    "REPRO_CLIP_WEIGHTS",
    "REPRO_KILL_AT",
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
)


def cmd_env(args: argparse.Namespace) -> int:
    """Versions, devices, threads and platform: what a bug report needs (as `diffusers-cli
    env`)."""
    import importlib.metadata
    import platform

    from repro import __version__

    info: dict[str, object] = {
        "repro": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    for package in (
        "torch",
        "torchvision",
        "diffusers",
        "transformers",
        "accelerate",
        "mlflow",
        "torch-fidelity",
        "open_clip_torch",
        "numpy",
        "DeepCache",
    ):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    import torch

    from repro.infra.timing import device_name

    info["torch"] = torch.__version__  # with its build suffix (+cu130, +cpu)
    info["torch CUDA build"] = torch.version.cuda or "none (CPU build)"
    info["devices"] = [f"cpu: {device_name('cpu')}"] + [
        f"cuda:{i}: {torch.cuda.get_device_name(i)} "
        f"({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
        for i in range(torch.cuda.device_count())
    ]
    info["torch threads"] = torch.get_num_threads()
    info["CPU cores"] = os.cpu_count()
    info["environment"] = {k: os.environ[k] for k in sorted(os.environ) if k in ENV_VARIABLES}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        shown = (
            "; ".join(value)
            if isinstance(value, list)
            else (
                ", ".join(f"{k}={v}" for k, v in value.items()) or "(none set)"
                if isinstance(value, dict)
                else value
            )
        )
        print(f"- {key}: {shown}")
    return 0
