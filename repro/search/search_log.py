"""The search's JSONL log: one line per scored candidate with the context it was scored in,
so that a restarted search reuses exactly the scores that still apply."""

from __future__ import annotations

import json
from pathlib import Path

from repro.infra.atomic import WriteFailed
from repro.infra.errors import UserError
from repro.search.loop import Record


class SearchLogError(UserError, ValueError):
    """A log line that cannot be read back."""


def read_scores(path: Path, context: dict) -> dict[str, float]:
    """Schedule text -> fitness for every logged record scored under ``context``."""
    if not path.is_file():
        return {}
    scores = {}
    text = path.read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()  # a line cut short by a killed run: that candidate is scored again
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if entry["context"] == context:
                scores[entry["schedule"]] = float(entry["fitness"])
        except (ValueError, KeyError, TypeError) as error:
            raise SearchLogError(f"{path}:{number}: unreadable search log line ({error})") from None
    return scores


def appender(path: Path, context: dict):
    """A callback appending each new record as one flushed line (a crash loses at most the
    candidate being scored)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(path)

    def append(record: Record) -> None:
        try:
            with path.open("a") as f:
                f.write(json.dumps({**record.to_dict(), "context": context}) + "\n")
        except OSError as error:  # disk full: one line naming the log (its lines so far stay)
            raise WriteFailed(error.errno, error.strerror, str(path)) from None

    return append


def _drop_torn_tail(path: Path) -> None:
    """Cut a line a killed run left unfinished, so the next line does not extend it."""
    if not path.is_file():
        return
    with path.open("rb+") as f:
        data = f.read()
        whole = data.rfind(b"\n") + 1
        if whole < len(data):
            f.truncate(whole)
