"""The docs and examples stay true: every config key documented, every example config valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

from synthloom.config import TrainingConfig, load_config, section_classes

ROOT = Path(__file__).resolve().parents[1]


def dotted_keys() -> list[str]:
    keys = []
    for name in TrainingConfig.model_fields:
        classes = section_classes(name)
        keys += list(dict.fromkeys(f"{name}.{k}" for cls in classes for k in cls.model_fields)) or [name]
    return keys


def reference_table() -> str:
    """The 'Every key' table of docs/configuration.md, rendered from the config's fields."""

    def default(field) -> str:
        if field.default is PydanticUndefined:
            return {list: "[]", dict: "{}"}.get(field.default_factory, "required")
        value = list(field.default) if isinstance(field.default, tuple) else field.default
        return json.dumps(value)

    rows = ["| key | default | meaning |", "|---|---|---|"]
    for name, field in TrainingConfig.model_fields.items():
        classes = section_classes(name)
        for cls in classes:  # a union's variants share keys (schedule.gamma): each distinct row once
            for key, sub in cls.model_fields.items():
                if sub.description is None:  # a variant's tag (schedule.name): documented once, on the default
                    continue
                row = f"| `{name}.{key}` | `{default(sub)}` | {sub.description.replace('|', chr(92) + '|')} |"
                if row not in rows:
                    rows.append(row)
        if not classes:
            rows.append(f"| `{name}` | `{default(field)}` | {field.description} |")
    return "\n".join(rows)


def test_the_configuration_reference_matches_the_config():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    table = reference_table()
    assert table in doc, f"replace the 'Every key' table in docs/configuration.md with:\n{table}"
    assert all(f"`{k}`" in doc for k in dotted_keys())


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid_and_point_at_bundled_data(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # example paths are relative to the repo root, where their commands run
    config = load_config(path)
    assert Path(config.data.path).is_file()
    assert path.read_text().startswith("# "), "an example opens with the command that runs it"


def test_readme_holds_the_two_commands_and_they_exist():
    readme = (ROOT / "README.md").read_text()
    assert "bash examples/quickstart.sh" in readme and "bash .ci/run" in readme
    assert (ROOT / "examples" / "quickstart.sh").is_file() and "pytest" in (ROOT / ".ci" / "run").read_text()


def test_the_quickstarts_validator_holds_the_example_tables_rule():
    import csv

    from synthloom.hooks import load_callable

    check = load_callable(str(ROOT / "examples" / "rules.py") + ":active_after_signup", "--validator")
    with open(ROOT / "examples" / "data" / "customers.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][1] == "signup_date" and rows[0][13] == "last_active"
    line = lambda row: ",".join(f'"{v}"' if "," in v else v for v in row)  # noqa: E731
    assert all(check(line(row)) for row in rows[1:])  # every real row keeps it
    bad = list(rows[1])
    bad[13] = "2018-01-01"
    with pytest.raises(ValueError, match="before signup_date"):
        check(line(bad))
