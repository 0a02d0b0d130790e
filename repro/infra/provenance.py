"""Where a result came from in version control: the commit and branch of the harness, which
``repro gate --branch`` selects baselines by. No imports beyond the standard library."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_state() -> dict[str, str | None]:
    """The harness's git commit and branch (``$REPRO_GIT_BRANCH`` where a CI checkout is
    detached; none then otherwise)."""
    branch = os.environ.get("REPRO_GIT_BRANCH") or _git("rev-parse", "--abbrev-ref", "HEAD")
    return {"git_commit": _git("rev-parse", "HEAD"),
            "git_branch": None if branch == "HEAD" else branch}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
