"""Prompt lists of the text-to-image protocols: MS-COCO captions and PartiPrompts.

- ``coco``: the official ``captions_val2017.json`` (or any COCO captions file): the first
  caption of each image (first in the file's ``annotations`` order), images in ascending id
  order. The SD protocol of DeepCache and Flexiffusion takes the 5,000 val2017 images.
- ``parti``: PartiPrompts as published (``PartiPrompts.tsv``: a tab-separated header with a
  ``Prompt`` column; quotes are literal).
- ``lines``: one prompt per line; blank lines are skipped.

``auto`` decides from the content: a JSON object is COCO, a first line with tabs is a TSV
header, anything else is one prompt per line. Prompts keep their text, surrounding
whitespace stripped. Errors are :class:`PromptsError` (a ``ValueError``), one line naming
the file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from repro.infra.errors import UserError
from repro.infra.files import InputFileError, read_capped

FORMATS = ("auto", "coco", "parti", "lines")
PROMPTS_MAX_BYTES = 1 << 28  # COCO's train captions are under 100 MB


class PromptsError(UserError, ValueError):
    """A prompts file that is missing, empty or not in the expected format."""


def read_prompts(
    path: str | Path,
    format: str = "auto",
    limit: int | None = None,
) -> list[str]:
    """The prompts of ``path`` in file order (COCO: ascending image id), the first ``limit``."""
    path = Path(path)
    if format not in FORMATS:
        raise PromptsError(
            f"prompts file {path}: unknown format {format!r}; known: {', '.join(FORMATS)}"
        )
    if limit is not None and limit < 1:
        raise PromptsError(f"prompts file {path}: limit must be at least 1, got {limit}")
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise PromptsError(f"prompts file {path} does not exist{where}")
    try:
        text = read_capped(path, PROMPTS_MAX_BYTES).decode("utf-8-sig")
    except InputFileError as error:
        raise PromptsError(f"prompts file {error}") from None
    except UnicodeDecodeError as error:
        raise PromptsError(
            f"cannot read prompts file {path}: not UTF-8 text (byte {error.start})"
        ) from None
    if format == "auto":
        format = _detect(path, text)
    reader = {"coco": _coco, "parti": _parti, "lines": _lines}[format]
    prompts = reader(path, text)
    if not prompts:
        raise PromptsError(f"prompts file {path} holds no prompts (read as {format})")
    return prompts[:limit]


def _detect(path: Path, text: str) -> str:
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")) or path.suffix.lower() == ".json":
        return "coco"
    first = stripped.split("\n", 1)[0]
    if "\t" in first or path.suffix.lower() == ".tsv":
        return "parti"
    return "lines"


def _coco(path: Path, text: str) -> list[str]:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise PromptsError(
            f"prompts file {path} is not COCO captions JSON (not JSON: {error})"
        ) from None
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise PromptsError(
            f"prompts file {path} is not COCO captions JSON (no 'annotations' "
            "list of {image_id, caption})"
        )
    first: dict[int, str] = {}
    for index, entry in enumerate(annotations):
        try:
            image, caption = int(entry["image_id"]), entry["caption"]
        except (KeyError, TypeError, ValueError):
            raise PromptsError(
                f"prompts file {path} is not COCO captions JSON (annotations"
                f"[{index}] lacks image_id or caption)"
            ) from None
        if not isinstance(caption, str):
            raise PromptsError(f"prompts file {path}: annotations[{index}].caption is not text")
        first.setdefault(image, caption.strip())
    return [first[image] for image in sorted(first)]


def _parti(path: Path, text: str) -> list[str]:
    rows = list(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    header = [name.strip() for name in rows[0]] if rows else []
    if "Prompt" not in header:
        raise PromptsError(
            f"prompts file {path} has no 'Prompt' column in its tab-separated "
            f"header (got {header[:4]}); PartiPrompts.tsv starts with "
            "Prompt<TAB>Category<TAB>Challenge<TAB>Note"
        )
    column = header.index("Prompt")
    return [row[column].strip() for row in rows[1:] if len(row) > column and row[column].strip()]


def _lines(path: Path, text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]
