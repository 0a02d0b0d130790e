"""Suites: declarative YAML experiments loaded into frozen dataclasses.

YAML keys are the dataclass fields (pydantic checks types and refuses unknown keys; errors
name the field with a did-you-mean). ``include: other.yaml`` makes another suite the
defaults, the including file's keys winning (mappings merge, lists replace). A suite with
``experiments:`` runs each entry merged over its own top-level experiment keys; without it,
the top level is the one experiment. Loading is pure data; :func:`check` then resolves what
needs the registry (model ids, schedule lengths, reachable budgets) before any heavy work.

The names below are the suite API that the runner, the gate and users import; the code
lives in :mod:`.schema` (fields and defaults), :mod:`.loading` (files to dataclasses),
:mod:`.checks` (checks and the row plan) and :mod:`.plan` (what the runner derives).
"""

from repro.config.checks import (
    OPTIONAL_FIELDS,
    cautions,
    check,
    folder_clash,
    plain_name_problem,
    preflight,
)
from repro.config.loading import (
    PACKAGED,
    SUITE_MAX_BYTES,
    SUITE_MAX_LIST,
    SUITE_MAX_NODES,
    find,
    load,
    packaged,
    settings_digest,
)
from repro.config.plan import (
    deepcache_branch,
    row_sampler,
    searched_name,
    segment_space,
    slug,
    technique_label,
    training_steps,
)
from repro.config.schema import (
    COST_TABLES,
    DEFAULT_TOLERANCES,
    EXPERIMENT_NAME_MAX,
    LATENCY_BATCH_MAX,
    MIN_TIMING_REPEATS,
    PUBLISHED_KEYS,
    ROW_NAME_MAX,
    STEPWISE_GRIDS,
    SUITE_NAME_MAX,
    Baseline,
    Evaluation,
    Experiment,
    Primary,
    Prompts,
    Published,
    Regression,
    RowPlan,
    Search,
    Suite,
    SuiteError,
    Tolerance,
    Tracking,
)
from repro.search.loop import Evolution

__all__ = [
    "COST_TABLES",
    "DEFAULT_TOLERANCES",
    "EXPERIMENT_NAME_MAX",
    "LATENCY_BATCH_MAX",
    "MIN_TIMING_REPEATS",
    "OPTIONAL_FIELDS",
    "PACKAGED",
    "PUBLISHED_KEYS",
    "ROW_NAME_MAX",
    "STEPWISE_GRIDS",
    "SUITE_MAX_BYTES",
    "SUITE_MAX_LIST",
    "SUITE_MAX_NODES",
    "SUITE_NAME_MAX",
    "Baseline",
    "Evaluation",
    "Evolution",
    "Experiment",
    "Primary",
    "Prompts",
    "Published",
    "Regression",
    "RowPlan",
    "Search",
    "Suite",
    "SuiteError",
    "Tolerance",
    "Tracking",
    "cautions",
    "check",
    "deepcache_branch",
    "find",
    "folder_clash",
    "load",
    "packaged",
    "plain_name_problem",
    "preflight",
    "row_sampler",
    "searched_name",
    "segment_space",
    "settings_digest",
    "slug",
    "technique_label",
    "training_steps",
]
