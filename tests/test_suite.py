"""Suites: YAML -> frozen dataclasses, includes, registry checks, one-line errors, CLI.

Pure data and the model registry only: nothing is sampled and no weights are loaded.
"""

import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml

from repro import models
from repro.cli import main as cli
from repro.config import suite
from repro.config.suite import SuiteError
from repro.metrics.protocols import METRICS

HEAD = "name: t\nversion: 1\n"


def write(directory: Path, text: str, name: str = "suite.yaml") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def validate(capsys, *paths) -> tuple[int, str, str]:
    code = cli.main(["validate", *map(str, paths)])
    out, err = capsys.readouterr()
    return code, out, err


def load_error(path: Path) -> str:
    """The SuiteError message of loading and checking ``path``."""
    with pytest.raises(SuiteError) as info:
        suite.check(suite.load(path))
    return str(info.value)


# -- a suite of two experiments sharing top-level keys ----------------------------------
TWO = """\
name: two
version: 3
steps: 20
spacing: trailing
search:
  methods: [segment, stepwise, random]
  budgets: [2, 3]
  n_eval: 8
  population: 6
  tol: 0.15  # the step-wise space's nearest to 3x out of 20 steps: 3.33x
baselines:
  - technique: deepcache
  - {technique: deepcache-nonuniform, center: 10, power: 1.4}
  - technique: fewer-steps
  - technique: sampler-steps
  - {technique: sampler-steps, scheduler: DPMSolverMultistepScheduler}
evaluation:
  seeds: "1000:1032"
  metrics: ["fid:digits-cnn", "rfid:digits-cnn"]
  reference: digits
  latency_repeats: 2
  grid: 8
regression:
  metrics: {fid: {abs: 1.0, rel: 0.05}}
  speed: {rel: 0.15}
experiments:
  - {name: plain, model: digits-ddpm}
  - name: cond
    model: digits-cond
    steps: 10
    evaluation:
      metrics: ["rfid:digits-cnn", "acc:digits-cnn"]
"""


@pytest.fixture
def two(tmp_path):
    return write(tmp_path, TWO, "two.yaml")


def test_shared_keys_reach_every_experiment_and_plan_rows(two):
    loaded = suite.load(two)
    assert (loaded.name, loaded.version, loaded.file) == ("two", 3, str(two))
    assert loaded.digest.startswith("sha256:")
    assert [(e.name, e.model, e.steps) for e in loaded.experiments] == [
        ("plain", "digits-ddpm", 20),
        ("cond", "digits-cond", 10),
    ]  # an experiment's own wins
    for experiment in loaded.experiments:  # shared top-level keys reach every experiment
        assert experiment.search.budgets == (2.0, 3.0)
        assert experiment.search.methods == ("segment", "stepwise", "random")
        assert (experiment.search.n_eval, experiment.search.population) == (8, 6)
        assert experiment.search.generations is None  # dataclass default
        assert [b.technique for b in experiment.baselines] == [
            "deepcache",
            "deepcache-nonuniform",
            "fewer-steps",
            "sampler-steps",
            "sampler-steps",
        ]
        assert experiment.sampler == models.Sampler(None, "trailing")

    plans = suite.check(loaded)
    assert list(plans) == ["plain", "cond"]
    expected = [
        "teacher",
        "segment @2x",
        "stepwise @2x",
        "random @2x",
        "segment @3x",
        "stepwise @3x",
        "random @3x",
        "deepcache @2x",
        "deepcache @3x",
        "deepcache-nonuniform @2x",
        "deepcache-nonuniform @3x",
        "fewer-steps @2x",
        "fewer-steps @3x",
        "sampler-steps @2x",
        "sampler-steps @3x",
        "sampler-steps DPMSolverMultistep @2x",
        "sampler-steps DPMSolverMultistep @3x",
    ]
    for plan in plans.values():
        assert [row.name for row in plan] == expected
        assert [row.kind for row in plan] == ["teacher"] + ["searched"] * 6 + ["baseline"] * 10
        searched = plan[1:7]
        assert [row.method for row in searched[:3]] == [
            "segment-evolution",
            "stepwise-evolution",
            "segment-random",
        ]
        assert [row.budget for row in searched] == [2.0] * 3 + [3.0] * 3
        assert plan[0].budget is None
        assert [(row.method, row.budget, row.knob) for row in plan[7:9]] == [
            ("deepcache", 2.0, None),
            ("deepcache", 3.0, None),
        ]
        assert plan[7].baseline == suite.Baseline("deepcache")


def test_an_experiments_evaluation_deep_merges_over_the_shared_one(two):
    plain, cond = suite.load(two).experiments
    assert plain.evaluation.metrics == ("fid:digits-cnn", "rfid:digits-cnn")
    # cond replaces the metrics list; the other evaluation keys stay the shared ones
    assert cond.evaluation.metrics == ("rfid:digits-cnn", "acc:digits-cnn")
    for evaluation in (plain.evaluation, cond.evaluation):
        assert evaluation.reference == "digits"
        assert evaluation.seeds == "1000:1032"
        assert (evaluation.latency_repeats, evaluation.grid) == (2, 8)
        default = suite.Evaluation()  # set nowhere: the dataclass defaults
        assert (evaluation.batch_size, evaluation.latency_batch) == (
            default.batch_size,
            default.latency_batch,
        )
    assert cond.search == plain.search


def test_suite_dataclasses_are_frozen(two):
    loaded = suite.load(two)
    experiment = loaded.experiments[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        experiment.steps = 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        experiment.search.budgets = (4.0,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        experiment.evaluation.metrics = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        experiment.baselines[0].branch = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        suite.check(loaded)["plain"][0].name = "x"
    assert isinstance(loaded.experiments, tuple)
    assert isinstance(experiment.baselines, tuple)
    assert isinstance(experiment.search.budgets, tuple)


# -- a single experiment --------------------------------------------------------------
def test_single_experiment_suite_is_named_after_its_model(tmp_path):
    path = write(
        tmp_path,
        """\
        name: solo
        version: 3
        model: digits-ddpm
        steps: 10
        search:
          methods: [segment]
          budgets: [2]
        baselines:
          - {technique: fewer-steps, keep: [5, 4]}
          - {technique: deepcache, intervals: [2], branch: 1}
          - {technique: schedule, name: mine, schedule: "F P0 | F N N N N N N N"}
          - {technique: sampler-steps, steps: [5]}
          - {technique: sampler-steps}
        tracking: {enabled: false}
    """,
    )
    loaded = suite.load(path)
    assert (loaded.name, loaded.version) == ("solo", 3)
    assert loaded.tracking == suite.Tracking(enabled=False)
    (experiment,) = loaded.experiments
    assert experiment.name == "digits-ddpm"
    assert (experiment.model, experiment.steps) == ("digits-ddpm", 10)
    assert experiment.evaluation == suite.Evaluation()  # every default
    plan = suite.check(loaded)["digits-ddpm"]
    assert [row.name for row in plan] == [
        "teacher",
        "segment @2x",
        "fewer-steps 5",
        "fewer-steps 4",
        "deepcache N=2 b=1",
        "mine",
        "sampler-steps 5",
        "sampler-steps @2x",
    ]
    assert [row.knob for row in plan] == [None, None, 5, 4, 2, None, 5, None]
    assert plan[5].method == "schedule"
    assert [row.method for row in plan[6:]] == ["sampler-steps"] * 2


def test_search_settings_default_to_autodiffusions_and_every_segment_length(tmp_path):
    path = write(tmp_path, HEAD + "model: digits-ddpm\nsteps: 100\n")
    (experiment,) = suite.load(path).experiments
    s = experiment.search
    assert (s.population, s.parents, s.mutations, s.crossovers) == (50, 10, 25, 15)
    assert s.evolution == suite.Evolution(50, 10, 25, 15) and s.seed_uniform
    space = suite.segment_space(experiment, 100)
    assert space.seg_lens == tuple(range(1, 11))  # 3, 6, 7, 8, 9 do not divide 100
    path = write(
        tmp_path,
        HEAD + "model: digits-ddpm\nsteps: 100\n"
        "search: {max_seg_len: 4, branches: [1], seed_uniform: false}\n",
    )
    (experiment,) = suite.load(path).experiments
    assert suite.segment_space(experiment, 100).seg_lens == (1, 2, 3, 4)
    assert not experiment.search.seed_uniform


# -- include ------------------------------------------------------------------------
def test_include_merges_template_under_including_file(tmp_path, monkeypatch):
    write(
        tmp_path,
        """\
        name: template
        version: 1
        description: from the template
        steps: 20
        search:
          methods: [segment, stepwise]
          budgets: [2, 3]
          n_eval: 7
        evaluation:
          metrics: ["rfid:digits-cnn"]
          grid: 16
        baselines:
          - technique: deepcache
          - technique: fewer-steps
        experiments:
          - {name: a, model: digits-ddpm}
    """,
        "templates/base.yaml",
    )
    path = write(
        tmp_path,
        """\
        include: ../templates/base.yaml   # relative to this file, not to the cwd
        name: child
        search:
          budgets: [2]
        evaluation:
          grid: 8
        baselines:
          - {technique: deepcache-nonuniform, center: 10, power: 1.4}
    """,
        "suites/child.yaml",
    )
    monkeypatch.chdir(tmp_path / "templates")  # somewhere the relative path would miss
    loaded = suite.load(path)
    assert (loaded.name, loaded.version, loaded.description) == ("child", 1, "from the template")
    (experiment,) = loaded.experiments
    assert experiment.name == "a" and experiment.steps == 20
    assert experiment.search.budgets == (2.0,)  # lists replace
    assert experiment.search.methods == ("segment", "stepwise")  # nested mappings merge
    assert experiment.search.n_eval == 7
    assert experiment.evaluation.grid == 8
    assert experiment.evaluation.metrics == ("rfid:digits-cnn",)
    assert [b.technique for b in experiment.baselines] == ["deepcache-nonuniform"]
    assert [row.name for row in suite.check(loaded)["a"]] == [
        "teacher",
        "segment @2x",
        "stepwise @2x",
        "deepcache-nonuniform @2x",
    ]


def test_chained_includes(tmp_path):
    write(
        tmp_path,
        HEAD + "model: digits-ddpm\nsteps: 20\nsearch: {n_eval: 5, seed: 1}\n",
        "base.yaml",
    )
    write(
        tmp_path,
        "include: base.yaml\nname: middle\nsearch: {seed: 2, population: 4}\n",
        "middle.yaml",
    )
    path = write(tmp_path, "include: middle.yaml\nsteps: 10\nsearch: {population: 3}\n", "top.yaml")
    loaded = suite.load(path)
    assert loaded.name == "middle"
    (experiment,) = loaded.experiments
    assert experiment.steps == 10
    search = experiment.search
    assert (search.n_eval, search.seed, search.population) == (5, 2, 3)


def test_include_cycle_is_named(tmp_path, capsys):
    write(tmp_path, HEAD + "include: b.yaml\n", "a.yaml")
    write(tmp_path, "include: a.yaml\nmodel: digits-ddpm\nsteps: 20\n", "b.yaml")
    a, b = (str((tmp_path / n).resolve()) for n in ("a.yaml", "b.yaml"))
    message = load_error(tmp_path / "a.yaml")
    assert message.startswith(f"{tmp_path / 'a.yaml'}: include cycle: ")
    assert message.endswith(f"{a} -> {b} -> {a}")

    write(tmp_path, "include: self.yaml\n", "self.yaml")
    assert load_error(tmp_path / "self.yaml").endswith(
        f"include cycle: {tmp_path.resolve() / 'self.yaml'} -> {tmp_path.resolve() / 'self.yaml'}"
    )
    code, _, err = validate(capsys, tmp_path / "a.yaml")
    assert code == 2 and "include cycle" in err and err.count("\n") == 1


def test_missing_include_names_the_file(tmp_path, capsys):
    path = write(tmp_path, HEAD + "include: templates/nowhere.yaml\n", "sub/suite.yaml")
    message = load_error(path)
    assert message == (
        f"{path}: field 'include': {tmp_path / 'sub' / 'templates' / 'nowhere.yaml'} not found"
    )
    code, out, err = validate(capsys, path)
    assert (code, out) == (2, "")
    assert err == f"repro: error: {message}\n"

    bad = write(tmp_path, HEAD + "include: [a.yaml]\n", "list.yaml")
    assert load_error(bad) == f"{bad}: 'include' must be a file path"


# -- malformed suites: exit code 2, one stderr line naming the field ---------------------
SINGLE = HEAD + "model: digits-ddpm\nsteps: 20\n"
LISTED = HEAD + "steps: 20\nexperiments:\n  - {name: a, model: digits-ddpm}\n"

BAD = {
    # loading (pydantic): unknown keys with did-you-mean, types, missing fields
    "top-level typo": (
        SINGLE + "serch: {budgets: [2]}\n",
        ["unknown field 'serch'; did you mean 'search'?"],
    ),
    "nested key at the top level": (
        SINGLE + "budgts: [2]\n",
        ["unknown field 'budgts'; did you mean 'search.budgets'?"],
    ),
    "typo in shared defaults": (
        LISTED + "serch: {n_eval: 3}\n",
        ["unknown field 'serch'; did you mean 'search'?"],
    ),
    "top-level suite key typo": (
        SINGLE + "descripton: x\n",
        ["unknown field 'descripton'; did you mean 'description'?"],
    ),
    "typo in an entry": (
        LISTED + "  - {name: b, model: digits-cond, sterps: 3}\n",
        ["unknown field 'experiments[1].sterps'; did you mean 'steps'?"],
    ),
    "nested typo": (
        SINGLE + "search: {n_evals: 5}\n",
        ["unknown field 'search.n_evals'; did you mean 'n_eval'?"],
    ),
    "nested typo in a list": (
        SINGLE + "baselines: [{technique: deepcache, intervalz: [2]}]\n",
        ["unknown field 'baselines[0].intervalz'; did you mean 'intervals'?"],
    ),
    "tracking typo": (
        SINGLE + "tracking: {enabeld: false}\n",
        ["unknown field 'tracking.enabeld'; did you mean 'enabled'?"],
    ),
    "steps: ten": (
        SINGLE.replace("steps: 20", "steps: ten"),
        ["field 'steps': Input should be a valid integer", "(got 'ten')"],
    ),
    "budgets: [two]": (
        SINGLE + "search: {budgets: [two]}\n",
        ["field 'search.budgets[0]': Input should be a valid number", "(got 'two')"],
    ),
    "search not a mapping": (SINGLE + "search: 3\n", ["field 'search': ", "(got 3)"]),
    "model not a string": (
        SINGLE.replace("model: digits-ddpm", "model: 3"),
        ["field 'model': Input should be a valid string (got 3)"],
    ),
    "missing model": (HEAD + "steps: 20\n", ["missing field 'model'"]),
    "missing model in an entry": (
        LISTED + "  - {name: b}\n",
        ["missing field 'experiments[1].model'"],
    ),
    "missing version": ("name: t\nmodel: digits-ddpm\nsteps: 20\n", ["missing field 'version'"]),
    "invalid YAML": (
        SINGLE + "search:\n  budgets: [2]\n    n_eval: 3\n",
        ["not valid YAML at line 7"],
    ),
    "unclosed flow": (SINGLE + "search: {budgets: [2\n", ["not valid YAML at line"]),
    "not a mapping": ("- model: digits-ddpm\n", ["a suite is a YAML mapping of fields"]),
    "empty experiments": (
        SINGLE + "experiments: []\n",
        ["'experiments' must be a non-empty list of mappings"],
    ),
    "experiment not a mapping": (
        LISTED + "  - just-a-name\n",
        ["experiments[1] must be a mapping"],
    ),
    # checking against the registry
    "unknown model": (
        SINGLE.replace("digits-ddpm", "digits-ddp"),
        [
            "experiment 'digits-ddp': field 'model': unknown value 'digits-ddp'; "
            "did you mean 'digits-ddpm'?"
        ],
    ),
    "unknown method": (
        SINGLE + "search: {methods: [segment, stepwse]}\n",
        ["field 'search.methods': unknown value 'stepwse'; did you mean 'stepwise'?"],
    ),
    "unknown metric": (
        SINGLE + "evaluation: {metrics: ['rfid:digits-cn']}\n",
        [
            "field 'evaluation.metrics': unknown value 'rfid:digits-cn'; "
            "did you mean 'rfid:digits-cnn'?"
        ],
    ),
    "latency is not a metric here": (
        SINGLE + "evaluation: {metrics: [latency]}\n",
        ["field 'evaluation.metrics': unknown value 'latency'"],
    ),
    "fid without reference": (
        SINGLE + "evaluation: {metrics: ['fid:digits-cnn']}\n",
        ["field 'evaluation.reference': fid metrics need a reference", "digits"],
    ),
    "unknown reference": (
        SINGLE + "evaluation: {metrics: ['fid:digits-cnn'], reference: dig}\n",
        ["field 'evaluation.reference': unknown value 'dig'"],
    ),
    "unknown extractor": (
        SINGLE + "search: {extractor: digits}\n",
        ["field 'search.extractor': unknown value 'digits'"],
    ),
    "bad seeds": (SINGLE + "evaluation: {seeds: '5:x'}\n", ["field 'evaluation.seeds': ", "'5:x'"]),
    "unknown scheduler": (
        SINGLE + "scheduler: FooScheduler\n",
        ["field 'scheduler': unknown diffusers scheduler class 'FooScheduler'"],
    ),
    "zero steps": (
        SINGLE.replace("steps: 20", "steps: 0"),
        ["field 'steps': Input should be greater than 0 (got 0)"],
    ),
    "too many steps": (SINGLE.replace("steps: 20", "steps: 5000"), ["field 'steps': ", "5000"]),
    "impossible budget": (
        SINGLE + "search: {budgets: [2, 50]}\n",
        ["field 'search.budgets': budget 50.0x is out of reach"],
    ),
    "impossible stepwise budget": (
        SINGLE + "search: {methods: [stepwise], budgets: [0.5]}\n",
        ["field 'search.budgets': ", "0.5x"],
    ),
    "segment length beyond the steps": (
        SINGLE + "search: {seg_lens: [3, 21]}\n",
        ["field 'search.seg_lens': segment lengths must lie in 1..20; got [3, 21]"],
    ),
    "schedule bad token": (
        SINGLE.replace("steps: 20", "steps: 4")
        + ("baselines: [{technique: schedule, name: s, schedule: 'F P0 X N'}]\n"),
        ["field 'baselines[0].schedule': bad schedule token 'X' at step 3"],
    ),
    "schedule branch beyond the model": (
        SINGLE.replace("steps: 20", "steps: 4")
        + ("baselines: [{technique: schedule, name: s, schedule: 'F P12 N N'}]\n"),
        ["field 'baselines[0].schedule': bad schedule token 'P12' at step 2", "0..11"],
    ),
    "schedule wrong length": (
        SINGLE.replace("steps: 20", "steps: 4")
        + ("baselines: [{technique: schedule, name: s, schedule: 'F P0 N'}]\n"),
        ["field 'baselines[0].schedule': 3 steps, but the sampler makes 4 UNet calls"],
    ),
    "schedule without name": (
        SINGLE + "baselines: [{technique: schedule, schedule: F}]\n",
        ["field 'baselines[0]': technique 'schedule' needs"],
    ),
    "unknown technique": (
        SINGLE + "baselines: [{technique: deepcach}]\n",
        ["field 'baselines[0].technique': unknown value 'deepcach'; did you mean 'deepcache'?"],
    ),
    "baseline branch out of range": (
        SINGLE + ("baselines: [{technique: fewer-steps}, {technique: deepcache, branch: 12}]\n"),
        ["field 'baselines[1].branch': branch 12 outside 0..11 for 'digits-ddpm'"],
    ),
    "search branch out of range": (
        SINGLE + "search: {branches: [0, -1]}\n",
        ["field 'search.branches': branch -1 outside 0..11"],
    ),
    "knob out of range": (
        SINGLE + "baselines: [{technique: fewer-steps, keep: [10, 21]}]\n",
        ["field 'baselines[0].keep': 21 outside 1..20"],
    ),
    "sampler steps beyond the experiment's": (
        SINGLE + "baselines: [{technique: sampler-steps, steps: [10, 21]}]\n",
        ["field 'baselines[0].steps': 21 outside 1..20"],
    ),
    "sampler steps cannot reach a budget": (
        SINGLE + "search: {methods: [], budgets: [2, 25]}\n"
        "baselines: [{technique: sampler-steps}]\n",
        [
            "field 'baselines[0]': sampler-steps cannot reach 25.0x: at 1 steps, the fewest, "
            "the sampler makes 1 of 20 UNet calls"
        ],
    ),
    "sampler steps the sampler cannot run": (
        SINGLE + "scheduler: PNDMScheduler\n"  # its Runge-Kutta warm-up needs 4 steps
        "search: {stepwise_grid: teacher}\n"
        "baselines: [{technique: sampler-steps, steps: [10, 2]}]\n",
        ["field 'baselines[0].steps': PNDMScheduler cannot run 2 steps: "],
    ),
    "step-wise search on the training grid of a multistep sampler": (
        SINGLE + "scheduler: PNDMScheduler\nsearch: {methods: [stepwise], budgets: [2]}\n",
        [
            "field 'search.stepwise_grid': 'training' needs a DDIM sampler (null steps chain "
            "exactly only there); PNDMScheduler samples this experiment: set 'teacher'"
        ],
    ),
    "unknown step-wise grid": (
        SINGLE + "search: {stepwise_grid: trainig}\n",
        ["field 'search.stepwise_grid': unknown value 'trainig'; did you mean 'training'?"],
    ),
    "a budget below the sampler's fewest steps": (
        SINGLE + "scheduler: PNDMScheduler\nsearch: {methods: [], budgets: [2.5]}\n"
        "baselines: [{technique: sampler-steps}]\n",  # 20 steps: 29 calls, 4 steps: 13
        [
            "sampler-steps cannot reach 2.5x: at 4 steps, the fewest, the sampler makes 13 of "
            "29 UNet calls"
        ],
    ),
    "duplicate rows": (
        SINGLE + "search: {budgets: [2]}\n"
        "baselines: [{technique: deepcache}, {technique: deepcache}]\n",
        ["field 'baselines': two rows are named 'deepcache @2x'"],
    ),
    "published unknown row": (
        SINGLE + "search: {budgets: [2]}\n"
        "published: [{row: segmnt @2x, source: paper, speedup: 2}]\n",
        ["field 'published[0].row': unknown value 'segmnt @2x'; did you mean 'segment @2x'?"],
    ),
    "duplicate experiments": (
        LISTED + "  - {name: a, model: digits-cond}\n",
        ["two experiments are named 'a'"],
    ),
    # the regression block (repro gate's tolerances)
    "unknown gated metric": (
        SINGLE + "regression: {metrics: {fidd: {abs: 1}}}\n",
        ["field 'regression.metrics.fidd': unknown metric 'fidd'; did you mean 'fid'?"],
    ),
    "tolerance typo": (
        SINGLE + "regression: {metrics: {'fid:digits-cnn': {abss: 1}}}\n",
        ["unknown field 'regression.metrics.fid:digits-cnn.abss'; did you mean 'abs'?"],
    ),
    "negative tolerance": (
        SINGLE + "regression: {speed: {rel: -0.1}}\n",
        ["field 'regression.speed.rel': Input should be greater than or equal to 0 (got -0.1)"],
    ),
    "tolerance true": (
        SINGLE + "regression: {metrics: {acc: {abs: true}}}\n",
        ["field 'regression.metrics.acc.abs': true/false where a number"],
    ),
    "tolerance not a mapping": (
        SINGLE + "regression: {metrics: {fid: 3}}\n",
        ["field 'regression.metrics.fid': ", "(got 3)"],
    ),
    "confidence not a probability": (
        SINGLE + "regression: {confidence: 95}\n",
        ["field 'regression.confidence': Input should be less than 1 (got 95)"],
    ),
    "regression typo": (
        SINGLE + "regresion: {}\n",
        ["unknown field 'regresion'; did you mean 'regression'?"],
    ),
}


@pytest.mark.parametrize(("text", "expected"), list(BAD.values()), ids=list(BAD))
def test_bad_suite_is_one_line_naming_the_field(tmp_path, capsys, text, expected):
    path = write(tmp_path, text)
    message = load_error(path)
    assert message.startswith(f"{path}: ")
    for part in expected:
        assert part in message
    assert "\n" not in message

    code, out, err = validate(capsys, path)
    assert (code, out) == (2, "")
    assert err == f"repro: error: {message}\n"  # one line, the same message


def test_first_reported_error_is_the_typo_not_the_missing_field(tmp_path):
    # `sterps` also leaves `steps` missing: the typo explains both, so it is the one named
    path = write(tmp_path, HEAD + "model: digits-ddpm\nsterps: 20\n")
    assert load_error(path).endswith("unknown field 'sterps'; did you mean 'steps'?")


def test_unknown_key_without_close_match_lists_the_known_fields(tmp_path):
    path = write(tmp_path, HEAD + "search: {zzz: 1}\nmodel: digits-ddpm\nsteps: 20\n")
    message = load_error(path)
    assert "unknown field 'search.zzz'; known: methods, budgets, n_eval," in message


# -- the CLI on good suites, and ls ----------------------------------------------------
def test_validate_good_suites(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # packaged suites are found by name from any directory
    good = write(tmp_path, SINGLE + "search: {budgets: [2]}\n", "good.yaml")
    code, out, err = validate(capsys, good)  # teacher + segment/stepwise/random @2x
    assert (code, err) == (0, "")
    assert out == (f"{good}: ok (suite 't' v1, 1 experiments, 4 rows, {suite.load(good).digest})\n")

    smoke = suite.find("smoke")
    # the package's own copy (an editable install: the checkout's; tox: site-packages')
    assert smoke.resolve() == (Path(suite.__file__).parents[1] / "suites" / "smoke.yaml").resolve()
    code, out, _ = validate(capsys, "smoke")
    assert code == 0 and out.startswith(f"{smoke}: ok (suite 'smoke' ")
    assert out.endswith(f"{suite.load(smoke).digest})\n")

    bad = write(tmp_path, SINGLE + "search: {budgts: [2]}\n", "bad.yaml")
    code, out, err = validate(capsys, "smoke", good, bad)
    assert code == 2
    assert out.splitlines()[1].startswith(f"{good}: ok (suite 't' v1, 1 experiments, 4 rows, ")
    assert err == (f"repro: error: {bad}: unknown field 'search.budgts'; did you mean 'budgets'?\n")

    code, out, err = validate(capsys, tmp_path / "absent.yaml")
    assert (code, out) == (2, "")
    assert err == f"repro: error: {tmp_path / 'absent.yaml'}: suite file not found\n"
    code, out, err = validate(capsys, "smok")
    assert code == 2 and "'smok': no such suite file, nor a packaged suite" in err
    code, out, err = validate(capsys, "elsewhere/smoke.yaml")  # the docs' path, elsewhere
    assert code == 2 and err == (
        "repro: error: 'elsewhere/smoke.yaml': suite file not found "
        "here; the packaged suite of that name runs from any "
        "directory as `smoke` (`repro run smoke`)\n"
    )
    assert "smoke" in err


def test_ls_lists_suites_models_techniques_and_metrics(capsys, monkeypatch, tmp_path):
    from repro import techniques

    monkeypatch.chdir(tmp_path)
    assert cli.main(["ls"]) == 0
    lines = capsys.readouterr().out.splitlines()
    models_at, metrics_at = lines.index("models:"), lines.index("metrics:")
    techniques_at = lines.index("baseline techniques (baselines[].technique):")
    assert lines[0] == "suites (repro run NAME):"
    listed = dict(line.split() for line in lines[1:models_at])
    assert listed == {name: str(path) for name, path in suite.packaged().items()}
    assert {"smoke", "search_digits", "ddpm_cifar10", "sd15_coco"} <= set(listed)
    listed_models = [line.split()[0] for line in lines[models_at + 1 : techniques_at]]
    assert listed_models == list(models.model_ids())
    assert {"digits-ddpm", "digits-cond", "digits-dit", "ddpm-cifar10", "sd15"} <= set(
        listed_models
    )
    listed_techniques = [line.split()[0] for line in lines[techniques_at + 1 : metrics_at]]
    assert listed_techniques == list(techniques.TECHNIQUES)
    assert {
        "deepcache",
        "sampler-steps",
        "first-block-cache",
        "taylorseer",
        "magcache",
        "fastercache",
        "pyramid-attention-broadcast",
        "seacache",
    } <= set(listed_techniques)
    assert [line.strip() for line in lines[metrics_at + 1 :]] == list(METRICS)


# -- digest ---------------------------------------------------------------------------
def test_digest_tracks_values_not_formatting(tmp_path):
    block = write(
        tmp_path,
        """\
        name: d
        version: 1
        model: digits-ddpm
        steps: 20
        search:
          budgets: [2, 3]
          n_eval: 10
    """,
        "block.yaml",
    )
    flow = write(
        tmp_path,
        """\
        # the same suite, written differently
        search: {n_eval: 10,   budgets: [2, 3]}   # flow style, reordered
        steps: 20
        version: 1

        model: "digits-ddpm"
        name: 'd'
    """,
        "flow.yaml",
    )
    write(tmp_path, "name: d\nversion: 1\nsteps: 20\nsearch: {budgets: [2, 3]}\n", "base.yaml")
    included = write(
        tmp_path, "include: base.yaml\nmodel: digits-ddpm\nsearch: {n_eval: 10}\n", "included.yaml"
    )
    changed = write(tmp_path, block.read_text().replace("n_eval: 10", "n_eval: 11"), "changed.yaml")
    renamed = write(tmp_path, block.read_text().replace("name: d", "name: e"), "renamed.yaml")

    digest = suite.load(block).digest
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 16
    assert suite.load(flow).digest == digest
    assert suite.load(included).digest == digest  # the merged data, not the files
    assert suite.load(changed).digest != digest
    assert suite.load(renamed).digest != digest
    assert len({suite.load(p).digest for p in (block, changed, renamed)}) == 3
    gated = write(tmp_path, block.read_text() + "regression: {speed: {rel: 0.2}}\n", "gated.yaml")
    assert suite.load(gated).digest == digest  # tolerances change no result: runs resume


def test_regression_tolerances_by_protocol_then_kind_then_default(tmp_path):
    loaded = suite.load(
        write(
            tmp_path,
            SINGLE
            + (
                "regression:\n"
                "  metrics: {fid: {rel: 0.1}, 'fid:inception-2015-12-05': {abs: 2}}\n"
                "  speed: {abs: 0.05}\n"
            ),
        )
    )
    gate = loaded.regression
    assert gate.tolerance("fid:inception-2015-12-05") == suite.Tolerance(abs=2)
    assert gate.tolerance("fid:digits-cnn").allowed(80.0) == pytest.approx(8.0)
    assert gate.tolerance("acc:digits-cnn") == suite.DEFAULT_TOLERANCES["acc"]
    assert gate.speed.allowed(3.0) == 0.05 and (gate.confidence, gate.resamples) == (0.95, 999)
    own = suite.load(write(tmp_path, TWO, "two.yaml")).regression  # a suite states its own
    assert own.tolerance("fid:digits-cnn") == suite.Tolerance(abs=1.0, rel=0.05)
    assert own.speed == suite.Tolerance(rel=0.15)
    assert own.tolerance("rfid:digits-cnn") == suite.DEFAULT_TOLERANCES["rfid"]


@pytest.mark.parametrize(
    ("baseline", "field", "message"),
    [
        ({"technique": "deepcache-nonuniform", "power": 1.4}, "center", "needs 'center'"),
        ({"technique": "deepcache-nonuniform", "center": 10}, "power", "needs 'power'"),
        ({"technique": "deepcache-quad"}, "power", "needs 'power'"),
        (
            {"technique": "deepcache", "center": 10},
            "center",
            "applies to deepcache-nonuniform only",
        ),
        (
            {"technique": "deepcache-nonuniform", "center": 25, "power": 1.4, "intervals": [2]},
            "intervals",
            "no power > 1 places 25 full steps among 50 around center 25",
        ),
    ],
)
def test_deepcache_nonuniform_fields_have_no_silent_default(tmp_path, baseline, field, message):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "s",
                "version": 1,
                "steps": 50,
                "search": {"methods": [], "budgets": [2]},
                "baselines": [baseline],
                "experiments": [{"name": "e", "model": "digits-ddpm"}],
            }
        )
    )
    with pytest.raises(suite.SuiteError, match=rf"baselines\[0\]\.{field}.*{message}"):
        suite.check(suite.load(path))


def test_validate_warns_where_evaluation_seeds_leave_the_frechet_covariances_singular(
    tmp_path, capsys
):
    """64 features need more than 64 samples for full-rank covariances: at 40 evaluation
    seeds for fid validate passes but says so; at 65 it is silent (a kid search on 64 seeds
    draws no warning: KID is unbiased at any n)."""
    body = """\
        steps: 10
        search: {{budgets: [2], seeds: "0:64", fitness: kid}}
        evaluation: {{seeds: "100:{evaluation}", metrics: ["fid:digits-cnn", "acc:digits-cnn"],
                     reference: digits}}
        experiments: [{{name: e, model: digits-ddpm}}]
    """
    body = HEAD + textwrap.dedent(body)
    code, out, err = validate(capsys, write(tmp_path, body.format(evaluation=140)))
    assert code == 0 and ": ok" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ")
    assert "'evaluation.seeds': 40 seeds for 64-dimensional digits-cnn" in lines[0]
    code, out, err = validate(capsys, write(tmp_path, body.format(evaluation=165)))
    assert code == 0 and err == ""


@pytest.mark.parametrize(
    "seeds, fitness, refused",
    [(32, "rfid", True), (127, None, True), (128, "rfid", False), (32, "kid", False)],
)
def test_validate_refuses_an_rfid_search_on_fewer_seeds_than_twice_the_dimensions(
    tmp_path, capsys, seeds, fitness, refused
):
    """rFID fitness (the default) on fewer search seeds than twice digits-cnn's 64 feature
    dimensions is refused in one line naming file, experiment and field (exit 2); kid is
    defined there, and an experiment without a search is not checked."""
    chosen = "" if fitness is None else f", fitness: {fitness}"
    experiment = HEAD + "steps: 10\nexperiments: [{name: e, model: digits-ddpm}]\n"
    path = write(tmp_path, experiment + f'search: {{budgets: [2], seeds: "0:{seeds}"{chosen}}}\n')
    code, out, err = validate(capsys, path)
    if not refused:
        assert code == 0 and ": ok" in out
        return
    assert code == 2 and out == ""
    assert err == (
        f"repro: error: {path}: experiment 'e': field 'search.fitness': rfid on "
        f"{seeds} search seeds of 64-dimensional digits-cnn features is singular or "
        "mostly finite-sample bias (it needs at least 128 seeds); set 'kid' or more "
        "search.seeds\n"
    )
    no_search = write(
        tmp_path, experiment + f'search: {{budgets: [], seeds: "0:{seeds}"}}\n', "none.yaml"
    )
    assert validate(capsys, no_search)[0] == 0


def test_validate_refuses_an_unknown_fitness(tmp_path, capsys):
    path = write(tmp_path, SINGLE + "search: {fitness: fid}\n")
    code, _, err = validate(capsys, path)
    assert code == 2 and "field 'search.fitness': unknown value 'fid'" in err


# -- primary comparisons ------------------------------------------------------------------
def test_primary_comparisons_are_checked_and_leave_other_suites_digests_alone(two):
    """``evaluation.primary`` names the experiment's own methods, families, budgets, judged
    metrics and speeds (one line naming the field otherwise); a suite without it keeps the
    digest it had before the field existed, one with it gets another."""
    text = two.read_text()
    assert suite.load(two).digest == "sha256:" + _digest_without_primary(suite.load(two))
    good = write(
        two.parent,
        text.replace(
            "  grid: 8\n",
            "  grid: 8\n  primary:\n"
            "    - {method: segment, against: stepwise, budget: 3}\n"
            "    - {method: random, against: deepcache, metric: 'rfid:digits-cnn', "
            "speed: measured}\n",
        ),
        "primary.yaml",
    )
    loaded = suite.load(good)
    suite.check(loaded)
    assert loaded.experiments[0].evaluation.primary[0].against == "stepwise"
    assert loaded.digest != suite.load(two).digest
    for entry, message in (
        (
            "{method: segmnt, against: deepcache}",
            "field 'evaluation.primary[0].method': unknown value 'segmnt'",
        ),
        (
            "{method: segment, against: segment}",
            "field 'evaluation.primary[0].against': unknown value 'segment'",
        ),
        (
            "{method: segment, against: deepcache, budget: 5}",
            "field 'evaluation.primary[0].budget': 5 is not one of search.budgets",
        ),
        (
            "{method: segment, against: deepcache, metric: 'acc:digits-cnn'}",
            "field 'evaluation.primary[0].metric': unknown value 'acc:digits-cnn'",
        ),
        (
            "{method: segment, against: deepcache, speed: fast}",
            "field 'evaluation.primary[0].speed': unknown value 'fast'",
        ),
    ):
        bad = write(
            two.parent,
            text.replace("  grid: 8\n", f"  grid: 8\n  primary: [{entry}]\n"),
            "bad.yaml",
        )
        message_got = load_error(bad)
        assert message in message_got and "\n" not in message_got


def _digest_without_primary(loaded) -> str:
    """The digest as computed before ``evaluation.primary`` existed."""
    import hashlib
    import json

    settings = {
        k: v
        for k, v in dataclasses.asdict(loaded).items()
        if k not in ("file", "digest", "regression", "tracking")
    }
    for experiment in settings["experiments"]:
        del experiment["evaluation"]["primary"]
    text = json.dumps(settings, sort_keys=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
