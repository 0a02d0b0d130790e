"""The identity of the results.json format: the schema string the runner writes and every
reader checks, in one place."""

NAME = "flexiffusion-repro/results"
VERSION = 1
SCHEMA = f"{NAME}@{VERSION}"
PREFIX = f"{NAME}@"


def is_results(data) -> bool:
    """Whether parsed JSON claims to be a results file (of any version)."""
    return isinstance(data, dict) and str(data.get("schema", "")).startswith(PREFIX)


def schema_problem(schema) -> str | None:
    """Why a file with this ``schema`` value cannot be read as results, if so: it is not a
    results file, or a version newer than this harness knows (never misread)."""
    if not (isinstance(schema, str) and schema.startswith(PREFIX)):
        return f"schema {schema!r} is not {PREFIX}N"
    version = schema.removeprefix(PREFIX)
    if not version.isdigit() or not 1 <= int(version) <= VERSION:
        return f"schema {schema} is not one this harness reads ({SCHEMA} and earlier)"
    return None
