"""Suite files read safely (size and alias caps, includes without cycles) and loaded into
the schema, with errors that name the file and the field (did you mean ...)."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, fields, is_dataclass, replace
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml
from pydantic import (
    TypeAdapter,
    ValidationError,
)

from repro.config.schema import Suite, SuiteError
from repro.infra.quoting import short

# -- loading (pure data) ---------------------------------------------------------------
_SUITE_KEYS = {"name", "version", "description", "tracking", "regression", "include", "experiments"}


SUITE_MAX_BYTES = 1 << 20  # a suite is a small text file (this also refuses /dev/zero)


SUITE_MAX_NODES = 100_000  # values with every YAML alias expanded (refuses alias bombs)


SUITE_MAX_LIST = 1_000  # entries of any one list (budgets, baselines, experiments, ...)


PACKAGED = Path(__file__).parents[1] / "suites"  # shipped with the package (`suites/` in the repo)


def packaged() -> dict[str, Path]:
    """The suites shipped with the package, by name (the file's stem)."""
    return {path.stem: path for path in sorted(PACKAGED.glob("*.yaml"))}


def find(text: str) -> Path:
    """A suite file, or the name of a packaged suite (``smoke`` is the package's
    ``suites/smoke.yaml``), so ``repro run smoke`` works from any directory. An existing path
    wins over a name."""
    path = Path(text)
    if path.exists():
        return path
    shipped = packaged()
    if text in shipped:
        inside = Path(os.path.relpath(shipped[text]))  # shown relative where it can be
        return shipped[text] if inside.parts[0] == ".." else inside
    if path.stem in shipped and path.name == shipped[path.stem].name:
        raise SuiteError(
            f"{short(text)}: suite file not found here; the packaged suite "
            f"of that name runs from any directory as `{path.stem}` (`repro run "
            f"{path.stem}`)"
        )
    if path.suffix or len(path.parts) > 1:
        return path  # a file that is not there: load names it
    raise SuiteError(
        f"{short(text)}: no such suite file, nor a packaged suite (known: {', '.join(shipped)})"
    )


def load(path: str | Path) -> Suite:
    """Read, include, merge and type-check a suite file."""
    path = Path(path)
    raw = _read_with_includes(path, ())
    experiment_keys = {k: v for k, v in raw.items() if k not in _SUITE_KEYS}
    listed = "experiments" in raw
    entries = raw.get("experiments")
    if not listed:
        model = experiment_keys.get("model")
        entries = [{"name": model if isinstance(model, str) else raw.get("name")}]
    if not isinstance(entries, list) or not entries:
        raise SuiteError(f"{path}: 'experiments' must be a non-empty list of mappings")
    experiments = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise SuiteError(f"{path}: experiments[{index}] must be a mapping")
        experiments.append(_merge(experiment_keys, entry))
    data = {k: raw[k] for k in ("name", "version", "description", "tracking") if k in raw}
    data.update(experiments=experiments, file=str(path))
    if "regression" in raw:
        data["regression"] = raw["regression"]
    misused = _misused_bool(data, Suite, [])
    if misused:
        where = _dotted(_as_written(misused, entries if listed else None))
        raise SuiteError(f"{path}: field '{where}': true/false where a number is expected")
    try:
        loaded = TypeAdapter(Suite).validate_python(data)
    except ValidationError as error:
        raise SuiteError(
            f"{path}: {_describe(error, Suite, entries if listed else None)}"
        ) from None
    return replace(loaded, digest=settings_digest(loaded))


# not settings of the results: where the file is, the gate's tolerances and where the run
# is logged (a run resumes, and an edited tracking section is logged by the resumed run)
_UNDIGESTED = ("file", "digest", "regression", "tracking")


def settings_digest(suite: Suite) -> str:
    """Digest of the resolved settings: every field after includes, merging and defaults,
    so a run resumes only under the same settings however the YAML spelled them, and a
    changed default starts a new run instead of resuming one made under the old."""
    settings = {k: v for k, v in asdict(suite).items() if k not in _UNDIGESTED}
    for experiment in settings["experiments"]:  # added later: the default leaves digests be
        if experiment["evaluation"]["primary"] is None:
            del experiment["evaluation"]["primary"]
    text = json.dumps(settings, sort_keys=True, allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_with_includes(path: Path, seen: tuple[Path, ...]) -> dict:
    resolved = path.resolve()
    if resolved in seen:
        cycle = " -> ".join(map(str, (*seen, resolved)))
        raise SuiteError(f"{path}: include cycle: {cycle}")
    try:
        raw = yaml.load(_read_text(path), _SuiteLoader)
        _check_size(raw)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = f": {error.problem}" if isinstance(error, _SuiteYAMLError) else ""
        raise SuiteError(f"{path}: not valid YAML{where}{problem}") from None
    except _TooLarge as error:
        raise SuiteError(f"{path}: {error}") from None
    except RecursionError:
        raise SuiteError(f"{path}: nested too deeply") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: a suite is a YAML mapping of fields")
    include = raw.pop("include", None)
    if include is None:
        return raw
    if not isinstance(include, str):
        raise SuiteError(f"{path}: 'include' must be a file path")
    if not (path.parent / include).is_file():
        raise SuiteError(f"{path}: field 'include': {path.parent / include} not found")
    base = _read_with_includes(path.parent / include, (*seen, resolved))
    return _merge(base, raw)


def _read_text(path: Path) -> str:
    """The UTF-8 text of a suite file of at most :data:`SUITE_MAX_BYTES` (a FIFO or a device
    is refused: reading one could hang or never end)."""
    from repro.infra.files import InputFileError, read_capped

    if not path.exists() and not path.is_symlink():
        raise SuiteError(f"{path}: suite file not found")
    if path.is_dir():
        raise SuiteError(f"{path}: is a directory, not a suite file")
    try:
        data = read_capped(path, SUITE_MAX_BYTES)
    except InputFileError as error:
        raise SuiteError(f"{error}; a suite is a small YAML file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SuiteError(f"{path}: not UTF-8 text (byte {error.start})") from None


class _SuiteYAMLError(yaml.MarkedYAMLError):
    """YAML that parses but is refused for a suite (a key given twice)."""


class _SuiteLoader(yaml.SafeLoader):
    """Safe YAML refusing a duplicate key (YAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                continue  # refused by validation, naming the field
            if key in seen:
                raise _SuiteYAMLError(
                    problem=f"key {short(key)} given twice", problem_mark=key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


class _TooLarge(ValueError):
    """Suite data over a size limit."""


def _check_size(raw: Any) -> None:
    """Refuse data whose expanded size (aliases repeated, long strings weighed by length) is
    over :data:`SUITE_MAX_NODES` or with a list over :data:`SUITE_MAX_LIST`, before merging,
    validation or an error message expands it."""
    sizes: dict[int, int] = {}

    def size(value: Any, where: str) -> int:
        if isinstance(value, str):
            return 1 + len(value) // 100
        if not isinstance(value, (list, dict)):
            return 1
        if id(value) not in sizes:
            if isinstance(value, list) and len(value) > SUITE_MAX_LIST:
                raise _TooLarge(f"'{where}' has {len(value)} entries; at most {SUITE_MAX_LIST}")
            sizes[id(value)] = -1  # in progress: meeting it again is a cycle
            items = value.items() if isinstance(value, dict) else enumerate(value)
            sizes[id(value)] = 1 + sum(size(v, f"{where}.{k}".lstrip(".")) for k, v in items)
        if sizes[id(value)] < 0:
            raise _TooLarge("a YAML alias refers to itself")
        return sizes[id(value)]

    total = size(raw, "")
    if total > SUITE_MAX_NODES:
        raise _TooLarge(f"{total} values with YAML aliases expanded; at most {SUITE_MAX_NODES}")


def _merge(base: Mapping, override: Mapping) -> dict:
    """Deep merge: mappings merge key by key, anything else is replaced by ``override``."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError, root: type, entries: list | None) -> str:
    """One pydantic error as one line: dotted field path, problem, did-you-mean. An unknown
    key comes first (a typo also makes the intended field missing). ``entries``: a listed
    suite's own experiment entries; a key written at the top level (a single experiment, or
    the shared defaults of a listed suite) is named without ``experiments[i].``."""
    rank = {"unexpected_keyword_argument": 0, "missing": 1}
    first = min(error.errors(), key=lambda e: rank.get(e["type"], 2))
    loc = _as_written(list(first["loc"]), entries, first["type"] == "missing")
    where = _dotted(loc)
    if first["type"] == "unexpected_keyword_argument":
        known = _field_names_at(root, list(first["loc"][:-1]))
        if len(loc) == 1:  # a top-level key
            known += [k for k in _SUITE_KEYS if k not in known]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if not close:  # a key of a nested section written a level too high (budgets:)
            nested = _nested_names(root, list(first["loc"][:-1]))
            close = [nested[c] for c in difflib.get_close_matches(str(loc[-1]), nested, n=1)]
        hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(known)}"
        return f"unknown field '{where}'{hint}"
    if first["type"] == "missing":
        return f"missing field '{where}'"
    return f"field '{where}': {first['msg']} (got {short(first.get('input'))})"


def _as_written(loc: list, entries: list | None, missing: bool = False) -> list:
    """``loc`` without ``experiments[i]`` where the key was written at the top level (a
    single experiment, or the shared defaults of a listed suite)."""
    if (
        loc[:1] == ["experiments"]
        and len(loc) > 2
        and (entries is None or (not missing and not _written_in(entries[loc[1]], loc[2:])))
    ):
        return loc[2:]
    return loc


def _dotted(loc: list) -> str:
    """``["baselines", 0, "steps"]`` -> ``baselines[0].steps``."""
    where = ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in loc)
    return where.replace(".[", "[")


def _misused_bool(value: Any, hint: Any, loc: list) -> list | None:
    """The location of the first true/false given where the type takes no bool (pydantic
    would read it as 1 or 0, so ``steps: true`` ran one step), or None."""
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if isinstance(value, bool):
        return None if bool in options or Any in options else loc
    cls = next((o for o in options if is_dataclass(o)), None)
    if cls is not None and isinstance(value, dict):
        hints = get_type_hints(cls, include_extras=False)
        items = [(key, hints[key]) for key in value if key in hints]
        return next(
            (found for key, sub in items if (found := _misused_bool(value[key], sub, [*loc, key]))),
            None,
        )
    sequence = next((o for o in options if get_origin(o) is tuple), None)
    if sequence is not None and isinstance(value, list):
        item = get_args(sequence)[0]
        return next(
            (
                found
                for index, entry in enumerate(value)
                if (found := _misused_bool(entry, item, [*loc, index]))
            ),
            None,
        )
    mapping = next((o for o in options if get_origin(o) is dict), None)
    if mapping is not None and isinstance(value, dict):
        item = get_args(mapping)[1]
        return next(
            (
                found
                for key, entry in value.items()
                if (found := _misused_bool(entry, item, [*loc, key]))
            ),
            None,
        )
    return None


def _written_in(data: Any, loc: list) -> bool:
    """Whether the path ``loc`` exists in the raw YAML data ``data``."""
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return False
    return True


def _dataclass_at(cls: type, loc: list) -> type:
    """The dataclass reached by following ``loc`` from ``cls``."""
    for part in loc:
        hints = get_type_hints(cls)
        if isinstance(part, int) or part not in hints:  # a list index or a mapping's key
            continue
        hint = hints[part]
        cls = next((a for a in (hint, *get_args(hint)) if is_dataclass(a)), cls)
    return cls


def _field_names_at(cls: type, loc: list) -> list[str]:
    """Field names of the dataclass reached by following ``loc`` from ``cls``."""
    return [f.name for f in fields(_dataclass_at(cls, loc)) if f.name not in ("file", "digest")]


def _nested_names(cls: type, loc: list) -> dict[str, str]:
    """Fields of the sections (dataclass fields) one level below ``loc``: name -> dotted."""
    cls = _dataclass_at(cls, loc)
    names: dict[str, str] = {}
    for section, hint in get_type_hints(cls).items():
        if is_dataclass(hint):
            for f in fields(hint):
                names.setdefault(f.name, f"{section}.{f.name}")
    return names
