"""Sampling synthetic records from a trained model dir.

    model = load_model("model/")
    records = model.generate(num_records=1000, temperature=0.8, top_p=0.95, seed=1)
    good = [r.text for r in records if r.valid]

Many records are sampled at once (`batch_size` rows); each step feeds only the newest
token and carries the model's state, so a prefix is never re-run; a row that finishes hands
its slot to a new record at once (continuous batching, continuous.py; table rows in lockstep,
lockstep.py), so the batch stays full; near the end, extra records run beside the last needed
ones, and the sample is each job's records in start order up to its last needed valid one, so
it does not favour quick records (draws.py). Every
record is checked (it ended, it is not empty, a CSV record has the right number of
fields, the user's validator accepts it) and comes back with `valid` and, if not, an
`explanation`.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import read_digests, read_field_digests, read_model_dir, read_schema, weights_mismatch
from .config import GenerateConfig, TrainingConfig
from .continuous import sample_stream
from .data import encode_row
from .draws import Draws, run_streams, share, split_needs, stream_seed
from .errors import GenerationError, ModelDirError
from .groups import GROUPS_FILE, load_grouped
from .lockstep import job_plans, sample_field_stream
from .models import build_model, resolve_device
from .models.precision import sampling_precision
from .records import (
    COPY_EXPLANATION,
    NEAR_COPY_EXPLANATION,
    GeneratedRecord,
    check_record,
    fewest_differences,
    is_training_copy,
    run_field_checks,
    training_copies,
    user_check,
)
from .schema import Schema, check_fields
from .seeds import field_checks, prefix_seed, records_wanted, resolve_settings, seed_list, seed_prefix
from .tokenizers import UNK_ID, Tokenizer, slot_mask

log = logging.getLogger("synthloom")

Validator = Callable[[str], Any]


@dataclass
class TrainedModel:
    """A model dir loaded for sampling."""

    config: TrainingConfig
    tokenizer: Tokenizer
    net: torch.nn.Module
    summary: dict[str, Any]
    path: Path
    device: torch.device
    schema: Schema | None = None  # csv models: each column's type (schema.json)

    @property
    def columns(self) -> list[str] | None:
        """The table's columns, in the training file's order (the order records come out in)."""
        return self.summary.get("columns")

    @property
    def model_columns(self) -> list[str] | None:
        """The order the model writes the fields in: data.leading_columns first."""
        return self.summary.get("model_columns") or self.columns

    @property
    def delimiter(self) -> str | None:
        """The CSV field delimiter of a table model; None for text models."""
        data = self.config.data
        return data.field_delimiter if data.format == "csv" else None

    def generate(
        self,
        num_records: int | None = None,
        *,
        validator: Validator | None = None,
        field_validators: dict[str, Validator] | None = None,
        seed_fields: dict[str, Any] | list[dict[str, Any]] | None = None,
        progress: Callable[[int, int], None] | None = None,
        **settings: Any,
    ) -> list[GeneratedRecord]:
        """Sample until `num_records` valid records exist (invalid ones are returned too,
        flagged). `settings` override the model's saved `generate` section: temperature, top_k,
        top_p, max_tokens, stop, prefix, batch_size, seed, max_invalid, privacy_filter,
        check_types, unseen_categories. A record the privacy filter drops comes back invalid,
        with its text blanked (it is training data).

        Tables: `validator` sees each record's CSV text, `field_validators` ({column: fn}) one
        field each; a validator rejects by returning False or raising. `seed_fields` fixes the
        leading columns: one dict for every record, or a list of dicts for one valid record per
        seed (num_records is then the number of seeds; valid records come in seed order).

        More than max_invalid invalid records (or Ctrl-C) raise GenerationError; its `records`
        holds everything sampled until then, so nothing valid is lost."""
        num_records = records_wanted(num_records, seed_fields)
        opts = resolve_settings(self.config.generate, num_records=num_records, **settings)
        return generate_records(
            self,
            opts,
            validator=validator,
            field_validators=field_validators,
            seed_fields=seed_fields,
            progress=progress,
        )

    def generate_dataframe(self, num_records: int | None = None, **kwargs: Any):
        """generate(...)'s valid records as a pandas DataFrame: the table's columns in its order,
        each typed by the model's schema (the 'pandas' extra)."""
        from .frames import records_dataframe

        if self.columns is None:
            raise GenerationError("generate_dataframe needs a table model (csv data with a header); use generate()")
        return records_dataframe(self.generate(num_records, **kwargs), self.columns, self.schema)


def load_model(path: str | Path, device: str = "auto") -> TrainedModel:
    """Load a model dir written by `train` (config, tokenizer, safetensors weights); a model dir of
    column groups (data.max_columns_per_model) loads as a GroupedModel with the same generate()."""
    if (Path(path) / GROUPS_FILE).is_file():
        return load_grouped(Path(path), device, load_model)
    config, tokenizer, weights, summary = read_model_dir(path)
    if config.model.kind == "seq2seq":
        raise ModelDirError(
            f"{path}: a seq2seq model turns sources into targets: synthloom generate {path} --source FILE.csv "
            "(in Python: synthloom.translate.load_seq2seq)"
        )
    target = resolve_device(device, "load_model(device=...)")
    net = build_model(config.model, tokenizer.vocab_size, slot_mask(tokenizer))
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        raise ModelDirError(f"{path}: the weights do not match the saved config: {weights_mismatch(exc)}") from None
    net.to(target).eval()
    return TrainedModel(config, tokenizer, net, summary, Path(path), target, read_schema(Path(path)))


def generate(model_dir: str | Path, num_records: int | None = None, **kwargs: Any) -> list[GeneratedRecord]:
    """Load a model dir and sample from it (see TrainedModel.generate)."""
    return load_model(model_dir).generate(num_records, **kwargs)


def generate_records(
    model: TrainedModel,
    opts: GenerateConfig,
    *,
    validator: Validator | None = None,
    field_validators: dict[str, Validator] | None = None,
    seed_fields: dict[str, Any] | list[dict[str, Any]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[GeneratedRecord]:
    tok = model.tokenizer
    fields = tok.kind == "fields"
    if fields and opts.prefix:  # a prefix of a table is its leading fields: seed fields say it better
        if seed_fields is not None:
            raise GenerationError("give seed fields or generate.prefix, not both (seed fields are a prefix)")
        seed_fields = prefix_seed(model, opts.prefix)
        opts = opts.model_copy(update={"prefix": ""})
    seeds = seed_list(model, seed_fields, opts)  # None, or one dict of leading fields per job
    if seeds is not None and opts.prefix:
        raise GenerationError("give seed fields or generate.prefix, not both (seed fields are a prefix)")
    counts_per_job = [1] * len(seeds) if isinstance(seed_fields, list) else [opts.num_records]
    if fields:
        if opts.stop:
            raise GenerationError("generate.stop: a table model writes whole rows of fields; stop strings do not apply")
        try:
            plans = job_plans(tok, seeds)
        except ValueError as exc:
            raise GenerationError(f"seed fields: {exc}") from None
        prefixes = [""] * len(plans)
    else:
        prefixes = [seed_prefix(model, seed) for seed in seeds] if seeds is not None else [opts.prefix]
        prefix_ids = []
        for text in dict.fromkeys(prefixes):
            ids = tok.encode(text) if text else []
            if UNK_ID in ids:
                what = "seed fields" if seeds is not None else "generate.prefix"
                raise GenerationError(f"{what} {text!r} hold characters the model never saw in training")
            prefix_ids.append(ids)
        job_prefix = {text: ids for text, ids in zip(dict.fromkeys(prefixes), prefix_ids)}
    max_tokens = opts.max_tokens or 2 * int(model.summary.get("max_record_tokens", 256))  # (text tokens)
    context = model.net.max_length  # (the model interface: None for no limit)
    if context is not None and tok.kind != "fields":  # [<eor>, prefix, record] must fit the model's context
        longest = max((len(ids) for ids in job_prefix.values()), default=0)
        if longest + 1 >= context:
            raise GenerationError(
                f"the prefix or seed fields are {longest} tokens; this model reads at most {context} with the start "
                "token (model.context_length), which leaves no room to generate"
            )
        max_tokens = min(max_tokens, context - longest)
    seed = opts.seed if opts.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
    delimiter = model.delimiter
    num_fields = model.summary.get("num_fields")
    columns, model_columns = model.columns, model.model_columns
    if not opts.unseen_categories and model.schema is not None:
        unknown = [c.name for c in model.schema.columns if c.kind == "categorical" and c.categories is None]
        if unknown:
            raise GenerationError(
                f"generate.unseen_categories: false needs the training categories, which {model.path} does not keep "
                f"(differentially private models do not: they are record values); columns: {', '.join(unknown)}"
            )
    reorder = [model_columns.index(c) for c in columns] if columns and model_columns != columns else None
    checks = field_checks(model, field_validators)

    if opts.privacy_filter and model.config.privacy.enabled:
        raise GenerationError(
            f"{model.path} was trained with differential privacy and keeps no digests of its training records "
            "(they would sit outside the guarantee), so the privacy filter has nothing to compare with; "
            "generate without it (--no-privacy-filter)"
        )
    copies = read_digests(model.path) if opts.privacy_filter else None
    if opts.privacy_filter and copies is None:
        log.warning("%s has no training-record digests (trained by an older synthloom): no privacy filter", model.path)
    near = _near_copy_digests(model, opts)
    n_streams = min(opts.streams, opts.batch_size)
    # each stream has its share of the records and of max_invalid: what one stream does never
    # depends on how fast another runs, so a seed gives the same records every time
    max_invalid = opts.invalid_budget(sum(counts_per_job))
    group = [
        Draws(needs, share(max_invalid, n_streams, k)) for k, needs in enumerate(split_needs(counts_per_job, n_streams))
    ]
    lock = threading.Lock()  # one stream judges at a time: validators and progress need not be thread-safe

    def judge(text: str, done: bool, job: int) -> GeneratedRecord:
        record = check_record(text, done, max_tokens, delimiter, num_fields, None)
        if not record.valid:
            return record
        return judge_record(record, job, check_types=model.schema is not None and opts.check_types)

    def judge_record(record: GeneratedRecord, job: int, check_types: bool, copy: bool | None = None) -> GeneratedRecord:
        """The checks past the record's shape: the privacy filter, seeds, types, validators.
        `copy`: whether the record is a training record, where the caller has looked it up."""
        if copy is None:
            copy = copies is not None and is_training_copy(record.text, *copies)
        if copy:
            return GeneratedRecord("", False, COPY_EXPLANATION)  # its text is training data: not returned
        if near is not None:
            differ = fewest_differences(record.fields, near, copies[1])
            if differ <= opts.near_copy_fields:  # most of it is training data: not returned either
                why = f"{NEAR_COPY_EXPLANATION}: {differ} of {len(record.fields)} fields differ"
                return GeneratedRecord("", False, why)
        if record.fields is not None:
            if seeds is not None and not fields:  # (field tokens write seeds as given, by construction)
                changed = [c for c, v in seeds[job].items() if record.fields[model_columns.index(c)] != v]
                if changed:  # (in the file's order, as every other record comes back)
                    row = [record.fields[i] for i in reorder] if reorder is not None else record.fields
                    why = f"seed field {changed[0]} changed"
                    return GeneratedRecord(encode_row(row, delimiter), False, why, row)
            problem = None
            if check_types:
                problem = check_fields(model.schema, record.fields, check_categories=not opts.unseen_categories)
            problem = problem or run_field_checks(checks, record.fields)
            if reorder is not None:  # back to the file's column order
                record.fields = [record.fields[i] for i in reorder]
                record.text = encode_row(record.fields, delimiter)
            if problem:
                return GeneratedRecord(record.text, False, problem, record.fields)
        return user_check(record, validator) if validator is not None else record

    def row_finisher(draws: Draws):
        def finish(rows: list[list[str]], tickets: list[int]) -> None:
            texts = [encode_row(row, delimiter) for row in rows]
            copied = training_copies(texts, *copies) if copies is not None else [False] * len(texts)
            with lock:
                for row, text, copy, ticket in zip(rows, texts, copied, tickets):
                    job = draws.job_of.get(ticket)
                    if job is None:
                        continue
                    record = judge_record(GeneratedRecord(text, True, None, row), job, False, bool(copy))
                    record.seed = job if seeds is not None else None
                    draws.finish(ticket, record)
                if progress is not None:
                    progress(sum(d.valid for d in group), sum(d.invalid for d in group))

        return finish

    def finisher(draws: Draws):
        def finish(token_rows: list[list[int]], ended: list[bool], tickets: list[int]) -> set[int]:
            cancel: set[int] = set()
            texts = tok.decode_batch(token_rows)
            with lock:
                for text, done, ticket in zip(texts, ended, tickets):
                    job = draws.job_of.get(ticket)
                    if job is None:  # cancelled by a record that finished in the same step
                        continue
                    text = prefixes[job] + text
                    for s in opts.stop:  # a stop string ends the record where it first appears
                        cut = text.find(s, len(prefixes[job]))
                        if cut >= 0:
                            text, done = text[:cut], True
                    record = judge(text, done, job)
                    record.seed = job if seeds is not None else None
                    cancel |= draws.finish(ticket, record)
                if progress is not None:
                    progress(sum(d.valid for d in group), sum(d.invalid for d in group))
            return cancel

        return finish

    def starter(draws: Draws):
        def start(free: int) -> list[tuple[int, int]]:
            with lock:
                return draws.start(free)

        return start

    settings = (opts.temperature, opts.top_k, opts.top_p)
    precision = sampling_precision(opts.precision, model.device)
    generators = [torch.Generator(device=model.device).manual_seed(stream_seed(seed, k)) for k in range(n_streams)]
    if fields:
        banned = _banned_tokens(model)
        streams = [
            partial(
                sample_field_stream,
                model.net,
                tok,
                plans,
                settings,
                generators[k],
                share(opts.batch_size, n_streams, k),
                starter(draws),
                row_finisher(draws),
                banned=banned,
                precision=precision,
            )
            for k, draws in enumerate(group)
        ]
    else:
        job_ids = [job_prefix[p] for p in prefixes]
        streams = [
            partial(
                sample_stream,
                model.net,
                job_ids,
                max_tokens,
                settings,
                generators[k],
                share(opts.batch_size, n_streams, k),
                starter(draws),
                finisher(draws),
                stop=opts.stop,
                tokenizer=tok,
                precision=precision,
            )
            for k, draws in enumerate(group)
        ]
    try:
        run_streams(streams, model.device)
    except KeyboardInterrupt:
        err = GenerationError(f"interrupted after {sum(d.valid for d in group)} valid record(s)")
        err.records = [r for d in group for r in d.records()]  # what was generated is not lost
        raise err from None
    records = [r for d in group for r in d.records()]
    valid, invalid = sum(d.valid for d in group), sum(d.invalid for d in group)
    if seeds is not None and len(seeds) > 1:  # record i of the output answers seed i
        records.sort(key=lambda r: (r.seed, r.valid))
    if valid < sum(counts_per_job) and any(d.invalid > d.max_invalid for d in group):  # (all delivered: success)
        shares = f", in {n_streams} streams of a share each" if n_streams > 1 else ""
        copies = sum((r.explanation or "").startswith((COPY_EXPLANATION, NEAR_COPY_EXPLANATION)) for r in records)
        advice = (
            f"{copies} were copies of training records: the model reproduces its training data; raise the "
            "temperature, train for fewer epochs, or turn the privacy filter off (--no-privacy-filter)"
            if copies * 2 > invalid
            else "Train longer, lower the temperature, or raise max_invalid"
        )
        err = GenerationError(
            f"{invalid} invalid records (more than generate.max_invalid={max_invalid}{shares}) with only "
            f"{valid} valid of {sum(counts_per_job)}; last reason: {_last_reason(records)}. {advice}."
        )
        err.records = records  # what was generated is not lost
        raise err
    return records


def _near_copy_digests(model: TrainedModel, opts: GenerateConfig):
    """The training rows' field digests when near copies are to be dropped, else None."""
    k = opts.near_copy_fields
    if k == 0:
        return None
    if model.config.privacy.enabled:
        raise GenerationError(
            f"generate.near_copy_fields: {model.path} was trained with differential privacy and keeps no digests of "
            "its records to compare with; set it to 0"
        )
    n = len(model.model_columns or [])
    if model.delimiter is None or not n:
        raise GenerationError("generate.near_copy_fields: near copies are counted in fields: a table model only")
    if k >= n:
        raise GenerationError(f"generate.near_copy_fields: {k} of {n} fields would call every record a near copy")
    if not opts.privacy_filter:
        raise GenerationError("generate.near_copy_fields: part of the privacy filter, which is off; turn it on")
    fields = read_field_digests(model.path)
    if fields is None:
        raise GenerationError(f"{model.path} keeps no per-field digests (trained by an older synthloom): retrain it")
    return fields


def _banned_tokens(model: TrainedModel) -> dict[int, list[int]] | None:
    """A DP model's <rare> tokens: the rare values behind them are unknown (they are record values),
    so they are never drawn; their mass goes to the categories the model does know."""
    if not model.config.privacy.enabled:
        return None
    tok = model.tokenizer
    banned = {}
    for c, codec in enumerate(tok.codecs):
        if getattr(codec, "kind", None) == "category" and codec.has_rare and not codec.rare and tok.column_slots[c]:
            banned[tok.column_slots[c][0]] = [codec.rare_token]
    return banned or None


def _last_reason(records: list[GeneratedRecord]) -> str | None:
    return next((r.explanation for r in reversed(records) if not r.valid), None)
