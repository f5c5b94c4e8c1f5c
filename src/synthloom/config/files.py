"""Config files: YAML, JSON or TOML in and out, --set overrides, commented YAML, the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ..errors import ConfigError
from .training import DERIVED_KEYS, TrainingConfig, validate_config


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a JSON, YAML or TOML file into plain data (no validation)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path}" if not path.exists() else f"config path is not a file: {path}"
        )
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        if suffix == ".json":
            data = json.loads(text)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif suffix == ".toml":
            data = _tomllib().loads(text)
        else:
            raise ConfigError(f"{path}: unknown config format {suffix!r}; use .yaml, .yml, .json or .toml")
    except ConfigError:
        raise
    except Exception as exc:  # each parser has its own error type; all mean "not parseable"
        raise ConfigError(f"{path}: cannot parse {suffix[1:].upper()}: {exc}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(data).__name__}")
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides; values are parsed as YAML (5 -> int, null, [a, b])."""
    problems = []
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
            continue
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except Exception:  # not YAML (or YAML that cannot be built: a bad date, a bad !!int tag): the text
            parsed = value
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:  # absent, or a section whose keys are all commented out
                node[part] = {}
            child = node[part]
            if not isinstance(child, dict):
                problems.append(f"--set {key}: '{part}' is not a section")
                break
            node = child
        else:
            node[parts[-1]] = parsed
    if problems:
        raise ConfigError("invalid overrides:\n  " + "\n  ".join(problems))
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainingConfig:
    """Read a config file, apply `--set` style overrides and validate."""
    raw = read_config_file(path)
    return validate_config(apply_overrides(raw, list(overrides or [])))


def config_to_dict(config: TrainingConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")


def save_config(config: TrainingConfig, path: str | Path) -> None:
    """Write the resolved config as JSON, YAML or TOML (by suffix)."""
    path = Path(path)
    text = dump_config(config, path.suffix.lower().lstrip(".") or "json")
    path.write_text(text, encoding="utf-8")


def dump_config(config: TrainingConfig, fmt: str = "yaml") -> str:
    data = config_to_dict(config)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt in ("yaml", "yml"):
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    if fmt == "toml":
        import tomli_w

        return tomli_w.dumps(_drop_none(data))
    raise ConfigError(f"unknown config format {fmt!r}; use yaml, json or toml")


class _Dumper(yaml.SafeDumper):
    """SafeDumper that double-quotes strings holding U+0085/U+2028/U+2029: PyYAML writes them raw
    in plain or single-quoted scalars, where a reader takes them for line breaks (a space)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = '"' if any(c in value for c in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _drop_none(value: Any) -> Any:
    # TOML has no null; every nullable field defaults to null, so dropping is lossless
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def commented_yaml(config: TrainingConfig, unresolved: dict[str, Any] | None = None) -> str:
    """The config as YAML with each section's and field's description as a comment. With
    `unresolved` (the raw input), derived keys the input left out are shown as null."""
    out = [
        "# synthloom training configuration.",
        "# Run it:  synthloom train config.yaml   (override any key: --set train.epochs=5)",
        "# Every key is optional except output_dir and data.path; null means 'derive it'.",
        "",
    ]
    data = config_to_dict(config)
    if unresolved is not None:
        for section, key in DERIVED_KEYS:
            if key in data[section] and key not in (unresolved.get(section) or {}):
                data[section][key] = None
    for name, field in TrainingConfig.model_fields.items():
        value = data[name]
        section = getattr(config, name)
        if isinstance(section, BaseModel):
            doc = next(c.__doc__ for c in type(section).__mro__ if c.__doc__)
            out.append(f"# {doc.strip().splitlines()[0]}")
            out.append(f"{name}:")
            for key, sub in type(section).model_fields.items():
                out.append(_yaml_line(key, value[key], sub.description, indent="  "))
            out.append("")
        else:
            out.append(_yaml_line(name, value, field.description, indent=""))
    return "\n".join(out).rstrip() + "\n"


def _yaml_line(key: str, value: Any, description: str | None, indent: str) -> str:
    rendered = yaml.dump(
        {key: value}, Dumper=_Dumper, default_flow_style=True, allow_unicode=True, width=10_000
    ).strip()
    rendered = rendered[1:-1] if rendered.startswith("{") else rendered  # {k: v} -> k: v
    if "\n" in rendered:  # a value holding a newline: JSON is YAML, and stays on one line
        rendered = f"{key}: {json.dumps(value, ensure_ascii=False)}"
    return f"{indent}{rendered}  # {description}" if description else f"{indent}{rendered}"


def config_json_schema() -> dict[str, Any]:
    return TrainingConfig.model_json_schema()


def _tomllib():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib
