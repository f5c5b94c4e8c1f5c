"""Property tests: the config never fails with anything but ConfigError, valid configs
round-trip through every file format, and a model dir loads without unpickling or reading
files outside it."""

from __future__ import annotations

import ast
import builtins
import io
import json
import math
import pickle
import re
import shutil
import tokenize
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types as at
import pytest
import tomli_w
import torch
import yaml
from conftest import tiny_config, write_word_lines
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import synthloom
from synthloom.config import (
    OPTIMIZER_PARAMS,
    SCHEDULES,
    UNION_SECTIONS,
    CheckpointConfig,
    CyclicalSchedule,
    DataConfig,
    EarlyStoppingConfig,
    GenerateConfig,
    LSTMConfig,
    OptimConfig,
    TokenizerConfig,
    TrainConfig,
    TrainingConfig,
    apply_overrides,
    dump_config,
    load_config,
    read_config_file,
    save_config,
    section_classes,
    validate_config,
)
from synthloom.errors import ConfigError, ModelDirError, TokenizerError

SRC = Path(synthloom.__file__).parent

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EACH = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- what the schema holds

TOP_LEVEL = list(TrainingConfig.model_fields)
SECTIONS = [name for name in TOP_LEVEL if section_classes(name)]


def _fields_of(section: str) -> dict[str, list]:
    """field name -> its FieldInfo in each class of the section (several for a union)."""
    found: dict[str, list] = {}
    for cls in section_classes(section):
        for key, field in cls.model_fields.items():
            found.setdefault(key, []).append(field)
    return found


SECTION_FIELDS = {section: _fields_of(section) for section in SECTIONS}
FIELD_NAMES = sorted(set(TOP_LEVEL).union(*SECTION_FIELDS.values()))


def _literals(annotation: Any) -> list:
    if typing.get_origin(annotation) is Literal:
        return list(typing.get_args(annotation))
    return [v for arg in typing.get_args(annotation) for v in _literals(arg)]


LITERALS = sorted(
    {
        str(v)
        for fields in SECTION_FIELDS.values()
        for infos in fields.values()
        for f in infos
        for v in _literals(f.annotation)
    }
)


def test_the_schema_walk_sees_every_schedule_variant_and_its_fields():
    # the fuzzers below draw keys from these lists; they must not be thin
    assert set(SCHEDULES) <= set(LITERALS)
    for cls in SCHEDULES.values():
        assert set(cls.model_fields) <= set(FIELD_NAMES), cls
    assert {"milestones", "max_lr", "pct_start", "timescale", "decay_type", "threshold_mode"} <= set(FIELD_NAMES)
    assert {"lr", "betas", "hidden_size", "path", "stop", "prefix", "epoch_callback"} <= set(FIELD_NAMES)
    assert set(UNION_SECTIONS) <= set(SECTIONS)


# --------------------------------------------------------------------------- strategies: arbitrary data

# keys without whitespace, '.' or ':' so a problem's dotted path can be checked exactly
KEY_CHARS = st.characters(exclude_categories=("Cs", "Z", "C"), exclude_characters=".:")
RANDOM_KEYS = st.text(KEY_CHARS, min_size=1, max_size=8)
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.sampled_from(LITERALS), RANDOM_KEYS)
# YAML (not JSON or TOML) gives non-string keys; inside a section they are reported like any key
NESTED_KEYS = st.one_of(KEYS, st.integers(-5, 5), st.booleans(), st.none())

TRICKY_STRINGS = [
    "",
    " ",
    '"',
    "'",
    "\\",
    "\n",
    "a\nb",
    "\r\n",
    "\t",
    "null",
    "~",
    "true",
    "no",
    "1e5",
    "2024",
    "0x10",
    "# x",
    ": x",
    "- a",
    "[a]",
    "{a: 1}",
    '"""',
    "'''",
    " lead",
    "trail ",
    "\u2028",
    "\x85",
    "\ufeff",
    "\x00",
    "\x7f",
    "é漢字🙂",
    "m:f",
    "a.csv",
    "x.tsv",
    "../../etc/passwd",
    "/etc/passwd",
]
TEXT = st.one_of(st.sampled_from(TRICKY_STRINGS), st.text(max_size=12))
NUMBERS = st.one_of(
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # nan, inf, -0.0, subnormals, huge
    st.sampled_from([0, 1, -1, 0.5, 0.9, 1.0, 10.0, 2**32, 2**63, -(2**63), 1e308, -1e308, 5e-324, 1e-300]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, st.sampled_from(LITERALS))
ANY_VALUE = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner), st.dictionaries(NESTED_KEYS, inner, max_size=4)
    ),
    max_leaves=12,
)


# --------------------------------------------------------------------------- strategies: values within the constraints


def _bounds(field) -> tuple[Any, bool, Any, bool]:
    lo = hi = None
    lo_open = hi_open = False
    for m in field.metadata:
        if isinstance(m, at.Gt):
            lo, lo_open = m.gt, True
        elif isinstance(m, at.Ge):
            lo, lo_open = m.ge, False
        elif isinstance(m, at.Lt):
            hi, hi_open = m.lt, True
        elif isinstance(m, at.Le):
            hi, hi_open = m.le, False
    return lo, lo_open, hi, hi_open


def _bare(annotation: Any) -> tuple[Any, bool]:
    args = typing.get_args(annotation)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return annotation, False


def within(field) -> st.SearchStrategy | None:
    """Values a scalar field accepts, read off its annotation and bounds; None if it is not scalar."""
    annotation, nullable = _bare(field.annotation)
    lo, lo_open, hi, hi_open = _bounds(field)
    if typing.get_origin(annotation) is Literal:
        strategy = st.sampled_from(typing.get_args(annotation))
    elif annotation is bool:
        strategy = st.booleans()
    elif annotation is int:
        low = None if lo is None else lo + lo_open
        high = 2**64 if hi is None else hi - hi_open
        strategy = st.integers(low, high)
        if low is not None:
            strategy = st.one_of(strategy, st.integers(low, min(low + 3, high)))  # the edge is where bugs live
    elif annotation is float:
        strategy = st.floats(
            min_value=lo,
            max_value=hi,
            exclude_min=lo_open,
            exclude_max=hi_open,
            allow_nan=False,
            allow_infinity=hi is None,
        )
    elif annotation is str:
        strategy = TEXT
    elif annotation is Path:
        strategy = PATHS
    else:
        return None
    return st.one_of(st.none(), strategy) if nullable else strategy


PATHS = st.builds(
    lambda stem, suffix: stem + suffix,
    st.one_of(st.sampled_from(["model", "out/m", "a b", "/tmp/x", "../up", "q'\"uote", "new\nline", "ü/漢"]), TEXT),
    st.sampled_from(["", ".csv", ".CSV", ".tsv", ".txt", ".json"]),
)


def fields_within(cls, skip: set[str] = frozenset()) -> dict[str, st.SearchStrategy]:
    out = {}
    for key, field in cls.model_fields.items():
        strategy = within(field)
        if strategy is not None and key not in skip:
            out[key] = strategy
    return out


def section_within(cls, skip: set[str] = frozenset()) -> st.SearchStrategy:
    """A section dict: each field either left out (its default) or drawn within its constraints."""
    return st.fixed_dictionaries({}, optional=fields_within(cls, skip))


# --------------------------------------------------------------------------- error message shape

HEADER = re.compile(r"invalid config \((\d+) (problems?)\):")
# a segment may be empty: the dotted path of an empty key (`--set a..b=1` makes one)
PROBLEM = re.compile(r"  (?P<path>[^\s:.]*(?:\.[^\s:.]*)*): \S")


def _keys(value: Any, seen: set[int] | None = None):
    seen = set() if seen is None else seen
    if id(value) in seen:  # YAML anchors build self-containing data: `&a [*a]`
        return
    if isinstance(value, (dict, list, tuple)):
        seen.add(id(value))
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item, seen)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _keys(item, seen)


def check_message(message: str, raw: Any) -> None:
    """A ConfigError from validate_config: a one-line 'config: ...', or a header counting the
    problems and then exactly one problem per line, each starting with its dotted path."""
    lines = message.split("\n")
    if message.startswith("config:"):
        assert len(lines) == 1, message
        return
    header = HEADER.fullmatch(lines[0])
    assert header, message
    count = int(header[1])
    assert count >= 1 and len(lines) == count + 1, message
    assert header[2] == ("problem" if count == 1 else "problems"), message
    keys = [str(k) for k in (raw if isinstance(raw, dict) else ())]
    roots = set(TOP_LEVEL) | set(keys) | {repr(k) for k in keys}  # a key with a line break is shown quoted
    # with keys that hold no whitespace, '.' or ':' the whole path can be checked exactly
    clean = all(re.fullmatch(r"[^\s:.]*", str(k)) for k in _keys(raw))
    for line in lines[1:]:
        assert line.startswith("  ") and ": " in line, line
        assert any(line[2:].startswith(root + sep) for root in roots for sep in (".", ": ")), line
        if clean:
            problem = PROBLEM.match(line)
            assert problem, f"not '  dotted.path: ...': {line!r}"
            assert problem["path"].split(".")[0] in roots, line


def validate_or_config_error(raw: Any) -> TrainingConfig | None:
    try:
        config = validate_config(raw)
    except ConfigError as exc:
        check_message(str(exc), raw)
        return None
    assert isinstance(config, TrainingConfig)
    # what validation accepted reloads from its own dump unchanged
    dumped = config.model_dump(mode="json")
    assert validate_config(json.loads(dump_config(config, "json"))).model_dump(mode="json") == dumped
    return config


@st.composite
def section_dicts(draw, section: str):
    fields = SECTION_FIELDS[section]
    keys = st.one_of(st.sampled_from(sorted(fields)), NESTED_KEYS)
    out = {}
    for key in draw(st.lists(keys, max_size=6, unique=True)):
        plausible = [s for f in fields.get(key, []) if (s := within(f)) is not None]
        out[key] = draw(st.one_of(*plausible, ANY_VALUE) if plausible else ANY_VALUE)
    return out


@st.composite
def raw_configs(draw):
    """Nested data shaped like a config: real sections and keys, near-valid and arbitrary values."""
    raw: dict = {}
    if draw(st.integers(0, 3)):
        raw["output_dir"] = draw(st.one_of(PATHS, ANY_VALUE))
    if draw(st.integers(0, 3)):
        raw["data"] = {"path": draw(PATHS)}
    for key in draw(st.lists(st.one_of(st.sampled_from(TOP_LEVEL), KEYS), max_size=6, unique=True)):
        if key in SECTION_FIELDS and draw(st.integers(0, 3)):
            section = draw(section_dicts(key))
            if isinstance(raw.get(key), dict):
                section = {**raw[key], **section}
            raw[key] = section
        else:
            raw[key] = draw(ANY_VALUE)
    return raw


# --------------------------------------------------------------------------- 1. only ConfigError escapes


@FUZZ
@given(st.one_of(raw_configs(), st.deferred(lambda: mutated_configs())))
def test_validate_config_raises_only_config_error_with_one_dotted_problem_per_line(raw):
    validate_or_config_error(raw)


@FUZZ
@given(ANY_VALUE)
def test_validate_config_on_anything_raises_only_config_error(raw):
    validate_or_config_error(raw)


def test_the_message_check_can_fail():
    base = {"output_dir": "m", "data": {"path": "a.csv"}}
    good = "invalid config (2 problems):\n  optim.lr: bad\n  data.path: required"
    check_message(good, base)
    for bad in [
        "invalid config (2 problems):\n  optim.lr: bad",  # count mismatch
        "invalid config (1 problems):\n  optim.lr: bad",  # plural for one
        "invalid config (1 problem):\n  optim lr: bad",  # not a dotted path
        "invalid config (1 problem):\n  nowhere.lr: bad",  # root neither in the input nor the schema
        "invalid config (1 problem):\n  optim.lr: bad\ncontinued",
        "bad config",
        "config: one\ntwo",
    ]:
        with pytest.raises(AssertionError):
            check_message(bad, base)


def test_fuzzed_configs_reach_both_outcomes():
    """The generator is not all-invalid: the same shapes also produce valid configs."""
    seen = {"valid": 0, "invalid": 0}

    @settings(max_examples=40, deadline=None, database=None)
    @given(st.one_of(raw_configs(), st.deferred(lambda: mutated_configs())))
    def run(raw):
        seen["valid" if validate_or_config_error(raw) is not None else "invalid"] += 1

    run()
    assert seen["valid"] > 0 and seen["invalid"] > 0, seen


OVERRIDE_VALUES = st.one_of(
    TEXT,
    st.sampled_from(LITERALS),
    NUMBERS.map(str),
    st.sampled_from(
        ["null", "[1, 2]", "[a, '']", "{a: 1}", "[", "{", "'", '"a', ": :", "- x", ".inf", ".nan", "&a [*a]"]
    ),
    # YAML that parses but cannot be built (a bad date, a bad tag)
    st.sampled_from(
        ["2024-13-45", "2023-02-30", "!!int abc", "!!float x", "!!timestamp x", "!!binary ?", "!!python/none"]
    ),
    ANY_VALUE.map(lambda v: json.dumps(v, default=str)),
)
OVERRIDE_KEYS = st.one_of(
    st.builds(lambda s, k: f"{s}.{k}", st.sampled_from(SECTIONS), st.sampled_from(FIELD_NAMES)),
    st.sampled_from(TOP_LEVEL + ["data.path.x", "a..b", ".", "x.", ""]),
    st.lists(st.one_of(KEYS, st.just("")), min_size=1, max_size=3).map(".".join),
)
OVERRIDES = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", OVERRIDE_KEYS, OVERRIDE_VALUES),
    st.text(max_size=15),  # no '=' at all, or a stray one
)


def _parsed(value: str) -> Any:
    if not value.strip():
        return ""
    try:
        return yaml.safe_load(value)
    except Exception:  # not YAML, or YAML that cannot be built: kept as text
        return value


@FUZZ
@given(
    st.one_of(raw_configs(), st.builds(lambda: {"output_dir": "m", "data": {"path": "a.csv"}})),
    st.lists(OVERRIDES, max_size=4),
)
def test_apply_overrides_raises_only_config_error(raw, overrides):
    try:
        result = apply_overrides(raw, overrides)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith("invalid overrides:\n"), message
        assert all(line.startswith("  --set ") for line in message.split("\n")[1:]), message
        return
    assert result is raw
    if overrides:  # the last override is what its key holds now
        key, _, value = overrides[-1].partition("=")
        node = result
        for part in key.strip().split("."):
            node = node[part]
        assert repr(node) == repr(_parsed(value))
    validate_or_config_error(result)


# --------------------------------------------------------------------------- files of random bytes


def _serialised(data: dict, suffix: str) -> bytes:
    try:
        if suffix == ".json":
            return json.dumps(data, default=str).encode()
        if suffix == ".toml":
            return tomli_w.dumps(json.loads(json.dumps(data, default=str, allow_nan=False))).encode()
        return yaml.safe_dump(data, allow_unicode=True).encode()
    except (TypeError, ValueError):
        return json.dumps(data, default=str).encode()


@st.composite
def file_contents(draw, suffix: str) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=120))
    if kind == 1:
        return draw(st.text(max_size=80)).encode("utf-8", "surrogatepass")
    text = _serialised(draw(raw_configs()), suffix)
    if kind == 3 and text:  # a well-formed file, damaged in one place
        at_ = draw(st.integers(0, len(text) - 1))
        cut = draw(st.integers(0, 5))
        text = text[:at_] + draw(st.binary(max_size=4)) + text[at_ + cut :]
    return text


@st.composite
def config_files(draw):
    suffix = draw(st.sampled_from([".yaml", ".yml", ".json", ".toml"]))
    return suffix, draw(file_contents(suffix))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FILES
@given(file=config_files(), overrides=st.lists(OVERRIDES, max_size=2))
def test_config_files_of_random_bytes_raise_only_config_error(scratch, file, overrides):
    suffix, content = file
    path = scratch / f"config{suffix}"
    path.write_bytes(content)
    try:
        raw = read_config_file(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(raw, dict)
    try:
        apply_overrides(raw, overrides)
    except ConfigError:
        return
    validate_or_config_error(raw)


# --------------------------------------------------------------------------- 2. valid configs round-trip


def _suffix_format(path: str) -> str:
    return "csv" if Path(path).suffix.lower() in (".csv", ".tsv") else "text"


SAFE_TEXT = st.one_of(st.sampled_from([s for s in TRICKY_STRINGS if s]), st.text(min_size=1, max_size=12))
DATA_PATHS = st.builds(
    lambda stem, suffix: stem + suffix,
    st.one_of(
        st.sampled_from(["records", "dir/a b", "q'\"", "é漢字", "/abs/x", "line\nbreak", ""]), st.text(max_size=8)
    ),
    st.sampled_from([".csv", ".CSV", ".tsv", ".txt", ".log", ""]),
)


@st.composite
def valid_configs(draw, variant: str | None = None, optimizer: str | None = None) -> dict:
    """A config dict built field by field within each class's constraints and the cross-field rules
    (with the schedule variant and the optimizer drawn unless given)."""
    raw: dict[str, Any] = {"output_dir": draw(PATHS), "overwrite": draw(st.booleans())}

    # data: the format (explicit or from the suffix) decides what the delimiter may be
    data = draw(section_within(DataConfig, skip={"path", "field_delimiter"}))
    data["path"] = draw(DATA_PATHS)
    fmt = data.get("format") or _suffix_format(data["path"])
    if fmt == "csv":
        delimiter = st.one_of(st.none(), st.sampled_from([",", ";", "|", "\t", '"', "'", "é", "\n"]), st.characters())
    else:
        delimiter = st.one_of(st.none(), SAFE_TEXT)
    if draw(st.booleans()):
        data["field_delimiter"] = draw(delimiter)
    if fmt != "csv" or not data.get("header", True):  # the table keys name columns: csv with a header only
        for key in ("leading_columns", "column_types", "max_columns_per_model"):
            data.pop(key, None)
    elif "leading_columns" in data:
        data["leading_columns"] = list(dict.fromkeys(data["leading_columns"]))
    for key in ("source_columns", "target_column", "target_path"):  # pairs: for seq2seq only (the model is an LSTM)
        data.pop(key, None)
    raw["data"] = data
    has_val = data.get("validation_split", 0.2) > 0
    pair_metrics = ("val_bleu", "val_chrf", "val_exact_match")  # seq2seq's: not monitors of an LSTM

    raw["tokenizer"] = draw(section_within(TokenizerConfig, skip={"share_vocab"}))  # (seq2seq's)
    kind = raw["tokenizer"].get("kind") or ("fields" if fmt == "csv" else "sentencepiece")
    if kind == "fields" and fmt != "csv":  # field tokens encode table columns
        raw["tokenizer"].pop("kind")
        kind = "sentencepiece"
    if kind != "fields":  # shuffled column orders need field tokens
        data.pop("column_order", None)
    if data.get("column_order") == "dependency" and (fmt != "csv" or not data.get("header", True)):
        data.pop("column_order")  # (an order of a table's named columns)
    model = draw(section_within(LSTMConfig))
    if model and draw(st.booleans()):
        model.pop("kind", None)  # the tag is optional in files
    raw["model"] = model

    # optim: only the parameters the chosen optimizer takes
    name = optimizer or draw(st.sampled_from(sorted(OPTIMIZER_PARAMS)))
    takes = OPTIMIZER_PARAMS[name] | {"lr", "weight_decay", "exclude_from_weight_decay"}
    betas = st.tuples(*[st.floats(0.0, 1.0, exclude_max=True)] * 2).map(list)
    optim = draw(section_within(OptimConfig, skip=set(OptimConfig.model_fields) - takes))
    if "betas" in takes and draw(st.booleans()):
        optim["betas"] = draw(betas)
    if optim.get("nesterov"):
        optim["momentum"] = draw(st.floats(0.0, 1.0, exclude_min=True, exclude_max=True))
        optim["dampening"] = 0.0
    optim["name"] = name
    raw["optim"] = optim
    lr = optim.get("lr", 0.003)

    # schedule: one variant, its own fields, and the rules that tie it to optim and data
    variant = variant or draw(st.sampled_from(sorted(SCHEDULES)))
    cls = SCHEDULES[variant]
    required = {k: within(f) for k, f in cls.model_fields.items() if f.is_required() and k != "name"}
    required = {k: v for k, v in required.items() if v is not None}
    if variant == "multistep":
        required["milestones"] = st.lists(st.integers(1, 2**40), min_size=1, max_size=5, unique=True).map(sorted)
    schedule = draw(st.fixed_dictionaries(required, optional=fields_within(cls, skip={"name", *required})))
    if "warmup_steps" in schedule and "warmup_ratio" in schedule:
        del schedule[draw(st.sampled_from(["warmup_steps", "warmup_ratio"]))]
    if variant == "one_cycle":
        schedule.pop("warmup_steps", None)
        schedule.pop("warmup_ratio", None)
    if cls is CyclicalSchedule:
        schedule["max_lr"] = lr * draw(st.floats(1.5, 1e6))
        if schedule.get("mode") != "exp_range":
            schedule.pop("gamma", None)
    if variant == "polynomial" and schedule.get("end_lr", 0.0) >= lr:
        schedule["end_lr"] = lr * draw(st.floats(0.0, 0.5))
    if variant == "reduce_on_plateau":
        if schedule.get("min_lr", 0.0) >= lr:
            schedule["min_lr"] = lr * draw(st.floats(0.0, 0.5))
        if not has_val and str(schedule.get("monitor")).startswith("val_"):
            schedule["monitor"] = draw(st.sampled_from([None, "loss", "accuracy"]))
        if schedule.get("monitor") in pair_metrics:
            schedule["monitor"] = "loss"
    if variant != "constant" or draw(st.booleans()):
        schedule["name"] = variant
    raw["schedule"] = schedule

    seq2seq_only = {"teacher_forcing_ratio", "teacher_forcing_schedule"}
    train = draw(section_within(TrainConfig, skip={"precision", "epoch_callback", "tf32", *seq2seq_only}))
    train["precision"] = draw(st.sampled_from(["fp32", "bf16"]))
    if train.get("device", "auto") != "cpu" and draw(st.booleans()):
        train["tf32"] = draw(st.booleans())
    if draw(st.booleans()):
        no_colon = st.text(st.characters(exclude_characters=":", exclude_categories=("Cs",)), max_size=8)
        train["epoch_callback"] = draw(st.builds(lambda a, b: f"{a}:{b}", no_colon, no_colon))
    raw["train"] = train

    # monitors on validation metrics need a validation split
    early, checkpoint = draw(section_within(EarlyStoppingConfig)), draw(section_within(CheckpointConfig))
    for section in (early, checkpoint):
        if not has_val and str(section.get("monitor")).startswith("val_"):
            section["monitor"] = draw(st.sampled_from(["loss", "accuracy"]))
        if section.get("monitor") in pair_metrics:
            section["monitor"] = "loss"
    raw["early_stopping"], raw["checkpoint"] = early, checkpoint

    generate = draw(section_within(GenerateConfig))
    generate["stop"] = draw(st.lists(SAFE_TEXT, max_size=3))
    generate["prefix"] = draw(TEXT)
    if fmt == "csv":
        generate["prefix"] = generate["prefix"].replace("\n", "")
    raw["generate"] = generate
    return raw


@st.composite
def mutated_configs(draw) -> dict:
    """A valid config with one to three entries replaced (near-valid or arbitrary values) or removed."""
    raw = draw(valid_configs())
    for _ in range(draw(st.integers(1, 3))):
        section = draw(st.sampled_from(sorted(raw)))
        nested = isinstance(raw[section], dict) and draw(st.integers(0, 3)) > 0
        target = raw[section] if nested else raw
        key = draw(st.one_of(st.sampled_from(sorted(target, key=str)), KEYS) if target else KEYS)
        if draw(st.integers(0, 4)) == 0:
            target.pop(key, None)
            continue
        fields = SECTION_FIELDS.get(section, {}) if nested else {}
        plausible = [s for f in fields.get(key, []) if (s := within(f)) is not None]
        target[key] = draw(st.one_of(*plausible, ANY_VALUE) if plausible else ANY_VALUE)
    return raw


def check_round_trip(scratch: Path, config: TrainingConfig) -> None:
    """save_config to each suffix, load_config back: the same config; and dump_config is stable."""
    expected = config.model_dump(mode="json")
    for suffix in (".json", ".yaml", ".yml", ".toml"):
        path = scratch / f"round{suffix}"
        save_config(config, path)
        loaded = load_config(path)
        assert loaded.model_dump(mode="json") == expected, suffix
        assert loaded == config, suffix
        # stable: the same config always dumps to the same text, and so does its reloaded copy
        fmt = suffix[1:]
        text = dump_config(config, fmt)
        assert dump_config(config, fmt) == text
        assert dump_config(loaded, fmt) == text
        assert path.read_text(encoding="utf-8") == text


@ROUND_TRIPS
@given(raw=valid_configs())
def test_valid_configs_round_trip_through_json_yaml_and_toml(scratch, raw):
    config = validate_config(raw)  # the strategy keeps every rule: no assume() needed
    check_round_trip(scratch, config)


@pytest.mark.parametrize("variant", sorted(SCHEDULES))
def test_every_schedule_variant_validates_and_round_trips(scratch, variant):
    @EACH
    @given(valid_configs(variant=variant))
    def run(raw):
        config = validate_config(raw)
        assert config.schedule.name == variant
        check_round_trip(scratch, config)

    run()


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZER_PARAMS))
def test_every_optimizer_validates_and_round_trips(scratch, optimizer):
    @EACH
    @given(valid_configs(optimizer=optimizer))
    def run(raw):
        config = validate_config(raw)
        assert config.optim.name == optimizer
        check_round_trip(scratch, config)

    run()


def test_the_valid_config_strategy_covers_formats_and_precisions():
    seen: dict[str, set] = {"format": set(), "precision": set(), "delimiter": set()}

    @settings(max_examples=40, deadline=None, database=None)
    @given(valid_configs())
    def run(raw):
        config = validate_config(raw)
        seen["format"].add(config.data.format)
        seen["precision"].add(config.train.precision)
        seen["delimiter"].add(config.data.field_delimiter is None)

    run()
    assert seen == {"format": {"csv", "text"}, "precision": {"fp32", "bf16"}, "delimiter": {True, False}}


@pytest.mark.parametrize(
    "raw_section",
    [
        {"generate": {"prefix": 'say "hi" it\'s\nfine\t\\ é漢字🙂', "stop": ["\n", '"', "'", "\u2028", "END\r\n"]}},
        {"generate": {"prefix": "null", "stop": ["true", "1e5", "~", "# no comment", "- dash", ": colon"]}},
        {"output_dir": "dir with 'quotes' and \"doubles\"/new\nline/ü"},
        {"data": {"path": "x.txt", "field_delimiter": "\x85\u2028\ufeff"}},
    ],
)
def test_strings_that_need_quoting_round_trip(scratch, raw_section):
    raw = {"output_dir": "m", "data": {"path": "a.txt"}}
    raw.update(raw_section)
    config = validate_config(raw)
    for suffix in (".json", ".yaml", ".toml"):
        path = scratch / f"quoted{suffix}"
        save_config(config, path)
        assert load_config(path).model_dump(mode="json") == config.model_dump(mode="json"), suffix


# --------------------------------------------------------------------------- bugs found by the fuzzers


# each was an escape (or a misreport) found by these fuzzers, fixed in fa2f635


@pytest.mark.parametrize("value", ["2024-13-45", "2023-02-30", "!!int abc", "!!float abc", "!!timestamp abc"])
def test_override_values_yaml_cannot_construct_are_kept_as_text(value):
    raw = apply_overrides({"output_dir": "m", "data": {"path": "a.csv"}}, [f"train.epochs={value}"])
    assert raw["train"]["epochs"] == value
    with pytest.raises(ConfigError, match="train.epochs"):
        validate_config(raw)


@pytest.mark.parametrize("key", [1, None, True, 1.5])
def test_non_string_top_level_key_is_a_config_error(key):
    raw = {"output_dir": "m", "data": {"path": "a.csv"}, key: "x"}
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    check_message(str(info.value), raw)
    assert repr(key) in str(info.value)


def test_yaml_file_with_an_integer_key_is_a_config_error(scratch):
    path = scratch / "int_key.yaml"
    path.write_text("output_dir: m\ndata: {path: a.csv}\n1: x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="1"):
        load_config(path)


@pytest.mark.parametrize("key", ["bad\nkey", "bad\rkey", "a\tb", "\n"])
@pytest.mark.parametrize("where", ["top", "section"])
def test_a_key_with_a_line_break_is_still_one_problem_per_line(where, key):
    raw: dict = {"output_dir": "m", "data": {"path": "a.csv"}}
    if where == "top":
        raw[key] = 1
    else:
        raw["optim"] = {key: 1}
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    message = str(info.value)
    assert message.startswith("invalid config (1 problem):")
    assert len(message.splitlines()) == 2, message
    check_message(message, raw)


def test_override_into_a_section_with_every_key_commented_out(scratch):
    path = scratch / "commented.yaml"
    path.write_text("output_dir: m\ndata:\n  path: a.csv\ntrain:\n  # epochs: 5\n", encoding="utf-8")
    assert load_config(path).train.epochs is None  # the section alone is fine: it means the defaults
    assert load_config(path, overrides=["train.epochs=5"]).train.epochs == 5
    assert load_config(path, overrides=["train.epochs=5", "train.seed=3"]).train.seed == 3


@pytest.mark.parametrize(
    "section, values",
    [
        ("generate", {"prefix": "a\x85b"}),
        ("generate", {"stop": ["END\x85"]}),
        ("data", {"path": "a.txt", "field_delimiter": "\x85"}),
        ("data", {"path": "x\x85y.txt"}),
        ("output_dir", "out\x85dir"),
        ("generate", {"prefix": "a\u2028b\u2029c"}),
    ],
)
def test_nel_in_a_string_survives_yaml(scratch, section, values):
    """PyYAML wrote U+0085 raw in a single-quoted scalar, which YAML reads back as a space."""
    raw: dict = {"output_dir": "m", "data": {"path": "a.txt"}}
    raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    config = validate_config(raw)
    path = scratch / "nel.yaml"
    save_config(config, path)
    assert load_config(path).model_dump(mode="json") == config.model_dump(mode="json")


# --------------------------------------------------------------------------- 3. safe loading of a model dir

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def unsafe_calls(source: str) -> list[str]:
    """Unpickling, torch.load, eval and exec in Python source: imports, names and calls (not comments or docs)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            if root in UNSAFE_MODULES or node.module == "torch.serialization":
                found.append(f"from {node.module} import ...")
            if node.module == "torch" and any(a.name == "load" for a in node.names):
                found.append("from torch import load")
        elif isinstance(node, ast.Name) and node.id in UNSAFE_MODULES | {"eval", "exec"}:
            found.append(node.id)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "load"
            and ast.unparse(node.value) in ("torch", "torch.serialization")
        ):
            found.append(ast.unparse(node))
        elif (
            isinstance(node, ast.Attribute) and node.attr in ("eval", "exec") and ast.unparse(node.value) == "builtins"
        ):
            found.append(ast.unparse(node))
    # and a plain grep of the code, comments and strings left out (`net.eval()` is a method, not eval)
    tokens = [
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type not in (tokenize.COMMENT, tokenize.STRING, tokenize.NL, tokenize.NEWLINE)
    ]
    for i, tok in enumerate(tokens):
        before, after = tokens[i - 1 : i], tokens[i + 1 : i + 3]
        if tok == "pickle" or (tok == "torch" and after == [".", "load"]):
            found.append(tok)
        elif tok in ("eval", "exec") and after[:1] == ["("] and before != ["."]:
            found.append(f"{tok}(")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import pickle as p",
        "from pickle import loads",
        "x = torch.load(f)",
        "x = torch.load(f, weights_only=True)",
        "from torch import load",
        "x = torch.serialization.load(f)",
        "eval('1')",
        "exec(code)",
        "f = eval",
        "import dill",
    ],
)
def test_the_source_scan_finds_unsafe_calls(snippet):
    assert unsafe_calls(snippet)


def test_the_source_scan_ignores_comments_docstrings_and_methods():
    source = '"""Nothing here unpickles; never torch.load."""\n# pickle, eval(x)\nnet.eval()\nm.exec_module(x)\n'
    assert unsafe_calls(source) == []


def test_source_tree_never_unpickles_or_evaluates():
    files = sorted(SRC.rglob("*.py"))
    assert {"files.py", "checkpoint.py", "tokenizers.py", "generate.py"} <= {f.name for f in files}
    found = {str(f.relative_to(SRC)): hits for f in files if (hits := unsafe_calls(f.read_text(encoding="utf-8")))}
    assert found == {}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    """One tiny trained model dir per tokenizer kind (trained once for the module)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    data = write_word_lines(root / "lines.txt")
    dirs = {}
    for kind, tokenizer in [("char", {"kind": "char"}), ("sentencepiece", {"kind": "sentencepiece", "vocab_size": 40})]:
        out = root / kind
        synthloom.train(tiny_config(data, out, train={"epochs": 1}, tokenizer=tokenizer), progress=False)
        dirs[kind] = out
    return dirs


def _no_unpickling(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("unpickled")

    for owner, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (torch, "load"),
        (torch.serialization, "load"),
    ]:
        monkeypatch.setattr(owner, name, refuse)
    # the trap is armed
    with pytest.raises(AssertionError, match="unpickled"):
        pickle.loads(b"\x80\x04K\x01.")
    with pytest.raises(AssertionError, match="unpickled"):
        torch.load(io.BytesIO())


def _record_reads(monkeypatch) -> list[Path]:
    """Every file opened through Python (open, io.open, Path.open/read_text/read_bytes)."""
    opened: list[Path] = []

    def wrap(fn, path_arg):
        def recorder(*args, **kwargs):
            target = args[path_arg] if len(args) > path_arg else kwargs.get("file")
            if isinstance(target, (str, bytes, Path)):
                opened.append(Path(target.decode() if isinstance(target, bytes) else target).absolute())
            return fn(*args, **kwargs)

        return recorder

    monkeypatch.setattr(builtins, "open", wrap(builtins.open, 0))
    monkeypatch.setattr(io, "open", wrap(io.open, 0))
    for method in ("open", "read_text", "read_bytes"):
        monkeypatch.setattr(Path, method, wrap(getattr(Path, method), 0))
    return opened


def _outside(opened: list[Path], directory: Path) -> list[Path]:
    inside = directory.resolve()
    return [p for p in opened if not p.resolve().is_relative_to(inside)]


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_load_model_never_unpickles(model_dirs, monkeypatch, kind):
    _no_unpickling(monkeypatch)
    model = synthloom.load_model(model_dirs[kind], device="cpu")
    assert model.tokenizer.kind == kind
    records = model.generate(3, seed=0, max_tokens=30)
    assert len(records) >= 3


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_load_model_reads_only_inside_its_dir(model_dirs, monkeypatch, tmp_path, kind):
    directory = shutil.copytree(model_dirs[kind], tmp_path / "model")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    # what the config names outside the dir is for training, not loading
    config["data"]["path"] = "/etc/passwd"
    config["output_dir"] = "/"
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    opened = _record_reads(monkeypatch)
    synthloom.load_model(directory, device="cpu")
    assert {p.name for p in opened} >= {"config.json", "tokenizer.json", "summary.json"}
    assert _outside(opened, directory) == []


def test_the_read_recorder_sees_reads_outside(monkeypatch, tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    opened = _record_reads(monkeypatch)
    outside.read_bytes()
    with open(outside) as fh:
        fh.read()
    assert _outside(opened, tmp_path / "model") == [outside.absolute()] * len(opened) and len(opened) >= 2


EVIL_NAMES = ["../../etc/passwd", "/etc/passwd", "../outside.model", "OUTSIDE"]


@pytest.mark.parametrize("name", EVIL_NAMES)
def test_sentencepiece_model_file_in_tokenizer_json_is_never_followed(model_dirs, monkeypatch, tmp_path, name):
    source = model_dirs["sentencepiece"]
    directory = shutil.copytree(source, tmp_path / "model")
    outside = tmp_path / "outside.model"  # a valid model, so following the name would succeed
    shutil.copy(source / "tokenizer.model", outside)
    meta = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    assert meta["model_file"] == "tokenizer.model"  # the field a path could hide in
    meta["model_file"] = str(outside) if name == "OUTSIDE" else name
    (directory / "tokenizer.json").write_text(json.dumps(meta), encoding="utf-8")

    opened = _record_reads(monkeypatch)
    model = synthloom.load_model(directory, device="cpu")  # ignored: the fixed name is used
    assert model.tokenizer.model_proto == (directory / "tokenizer.model").read_bytes()
    assert _outside(opened, directory) == []

    (directory / "tokenizer.model").unlink()  # now only the outside file could satisfy it
    opened.clear()
    with pytest.raises((ModelDirError, TokenizerError), match="tokenizer.model"):
        synthloom.load_model(directory, device="cpu")
    assert _outside(opened, directory) == []


@pytest.mark.parametrize("name", EVIL_NAMES)
def test_char_tokenizer_json_with_a_path_is_ignored_or_refused(model_dirs, monkeypatch, tmp_path, name):
    directory = shutil.copytree(model_dirs["char"], tmp_path / "model")
    outside = tmp_path / "outside.model"
    shutil.copy(model_dirs["sentencepiece"] / "tokenizer.model", outside)
    meta = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    assert "model_file" not in meta and set(meta) == {"kind", "specials", "chars"}  # no path field at all
    target = str(outside) if name == "OUTSIDE" else name
    opened = _record_reads(monkeypatch)

    (directory / "tokenizer.json").write_text(json.dumps({**meta, "model_file": target}), encoding="utf-8")
    assert synthloom.load_model(directory, device="cpu").tokenizer.kind == "char"

    # claiming to be sentencepiece, with the model named outside: refused, nothing read there
    meta = {"kind": "sentencepiece", "model_file": target, "vocab_size": 40}
    (directory / "tokenizer.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises((ModelDirError, TokenizerError), match="tokenizer.model"):
        synthloom.load_model(directory, device="cpu")
    assert _outside(opened, directory) == []


def test_epoch_callback_in_a_model_dir_config_is_not_run_on_load(model_dirs, tmp_path):
    from synthloom.hooks import load_callable

    marker = tmp_path / "ran"
    hook = tmp_path / "evil_hook.py"
    hook.write_text(f"open({str(marker)!r}, 'w').close()\ndef f(state):\n    pass\n", encoding="utf-8")
    directory = shutil.copytree(model_dirs["char"], tmp_path / "model")
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    config["train"]["epoch_callback"] = f"{hook}:f"
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")

    model = synthloom.load_model(directory, device="cpu")
    model.generate(2, seed=0, max_tokens=20)
    assert model.config.train.epoch_callback == f"{hook}:f"
    assert not marker.exists()
    load_callable(f"{hook}:f", "train.epoch_callback")  # the marker does show a run
    assert marker.exists()


def test_a_model_dir_with_pickled_weights_is_refused(model_dirs, tmp_path, monkeypatch):
    directory = shutil.copytree(model_dirs["char"], tmp_path / "model")
    state = {"x": torch.zeros(1)}
    buffer = io.BytesIO()
    torch.save(state, buffer)  # a torch pickle where safetensors belong
    (directory / "model.safetensors").write_bytes(buffer.getvalue())
    _no_unpickling(monkeypatch)
    with pytest.raises(ModelDirError, match="model.safetensors"):
        synthloom.load_model(directory, device="cpu")


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_infinity_in_unbounded_fields_round_trips(scratch, suffix):
    # the valid-config strategy draws inf where a field has no upper bound; each format keeps it
    raw = {"output_dir": "m", "data": {"path": "a.txt"}, "optim": {"weight_decay": math.inf}}
    raw["train"] = {"max_time_seconds": math.inf, "max_grad_norm": math.inf}
    config = validate_config(raw)
    path = scratch / f"inf{suffix}"
    save_config(config, path)
    loaded = load_config(path)
    assert loaded.optim.weight_decay == loaded.train.max_time_seconds == loaded.train.max_grad_norm == math.inf
