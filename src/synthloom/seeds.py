"""What a generate() call asks for, checked against a model before anything is sampled: the
settings (the saved generate section with the call's overrides), how many records, the seed
fields, the per-field validators. Shared by one model (generate.py) and a model of column groups
(groups.py); it needs of a model only its columns, delimiter, schema and config.

    opts = resolve_settings(model.config.generate, temperature=0.8)    # ConfigError if unknown or invalid
    seeds = seed_list(model, [{"state": "MA"}, {"state": "NY"}], opts)  # one {column: text} per seed
    checks = field_checks(model, {"age": lambda v: int(v) < 120})      # (index, column, fn) each
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from pydantic import ValidationError

from .config import GenerateConfig, TrainingConfig, format_validation_error
from .data import decode_row, encode_row
from .errors import ConfigError, GenerationError
from .schema import is_missing, parse_value

Validator = Callable[[str], Any]


def records_wanted(num_records: int | None, seed_fields: Any) -> int | None:
    """num_records, or with a list of seed fields the number of seeds (one record each); a
    num_records that says otherwise is refused rather than ignored."""
    if not isinstance(seed_fields, list):
        return num_records
    if num_records is not None and num_records != len(seed_fields):
        raise GenerationError(
            f"num_records={num_records} with a list of {len(seed_fields)} seed fields: a list makes one record "
            "per seed; leave num_records out (or give one dict of seed fields for many records)"
        )
    return len(seed_fields) or None


def resolve_settings(base: GenerateConfig, **overrides: Any) -> GenerateConfig:
    """The saved generate section with the given (non-None) overrides, validated."""
    merged = base.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(merged) - set(GenerateConfig.model_fields))
    if unknown:
        raise ConfigError(
            f"unknown generation setting(s): {', '.join(unknown)}; known: {', '.join(GenerateConfig.model_fields)}"
        )
    try:
        return GenerateConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, TrainingConfig).replace("\n  ", "\n  generate.")) from None


def field_checks(model: Any, field_validators: dict[str, Validator] | None) -> list:
    """(index in the record's fields, column, validator) for each per-field validator."""
    if not field_validators:
        return []
    if model.model_columns is None:
        raise GenerationError("field validators need a csv model with a header (named columns)")
    unknown = [c for c in field_validators if c not in model.model_columns]
    if unknown:
        raise GenerationError(f"field validators for unknown column(s) {unknown}; columns: {model.columns}")
    return [(model.model_columns.index(c), c, fn) for c, fn in field_validators.items()]


def seed_list(model: Any, seed_fields, opts: GenerateConfig) -> list[dict[str, str]] | None:
    """Seed fields as a list of {column: text}, checked against the model's leading columns."""
    if seed_fields is None:
        return None
    if model.delimiter is None or model.model_columns is None:
        raise GenerationError("seed fields need a csv model with a header (named columns)")
    many = isinstance(seed_fields, list)
    seeds = seed_fields if many else [seed_fields]
    if not seeds:
        raise GenerationError("seed fields: the list of seeds is empty")
    keys = list(seeds[0]) if isinstance(seeds[0], dict) else []
    # a model trained on shuffled column orders starts from any columns (its leading ones always
    # among them: it has only ever written those first); one of fixed order from its leading ones
    shuffled = model.config.data.column_order == "shuffle"
    leading = model.model_columns[: len(keys)]
    for i, seed in enumerate(seeds):
        if not isinstance(seed, dict) or not seed:
            raise GenerationError(f"seed fields: seed {i + 1} is not a mapping of column -> value")
        if shuffled:
            unknown = [c for c in seed if c not in model.model_columns]
            if unknown:
                raise GenerationError(f"seed fields: seed {i + 1} names unknown column(s) {unknown}")
            first = model.config.data.leading_columns
            if not set(first) <= set(seed) or len(seed) >= len(model.model_columns):
                raise GenerationError(
                    f"seed fields: seed {i + 1} names {sorted(seed)}: a model trained with data.column_order: shuffle "
                    f"continues from any columns but all of them, and they must include its leading columns {first}"
                )
        elif set(seed) != set(keys):
            raise GenerationError(f"seed fields: seed {i + 1} names {sorted(seed)}, seed 1 names {sorted(keys)}")
    if not shuffled and (set(keys) != set(leading) or len(keys) >= len(model.model_columns)):
        raise GenerationError(
            f"seed fields {keys} must be the model's leading columns (it writes {model.model_columns} left to "
            f"right, so it can only continue from its first ones); train with data.leading_columns: {keys}, or "
            "with data.column_order: shuffle to seed any columns"
        )
    if shuffled:  # the leading columns first, then the others in the seed's order
        first = model.config.data.leading_columns
        seeds = [{c: as_text(seed[c]) for c in first + [c for c in seed if c not in first]} for seed in seeds]
    else:
        seeds = [{c: as_text(seed[c]) for c in leading} for seed in seeds]
    if model.schema is not None:  # a seed the model could never continue validly: say so now, not after max_invalid
        for i, seed in enumerate(seeds):
            for name, value in seed.items():
                column = model.schema.column(name)
                if is_missing(column, value):
                    if not column.allow_missing:
                        raise GenerationError(
                            f"seed fields: seed {i + 1}: {name} is missing, and it never is in training"
                        )
                    continue
                try:
                    parse_value(column, value)
                except ValueError as exc:
                    raise GenerationError(f"seed fields: seed {i + 1}: {exc}") from None
    return seeds


def as_text(value: Any) -> str:
    """A seed value as the field text training saw (a DataFrame's missing values are empty fields,
    its timestamps ISO 8601, as frames.dataframe_table writes them)."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and value != value):  # None / NaN: a missing value
        return ""
    pandas = sys.modules.get("pandas")
    if pandas is not None and pandas.api.types.is_scalar(value) and pandas.isna(value):  # pd.NA, NaT, np.nan
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def seed_prefix(model: Any, seed: dict[str, str]) -> str:
    return encode_row(list(seed.values()), model.delimiter) + model.delimiter


def prefix_seed(model: Any, prefix: str) -> dict[str, str]:
    """generate.prefix of a table model as seed fields: its complete leading fields."""
    fields = decode_row(prefix, model.delimiter)
    if prefix.endswith(model.delimiter):
        fields = fields[:-1]
    return dict(zip(model.model_columns, fields))
