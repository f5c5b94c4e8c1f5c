"""TrainingConfig: the sections together, what is derived from what (nulls resolved), the checks across
sections, and validate_config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from ..errors import ConfigError
from .messages import format_validation_error
from .messages import section_classes as classes_of
from .sections import (
    CheckpointConfig,
    ConstantSchedule,
    CyclicalSchedule,
    DataConfig,
    EarlyStoppingConfig,
    GenerateConfig,
    LoRAConfig,
    LSTMConfig,
    ModelConfig,
    OneCycleSchedule,
    OptimConfig,
    PolynomialSchedule,
    PrivacyConfig,
    ReduceOnPlateauSchedule,
    ScheduleConfig,
    Section,
    TokenizerConfig,
    TrainConfig,
)

DELIMITERS = ",;\t|"  # what sniff_delimiter tries, in this order of preference


def sniff_delimiter(path: Path, lines: int = 50) -> str:
    """The CSV delimiter of the file's first lines: of , ; tab |, the first that splits the header into
    two or more fields and every other line read into as many; ',' where none does (or no file)."""
    import csv
    import io

    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            head = f.read(1 << 16)
    except (OSError, ValueError):  # not there, not readable, or not a path (a NUL in it)
        return ","
    if len(head) == 1 << 16:  # a cut line is not evidence
        head = head[: head.rfind("\n") + 1] or head
    for delimiter in DELIMITERS:
        try:
            reader = csv.reader(io.StringIO(head, newline=""), delimiter=delimiter)
            rows = [r for _, r in zip(range(lines), reader) if r]
        except csv.Error:
            continue
        if rows and len(rows[0]) > 1 and all(len(r) == len(rows[0]) for r in rows):
            return delimiter
    return ","


class TrainingConfig(Section):
    """Everything a run does. Saved resolved as config.json in every model dir."""

    output_dir: Path = Field(description="The model dir that training writes (config, tokenizer, weights, history).")
    overwrite: bool = Field(False, description="Replace an existing model dir; otherwise refuse to touch it.")
    data: DataConfig
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelConfig = Field(default_factory=LSTMConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ConstantSchedule)
    train: TrainConfig = Field(default_factory=TrainConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)

    @model_validator(mode="before")
    @classmethod
    def _fill_sections(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        # a YAML section whose keys are all commented out reads as null: it means "all defaults"
        raw = {k: ({} if v is None and k in _SECTION_NAMES else v) for k, v in raw.items()}
        # the union's tag is optional in files: `model: {hidden_size: 128}` means an LSTM
        if isinstance(raw.get("model"), dict) and "kind" not in raw["model"]:
            raw["model"] = {"kind": "lstm", **raw["model"]}
        if isinstance(raw.get("schedule"), dict) and "name" not in raw["schedule"]:
            raw["schedule"] = {"name": "constant", **raw["schedule"]}
        return raw

    def __init__(self, **data: Any) -> None:
        # TrainingConfig(...) raises the same ConfigError (dotted paths, hints) as a config file
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, TrainingConfig)) from None

    @model_validator(mode="after")
    def _resolve_and_check(self) -> "TrainingConfig":
        data = self.data
        # resolve what defaults to "derive it"
        suffix = data.path.suffix.lower()
        if data.format is None:
            data.format = "csv" if suffix in (".csv", ".tsv") else "text"
        if data.format == "csv" and data.field_delimiter is None:
            data.field_delimiter = "\t" if suffix == ".tsv" else sniff_delimiter(data.path)
        seq2seq = self.model.kind == "seq2seq"
        if self.tokenizer.kind is None:  # (a seq2seq pair is two texts: characters, as the field tokens' text)
            self.tokenizer.kind = "char" if seq2seq else "fields" if data.format == "csv" else "sentencepiece"
        fields = self.tokenizer.kind == "fields"
        model = self.model
        if model.kind == "lstm":
            if model.embedding_dim is None:
                model.embedding_dim = 64 if fields else 256
            if model.num_layers is None:
                model.num_layers = 1 if fields else 2
            if model.hidden_size is None:
                model.hidden_size = 128 if fields else 256
        elif model.kind == "transformer":
            if model.num_layers is None:
                model.num_layers = 2
            if model.hidden_size is None:
                model.hidden_size = max(128, model.num_heads * 2)
                model.hidden_size += -model.hidden_size % (2 * model.num_heads)  # rope: an even head size
            if model.ffn_size is None:
                h = model.hidden_size
                model.ffn_size = -(-(8 * h // 3) // 8) * 8 if model.activation == "swiglu" else 4 * h
        if self.early_stopping.monitor is None:
            self.early_stopping.monitor = "val_loss" if data.validation_split > 0 else "loss"
        if self.checkpoint.monitor is None:
            self.checkpoint.monitor = self.early_stopping.monitor
        optim, sched, train = self.optim, self.schedule, self.train
        if optim.exclude_from_weight_decay is None:
            optim.exclude_from_weight_decay = optim.name in ("adamw", "adamw8bit")
        dp = self.privacy
        # picking weights by an un-noised metric would sit outside the guarantee: off by default under DP
        if self.early_stopping.enabled is None:
            self.early_stopping.enabled = not dp.enabled
        if self.checkpoint.save_best is None:
            self.checkpoint.save_best = not dp.enabled
        if train.max_grad_norm is None:  # under DP records are clipped one by one (privacy.max_grad_norm)
            train.max_grad_norm = 0.0 if dp.enabled else 1.0
        if self.generate.privacy_filter is None:  # a DP model keeps no digests of its records (outside the guarantee)
            self.generate.privacy_filter = data.format == "csv" and not dp.enabled
        if isinstance(sched, ReduceOnPlateauSchedule) and sched.monitor is None:
            sched.monitor = "val_loss" if data.validation_split > 0 else "loss"

        issues: list[str] = []
        lora = self.lora
        if lora.enabled and "head" in (lora.target_modules or []) and getattr(self.model, "tie_embeddings", False):
            issues.append(
                "lora.target_modules: 'head' shares its weights with the embedding (model.tie_embeddings); "
                "adapt the other layers, or train with model.tie_embeddings: false"
            )
        if data.format == "csv" and len(data.field_delimiter or "") != 1:
            issues.append(f"data.field_delimiter: csv needs a single character, got {data.field_delimiter!r}")
        if data.field_delimiter == "":
            issues.append("data.field_delimiter: must not be empty (use null for none)")
        no_val = data.validation_split == 0
        if no_val and self.early_stopping.enabled and self.early_stopping.monitor.startswith("val_"):
            issues.append(
                f"early_stopping.monitor: {self.early_stopping.monitor!r} needs validation data but "
                "data.validation_split is 0; set a split or monitor 'loss'"
            )
        if no_val and self.checkpoint.save_best and self.checkpoint.monitor.startswith("val_"):
            issues.append(
                f"checkpoint.monitor: save_best by {self.checkpoint.monitor!r} needs validation data but "
                "data.validation_split is 0; set a split or monitor 'loss'"
            )
        if isinstance(sched, ReduceOnPlateauSchedule):
            if no_val and sched.monitor.startswith("val_"):
                issues.append(
                    f"schedule.monitor: reduce_on_plateau on {sched.monitor!r} needs validation data but "
                    "data.validation_split is 0; set a split or monitor 'loss'"
                )
            if sched.min_lr >= optim.lr:
                issues.append(f"schedule.min_lr: {sched.min_lr} must be below optim.lr ({optim.lr}) to ever reduce it")
        if isinstance(sched, OneCycleSchedule) and (sched.warmup_steps or sched.warmup_ratio):
            key = "warmup_steps" if sched.warmup_steps else "warmup_ratio"
            issues.append(f"schedule.{key}: one_cycle has its own warmup (schedule.pct_start); remove the warmup")
        if isinstance(sched, CyclicalSchedule) and sched.max_lr <= optim.lr:
            issues.append(
                f"schedule.max_lr: the cycle's top ({sched.max_lr}) must be above its bottom, optim.lr ({optim.lr})"
            )
        if isinstance(sched, PolynomialSchedule) and sched.end_lr >= optim.lr:
            issues.append(f"schedule.end_lr: {sched.end_lr} must be below optim.lr ({optim.lr}) for a decay")
        if train.device == "cpu" and train.precision == "fp16":
            issues.append("train.precision: fp16 needs a CUDA GPU; on the CPU use bf16 or fp32")
        if train.device == "cpu" and train.tf32 is not None:
            issues.append("train.tf32: TF32 is a CUDA setting; remove it (null) for train.device 'cpu'")
        if data.format != "csv" or not data.header:
            for key in ("leading_columns", "column_types", "column_bounds", "max_columns_per_model"):
                if getattr(data, key):
                    issues.append(f"data.{key}: needs csv data with a header (the columns are named there)")
        if self.tokenizer.kind == "fields" and data.format != "csv":
            issues.append("tokenizer.kind: fields encodes table columns: it needs csv data (use sentencepiece or char)")
        if data.column_bounds and self.tokenizer.kind != "fields":
            issues.append(
                "data.column_bounds: bounds are kept by field tokens (tokenizer.kind: fields, the csv default)"
            )
        if data.column_order == "shuffle" and self.tokenizer.kind != "fields":
            issues.append("data.column_order: shuffle needs field tokens (tokenizer.kind: fields, the csv default)")
        if data.column_order == "dependency" and (data.format != "csv" or not data.header):
            issues.append("data.column_order: dependency orders a table's columns: it needs csv data with a header")
        issues += _seq2seq_issues(self)
        if self.generate.prefix and self.data.format == "csv" and "\n" in self.generate.prefix:
            issues.append("generate.prefix: must not contain a newline")
        issues += _privacy_issues(self)
        if issues:
            raise ValueError("\n".join(issues))
        return self


def _seq2seq_issues(config: "TrainingConfig") -> list[str]:
    """What pairs need (model.kind: seq2seq), and the pair keys set for another model."""
    data, train = config.data, config.train
    if config.model.kind != "seq2seq":
        given = [f"data.{k}" for k in ("source_columns", "target_column", "target_path") if getattr(data, k)]
        given += [f"train.{k}" for k, v in (("teacher_forcing_ratio", 1.0), ("teacher_forcing_schedule", "constant"))
                  if getattr(train, k) != v]  # fmt: skip
        monitors = [("early_stopping.monitor", config.early_stopping.monitor)]
        monitors += [("checkpoint.monitor", config.checkpoint.monitor)]
        monitors += [("schedule.monitor", getattr(config.schedule, "monitor", None))]
        given += [key for key, metric in monitors if metric in ("val_bleu", "val_chrf", "val_exact_match")]
        if not config.tokenizer.share_vocab:
            given.append("tokenizer.share_vocab")
        return [f"{key}: only an encoder-decoder reads it; set model.kind: seq2seq or remove it" for key in given]
    issues = []
    if data.target_path is not None:  # two aligned text files
        if data.format != "text":
            issues.append("data.target_path: pairs from two aligned text files: data.path is the sources' text file "
                          "(for a csv, give data.source_columns and data.target_column instead)")  # fmt: skip
        given = [f"data.{k}" for k in ("source_columns", "target_column") if getattr(data, k)]
        if given:
            issues.append(f"{' and '.join(given)}: the pairs come from data.path and data.target_path; remove it")
    elif data.format != "csv" or not data.header:
        issues.append("model.kind: seq2seq trains on pairs: a csv file with a header (data.source_columns -> "
                      "data.target_column), or two aligned text files (data.path -> data.target_path)")  # fmt: skip
    elif not data.source_columns or not data.target_column:
        issues.append("model.kind: seq2seq: set data.source_columns (a list) and data.target_column")
    elif data.target_column in data.source_columns:
        issues.append(f"data.target_column: {data.target_column!r} is also a source column")
    if config.tokenizer.kind == "fields":
        issues.append("tokenizer.kind: a seq2seq pair is two texts: use char or sentencepiece")
    if data.max_columns_per_model or data.column_order != "fixed" or data.leading_columns:
        issues.append("model.kind: seq2seq reads whole pairs: data.max_columns_per_model, column_order and "
                      "leading_columns are for table models")  # fmt: skip
    return issues


def _privacy_issues(config: "TrainingConfig") -> list[str]:
    """What would break the per-record guarantee, or leave a user believing a run is private when it is not."""
    dp, train = config.privacy, config.train
    if not dp.enabled:
        given = [k for k in ("noise_multiplier", "target_epsilon", "encoding_epsilon") if getattr(dp, k) is not None]
        return [
            f"privacy.{k}: set, but privacy.enabled is false: the run would not be private; set privacy.enabled: "
            "true or remove it"
            for k in given
        ]
    issues = []
    if dp.encoding_epsilon is not None and dp.target_epsilon is not None and dp.encoding_epsilon >= dp.target_epsilon:
        issues.append(
            f"privacy.encoding_epsilon: {dp.encoding_epsilon:g} leaves nothing of target_epsilon "
            f"{dp.target_epsilon:g} for training; lower it (null = a quarter)"
        )
    if dp.encoding_epsilon is not None and config.tokenizer.kind != "fields":
        issues.append("privacy.encoding_epsilon: only field tokens spend it (their vocabularies); remove it")
    if (dp.noise_multiplier is None) == (dp.target_epsilon is None):
        issues.append(
            "privacy: give exactly one of privacy.noise_multiplier and privacy.target_epsilon"
            + (" (both are set)" if dp.noise_multiplier is not None else "")
        )
    why = "under privacy.enabled"
    if train.max_grad_norm > 0:
        issues.append(
            f"train.max_grad_norm: {why} each record's gradient is clipped to privacy.max_grad_norm; "
            "clipping the whole step's gradient as well is not DP-SGD: set train.max_grad_norm: 0"
        )
    if train.clip_grad_value is not None:
        issues.append(f"train.clip_grad_value: {why} gradients are clipped per record by norm; remove it (null)")
    if train.precision == "fp16":
        issues.append(
            f"train.precision: fp16's grad scaler does not work on per-record gradients {why}; use bf16 or fp32"
        )
    selection = "picks the weights by a metric computed on the records without noise, outside the guarantee"
    if config.early_stopping.enabled:
        issues.append(f"early_stopping.enabled: {why} early stopping {selection}; set it to false")
    if config.checkpoint.save_best:
        issues.append(f"checkpoint.save_best: {why} keeping the best epoch {selection}; set it to false")
    if isinstance(config.schedule, ReduceOnPlateauSchedule):
        issues.append(
            f"schedule.name: {why} reduce_on_plateau sets the LR from un-noised losses, outside the guarantee; "
            "use a schedule that depends on the step only"
        )
    if config.data.column_order == "dependency":
        issues.append(
            f"data.column_order: {why} an order read from the records' dependencies (dependency) sits outside "
            "the guarantee; use fixed, and give an order you know as data.leading_columns"
        )
    if dp.secure_mode and dp.noise_seed is not None:
        issues.append("privacy.noise_seed: secure_mode draws every step's noise seed from the OS; remove noise_seed")
    if config.generate.privacy_filter:
        issues.append(
            f"generate.privacy_filter: {why} the model dir keeps no digests of training records (they would sit "
            "outside the guarantee), so there is nothing to filter against; set it to false"
        )
    return issues


_SECTION_NAMES = frozenset(k for k in TrainingConfig.model_fields if k not in ("output_dir", "overwrite"))
# values derived from others when left null; `config init` leaves them null so edits re-derive them
DERIVED_KEYS = (
    ("data", "format"),
    ("tokenizer", "kind"),
    ("model", "embedding_dim"),
    ("model", "num_layers"),
    ("model", "hidden_size"),
    ("model", "ffn_size"),
    ("train", "epochs"),
    ("train", "batch_size"),
    ("data", "field_delimiter"),
    ("early_stopping", "enabled"),
    ("early_stopping", "monitor"),
    ("checkpoint", "save_best"),
    ("train", "max_grad_norm"),
    ("checkpoint", "monitor"),
    ("optim", "exclude_from_weight_decay"),
    ("schedule", "monitor"),
    ("generate", "privacy_filter"),
)


def validate_config(raw: dict[str, Any]) -> TrainingConfig:
    """Build a TrainingConfig from plain data, or raise ConfigError listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: expected a mapping of sections, got {type(raw).__name__}")
    odd = [k for k in raw if not isinstance(k, str)]
    if odd:  # YAML reads `1: x` or `null: x` as a non-string key
        raise ConfigError(f"config: keys must be names, got {', '.join(repr(k) for k in odd)}")
    try:
        return TrainingConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, TrainingConfig)) from None


def section_classes(name: str) -> list[type[BaseModel]]:
    """The section class(es) a top-level key of TrainingConfig holds (every variant of a union; none for a
    plain value)."""
    return classes_of(name, TrainingConfig)
