"""The training config: defaults, derived values, error reporting, files and overrides."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from synthloom.config import (
    LSTMConfig,
    TrainConfig,
    TrainingConfig,
    apply_overrides,
    commented_yaml,
    config_json_schema,
    config_to_dict,
    load_config,
    read_config_file,
    save_config,
    validate_config,
)
from synthloom.errors import ConfigError

SECTIONS = [
    "data",
    "tokenizer",
    "model",
    "optim",
    "schedule",
    "train",
    "early_stopping",
    "checkpoint",
    "privacy",
    "lora",
    "generate",
]


def minimal(**sections) -> dict:
    """The smallest valid config dict, with extra sections merged in."""
    raw: dict = {"output_dir": "model", "data": {"path": "records.csv"}}
    for name, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    return raw


def config_error(raw) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    return str(info.value)


def non_default_config() -> TrainingConfig:
    """Many values off their defaults, with some nullable fields set and others left null."""
    return validate_config(
        {
            "output_dir": "out/model",
            "overwrite": True,
            "data": {"path": "rows.tsv", "max_records": 500, "long_records": "error", "validation_split": 0.1},
            "tokenizer": {"kind": "char", "vocab_size": 64, "model_type": "bpe", "character_coverage": 0.99},
            "model": {
                "embedding_dim": 32,
                "hidden_size": 48,
                "num_layers": 3,
                "dropout": 0.5,
                "initializer": "orthogonal",
            },
            "optim": {"name": "adamw", "lr": 5e-5, "weight_decay": 0.01, "betas": [0.8, 0.95], "eps": 1e-6},
            "train": {
                "epochs": 3,
                "max_steps": 100,
                "batch_size": 8,
                "seed": 7,
                "device": "cpu",
                "epoch_callback": "m:f",
            },
            "early_stopping": {"enabled": False, "monitor": "loss", "patience": 2},
            "checkpoint": {"save_best": False, "save_every_epoch": True, "monitor": "val_accuracy"},
            "generate": {
                "num_records": 5,
                "temperature": 0.7,
                "top_k": 10,
                "stop": ["END", "|"],
                "prefix": "a",
                "seed": 3,
            },
        }
    )


# --------------------------------------------------------------------------- defaults and derived values


def test_defaults_validate_from_output_dir_and_data_path():
    config = validate_config({"output_dir": "model", "data": {"path": "x.txt"}})
    assert config.output_dir == Path("model")
    assert config.data.path == Path("x.txt")
    assert config.tokenizer.kind == "sentencepiece"
    assert config.model.kind == "lstm"
    assert config.optim.lr == 0.003
    assert config.train.epochs is None and config.train.batch_size is None  # from the data, at training
    assert config.data.validation_split == 0.2
    assert validate_config({"output_dir": "m", "data": {"path": "x.csv"}}).tokenizer.kind == "fields"


def test_the_model_left_null_suits_the_tokenizer():
    table = validate_config({"output_dir": "m", "data": {"path": "x.csv"}}).model
    text = validate_config({"output_dir": "m", "data": {"path": "x.txt"}}).model
    assert (table.embedding_dim, table.hidden_size, table.num_layers) == (64, 128, 1)  # field tokens
    assert (text.embedding_dim, text.hidden_size, text.num_layers) == (256, 256, 2)  # gretel's LSTM
    given = validate_config({"output_dir": "m", "data": {"path": "x.csv"}, "model": {"num_layers": 3}}).model
    assert given.num_layers == 3 and given.embedding_dim == 64


def test_under_privacy_the_batch_is_a_tenth_of_the_records_and_the_run_30_epochs():
    from synthloom.schedules import resolve_for_records

    config = validate_config(
        {"output_dir": "m", "data": {"path": "x.csv"}, "privacy": {"enabled": True, "target_epsilon": 4}}
    )
    for records, batch in [(300, 64), (2_408, 256), (30_000, 1024)]:
        resolved = resolve_for_records(config, records).train
        assert (resolved.batch_size, resolved.epochs) == (batch, 30)


@pytest.mark.parametrize(
    "records, batch", [(0, 8), (100, 8), (320, 8), (2_560, 32), (4_000, 32), (24_000, 256), (300_000, 256)]
)
def test_batch_size_and_epochs_left_null_come_from_the_number_of_records(records, batch):
    from synthloom.schedules import AUTO_MAX_EPOCHS, plan_steps, resolve_for_records

    config = validate_config({"output_dir": "model", "data": {"path": "x.csv"}})
    resolved = resolve_for_records(config, records)
    assert resolved.train.batch_size == batch and resolved.train.epochs == AUTO_MAX_EPOCHS
    if records >= 64 * 8:
        assert 64 <= plan_steps(config, records).steps_per_epoch <= 128 or batch == 256  # about 64 steps an epoch
    given = validate_config({"output_dir": "model", "data": {"path": "x.csv"}, "train": {"batch_size": 5, "epochs": 3}})
    assert resolve_for_records(given, records).train == given.train  # what the user set stays


@pytest.mark.parametrize(
    "path, fmt, delimiter",
    [
        ("a.csv", "csv", ","),
        ("a.CSV", "csv", ","),
        ("a.tsv", "csv", "\t"),
        ("a.txt", "text", None),
        ("a", "text", None),
        ("dir.csv/a.log", "text", None),
    ],
)
def test_format_and_delimiter_derived_from_suffix(path, fmt, delimiter):
    config = validate_config(minimal(data={"path": path}))
    assert config.data.format == fmt
    assert config.data.field_delimiter == delimiter


def test_explicit_format_and_delimiter_win_over_suffix():
    config = validate_config(minimal(data={"path": "a.txt", "format": "csv", "field_delimiter": ";"}))
    assert (config.data.format, config.data.field_delimiter) == ("csv", ";")
    # csv format on a .txt file still gets the ',' default
    assert validate_config(minimal(data={"path": "a.txt", "format": "csv"})).data.field_delimiter == ","


def test_csv_delimiter_must_be_one_character():
    assert "data.field_delimiter" in config_error(minimal(data={"path": "a.csv", "field_delimiter": "::"}))
    assert "data.field_delimiter" in config_error(minimal(data={"path": "a.txt", "field_delimiter": ""}))


@pytest.mark.parametrize("monitor", ["loss", "accuracy", "val_loss", "val_accuracy"])
def test_checkpoint_monitor_follows_early_stopping(monitor):
    config = validate_config(minimal(early_stopping={"monitor": monitor}))
    assert config.checkpoint.monitor == monitor


def test_explicit_checkpoint_monitor_is_kept():
    config = validate_config(minimal(early_stopping={"monitor": "val_loss"}, checkpoint={"monitor": "accuracy"}))
    assert config.checkpoint.monitor == "accuracy"


def test_model_section_without_kind_is_lstm():
    config = validate_config(minimal(model={"hidden_size": 128}))
    assert isinstance(config.model, LSTMConfig)
    assert config.model.hidden_size == 128
    assert config_to_dict(config)["model"]["kind"] == "lstm"


def test_unknown_model_kind_is_rejected():
    message = config_error(minimal(model={"kind": "gpt", "hidden_size": 128}))
    assert "model" in message and "'gpt'" in message


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    "raw, path, hint",
    [
        # typos inside a section
        (minimal(optim={"lrr": 0.1}), "optim.lrr", "lr"),
        (minimal(model={"hidden_sise": 8}), "model.hidden_sise", "hidden_size"),
        (minimal(data={"path": "a.csv", "validaton_split": 0.1}), "data.validaton_split", "validation_split"),
        # a typo in a section name
        (minimal(trian={"epochs": 1}), "trian", "train"),
        # the right key in the wrong section
        (minimal(train={"lr": 0.1}), "train.lr", "optim.lr"),
        (minimal(early_stopping={"save_best": True}), "early_stopping.save_best", "checkpoint.save_best"),
        (minimal(optim={"epochs": 3}), "optim.epochs", "train.epochs"),  # not the look-alike 'eps'
        (minimal(data={"path": "a.csv", "vocab_size": 100}), "data.vocab_size", "tokenizer.vocab_size"),
        (minimal(train={"hidden_size": 10}), "train.hidden_size", "model.hidden_size"),
    ],
)
def test_unknown_key_names_path_and_suggests_the_right_key(raw, path, hint):
    message = config_error(raw)
    assert f"{path}: unknown key" in message
    assert f"did you mean '{hint}'?" in message


def test_unknown_key_without_a_close_match_has_no_hint():
    message = config_error(minimal(optim={"zzzzqqq": 1}))
    assert "optim.zzzzqqq: unknown key" in message
    assert "did you mean" not in message


# --------------------------------------------------------------------------- wrong types and ranges


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("optim", "lr", -0.001),
        ("optim", "lr", 0),
        ("optim", "lr", "fast"),
        ("model", "dropout", 1.0),
        ("model", "num_layers", 0),
        ("data", "validation_split", 1.5),
        ("data", "validation_split", -0.1),
        ("data", "max_records", 0),
        ("train", "epochs", 0),
        ("train", "batch_size", "many"),
        ("train", "device", "tpu"),
        ("tokenizer", "vocab_size", 4),
        ("tokenizer", "kind", "words"),
        ("generate", "top_p", 0.0),
        ("optim", "betas", [0.9, 1.0]),
        ("train", "epoch_callback", "no_colon_here"),
        ("generate", "stop", ["ok", ""]),
    ],
)
def test_bad_value_is_reported_with_its_dotted_path(section, key, value):
    values = {"path": "a.csv", key: value} if section == "data" else {key: value}
    message = config_error(minimal(**{section: values}))
    assert message.startswith("invalid config (1 problem)")
    assert f"{section}.{key}:" in message


def test_all_problems_reported_at_once():
    raw = minimal(
        optim={"lr": -1, "lrr": 2},
        model={"dropout": 1.0},
        data={"path": "a.csv", "validation_split": 1.5},
        train={"epochs": 0, "batch_size": "x"},
    )
    message = config_error(raw)
    assert message.startswith("invalid config (6 problems)")
    for path in [
        "optim.lr:",
        "optim.lrr:",
        "model.dropout:",
        "data.validation_split:",
        "train.epochs:",
        "train.batch_size:",
    ]:
        assert path in message


def test_missing_required_fields_are_named():
    message = config_error({"data": {}})
    assert "output_dir: required" in message
    assert "data.path: required" in message


def test_config_that_is_not_a_mapping_is_rejected():
    with pytest.raises(ConfigError, match="mapping"):
        validate_config(["not", "a", "mapping"])


def test_validate_assignment_rejects_bad_value_later():
    config = validate_config(minimal())
    with pytest.raises(ValueError):
        config.optim.lr = -1.0
    assert config.optim.lr == 0.003


# --------------------------------------------------------------------------- cross-field checks


def test_val_monitor_without_validation_data_is_rejected_for_both_uses():
    raw = minimal(data={"path": "a.csv", "validation_split": 0}, early_stopping={"monitor": "val_loss"})
    message = config_error(raw)
    assert "early_stopping.monitor" in message
    assert "checkpoint.monitor" in message  # derived from early_stopping.monitor
    assert "validation_split is 0" in message


def test_val_monitor_for_save_best_alone_is_rejected():
    raw = minimal(
        data={"path": "a.csv", "validation_split": 0},
        early_stopping={"enabled": False},
        checkpoint={"monitor": "val_accuracy"},
    )
    message = config_error(raw)
    assert "checkpoint.monitor" in message
    assert "early_stopping.monitor" not in message


def test_val_monitor_for_early_stopping_alone_is_rejected():
    raw = minimal(
        data={"path": "a.csv", "validation_split": 0},
        early_stopping={"monitor": "val_loss"},
        checkpoint={"monitor": "loss"},
    )
    message = config_error(raw)
    assert "early_stopping.monitor" in message
    assert "checkpoint.monitor" not in message


def test_unset_monitors_follow_the_validation_split():
    with_split = validate_config(minimal())
    assert with_split.early_stopping.monitor == with_split.checkpoint.monitor == "val_loss"
    no_split = validate_config(minimal(data={"path": "a.csv", "validation_split": 0}))  # no error: nothing to monitor
    assert no_split.early_stopping.monitor == no_split.checkpoint.monitor == "loss"


@pytest.mark.parametrize(
    "sections",
    [
        {"early_stopping": {"monitor": "loss"}},
        {"early_stopping": {"enabled": False}, "checkpoint": {"save_best": False}},
        {"early_stopping": {"monitor": "accuracy"}, "checkpoint": {"monitor": "loss"}},
    ],
)
def test_no_validation_data_is_fine_without_val_monitors(sections):
    config = validate_config(minimal(data={"path": "a.csv", "validation_split": 0}, **sections))
    assert config.data.validation_split == 0


# --------------------------------------------------------------------------- files: round trips


def test_yaml_exponent_without_dot_becomes_float(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("output_dir: m\ndata:\n  path: a.csv\noptim:\n  lr: 5e-5\n")
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == "5e-5"  # the pitfall is real
    config = load_config(path)
    assert isinstance(config.optim.lr, float)
    assert config.optim.lr == 5e-05


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml", ".toml"])
@pytest.mark.parametrize("make", [lambda: validate_config(minimal()), non_default_config], ids=["defaults", "custom"])
def test_save_and_load_round_trip(tmp_path, suffix, make):
    config = make()
    path = tmp_path / f"config{suffix}"
    save_config(config, path)
    loaded = load_config(path)
    assert loaded == config
    assert config_to_dict(loaded) == config_to_dict(config)


def test_toml_drops_nulls(tmp_path):
    config = non_default_config()
    assert config.generate.max_tokens is None and config.train.num_threads is None
    path = tmp_path / "config.toml"
    save_config(config, path)
    raw = read_config_file(path)
    assert "max_tokens" not in raw["generate"]
    assert "num_threads" not in raw["train"]
    assert raw["train"]["max_steps"] == 100


def _section_models() -> dict[str, list[type[BaseModel]]]:
    """Each top-level field's model classes (several for a union like `model`)."""
    found = {}
    for name, field in TrainingConfig.model_fields.items():
        ann = field.annotation
        candidates = [ann, *typing.get_args(ann)]
        models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if models:
            found[name] = models
    return found


def _accepts_none(annotation) -> bool:
    if annotation is None or annotation is type(None):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_accepts_none(a) for a in typing.get_args(annotation))
    return False


def test_every_nullable_field_defaults_to_none():
    sections = _section_models()
    assert set(sections) == set(SECTIONS)
    nullable = []
    fields = [(n, f) for n, f in TrainingConfig.model_fields.items() if n not in sections]
    for name, models in sections.items():
        for model in models:
            fields += [(f"{name}.{key}", f) for key, f in model.model_fields.items()]
    for path, field in fields:
        if _accepts_none(field.annotation):
            nullable.append(path)
            assert not field.is_required(), path
            assert field.get_default(call_default_factory=True) is None, f"{path} accepts null but defaults otherwise"
    # the walk does see the nullable fields (so the check above is not vacuous)
    assert {"data.format", "data.max_records", "checkpoint.monitor", "generate.seed", "train.max_steps"} <= set(
        nullable
    )


# --------------------------------------------------------------------------- overrides


def test_load_config_applies_overrides(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(minimal(train={"max_steps": 10})))
    config = load_config(
        path,
        overrides=[
            "train.epochs=5",
            "optim.lr=1e-4",
            "train.max_steps=null",
            "generate.stop=[END, '|']",
            "model.hidden_size=64",
            "generate.prefix=a=b",
        ],
    )
    assert config.train.epochs == 5
    assert config.optim.lr == 1e-4
    assert config.train.max_steps is None
    assert config.generate.stop == ["END", "|"]
    assert config.model.hidden_size == 64 and config.model.kind == "lstm"
    assert config.generate.prefix == "a=b"  # only the first '=' splits


def test_apply_overrides_parses_values_as_yaml():
    raw = apply_overrides({}, ["a.int=3", "a.float=0.5", "a.null=null", "a.list=[1, 2]", "a.text=hi", "a.empty="])
    assert raw == {"a": {"int": 3, "float": 0.5, "null": None, "list": [1, 2], "text": "hi", "empty": ""}}
    assert type(raw["a"]["int"]) is int


def test_bad_overrides_are_all_reported():
    with pytest.raises(ConfigError) as info:
        apply_overrides(minimal(), ["train.epochs", "=5", "data.path.x=1"])
    message = str(info.value)
    assert "'train.epochs': expected KEY=VALUE" in message
    assert "'=5'" in message
    assert "'path' is not a section" in message


def test_override_of_unknown_key_gets_the_usual_hint(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(minimal()))
    with pytest.raises(ConfigError, match=r"train\.lr: unknown key; did you mean 'optim\.lr'\?"):
        load_config(path, overrides=["train.lr=0.1"])


# --------------------------------------------------------------------------- files: errors


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("config.yaml", None, "not found"),
        ("config.ini", "[a]\nb = 1\n", "unknown config format"),
        ("config.yaml", "data: [1, 2\n", "cannot parse YAML"),
        ("config.yaml", "- output_dir: m\n- data: {}\n", "expected a mapping"),
        ("config.yaml", "", "empty"),
        ("config.yaml", "# only a comment\n", "empty"),
        ("config.json", "{not json", "cannot parse JSON"),
        ("config.json", "[1, 2]", "expected a mapping"),
        ("config.toml", "a = [1,\n", "cannot parse TOML"),
        ("config.yaml", b"output_dir: \xff\xfe\n", "not UTF-8"),
    ],
)
def test_read_config_file_errors(tmp_path, name, content, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        read_config_file(path)


def test_read_config_file_rejects_a_directory(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(ConfigError, match="not a file"):
        load_config(tmp_path / "dir.yaml")


# --------------------------------------------------------------------------- commented YAML and schema


def with_newlines():
    return validate_config(minimal(generate={"stop": ["\n", "END"], "prefix": "two\nlines"}, data={"path": "a.txt"}))


@pytest.mark.parametrize(
    "make",
    [lambda: validate_config(minimal()), non_default_config, with_newlines],
    ids=["defaults", "custom", "newlines"],
)
def test_commented_yaml_parses_back_and_comments_every_key(make):
    config = make()
    text = commented_yaml(config)
    assert validate_config(yaml.safe_load(text)) == config
    key_lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    section_lines = {f"{name}:" for name in SECTIONS}
    field_lines = [line for line in key_lines if line not in section_lines]
    # every field of every section (and the top-level fields) has its own line
    expected = 2 + sum(len(models[0].model_fields) for models in _section_models().values())
    assert len(field_lines) == expected
    for line in field_lines:
        assert "  # " in line, line


def test_json_schema_lists_sections_and_their_fields():
    schema = config_json_schema()
    assert isinstance(schema, dict)
    json.dumps(schema)  # serializable
    assert {"output_dir", "overwrite", *SECTIONS} <= set(schema["properties"])
    assert set(schema["required"]) == {"output_dir", "data"}
    defs = schema["$defs"]
    for models in _section_models().values():
        for model in models:
            assert set(defs[model.__name__]["properties"]) == set(model.model_fields)
    assert defs["OptimConfig"]["properties"]["lr"]["exclusiveMinimum"] == 0


# --------------------------------------------------------------------------- traps found in review


def test_constructor_raises_config_error_with_hints():
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        TrainingConfig(output_dir="m", data={"path": "a.csv"}, train={"lr": 0.1})


def test_a_yaml_section_with_every_key_commented_out_means_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: m\ndata:\n  path: a.csv\ntrain:\n  # epochs: 5\ngenerate:\n  prefix: 2024\n")
    config = load_config(path)
    assert config.train == TrainConfig(max_grad_norm=1.0)  # (null resolved: 1.0 without privacy)
    assert config.generate.prefix == "2024"  # YAML reads 2024 as a number; a prefix is text


@pytest.mark.parametrize(
    "section, value, where",
    [
        ("train", {"seed": 2**32}, "train.seed"),
        ("generate", {"max_tokens": 10**8}, "generate.max_tokens"),
    ],
)
def test_values_that_would_crash_later_are_rejected_now(section, value, where):
    assert where in config_error(minimal(**{section: value}))


def test_every_metric_says_which_way_it_improves():
    import typing

    from synthloom.config import METRIC_MODE, Metric

    assert set(METRIC_MODE) == set(typing.get_args(Metric))  # a new metric must declare min or max
    assert METRIC_MODE["val_accuracy"] == "max" and METRIC_MODE["val_loss"] == "min"
