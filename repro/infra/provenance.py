"""Where a result came from in version control: the commit and branch of the harness, which
``repro gate --branch`` selects baselines by. No imports beyond the standard library."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git_state() -> dict[str, str | bool | None]:
    """The harness's git commit and branch (``$REPRO_GIT_BRANCH`` where a CI checkout is
    detached; none then otherwise), and whether its working tree differed from that commit
    (``git_dirty``; tracked files only) with a digest of the difference (``git_diff``): a
    result made from edited code does not pass for the commit's."""
    import hashlib

    branch = os.environ.get("REPRO_GIT_BRANCH") or _git("rev-parse", "--abbrev-ref", "HEAD")
    commit = _git("rev-parse", "HEAD")
    diff = _git("diff", "HEAD", "--no-ext-diff", "--binary") if commit else None
    return {
        "git_commit": commit,
        "git_branch": None if branch == "HEAD" else branch,
        "git_dirty": None if commit is None else bool(diff),
        "git_diff": (hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else None),
    }


REPOSITORY = Path(__file__).parent  # the harness's checkout, where it is one


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, cwd=REPOSITORY, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
