"""Quoting user input in one-line errors: a prefix of a value, never the whole of a huge one
(a 2 GB expanded YAML alias or a billion-seed range must not become the message)."""

from __future__ import annotations

from typing import Any


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, with the full length said."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
