"""Wide tables: one model per group of correlated columns, chained by link columns.

    config.data.max_columns_per_model = 20          # train() then trains one model per group
    model = load_model("model")                     # a GroupedModel: generate() as any model

One model over a wide record can lose count of its fields (benchmarks/RESULTS.md: 1.5 %
valid records over 57 columns in 5 minutes). Above `data.max_columns_per_model` columns, the
columns are split into groups of correlated columns (the report's measures: |Pearson r|,
Cramer's V, eta), greedily: a group starts at the first column not yet placed (the
data.leading_columns start the first one) and takes the unplaced column most associated with
a column already in it, until it is full. Every group after the first also trains on one
link column, the earlier groups' column most associated with its own (not free text),
written first (its data.leading_columns). Sampling runs the first group, then each next one
seeded with the link value of the row being built (seed fields: one valid record per row),
and joins the parts. What it loses: dependencies between columns of different groups that
the link column does not carry (gretel's DataFrameBatch joined independent groups and so
lost all of them). The whole-row checks (field count, the privacy filter on whole rows,
field and record validators) run on the joined row; each group checks its own types.
train.max_time_seconds is the whole run's: each group gets the time still left times its share
of the columns still to train.

The model dir: config.json, summary.json, schema.json and the whole rows' digests at the
top, groups.json (each group's columns and link), and one ordinary model dir per group
(group-00, group-01, ...).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .checkpoint import (
    DIGESTS_FILE,
    SCHEMA_FILE,
    SUMMARY_FILE,
    check_output_dir,
    publish_model_dir,
    read_digests,
    read_field_digests,
    save_config_json,
    save_digests,
    write_json,
)
from .config import TrainingConfig
from .data import Records, decode_row, encode_row
from .errors import ConfigError, GenerationError, ModelDirError
from .records import (
    COPY_EXPLANATION,
    NEAR_COPY_EXPLANATION,
    GeneratedRecord,
    fewest_differences,
    field_digests,
    is_training_copy,
    training_digests,
    unique_records,
)
from .schema import Schema, infer_schema
from .seeds import field_checks, records_wanted, resolve_settings, seed_prefix

MIN_GROUP_SECONDS = 1.0  # a group's time limit when the run's is spent: at least its first step runs

log = logging.getLogger("synthloom")

GROUPS_FILE = "groups.json"


@dataclass
class Group:
    columns: list[str]  # the group's own columns, in the file's order
    leading: list[str]  # written first: the link column (or data.leading_columns for the first group)

    @property
    def model_columns(self) -> list[str]:
        return self.leading + [c for c in self.columns if c not in self.leading]


def plan_groups(schema: Schema, rows: list[list[str]], max_columns: int, first: list[str]) -> list[Group]:
    """Split the columns into groups of at most `max_columns` (a link column included)."""
    names = schema.names
    if len(first) > max_columns:
        raise ConfigError(
            f"data.leading_columns: {len(first)} columns do not fit data.max_columns_per_model={max_columns}"
        )
    from .report import association_matrix  # (here: report.py is not worth import time for one-model runs)

    assoc = association_matrix(schema, rows)
    unplaced = [j for j in range(len(names)) if names[j] not in first]
    groups: list[Group] = []
    members = [names.index(c) for c in first]
    while unplaced:
        link = None
        if groups:
            placed = [j for j in range(len(names)) if j not in unplaced and schema.columns[j].kind != "text"]
            placed = placed or [j for j in range(len(names)) if j not in unplaced]
        if not members:
            members = [unplaced.pop(0)]
        room = max_columns - (1 if groups else 0)
        while len(members) < room and unplaced:
            best = max(unplaced, key=lambda j: (max(assoc[j][m] for m in members), -j))
            members.append(best)
            unplaced.remove(best)
        if groups:
            link = max(placed, key=lambda j: (max(assoc[j][m] for m in members), -j))
        own = [names[j] for j in sorted(members)]
        leading = [names[link]] if link is not None else list(first)
        groups.append(Group(columns=own, leading=leading))
        members = []
    return groups


def train_groups(config: TrainingConfig, records: Records, callback, progress, train_one: Callable[..., Any]):
    """Train one model per column group into a staging dir, then publish it as output_dir.
    `train_one(config, data=(columns, rows), progress=, callback=)`: train.train, passed in (this
    module never imports train: train() calls this). Returns the published dir, what stopped
    the run, its epochs and its summary."""
    if config.privacy.enabled:
        raise ConfigError(
            "data.max_columns_per_model: with privacy.enabled every group would spend the budget on every record; "
            "train one model (max_columns_per_model: null)"
        )
    check_output_dir(config)
    delimiter = config.data.field_delimiter
    columns = records.columns or [f"column_{i + 1}" for i in range(records.num_fields or 0)]
    order = [(records.model_columns or columns).index(c) for c in columns]
    rows = [[fields[i] for i in order] for fields in (decode_row(t, delimiter) for t in records.texts)]
    schema = infer_schema(columns, rows, overrides=config.data.column_types)
    groups = plan_groups(schema, rows, config.data.max_columns_per_model, config.data.leading_columns)
    log.info(
        "%d columns in %d groups: %s",
        len(columns),
        len(groups),
        "; ".join(f"[{', '.join(g.model_columns)}]" for g in groups),
    )
    out = Path(config.output_dir).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.groups-", dir=out.parent))
    try:
        results = []
        started = time.monotonic()
        for k, group in enumerate(groups):
            cols = group.model_columns
            index = [columns.index(c) for c in cols]
            sub = config.model_dump(mode="json")
            if config.train.max_time_seconds is not None:  # the run's limit, shared out: the time left by columns
                left = config.train.max_time_seconds - (time.monotonic() - started)
                share = len(cols) / sum(len(g.model_columns) for g in groups[k:])
                sub["train"]["max_time_seconds"] = max(left * share, MIN_GROUP_SECONDS)
            sub["output_dir"] = str(staging / f"group-{k:02d}")
            sub["overwrite"] = False
            sub["data"] |= {
                "leading_columns": group.leading,
                "column_types": {c: t for c, t in config.data.column_types.items() if c in cols},
                "column_bounds": {c: b for c, b in config.data.column_bounds.items() if c in cols},
                "max_columns_per_model": None,
                "max_records": None,  # applied above
            }
            sub["generate"] |= {"privacy_filter": False, "near_copy_fields": 0}  # whole rows are filtered
            log.info("group %d of %d: %s", k + 1, len(groups), ", ".join(cols))
            sub_rows = [[row[i] for i in index] for row in rows]
            results.append(train_one(sub, data=(cols, sub_rows), progress=progress, callback=callback))
        write_json(staging / GROUPS_FILE, [{"columns": g.columns, "leading": g.leading} for g in groups])
        save_config_json(config, staging)
        write_json(staging / SCHEMA_FILE, schema.to_dict())
        salt = os.urandom(16)
        texts = [encode_row(row, delimiter) for row in rows]
        save_digests(
            training_digests(unique_records(texts), salt), salt, staging / DIGESTS_FILE, field_digests(rows, salt)
        )
        summary = {
            "columns": columns,
            "model_columns": columns,
            "num_fields": len(columns),
            "groups": [g.model_columns for g in groups],
            "records": {"used": len(rows)},
            "steps": sum(r.steps for r in results),
            "device": results[0].summary.get("device"),
            "stopped_by": [r.stopped_by for r in results],
        }
        write_json(staging / SUMMARY_FILE, summary)
        published = publish_model_dir(staging, config)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    stopped = results[-1].stopped_by if len({r.stopped_by for r in results}) == 1 else "groups"
    return published, stopped, max(r.epochs for r in results), summary


@dataclass
class GroupedModel:
    """A model dir of column groups, loaded: generate() and generate_dataframe() as TrainedModel's."""

    config: TrainingConfig
    parts: list[tuple[Group, Any]]  # (group, its TrainedModel)
    summary: dict[str, Any]
    schema: Schema
    path: Path

    @property
    def columns(self) -> list[str]:
        return self.summary["columns"]

    @property
    def model_columns(self) -> list[str]:
        return self.columns

    @property
    def delimiter(self) -> str:
        return self.config.data.field_delimiter

    def generate(
        self,
        num_records: int | None = None,
        *,
        validator: Callable[[str], Any] | None = None,
        field_validators: dict[str, Callable[[str], Any]] | None = None,
        seed_fields: dict[str, Any] | list[dict[str, Any]] | None = None,
        progress: Callable[[int, int], None] | None = None,
        **settings: Any,
    ) -> list[GeneratedRecord]:
        """Sample the first group, then each next one seeded with the rows' link values; join."""
        from .records import run_field_checks, user_check

        num_records = records_wanted(num_records, seed_fields)
        opts = resolve_settings(self.config.generate, num_records=num_records, **settings)
        if opts.prefix or opts.stop:
            raise GenerationError("generate.prefix / stop: a model of column groups takes seed fields instead")
        checks = field_checks(self, field_validators)
        copies = read_digests(self.path) if opts.privacy_filter else None
        near = read_field_digests(self.path) if opts.privacy_filter and opts.near_copy_fields else None
        if opts.near_copy_fields and opts.near_copy_fields >= len(self.columns):
            raise GenerationError(f"generate.near_copy_fields: {opts.near_copy_fields} of {len(self.columns)} fields")
        out: list[GeneratedRecord] = []
        valid = invalid = 0
        passes = 0
        max_invalid = opts.invalid_budget(opts.num_records)
        while valid < opts.num_records:
            budget = max_invalid - invalid
            if budget < 0 or passes > 1000:
                err = GenerationError(
                    f"{invalid} invalid records (more than generate.max_invalid={max_invalid}) with only {valid} "
                    f"valid of {opts.num_records}; train longer or raise max_invalid"
                )
                err.records = out
                raise err
            need = opts.num_records - valid
            part_settings = {
                k: getattr(opts, k)
                for k in ("temperature", "top_k", "top_p", "max_tokens", "batch_size", "check_types")
            } | {"unseen_categories": opts.unseen_categories, "privacy_filter": False, "max_invalid": budget}
            rows: list[dict[str, str]] | None = None
            for k, (group, model) in enumerate(self.parts):
                seed = None if opts.seed is None else opts.seed + 7919 * passes + k
                try:
                    if k == 0:
                        seeds = seed_fields[valid : valid + need] if isinstance(seed_fields, list) else seed_fields
                        recs = model.generate(need if seeds is None or isinstance(seeds, dict) else None,
                                              seed_fields=seeds, seed=seed, **part_settings)  # fmt: skip
                        rows = [dict(zip(model.columns, r.fields)) for r in recs if r.valid]
                    elif rows:
                        link = group.leading[0]
                        # a link value this group's tokenizer cannot spell (a character its columns never had)
                        # cannot seed it: that row is dropped, counted invalid
                        unseen = [i for i, row in enumerate(rows) if not _spellable(model, link, row[link])]
                        for i in reversed(unseen):
                            out.append(GeneratedRecord("", False, f"{link} = {rows[i][link]!r}: unseen by group {k}"))
                            del rows[i]
                        invalid += len(unseen)
                        recs = []
                        if rows:
                            seeds = [{link: row[link]} for row in rows]
                            recs = model.generate(seed_fields=seeds, seed=seed, **part_settings)
                        for r in recs:
                            if r.valid:
                                rows[r.seed].update(zip(model.columns, r.fields))
                    else:
                        recs = []
                except GenerationError as exc:
                    exc.records = out + [r for r in (exc.records or []) if not r.valid]
                    raise
                invalid += sum(not r.valid for r in recs)
                out += [r for r in recs if not r.valid]
            passes += 1
            for row in rows:
                fields = [row[c] for c in self.columns]
                record = GeneratedRecord(encode_row(fields, self.delimiter), True, None, fields)
                if copies is not None and is_training_copy(record.text, *copies):
                    record = GeneratedRecord("", False, COPY_EXPLANATION)
                elif near is not None and (d := fewest_differences(fields, near, copies[1])) <= opts.near_copy_fields:
                    record = GeneratedRecord("", False, f"{NEAR_COPY_EXPLANATION}: {d} of {len(fields)} fields differ")
                elif problem := run_field_checks(checks, fields):
                    record = GeneratedRecord(record.text, False, problem, fields)
                elif validator is not None:
                    record = user_check(record, validator)
                if record.valid and valid >= opts.num_records:
                    continue
                out.append(record)
                valid += record.valid
                invalid += not record.valid
            if progress is not None:
                progress(valid, invalid)
        return out

    def generate_dataframe(self, num_records: int | None = None, **kwargs: Any):
        from .frames import records_dataframe

        return records_dataframe(self.generate(num_records, **kwargs), self.columns, self.schema)


def _spellable(model, column: str, value: str) -> bool:
    from .tokenizers import UNK_ID

    tokenizer = model.tokenizer
    if tokenizer.kind == "fields":  # its vocabularies hold the value, or they do not (ValueError)
        try:
            tokenizer.encode_column(tokenizer.columns.index(column), value)
        except ValueError:
            return False
        return True
    return UNK_ID not in tokenizer.encode(seed_prefix(model, {column: value}))


def load_grouped(path: Path, device: str, load_one: Callable[[Path, str], Any]) -> GroupedModel:
    """The grouped model dir at `path`; `load_one(dir, device)` loads each group's model
    (generate.load_model, passed in: this module never imports generate.py)."""
    from .checkpoint import read_json, read_model_config, read_schema

    if not (path / SUMMARY_FILE).is_file():
        raise ModelDirError(f"{path}: not a complete grouped model dir (no {SUMMARY_FILE})")
    spec, summary = read_json(path / GROUPS_FILE), read_json(path / SUMMARY_FILE)
    config = read_model_config(path)
    parts = [(Group(g["columns"], g["leading"]), load_one(path / f"group-{k:02d}", device)) for k, g in enumerate(spec)]
    return GroupedModel(config, parts, summary, read_schema(path), path)
