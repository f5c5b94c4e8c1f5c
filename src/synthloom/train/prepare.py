"""Preparing a run: records read and split, the tokenizer trained (or taken) and the records encoded,
the context fitted, the steps counted.

    data = prepare(config)                          # -> Prepared: records, tokenizer, batches, step plan
    plan = plan_run(config)                         # the step plan alone (synthloom config validate)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..config import TrainingConfig
from ..data import (
    EOR_ID,
    Batches,
    Records,
    decode_row,
    pair_texts,
    read_records,
    split_records,
)
from ..errors import ConfigError, DataError, TokenizerError
from ..fields import FieldTokenizer
from ..privacy import encoding_budget
from ..private_stats import PrivateStats
from ..schedules import StepPlan, plan_steps, resolve_for_records
from ..schema import Schema, infer_schema
from ..tokenizers import UNK_ID, PairTokenizer, Tokenizer, encode_all, encode_sources, train_tokenizer

log = logging.getLogger("synthloom")


@dataclass
class Prepared:
    """The records, split and encoded, with the tokenizer trained on them and the step plan."""

    config: TrainingConfig  # train.batch_size and train.epochs resolved for the records
    records: Records
    train_texts: list[str]
    val_texts: list[str]
    tokenizer: Tokenizer
    batches: Batches  # the encoded records (train, val) and how indices become a batch
    plan: StepPlan
    schema: Schema | None = None  # csv: each column's type, inferred from all the records
    private_stats: PrivateStats | None = None  # privacy.enabled: the noisy statistics the vocabularies came from

    @property
    def train_ids(self):
        return self.batches.train

    @property
    def val_ids(self):
        return self.batches.val


def prepare(config: TrainingConfig, tokenizer: Tokenizer | None = None, table=None, world: int = 1) -> Prepared:
    """Read (or take `table`, a DataFrame's), split and encode the records (with `tokenizer`, or one
    trained on them) and plan the steps (for `world` processes training together)."""
    seed = config.train.seed
    records, train_texts, val_texts = _read_and_split(config, table)
    for note in records.notes:
        log.warning("%s: %s", config.data.path, note)
    config = resolve_for_records(config, len(train_texts), world)
    plan = plan_steps(config, len(train_texts), world=world)  # before the tokenizer: a schedule that cannot fit fails
    planned = len(train_texts)
    schema = None
    if config.data.format == "csv":
        names = records.model_columns or [f"column_{i + 1}" for i in range(records.num_fields or 0)]
        rows = [decode_row(t, config.data.field_delimiter) for t in records.texts]
        schema = infer_schema(names, rows, overrides=config.data.column_types)
        log.info("columns: %s", ", ".join(f"{c.name} ({c.kind})" for c in schema.columns))
    private_stats = None
    if config.tokenizer.kind == "fields":
        if tokenizer is None:
            if config.privacy.enabled:  # every statistic the vocabularies keep, from noisy counts
                epsilon, delta = encoding_budget(config, len(train_texts))
                noise_seed = config.privacy.noise_seed
                rng = np.random.default_rng(None if noise_seed is None else noise_seed + 3)
                bounded = frozenset(config.data.column_bounds)
                private_stats = PrivateStats.for_schema(schema, epsilon, delta, rng, bounded)
            tokenizer = FieldTokenizer.train(
                schema, rows, config.tokenizer, seed=seed, dp=private_stats, bounds=config.data.column_bounds
            )
        for note in tokenizer.notes:
            log.info("tokenizer: %s", note)
        train_ids, train_texts = _encode_fields(tokenizer, train_texts, config, "train")
        val_ids, val_texts = _encode_fields(tokenizer, val_texts, config, "validation")
        if not len(train_ids):
            raise DataError(f"{config.data.path}: no training record fits the vocabularies of train.init_from")
    else:
        pairs = None
        if config.model.kind == "seq2seq":  # (source, target) texts; a record's ids: source <eor> target
            names = records.model_columns or []
            pairs = [pair_texts(part, names, config.data) for part in (train_texts, val_texts)]
        if tokenizer is None:
            tokenizer = _train_text_tokenizer(config, records.texts, pairs)
        if pairs is None:
            train_ids = encode_all(tokenizer, train_texts)
            val_ids = encode_all(tokenizer, val_texts)
        else:
            train_ids, val_ids = (_encode_pairs(tokenizer, part) for part in pairs)
        n_unk = sum(UNK_ID in ids for ids in train_ids + val_ids)
        if n_unk:
            log.warning(
                "%d record(s) hold characters the tokenizer cannot represent (tokenizer.character_coverage=%s); "
                "they train on <unk> and generated records never contain those characters",
                n_unk,
                config.tokenizer.character_coverage,
            )
    if "context_length" in type(config.model).model_fields:  # a model with a context: fit it to the records
        config, kept = _fit_context(config, tokenizer, train_ids, val_ids)
        if kept is not None:
            train_ids, val_ids = [train_ids[i] for i in kept[0]], [val_ids[i] for i in kept[1]]
            records.skipped_long += len(train_texts) + len(val_texts) - len(kept[0]) - len(kept[1])
            train_texts, val_texts = [train_texts[i] for i in kept[0]], [val_texts[i] for i in kept[1]]
    if len(train_texts) != planned:  # records skipped after encoding (context, init_from's vocabularies)
        plan = plan_steps(config, len(train_texts), world=world)
    log.info(
        "records: %d read, %d train, %d validation; tokenizer %s, vocabulary %d",
        len(records.texts),
        len(train_texts),
        len(val_texts),
        tokenizer.kind,
        tokenizer.vocab_size,
    )
    batches = Batches(
        train_ids,
        val_ids,
        tokenizer,
        shuffle_columns=config.data.column_order == "shuffle",
        leading=len(config.data.leading_columns),
        seed=seed,
        pairs=config.model.kind == "seq2seq",
    )
    return Prepared(config, records, train_texts, val_texts, tokenizer, batches, plan, schema, private_stats)


def _train_text_tokenizer(config: TrainingConfig, texts: list[str], pairs) -> Tokenizer:
    """char or sentencepiece on the records; seq2seq: on sources and targets together, or (tokenizer.share_vocab
    false) one for each side, on its own texts, in a PairTokenizer."""
    cfg, seed, delimiter = config.tokenizer, config.train.seed, config.data.field_delimiter
    if pairs is None:
        return train_tokenizer(cfg, texts, seed=seed, delimiter=delimiter)
    every = [pair for part in pairs for pair in part]
    if cfg.share_vocab:
        return train_tokenizer(cfg, [t for pair in every for t in pair], seed=seed, delimiter=delimiter)
    source, target = (train_tokenizer(cfg, [p[k] for p in every], seed=seed, delimiter=delimiter) for k in (0, 1))
    return PairTokenizer(source, target)


def _encode_pairs(tokenizer: Tokenizer, pairs: list[tuple[str, str]]) -> list[list[int]]:
    sources = encode_sources(tokenizer, [s for s, _ in pairs])
    targets = encode_all(tokenizer, [t for _, t in pairs])
    return [s + [EOR_ID] + t for s, t in zip(sources, targets)]


def _fit_context(config: TrainingConfig, tokenizer: Tokenizer, train_ids, val_ids):
    """model.context_length: null -> the longest record's tokens + 1 (the start token); set, text records
    longer than it are skipped or refused (data.long_records), a table's row must fit whole. Returns the
    config and, when records were skipped, the indices kept of (train, validation); else None."""
    limit = config.model.context_length
    if tokenizer.kind == "fields":
        need = tokenizer.num_slots + 1
        if limit is not None and limit < need:
            raise ConfigError(
                f"model.context_length: a row of this table is {need} tokens with the start token, more than "
                f"{limit}; raise it or leave it null"
            )
        return config if limit is not None else _with_context(config, need), None
    longest = max(len(ids) for ids in [*train_ids, *val_ids]) + 1
    if limit is None:
        return _with_context(config, longest), None
    if longest <= limit:
        return config, None
    kept = tuple([i for i, ids in enumerate(part) if len(ids) + 1 <= limit] for part in (train_ids, val_ids))
    skipped = len(train_ids) + len(val_ids) - len(kept[0]) - len(kept[1])
    if config.data.long_records == "error":
        raise DataError(
            f"{config.data.path}: {skipped} record(s) are longer than model.context_length={limit} tokens (the "
            f"longest is {longest}); raise it, leave it null, or set data.long_records: skip"
        )
    if not kept[0]:
        raise DataError(f"{config.data.path}: no record fits model.context_length={limit} tokens")
    log.warning("skipped %d record(s) longer than model.context_length=%d tokens", skipped, limit)
    return config, kept


def _with_context(config: TrainingConfig, length: int) -> TrainingConfig:
    model = config.model.model_copy(update={"context_length": length})
    return config.model_copy(update={"model": model})


def _encode_fields(tokenizer: FieldTokenizer, texts: list[str], config: TrainingConfig, part: str):
    """(ids, the texts of the rows they hold). Rows that do not fit the vocabularies: a tokenizer of
    train.init_from was trained on other records, so they are skipped (counted); otherwise the tokenizer
    was trained on these rows and only a resume on changed data gets here: an error."""
    ids, bad = tokenizer.encode_rows([decode_row(t, config.data.field_delimiter) for t in texts])
    if bad and config.train.init_from is None:
        raise TokenizerError(
            f"{len(bad)} record(s) do not fit the tokenizer's vocabularies (first: {bad[0][1]}); "
            "did the data change since the run started? Train afresh instead of --resume"
        )
    if bad:
        log.warning(
            "%d %s record(s) do not fit the vocabularies of train.init_from's tokenizer, skipped (first: %s)",
            len(bad),
            part,
            bad[0][1],
        )
        drop = {r for r, _ in bad}
        texts = [t for r, t in enumerate(texts) if r not in drop]
    return ids, texts


def plan_run(config: TrainingConfig, records: Records | None = None) -> StepPlan:
    """The run's step plan from its records (read here, or as read_records gave them), split as
    training does (no tokenizer)."""
    records = records if records is not None else read_records(config.data)
    train_texts, _ = split_records(records.texts, config.data.validation_split, config.train.seed)
    return plan_steps(config, len(train_texts))


def _read_and_split(config: TrainingConfig, table=None) -> tuple[Records, list[str], list[str]]:
    records = read_records(config.data, table)
    train_texts, val_texts = split_records(records.texts, config.data.validation_split, config.train.seed)
    return records, train_texts, val_texts
