"""The config's sections: one class per section, each forbidding unknown keys; the discriminated
unions of model kinds and LR schedules (UNION_SECTIONS)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticUndefined

Metric = Literal["loss", "accuracy", "val_loss", "val_accuracy", "val_bleu", "val_chrf", "val_exact_match"]
# which way each metric improves: every Metric needs an entry (a test checks), so a new one (a BLEU
# score) cannot be minimised by a rule guessed from its name
METRIC_MODE: dict[str, Literal["min", "max"]] = {
    "loss": "min",
    "val_loss": "min",
    "accuracy": "max",
    "val_accuracy": "max",
    "val_bleu": "max",  # seq2seq: greedy targets of the validation pairs' sources, scored by sacrebleu
    "val_chrf": "max",
    "val_exact_match": "max",
}
ColumnKind = Literal["integer", "float", "categorical", "date", "datetime", "text"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


# --------------------------------------------------------------------------- sections


class DataConfig(Section):
    """Where the records come from and how they are read."""

    path: Path = Field(
        description="Records to train on: a text file (one record per line) or a CSV file with a header."
    )
    format: Literal["text", "csv"] | None = Field(
        None, description="text | csv; null = from the file suffix (.csv/.tsv -> csv, else text)."
    )
    field_delimiter: str | None = Field(
        None,
        description="Field separator: for csv the CSV delimiter (null = tab for .tsv, else sniffed from the file's "
        "first lines: the first of , ; tab | that splits every line into the header's 2+ fields, else ','); for "
        "text a hint that keeps it one token in sentencepiece.",
    )
    header: bool = Field(True, description="csv only: the first row holds the column names.")
    max_records: int | None = Field(
        None,
        gt=0,
        description="Use the file's first N records (before long ones are skipped); null = all (gretel: max_lines).",
    )
    max_record_chars: int = Field(
        2048, gt=0, description="Longest record, in characters, to train on (gretel: max_line_len)."
    )
    long_records: Literal["skip", "error"] = Field(
        "skip", description="What to do with records longer than max_record_chars: skip them (counted) or stop."
    )
    validation_split: float = Field(
        0.2, ge=0.0, le=0.9, description="Fraction of records held out for validation (seeded, by record); 0 = none."
    )
    leading_columns: list[str] = Field(
        default_factory=list,
        description="csv: columns the model writes first, in this order (the rest keep theirs); seed fields must "
        "be leading columns. Output keeps the file's column order.",
    )
    column_order: Literal["fixed", "shuffle", "dependency"] = Field(
        "fixed",
        description="csv with field tokens: fixed (every row in the model's column order) | shuffle (each row's "
        "columns in a new random order every time it is trained on, leading_columns kept first, so seed fields "
        "on any columns work: kohya's shuffle_caption / keep_tokens) | dependency (one order read from the "
        "data: each column right after the one it depends on most, leading_columns first; output keeps the "
        "file's order).",
    )
    source_columns: list[str] = Field(
        default_factory=list,
        description="seq2seq (model.kind: seq2seq): the csv columns a pair's source is made of (more than one: "
        "joined as a csv line with field_delimiter).",
    )
    target_column: str | None = Field(None, description="seq2seq: the csv column holding a pair's target.")
    target_path: Path | None = Field(
        None,
        description="seq2seq: a text file of targets aligned with data.path's lines (line i of this file is the "
        "target of line i there, as OpenNMT's src/tgt files); instead of source_columns and target_column.",
    )
    max_columns_per_model: int | None = Field(
        None,
        ge=2,
        description="csv: above this many columns, one model per group of correlated columns (each later group "
        "seeded with a link column from the earlier ones); null = one model for the whole record.",
    )
    column_types: dict[str, ColumnKind] = Field(
        default_factory=dict,
        description="csv: column -> integer | float | categorical | date | datetime | text, overriding the type "
        "inferred from the data (e.g. {zip: categorical}).",
    )
    column_bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="csv: integer or float column -> [low, high], bounds its values keep to (training values "
        "outside are clipped to them, every sampled value lies inside). Under privacy.enabled the range then "
        "comes from here, not from noisy counts: give only bounds known without looking at the data (a "
        "survey's design, a field's definition), e.g. {age: [18, 99]}.",
    )

    @model_validator(mode="after")
    def _distinct_leading(self) -> "DataConfig":
        repeated = sorted({c for c in self.leading_columns if self.leading_columns.count(c) > 1})
        if repeated:
            raise ValueError(f"leading_columns: {', '.join(repeated)} listed more than once")
        for name, (low, high) in self.column_bounds.items():
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError(f"column_bounds: {name}: [{low}, {high}] must be two finite numbers, low <= high")
        return self


class TokenizerConfig(Section):
    """How records become tokens. Trained on the records once, saved in the model dir."""

    kind: Literal["fields", "char", "sentencepiece"] | None = Field(
        None,
        description="fields (tables: each column's values from its own vocabulary, every sampled row valid by "
        "construction) | char (one token per character) | sentencepiece (subwords); null = fields for csv, "
        "sentencepiece for text.",
    )
    vocab_size: int = Field(
        1000,
        ge=8,
        description="sentencepiece: largest vocabulary (may end smaller on small data, like gretel); fields: the "
        "largest subword vocabulary of a free-text column.",
    )
    model_type: Literal["unigram", "bpe"] = Field(
        "bpe", description="sentencepiece: bpe | unigram (bpe packs more characters per token on tables)."
    )
    share_vocab: bool = Field(
        True,
        description="seq2seq: one vocabulary for sources and targets (one embedding both sides read) or false: "
        "each side its own tokenizer of this kind, trained on its own texts, with its own embedding rows, and "
        "the decoder's output over the target vocabulary alone (two scripts, two languages).",
    )
    character_coverage: float = Field(
        1.0, gt=0.0, le=1.0, description="sentencepiece: share of characters covered; rarer ones become <unk>."
    )
    max_training_records: int = Field(
        1_000_000,
        gt=0,
        description="sentencepiece: records sampled (seeded) to train it (gretel: pretrain_sentence_count).",
    )
    rare_category_threshold: int = Field(
        5,
        ge=1,
        description="fields: a category in fewer records than this shares one <rare> token, sampled back as one of "
        "those rare categories by frequency (its links to other fields are not learnt); 1 = none rare.",
    )
    numeric_bins: int = Field(
        64,
        ge=2,
        le=1000,
        description="fields: quantile bins of a numeric column (its first token); up to two more tokens place the "
        "value inside its bin at the data's precision.",
    )


class LSTMConfig(Section):
    """An LSTM language model: embedding -> num_layers LSTM layers with dropout -> linear head."""

    kind: Literal["lstm"] = Field("lstm", description="Model family: lstm | transformer | seq2seq.")
    embedding_dim: int | None = Field(
        None,
        gt=0,
        description="Size of the token (and slot) embedding; null = 64 with field tokens (a slot holds tens of "
        "values), 256 for text.",
    )
    hidden_size: int | None = Field(
        None,
        gt=0,
        description="Units in each LSTM layer (gretel: rnn_units); null = 128 with field tokens (as good as 256 on "
        "the benchmark tables, sampling 2-2.4x faster: benchmarks/RESULTS.md), 256 for text.",
    )
    num_layers: int | None = Field(
        None,
        ge=1,
        le=16,
        description="Stacked LSTM layers; null = 1 with field tokens (as good on the benchmark tables at a third "
        "of the cost, benchmarks/RESULTS.md), 2 for text.",
    )
    dropout: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Dropout on the embeddings, between layers and before the head (gretel: dropout_rate).",
    )
    initializer: Literal["pytorch", "glorot_uniform", "orthogonal"] = Field(
        "pytorch",
        description="Weight init: pytorch (uniform +-1/sqrt(h)) | glorot_uniform | orthogonal "
        "(gretel: rnn_initializer).",
    )


class Seq2SeqConfig(Section):
    """An encoder-decoder for paired records (source -> target, data.source_columns -> data.target_column): a
    bidirectional LSTM encoder, an LSTM decoder with global attention over the encoder's states, a linear head
    (models/seq2seq.py)."""

    kind: Literal["seq2seq"] = Field("seq2seq", description="Model family: lstm | transformer | seq2seq.")
    embedding_dim: int = Field(64, gt=0, description="Size of the token embedding, shared by encoder and decoder.")
    hidden_size: int = Field(128, gt=0, description="Units of each encoder direction and of each decoder layer.")
    encoder_layers: int = Field(1, ge=1, le=8, description="Stacked bidirectional LSTM layers of the encoder.")
    decoder_layers: int = Field(1, ge=1, le=8, description="Stacked LSTM layers of the decoder.")
    attention: Literal["bahdanau", "luong_dot", "luong_general"] = Field(
        "luong_general",
        description="How a decoder state scores the source positions: bahdanau (additive, v . tanh(W q + U k)) | "
        "luong_dot (q . k) | luong_general (q . W k).",
    )
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the embeddings and before the head.")


class TransformerConfig(Section):
    """A decoder-only transformer: embedding -> num_layers pre-norm blocks (causal self-attention, then a
    feed-forward network) -> norm -> linear head."""

    kind: Literal["transformer"] = "transformer"
    num_layers: int | None = Field(
        None,
        ge=1,
        le=48,
        description="transformer: blocks; null = 2 (on text, 4 x 256 reached 2.82 nats/char in 120 s on 2 "
        "CPU cores where 2 x 128 reached 1.37: benchmarks/RESULTS.md).",
    )
    num_heads: int = Field(
        4, ge=1, le=64, description="transformer: attention heads; hidden_size must be a multiple of it."
    )
    hidden_size: int | None = Field(
        None,
        gt=0,
        description="transformer: width of the residual stream (HF: hidden_size / n_embd); null = 128.",
    )
    ffn_size: int | None = Field(
        None,
        gt=0,
        description="transformer: inner width of the feed-forward network (HF: intermediate_size); null = "
        "4 x hidden_size, or 8/3 x hidden_size (rounded up to a multiple of 8) for swiglu, which has three "
        "matrices, not two.",
    )
    activation: Literal["relu", "gelu", "silu", "swiglu", "tanh", "sigmoid"] = Field(
        "gelu",
        description="transformer: the feed-forward network's activation: relu | gelu | silu | swiglu "
        "(silu(x W) * (x V), as LLaMA) | tanh | sigmoid.",
    )
    norm: Literal["layernorm", "rmsnorm"] = Field(
        "layernorm", description="transformer: layernorm | rmsnorm (pre-norm)."
    )
    positional: Literal["learned", "rope"] = Field(
        "learned",
        description="transformer: positions: learned (an embedding per position, as GPT-2) | rope (rotary, as LLaMA).",
    )
    dropout: float = Field(
        0.1, ge=0.0, lt=1.0, description="transformer: dropout on the embeddings and each residual branch."
    )
    attention_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="transformer: dropout on the attention weights.")
    tie_embeddings: bool = Field(
        True, description="transformer: the head shares the token embedding's weights (GPT-2 does)."
    )
    context_length: int | None = Field(
        None,
        ge=2,
        le=65536,
        description="transformer: the longest token sequence the model reads, the start token included; null = "
        "the longest training record's tokens + 1. Text records longer than a set one are skipped or refused as "
        "data.long_records says; generated records stop there.",
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> "TransformerConfig":
        if self.hidden_size is not None and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size: {self.hidden_size} is not a multiple of model.num_heads={self.num_heads}")
        if self.positional == "rope" and self.hidden_size is not None and (self.hidden_size // self.num_heads) % 2:
            raise ValueError("positional: rope needs an even head size (hidden_size / num_heads)")
        return self


# A discriminated union on `kind`: seq2seq joins it later.
ModelConfig = Annotated[Union[LSTMConfig, TransformerConfig, Seq2SeqConfig], Field(discriminator="kind")]


# parameters each optimizer takes, besides lr and weight_decay; any other one set away from
# its default is an error (not silently ignored)
OPTIMIZER_PARAMS: dict[str, frozenset[str]] = {
    "sgd": frozenset({"momentum", "nesterov", "dampening"}),
    "adam": frozenset({"betas", "eps"}),
    "adamw": frozenset({"betas", "eps"}),
    "adamw8bit": frozenset({"betas", "eps"}),
    "adagrad": frozenset({"eps"}),
    "rmsprop": frozenset({"eps", "momentum", "alpha", "centered"}),
}


class OptimConfig(Section):
    """The optimizer."""

    name: Literal["sgd", "adam", "adamw", "adamw8bit", "adagrad", "rmsprop"] = Field(
        "adam",
        description="sgd | adam | adamw | adamw8bit (AdamW with 8-bit states; the 'bnb' extra, on CUDA or an "
        "AVX2 CPU) | adagrad | rmsprop.",
    )
    lr: float = Field(
        0.003, gt=0.0, le=10.0, description="Learning rate; the peak a schedule starts from (gretel: learning_rate)."
    )
    weight_decay: float = Field(0.0, ge=0.0, description="Weight decay (decoupled for adamw, L2 for the others).")
    exclude_from_weight_decay: bool | None = Field(
        None,
        description="Keep biases, norm weights and embeddings out of weight decay; null = yes for adamw/adamw8bit, "
        "no for the others.",
    )
    betas: tuple[float, float] = Field(
        (0.9, 0.999), description="adam/adamw/adamw8bit: coefficients of the running averages."
    )
    eps: float = Field(1e-8, gt=0.0, description="adam/adamw/adamw8bit/adagrad/rmsprop: term added to the denominator.")
    momentum: float = Field(0.0, ge=0.0, lt=1.0, description="sgd/rmsprop: momentum factor.")
    nesterov: bool = Field(False, description="sgd: Nesterov momentum (needs momentum > 0 and dampening 0).")
    dampening: float = Field(0.0, ge=0.0, lt=1.0, description="sgd: dampening for momentum.")
    alpha: float = Field(
        0.99, gt=0.0, lt=1.0, description="rmsprop: smoothing constant of the squared-gradient average."
    )
    centered: bool = Field(False, description="rmsprop: normalise by the gradient's estimated variance.")

    @model_validator(mode="after")
    def _check(self) -> "OptimConfig":
        issues = []
        if not all(0.0 <= b < 1.0 for b in self.betas):
            issues.append(f"betas: each must be in [0, 1), got {list(self.betas)}")
        takes = OPTIMIZER_PARAMS[self.name]
        for key in sorted(set().union(*OPTIMIZER_PARAMS.values()) - takes):
            if getattr(self, key) != type(self).model_fields[key].default:
                users = ", ".join(n for n, params in OPTIMIZER_PARAMS.items() if key in params)
                issues.append(f"{key}: {self.name} does not use it (used by {users}); remove it or change optim.name")
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            issues.append("nesterov: needs momentum > 0 and dampening 0")
        if issues:
            raise ValueError("\n".join(issues))
        return self


# --------------------------------------------------------------------------- LR schedules


class _Schedule(Section):
    """The learning-rate schedule, stepped once per optimizer step, with an optional linear warmup."""

    name: str
    warmup_steps: int | None = Field(
        None, ge=0, description="Linear warmup over this many steps (optimizer updates); not with warmup_ratio."
    )
    warmup_ratio: float | None = Field(
        None, ge=0.0, lt=1.0, description="Linear warmup over this fraction of the run's steps; not with warmup_steps."
    )
    warmup_start_factor: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Warmup ramps the LR from this fraction of optim.lr; the warmup's last step reaches optim.lr.",
    )

    @model_validator(mode="after")
    def _one_warmup(self) -> "_Schedule":
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("warmup_steps: set warmup_steps or warmup_ratio, not both")
        return self


def _min_lr_ratio():
    return Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="linear/cosine/cosine_with_restarts/warmup_stable_decay: the LR decays to this fraction "
        "of optim.lr.",
    )


def _gamma(default: Any = PydanticUndefined):
    return Field(default, gt=0.0, le=1.0, description="step/multistep/exponential: multiply the LR by this.")


class ConstantSchedule(_Schedule):
    name: Literal["constant"] = Field(
        "constant",
        description="constant | linear | cosine | cosine_with_restarts | polynomial | step | multistep | "
        "exponential | cyclical | one_cycle | inverse_sqrt | warmup_stable_decay | reduce_on_plateau.",
    )


class LinearSchedule(_Schedule):
    name: Literal["linear"]
    min_lr_ratio: float = _min_lr_ratio()


class CosineSchedule(_Schedule):
    name: Literal["cosine"]
    min_lr_ratio: float = _min_lr_ratio()


class CosineWithRestartsSchedule(_Schedule):
    name: Literal["cosine_with_restarts"]
    cycles: int = Field(2, ge=1, description="cosine_with_restarts: cosine cycles after warmup, each restarting.")
    min_lr_ratio: float = _min_lr_ratio()


class PolynomialSchedule(_Schedule):
    name: Literal["polynomial"]
    power: float = Field(1.0, gt=0.0, description="polynomial: exponent of the decay (1 = linear).")
    end_lr: float = Field(0.0, ge=0.0, description="polynomial: the LR at the end of the run (below optim.lr).")


class StepSchedule(_Schedule):
    name: Literal["step"]
    step_size: int = Field(ge=1, description="step: multiply the LR by gamma every this many steps.")
    gamma: float = _gamma(0.1)


class MultiStepSchedule(_Schedule):
    name: Literal["multistep"]
    milestones: list[int] = Field(description="multistep: steps (after warmup) at which the LR is multiplied by gamma.")
    gamma: float = _gamma(0.1)

    @model_validator(mode="after")
    def _increasing(self) -> "MultiStepSchedule":
        m = self.milestones
        if not m or m[0] < 1 or any(b <= a for a, b in zip(m, m[1:])):
            raise ValueError(f"milestones: need one or more increasing steps >= 1, got {m}")
        return self


class ExponentialSchedule(_Schedule):
    name: Literal["exponential"]
    gamma: float = _gamma()


class CyclicalSchedule(_Schedule):
    name: Literal["cyclical"]
    mode: Literal["triangular", "triangular2", "exp_range"] = Field(
        "triangular", description="cyclical: triangular | triangular2 (halves each cycle) | exp_range (x gamma^step)."
    )
    max_lr: float = Field(gt=0.0, description="cyclical: the top of the cycle; the bottom is optim.lr.")
    step_size_up: int = Field(2000, ge=1, description="cyclical: steps from the bottom to the top of a cycle.")
    step_size_down: int | None = Field(
        None, ge=1, description="cyclical: steps from the top back down; null = step_size_up."
    )
    gamma: float = Field(1.0, gt=0.0, le=1.0, description="cyclical exp_range: the amplitude shrinks by gamma^step.")

    @model_validator(mode="after")
    def _gamma_for_exp_range(self) -> "CyclicalSchedule":
        if self.gamma != 1.0 and self.mode != "exp_range":
            raise ValueError(f"gamma: only mode exp_range uses it (mode is {self.mode!r})")
        return self


class OneCycleSchedule(_Schedule):
    name: Literal["one_cycle"]
    pct_start: float = Field(
        0.3, gt=0.0, lt=1.0, description="one_cycle: fraction of the run spent rising to optim.lr (its own warmup)."
    )
    anneal_strategy: Literal["cos", "linear"] = Field("cos", description="one_cycle: cos | linear annealing.")
    div_factor: float = Field(25.0, ge=1.0, description="one_cycle: the run starts at optim.lr / div_factor.")
    final_div_factor: float = Field(
        1e4, ge=1.0, description="one_cycle: the run ends at optim.lr / div_factor / final_div_factor."
    )
    three_phase: bool = Field(False, description="one_cycle: a third phase annealing below the start LR.")


class InverseSqrtSchedule(_Schedule):
    name: Literal["inverse_sqrt"]
    timescale: int | None = Field(
        None,
        ge=1,
        description="inverse_sqrt: LR = optim.lr * sqrt(timescale / (timescale + steps after warmup)); "
        "null = the warmup's steps (1 without warmup).",
    )


class WarmupStableDecaySchedule(_Schedule):
    name: Literal["warmup_stable_decay"]
    decay_ratio: float = Field(
        0.1, gt=0.0, le=1.0, description="warmup_stable_decay: the last fraction of the run's steps decays."
    )
    decay_type: Literal["linear", "cosine", "1-sqrt"] = Field(
        "cosine", description="warmup_stable_decay: shape of the decay: linear | cosine | 1-sqrt."
    )
    min_lr_ratio: float = _min_lr_ratio()


class ReduceOnPlateauSchedule(_Schedule):
    name: Literal["reduce_on_plateau"]
    monitor: Metric | None = Field(
        None,
        description="reduce_on_plateau: metric checked after each epoch; null = val_loss with a validation split, "
        "else loss.",
    )
    factor: float = Field(0.1, gt=0.0, lt=1.0, description="reduce_on_plateau: multiply the LR by this on a plateau.")
    patience: int = Field(2, ge=0, description="reduce_on_plateau: epochs without improvement before reducing.")
    threshold: float = Field(1e-4, ge=0.0, description="reduce_on_plateau: smallest change that counts.")
    threshold_mode: Literal["rel", "abs"] = Field("rel", description="reduce_on_plateau: threshold is rel | abs.")
    cooldown: int = Field(0, ge=0, description="reduce_on_plateau: epochs to wait after a reduction.")
    min_lr: float = Field(0.0, ge=0.0, description="reduce_on_plateau: the LR never goes below this.")


SCHEDULES: dict[str, type[_Schedule]] = {
    cls.model_fields["name"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (
        ConstantSchedule,
        LinearSchedule,
        CosineSchedule,
        CosineWithRestartsSchedule,
        PolynomialSchedule,
        StepSchedule,
        MultiStepSchedule,
        ExponentialSchedule,
        CyclicalSchedule,
        OneCycleSchedule,
        InverseSqrtSchedule,
        WarmupStableDecaySchedule,
        ReduceOnPlateauSchedule,
    )
}
ScheduleConfig = Annotated[Union[tuple(SCHEDULES.values())], Field(discriminator="name")]


class TrainConfig(Section):
    """The training loop."""

    epochs: int | None = Field(
        None,
        ge=1,
        description="Passes over the training records (the upper bound with early stopping); null = from the data: "
        "enough for early stopping on the validation loss to end the run (docs/configuration.md).",
    )
    max_steps: int | None = Field(
        None, gt=0, description="Stop after this many optimizer steps; null = epochs decide. Wins over epochs."
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Records per micro-batch (one forward/backward) on each process; a step uses batch_size x "
        "grad_accumulation_steps (x processes under torchrun) records (HF: per_device_train_batch_size); null = "
        "from the number of records (about 64 steps an epoch, 8 to 256 records, shared among the processes).",
    )
    teacher_forcing_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="seq2seq: the chance a decoder step is fed the true previous token (else the model's own "
        "likeliest); with a schedule, the value it decays to.",
    )
    teacher_forcing_schedule: Literal["constant", "linear", "inverse_sigmoid"] = Field(
        "constant",
        description="seq2seq: constant (teacher_forcing_ratio throughout) | linear (1 down to the ratio over the "
        "run's steps) | inverse_sigmoid (Bengio et al. 2015, halfway at the run's middle), per step.",
    )
    grad_accumulation_steps: int = Field(
        1,
        ge=1,
        description="Micro-batches per optimizer step; the loss is normalised over the whole step's tokens "
        "(HF: gradient_accumulation_steps).",
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seeds the split, shuffling, initialisation and dropout.")
    max_time_seconds: float | None = Field(
        None,
        gt=0,
        description="Stop cleanly at the next step boundary after this long (gretel: max_training_time_seconds).",
    )
    max_grad_norm: float | None = Field(
        None,
        ge=0.0,
        description="Clip the gradient's global L2 norm to this; 0 = no clipping; null = 1.0, or 0 under "
        "privacy.enabled (DP-SGD clips each record's gradient instead).",
    )
    clip_grad_value: float | None = Field(
        None, gt=0.0, description="Clip each gradient element to [-v, v] (before max_grad_norm); null = off."
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32",
        description="fp32 | bf16 (autocast; CPU or a bf16 GPU; the LSTM recurrence stays fp32) | fp16 (autocast + "
        "grad scaler; CUDA only). Weights and optimizer state stay fp32.",
    )
    tf32: bool | None = Field(
        None, description="CUDA: allow TF32 matmuls (true) or forbid them (false); null = leave torch's setting."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto (cuda if available) | cpu | cuda.")
    num_threads: int | None = Field(None, ge=1, description="CPU threads for torch; null = torch's default.")
    logging_steps: int = Field(
        1, ge=1, description="Write a line to steps.jsonl every this many steps (means over the steps since the last)."
    )
    tensorboard: bool = Field(
        False, description="Also log each line to TensorBoard under tensorboard/ (needs the 'tensorboard' extra)."
    )
    nonfinite_loss: Literal["stop", "skip"] = Field(
        "stop",
        description="A NaN/inf loss: stop (naming the step and the last good checkpoint) or skip that step's "
        "update (counted in summary.json).",
    )
    epoch_callback: str | None = Field(
        None, description="'module:function' called after each epoch with an EpochState (Python: train(callback=...))."
    )
    init_from: Path | None = Field(
        None,
        description="A trained model dir to start from (fine-tuning): its weights, tokenizer and model section are "
        "used, so the records must fit its vocabularies; null = fresh weights. With lora.enabled only the adapters "
        "train.",
    )

    @model_validator(mode="after")
    def _callback_shape(self) -> "TrainConfig":
        if self.epoch_callback is not None and self.epoch_callback.count(":") != 1:
            raise ValueError(f"epoch_callback: expected 'module:function', got {self.epoch_callback!r}")
        return self


class LoRAConfig(Section):
    """Low-rank adapters (LoRA, Hu et al. 2021) on the model's linear layers: only they train, scaled by
    alpha / rank; usually with train.init_from (kohya: network_dim, network_alpha; PEFT: r, lora_alpha)."""

    enabled: bool = Field(False, description="Train adapters instead of the weights.")
    rank: int = Field(8, ge=1, le=1024, description="The adapters' rank r (kohya: network_dim; PEFT: r).")
    alpha: float = Field(
        16.0,
        gt=0.0,
        description="The adapters' output is scaled by alpha / rank (kohya: network_alpha; PEFT: lora_alpha).",
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on an adapter's input (PEFT: lora_dropout).")
    target_modules: list[str] | None = Field(
        None,
        description="Names of the linear layers to adapt (the last part of their dotted names); null = the "
        "model's: transformer qkv, proj, ffn_in, ffn_out (attention and FFN); lstm head (its recurrent weights "
        "sit inside nn.LSTM's fused kernel).",
    )
    save: Literal["merged", "separate"] = Field(
        "merged",
        description="The model dir's weights: merged (W + B A alpha / rank, a plain model) | separate (the base "
        "weights in model.safetensors, the adapters in adapter.safetensors; loading applies them).",
    )


class EarlyStoppingConfig(Section):
    """Stop when the monitored metric stops improving."""

    enabled: bool | None = Field(
        None,
        description="Turn early stopping on; null = on, off under privacy.enabled (it would pick the stopping "
        "epoch by a metric outside the guarantee).",
    )
    monitor: Metric | None = Field(
        None,
        description="loss | accuracy | val_loss | val_accuracy (gretel: best_model_metric); "
        "null = val_loss with a validation split, else loss.",
    )
    patience: int = Field(5, ge=1, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.001, ge=0.0, description="Smallest change that counts as an improvement.")


class CheckpointConfig(Section):
    """What is kept in the model dir: the final weights and the resumable checkpoints."""

    save_best: bool | None = Field(
        None,
        description="The model dir keeps the best epoch's weights by `monitor`, not the last "
        "(gretel: save_best_model); null = yes, no under privacy.enabled.",
    )
    save_every_epoch: bool = Field(
        False,
        description="Keep every epoch's checkpoint under checkpoints/, not only the last keep_last "
        "(gretel: save_all_checkpoints).",
    )
    every_steps: int | None = Field(
        None, ge=1, description="Also write a resumable checkpoint every this many steps; null = at epoch ends only."
    )
    keep_last: int = Field(
        2, ge=1, description="Step/epoch checkpoints kept under checkpoints/; the best one is kept besides, always."
    )
    monitor: Metric | None = Field(None, description="Metric for save_best; null = early_stopping.monitor.")


class PrivacyConfig(Section):
    """Differential privacy (DP-SGD through Opacus): the unit of privacy is one record."""

    enabled: bool = Field(False, description="Train with DP-SGD (needs the 'dp' extra: pip install 'synthloom[dp]').")
    noise_multiplier: float | None = Field(
        None,
        gt=0.0,
        description="Gaussian noise std / max_grad_norm; give this or target_epsilon (gretel: dp_noise_multiplier).",
    )
    target_epsilon: float | None = Field(
        None,
        gt=0.0,
        le=100.0,
        description="The epsilon the planned run ends at: the noise is computed for it before training, and "
        "training never goes past it. Give this or noise_multiplier.",
    )
    delta: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="The guarantee's delta, all mechanisms together; null = 1e-5, or 1 / (10 x training "
        "records) when that is smaller. Must be below 1 / records.",
    )
    encoding_epsilon: float | None = Field(
        None,
        gt=0.0,
        description="Field tokens: the part of the epsilon spent on the vocabularies (which categories exist, "
        "numeric ranges and bins, date ranges), counted in privacy.json's total; null = a quarter of "
        "target_epsilon (1.0 with noise_multiplier).",
    )
    max_grad_norm: float = Field(
        1.0, gt=0.0, description="Each record's gradient is clipped to this L2 norm (gretel: dp_l2_norm_clip)."
    )
    accountant: Literal["prv", "rdp", "gdp"] = Field(
        "prv",
        description="prv (tightest) | rdp | gdp (an approximation that can underestimate epsilon).",
    )
    poisson_sampling: bool = Field(
        True,
        description="Each step takes each record with probability q, as the accountants assume; false = shuffled "
        "fixed-size batches (the epsilon reported then assumes Poisson sampling and is not a proven bound).",
    )
    noise_seed: int | None = Field(
        None,
        ge=0,
        description="null = the noise and the record sampling are seeded from the OS, and no model dir keeps the "
        "seed; set it only for reproducible experiments: anyone who knows it can take the noise out again.",
    )
    secure_mode: bool = Field(
        False,
        description="Draw the sampling and the noise seeds from the OS's CSPRNG and use Opacus' noise that resists "
        "floating-point attacks; runs are then not reproducible.",
    )


class GenerateConfig(Section):
    """Sampling defaults, saved with the model; the CLI and generate() can override each."""

    num_records: int = Field(1000, ge=1, description="Records to generate (gretel: gen_lines).")
    temperature: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="Divides the logits; <1 sharper, >1 more diverse; 0 = greedy, the likeliest token every step "
        "(Hugging Face's do_sample=False), so the records of one prefix or seed are all the same (gretel: gen_temp).",
    )
    top_k: int = Field(0, ge=0, description="Sample only among the k likeliest tokens; 0 = off.")
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, description="Sample from the smallest set with this much probability; 1 = off."
    )
    max_tokens: int | None = Field(
        None,
        ge=1,
        le=65536,
        description="Most tokens per record; null = 2x the longest training record (gretel: gen_chars).",
    )
    stop: list[str] = Field(default_factory=list, description="Strings that end a record where they appear (not kept).")
    num_beams: int = Field(1, ge=1, le=64, description="seq2seq: beam search width; 1 = greedy (HF: num_beams).")
    length_penalty: float = Field(
        1.0, description="seq2seq beam search: a hypothesis scores its log probability / length ** length_penalty."
    )
    beam_early_stopping: bool = Field(
        False,
        description="seq2seq beam search: stop a source once num_beams hypotheses ended (true), or once no running "
        "one can beat them (false; HF: early_stopping).",
    )
    num_return_sequences: int = Field(
        1, ge=1, description="seq2seq beam search: targets kept per source (<= num_beams)."
    )
    no_repeat_ngram_size: int = Field(
        0, ge=0, description="seq2seq beam search: never repeat an n-gram of this size; 0 = off."
    )
    prefix: str = Field("", description="Every record starts with this text (for csv: leading fields, delimited).")
    batch_size: int = Field(
        2048, ge=1, description="Records sampled in parallel, over all streams (gretel: predict_batch_size)."
    )
    streams: int = Field(
        2,
        ge=1,
        le=64,
        description="Sampling streams run side by side (threads), each with its share of the records, of "
        "batch_size and of the CPU threads: one runs Python while another multiplies. The records a seed "
        "gives depend on it, not on the machine.",
    )
    seed: int | None = Field(None, ge=0, description="Seed for reproducible sampling; null = fresh randomness.")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="The matrix products while sampling: bf16 (the LSTM's recurrent products, its state, gates "
        "and logits staying fp32; the transformer's step under bf16 autocast, its cache and logits fp32) | fp32 | "
        "auto = bf16 on a CPU with bf16 instructions (AVX512-BF16, AMX), where they run ~4x faster, fp32 "
        "elsewhere. A seed gives the same records on one machine; set fp32 for the same records on every machine.",
    )
    max_invalid: int | None = Field(
        None,
        ge=0,
        description="Give up once more than this many records fail validation; null = as many as the records "
        "asked for, at least 1,000 (a fixed count fails large requests at modest invalid rates).",
    )
    near_copy_fields: int = Field(
        0,
        ge=0,
        description="csv, with the privacy filter: also drop records that differ from a training record in at most "
        "this many fields (near copies); 0 = exact copies only.",
    )
    check_types: bool = Field(
        True,
        description="csv: a record is invalid if a field does not parse as its column's type (integer, float, date, "
        "...) or is missing where training had no missing values.",
    )
    unseen_categories: bool = Field(
        True, description="csv: allow values of categorical columns never seen in training (false: invalid)."
    )
    privacy_filter: bool | None = Field(
        None,
        description="Drop generated records that are exact copies of training records (counted as invalid); "
        "null = on for csv data, off for text and for differentially private models.",
    )

    def invalid_budget(self, wanted: int) -> int:
        """max_invalid resolved for a request of `wanted` valid records."""
        return self.max_invalid if self.max_invalid is not None else max(1000, wanted)

    @model_validator(mode="after")
    def _stops_non_empty(self) -> "GenerateConfig":
        if any(s == "" for s in self.stop):
            raise ValueError("stop: stop strings must not be empty")
        return self


# sections that are a discriminated union: the tag (model.kind, schedule.name) picks the class
UNION_SECTIONS: dict[str, dict[str, type[Section]]] = {
    "model": {"lstm": LSTMConfig, "transformer": TransformerConfig, "seq2seq": Seq2SeqConfig},
    "schedule": SCHEDULES,
}
