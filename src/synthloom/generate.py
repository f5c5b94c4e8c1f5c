"""Sampling synthetic records from a trained model dir.

    model = load_model("model/")
    records = model.generate(num_records=1000, temperature=0.8, top_p=0.95, seed=1)
    good = [r.text for r in records if r.valid]

Many records are sampled at once (`batch_size` rows); each step feeds only the newest
token and carries the LSTM state, so a prefix is never re-run; a row that finishes hands
its slot to a new record at once (continuous batching), so the batch stays full. Every
record is checked (it ended, it is not empty, a CSV record has the right number of
fields, the user's validator accepts it) and comes back with `valid` and, if not, an
`explanation`.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import ValidationError

from .checkpoint import read_digests, read_field_digests, read_model_dir, read_schema
from .config import GenerateConfig, TrainingConfig, format_validation_error
from .data import encode_row
from .errors import ConfigError, GenerationError, ModelDirError
from .models import build_model, resolve_device
from .records import (
    COPY_EXPLANATION,
    NEAR_COPY_EXPLANATION,
    GeneratedRecord,
    check_record,
    fewest_differences,
    is_training_copy,
)
from .schema import Schema, check_fields, is_missing, parse_value
from .tokenizers import EOR_ID, PAD_ID, UNK_ID, Tokenizer

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
        if isinstance(seed_fields, list):
            num_records = len(seed_fields) or None
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
    from .groups import GROUPS_FILE, load_grouped

    if (Path(path) / GROUPS_FILE).is_file():
        return load_grouped(Path(path), device)
    config, tokenizer, weights, summary = read_model_dir(path)
    target = resolve_device(device, "load_model(device=...)")
    net = build_model(config.model, tokenizer.vocab_size)
    try:
        net.load_state_dict(weights)
    except RuntimeError as exc:
        # torch lists each mismatch on its own line after a header: keep the first few
        details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()][:3]
        raise ModelDirError(
            f"{path}: the weights do not match the saved config: {'; '.join(details) or str(exc)}"
        ) from None
    net.to(target).eval()
    return TrainedModel(config, tokenizer, net, summary, Path(path), target, read_schema(Path(path)))


def generate(model_dir: str | Path, num_records: int | None = None, **kwargs: Any) -> list[GeneratedRecord]:
    """Load a model dir and sample from it (see TrainedModel.generate)."""
    return load_model(model_dir).generate(num_records, **kwargs)


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
        raise ConfigError(format_validation_error(exc).replace("\n  ", "\n  generate.")) from None


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
    seeds = _seed_list(model, seed_fields, opts)  # None, or one dict of leading fields per job
    if seeds is not None and opts.prefix:
        raise GenerationError("give seed fields or generate.prefix, not both (seed fields are a prefix)")
    prefixes = [_seed_prefix(model, seed) for seed in seeds] if seeds is not None else [opts.prefix]
    counts_per_job = [1] * len(seeds) if isinstance(seed_fields, list) else [opts.num_records]
    prefix_ids = []
    for text in dict.fromkeys(prefixes):
        ids = tok.encode(text) if text else []
        if UNK_ID in ids:
            what = "seed fields" if seeds is not None else "generate.prefix"
            raise GenerationError(f"{what} {text!r} hold characters the model never saw in training")
        prefix_ids.append(ids)
    job_prefix = {text: ids for text, ids in zip(dict.fromkeys(prefixes), prefix_ids)}
    max_tokens = opts.max_tokens or 2 * int(model.summary.get("max_record_tokens", 256))
    seed = opts.seed if opts.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
    generator = torch.Generator(device=model.device).manual_seed(seed)
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
    checks = _field_checks(model, field_validators)

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
    records: list[GeneratedRecord] = []
    counts = {"valid": 0, "invalid": 0}
    needed = list(counts_per_job)  # valid records each job still needs
    in_flight = [0] * len(needed)
    wanted_total = sum(needed)

    def judge(text: str, done: bool, job: int) -> GeneratedRecord:
        record = check_record(text, done, max_tokens, delimiter, num_fields, None)
        if not record.valid:
            return record
        if copies is not None and is_training_copy(record.text, *copies):
            return GeneratedRecord("", False, COPY_EXPLANATION)  # its text is training data: not returned
        if near is not None:
            differ = fewest_differences(record.fields, near, copies[1])
            if differ <= opts.near_copy_fields:  # most of it is training data: not returned either
                why = f"{NEAR_COPY_EXPLANATION}: {differ} of {len(record.fields)} fields differ"
                return GeneratedRecord("", False, why)
        if record.fields is not None:
            if seeds is not None:
                changed = [c for c, v in seeds[job].items() if record.fields[model_columns.index(c)] != v]
                if changed:  # (in the file's order, as every other record comes back)
                    fields = [record.fields[i] for i in reorder] if reorder is not None else record.fields
                    why = f"seed field {changed[0]} changed"
                    return GeneratedRecord(encode_row(fields, delimiter), False, why, fields)
            problem = None
            if model.schema is not None and opts.check_types:
                problem = check_fields(model.schema, record.fields, check_categories=not opts.unseen_categories)
            problem = problem or _run_field_checks(checks, record.fields)
            if reorder is not None:  # back to the file's column order
                record.fields = [record.fields[i] for i in reorder]
                record.text = encode_row(record.fields, delimiter)
            if problem:
                return GeneratedRecord(record.text, False, problem, record.fields)
        return _user_check(record, validator) if validator is not None else record

    def finish(token_rows: list[list[int]], ended: list[bool], jobs: list[int]) -> None:
        for text, done, job in zip(tok.decode_batch(token_rows), ended, jobs):
            text = prefixes[job] + text
            for s in opts.stop:  # a stop string ends the record where it first appears
                cut = text.find(s, len(prefixes[job]))
                if cut >= 0:
                    text, done = text[:cut], True
            record = judge(text, done, job)
            record.seed = job if seeds is not None else None
            records.append(record)
            in_flight[job] -= 1
            if record.valid:
                counts["valid"] += 1
                needed[job] -= 1
            else:
                counts["invalid"] += 1
        if progress is not None:
            progress(counts["valid"], counts["invalid"])

    def wanted(free: int) -> list[int]:
        # start no more than could still be needed if every record in flight turns out valid;
        # past max_invalid start none, but let those in flight finish (nothing is thrown away)
        if counts["invalid"] > opts.max_invalid:
            return []
        jobs: list[int] = []
        for job, need in enumerate(needed):
            if len(jobs) >= free:
                break
            take = min(need - in_flight[job], free - len(jobs))
            if take > 0:
                jobs += [job] * take
                in_flight[job] += take
        return jobs

    job_ids = [job_prefix[p] for p in prefixes]
    settings = (opts.temperature, opts.top_k, opts.top_p)
    try:
        sample_stream(
            model.net,
            job_ids,
            max_tokens,
            settings,
            generator,
            opts.batch_size,
            wanted,
            finish,
            stop=opts.stop,
            tokenizer=tok,
        )
    except KeyboardInterrupt:
        err = GenerationError(f"interrupted after {counts['valid']} valid record(s)")
        err.records = records  # what was generated is not lost
        raise err from None
    if seeds is not None and len(seeds) > 1:  # record i of the output answers seed i
        records.sort(key=lambda r: (r.seed, r.valid))
    if counts["invalid"] > opts.max_invalid:
        copies = sum((r.explanation or "").startswith((COPY_EXPLANATION, NEAR_COPY_EXPLANATION)) for r in records)
        advice = (
            f"{copies} were copies of training records: the model reproduces its training data; raise the "
            "temperature, train for fewer epochs, or turn the privacy filter off (--no-privacy-filter)"
            if copies * 2 > counts["invalid"]
            else "Train longer, lower the temperature, or raise max_invalid"
        )
        err = GenerationError(
            f"{counts['invalid']} invalid records (more than generate.max_invalid={opts.max_invalid}) with only "
            f"{counts['valid']} valid of {wanted_total}; last reason: {_last_reason(records)}. {advice}."
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


def _user_check(record: GeneratedRecord, validator: Validator) -> GeneratedRecord:
    try:
        verdict = validator(record.text)
    except Exception as exc:  # the user's code: any exception means "invalid, because..."
        return GeneratedRecord(record.text, False, f"validator: {type(exc).__name__}: {exc}", record.fields)
    if verdict is False:
        return GeneratedRecord(record.text, False, "validator returned False", record.fields)
    return record


def _field_checks(model: TrainedModel, field_validators: dict[str, Validator] | None) -> list:
    """(index in the record's fields, column, validator) for each per-field validator."""
    if not field_validators:
        return []
    if model.model_columns is None:
        raise GenerationError("field validators need a csv model with a header (named columns)")
    unknown = [c for c in field_validators if c not in model.model_columns]
    if unknown:
        raise GenerationError(f"field validators for unknown column(s) {unknown}; columns: {model.columns}")
    return [(model.model_columns.index(c), c, fn) for c, fn in field_validators.items()]


def _run_field_checks(checks: list, fields: list[str]) -> str | None:
    for index, column, fn in checks:
        try:
            verdict = fn(fields[index])
        except Exception as exc:  # the user's code
            return f"{column}: validator: {type(exc).__name__}: {exc}"
        if verdict is False:
            return f"{column}: validator returned False for {fields[index]!r}"
    return None


def _seed_list(model: TrainedModel, seed_fields, opts: GenerateConfig) -> list[dict[str, str]] | None:
    """Seed fields as a list of {column: text}, checked against the model's leading columns."""
    if seed_fields is None:
        return None
    if model.delimiter is None or model.model_columns is None:
        raise GenerationError("seed fields need a csv model with a header (named columns)")
    many = isinstance(seed_fields, list)
    seeds = seed_fields if many else [seed_fields]
    if not seeds:
        raise GenerationError("seed fields: the list of seeds is empty")
    keys = list(seeds[0])
    leading = model.model_columns[: len(keys)]
    for i, seed in enumerate(seeds):
        if not isinstance(seed, dict) or not seed:
            raise GenerationError(f"seed fields: seed {i + 1} is not a mapping of column -> value")
        if set(seed) != set(keys):
            raise GenerationError(f"seed fields: seed {i + 1} names {sorted(seed)}, seed 1 names {sorted(keys)}")
    if set(keys) != set(leading) or len(keys) >= len(model.model_columns):
        raise GenerationError(
            f"seed fields {keys} must be the model's leading columns (it writes {model.model_columns} left to "
            f"right, so it can only continue from its first ones); train with data.leading_columns: {keys}"
        )
    seeds = [{c: _as_text(seed[c]) for c in leading} for seed in seeds]
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


def _as_text(value: Any) -> str:
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


def _seed_prefix(model: TrainedModel, seed: dict[str, str]) -> str:
    return encode_row(list(seed.values()), model.delimiter) + model.delimiter


def _last_reason(records: list[GeneratedRecord]) -> str | None:
    return next((r.explanation for r in reversed(records) if not r.valid), None)


@torch.no_grad()
def sample_stream(
    net: torch.nn.Module,
    job_prefixes: list[list[int]],
    max_tokens: int,
    settings: tuple[float, int, float],
    generator: torch.Generator,
    slots: int,
    wanted: Callable[[int], list[int]],
    finish: Callable[[list[list[int]], list[bool], list[int]], None],
    stop: list[str] | None = None,
    tokenizer: Tokenizer | None = None,
) -> None:
    """Sample records with continuous batching: up to `slots` records in flight, one token
    each per step; a record that ends hands its slot to a new one at once, so the matrix
    products stay full-width to the last record. `wanted(free)` returns the jobs of the
    records to start now (at most `free`); a record of job j continues `job_prefixes[j]`.
    `finish(token_rows, ended, jobs)` receives records as they end: their tokens (without the
    end token), whether they ended by themselves (False: max_tokens hit), and their jobs.

    Each distinct prefix runs once; every record of a job starts from its state, and rows
    never interact, so each record's distribution is that of sampling it alone.
    """
    temperature, top_k, top_p = settings
    device = next(net.parameters()).device
    plan = net.sampling_plan()
    starts = _prefix_states(net, job_prefixes, device)  # job -> (logits (V,), h (L, H), c (L, H))

    def start(jobs: list[int]):
        return (
            torch.stack([starts[j][0] for j in jobs]),
            torch.stack([starts[j][1] for j in jobs], dim=1),
            torch.stack([starts[j][2] for j in jobs], dim=1),
        )

    jobs = wanted(slots)
    n = len(jobs)
    if n == 0:
        return
    logits, h0, c0 = start(jobs)
    state = (h0, c0)  # each (L, n, H)
    buf = torch.full((n, max_tokens), PAD_ID, dtype=torch.int32, device=device)  # tokens so far
    pos = torch.zeros(n, dtype=torch.long, device=device)  # each row's length
    step = 0
    while n > 0:
        token = sample_next(logits, temperature, top_k, top_p, generator)  # (n,)
        buf[torch.arange(n, device=device), pos] = token.int()
        pos += 1
        step += 1
        eor = token == EOR_ID
        ended = eor.clone()
        if stop and tokenizer is not None and step % 4 == 0:  # stop strings: checked every few steps
            width = int(pos.max())
            texts = tokenizer.decode_batch([r[:n] for r, n in zip(buf[:, :width].tolist(), pos.tolist())])
            ended |= torch.tensor([any(s in x for s in stop) for x in texts], device=device)
        finished = ended | (pos >= max_tokens)
        done = finished.nonzero().squeeze(1)  # rows whose record ended this step
        refill = done[:0]
        new_jobs: list[int] = []
        if done.numel():
            done_rows = done.tolist()
            lengths = (pos[done] - eor[done].long()).tolist()  # the end token is not kept
            finish(
                [row[:length] for row, length in zip(buf[done].tolist(), lengths)],
                ended[done].tolist(),
                [jobs[i] for i in done_rows],
            )
            new_jobs = wanted(len(done_rows))
            refill, drop = done[: len(new_jobs)], done[len(new_jobs) :]  # freed slots start new records, in place
            for row, job in zip(done_rows, new_jobs):
                jobs[row] = job
            buf[refill] = PAD_ID
            pos[refill] = 0
            if drop.numel():  # nothing more to start: the batch shrinks
                keep = torch.ones(n, dtype=torch.bool, device=device)
                keep[drop] = False
                token, buf, pos = token[keep], buf[keep], pos[keep]
                state = tuple(s[:, keep] for s in state)
                jobs = [j for j, k in zip(jobs, keep.tolist()) if k]
                refill = torch.cumsum(keep, 0)[refill] - 1  # the refilled rows' new positions
                n = int(keep.sum())
        if n == 0:
            break
        logits, state = net.step(token, state, plan)  # (n, V); a refilled row's step is discarded:
        if refill.numel():  # it starts from its job's prefix state instead
            logits[refill], state[0][:, refill], state[1][:, refill] = start(new_jobs)


def _prefix_states(net: torch.nn.Module, job_prefixes: list[list[int]], device) -> list[tuple]:
    """Each job's start: the logits and LSTM state after [<eor>] + its prefix; each distinct prefix
    runs once, prefixes of one length together."""
    distinct = {tuple(p) for p in job_prefixes}
    by_length: dict[int, list[tuple[int, ...]]] = {}
    for p in distinct:
        by_length.setdefault(len(p), []).append(p)
    states: dict[tuple[int, ...], tuple] = {}
    for group in by_length.values():
        for i in range(0, len(group), 512):
            chunk = group[i : i + 512]
            logits, (h, c) = net(torch.tensor([[EOR_ID, *p] for p in chunk], device=device))
            for k, p in enumerate(chunk):
                states[p] = (logits[k, -1], h[:, k], c[:, k])
    return [states[tuple(p)] for p in job_prefixes]


def sample_next(
    logits: torch.Tensor, temperature: float, top_k: int, top_p: float, generator: torch.Generator
) -> torch.Tensor:
    """One token per row from (B, V) logits with temperature, top-k and top-p (nucleus)."""
    logits = logits.float() / temperature
    logits[:, PAD_ID] = float("-inf")  # never trained as a target; never emitted
    logits[:, UNK_ID] = float("-inf")  # '<unk>' would decode to a placeholder, not data
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # drop a token when the tokens before it already hold top_p of the mass (the top one always stays)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return sample_from(probs, generator)


def sample_from(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One index per row of (B, V) non-negative weights, by inverse CDF: exact, and on CPU
    several times cheaper than torch.multinomial (one uniform per row, not one per entry)."""
    cdf = probs.cumsum(-1)  # (B, V), non-decreasing; flat where a weight is 0
    total = cdf[:, -1:]
    u = torch.rand(total.shape, generator=generator, device=probs.device, dtype=probs.dtype) * total
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # u < total even after rounding
    return torch.searchsorted(cdf, u, right=True).squeeze(-1)  # first index whose cdf exceeds u
