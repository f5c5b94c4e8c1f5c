"""The training configuration: one validated, serializable object that sets every knob.

    config = TrainingConfig(output_dir="model", data={"path": "data.csv"})
    config = load_config("config.yaml", overrides=["train.epochs=5"])
    save_config(config, "config.toml")

Every section forbids unknown keys; all field problems are reported at once with their
dotted paths (`optim.lr: ...`) and a "did you mean" hint for typos. Values that depend
on others (`data.format` from the file's suffix, `checkpoint.monitor` from early
stopping) are resolved here, so the saved config says exactly what a run did.

Invariant kept by a test: a field that accepts null has null as its default, so dropping
nulls (TOML has no null) never changes a config.
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticUndefined

from .errors import ConfigError

Metric = Literal["loss", "accuracy", "val_loss", "val_accuracy"]
# which way each metric improves: every Metric needs an entry (a test checks), so a new one (a BLEU
# score) cannot be minimised by a rule guessed from its name
METRIC_MODE: dict[str, Literal["min", "max"]] = {
    "loss": "min",
    "val_loss": "min",
    "accuracy": "max",
    "val_accuracy": "max",
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
    column_order: Literal["fixed", "shuffle"] = Field(
        "fixed",
        description="csv with field tokens: fixed (every row in the model's column order) | shuffle (each row's "
        "columns in a new random order every time it is trained on, leading_columns kept first, so seed fields "
        "on any columns work: kohya's shuffle_caption / keep_tokens).",
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

    kind: Literal["lstm"] = Field("lstm", description="Model family: lstm | transformer (seq2seq later).")
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


class TransformerConfig(Section):
    """A decoder-only transformer: embedding -> num_layers pre-norm blocks (causal self-attention, then a
    feed-forward network) -> norm -> linear head."""

    kind: Literal["transformer"] = "transformer"
    num_layers: int | None = Field(
        None, ge=1, le=48, description="transformer: blocks; null = 2 with field tokens, 4 for text."
    )
    num_heads: int = Field(
        4, ge=1, le=64, description="transformer: attention heads; hidden_size must be a multiple of it."
    )
    hidden_size: int | None = Field(
        None,
        gt=0,
        description="transformer: width of the residual stream (HF: hidden_size / n_embd); null = 128 "
        "with field tokens, 256 for text.",
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
ModelConfig = Annotated[Union[LSTMConfig, TransformerConfig], Field(discriminator="kind")]


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
        description="Records per micro-batch (one forward/backward); a step uses batch_size x "
        "grad_accumulation_steps records (HF: per_device_train_batch_size); null = from the number of records "
        "(about 64 steps an epoch, 8 to 256 records).",
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
            raise ConfigError(format_validation_error(exc)) from None

    @model_validator(mode="after")
    def _resolve_and_check(self) -> "TrainingConfig":
        data = self.data
        # resolve what defaults to "derive it"
        suffix = data.path.suffix.lower()
        if data.format is None:
            data.format = "csv" if suffix in (".csv", ".tsv") else "text"
        if data.format == "csv" and data.field_delimiter is None:
            data.field_delimiter = "\t" if suffix == ".tsv" else sniff_delimiter(data.path)
        if self.tokenizer.kind is None:
            self.tokenizer.kind = "fields" if data.format == "csv" else "sentencepiece"
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
                model.num_layers = 2 if fields else 4
            if model.hidden_size is None:
                model.hidden_size = max(128 if fields else 256, model.num_heads * 2)
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
        if self.generate.prefix and self.data.format == "csv" and "\n" in self.generate.prefix:
            issues.append("generate.prefix: must not contain a newline")
        issues += _privacy_issues(self)
        if issues:
            raise ValueError("\n".join(issues))
        return self


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
    if dp.secure_mode and dp.noise_seed is not None:
        issues.append("privacy.noise_seed: secure_mode draws every step's noise seed from the OS; remove noise_seed")
    if config.generate.privacy_filter:
        issues.append(
            f"generate.privacy_filter: {why} the model dir keeps no digests of training records (they would sit "
            "outside the guarantee), so there is nothing to filter against; set it to false"
        )
    return issues


# sections that are a discriminated union: the tag (model.kind, schedule.name) picks the class
UNION_SECTIONS: dict[str, dict[str, type[Section]]] = {
    "model": {"lstm": LSTMConfig, "transformer": TransformerConfig},
    "schedule": SCHEDULES,
}
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

# --------------------------------------------------------------------------- validation


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
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        loc = _dotted(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown key{_did_you_mean(err['loc'])}")
        elif err["type"] in ("value_error", "assertion_error"):
            text = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
            for line in text.splitlines():  # cross-field checks carry their own paths
                lines.append(f"{loc}.{line}" if loc and not line.startswith(loc) else line)
        elif err["type"] == "union_tag_invalid":
            tag, tags = str(err["ctx"]["tag"]), err["ctx"]["expected_tags"].replace("'", "").split(", ")
            close = difflib.get_close_matches(tag, tags, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            lines.append(
                f"{loc}.{err['ctx']['discriminator'].strip(chr(39))}: unknown {tag!r}; {hint}one of {', '.join(tags)}"
            )
        elif err["type"] == "missing":
            lines.append(f"{loc}: required")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
            lines.append(f"{loc}: {msg}{shown}")
    n = len(lines)
    return f"invalid config ({n} problem{'s' if n != 1 else ''}):\n  " + "\n  ".join(lines)


def _dotted(loc: tuple) -> str:
    # discriminated unions put the tag in the path ('model', 'lstm', 'x'): drop it
    parts = [_shown(p) for i, p in enumerate(loc) if not (i == 1 and p in UNION_SECTIONS.get(loc[0], ()))]
    return ".".join(parts)


def _shown(part: Any) -> str:
    # a key holding a line break (or a tab) would split one problem over several lines
    text = str(part)
    return repr(text) if any(c in text for c in "\n\r\t") else text


def section_classes(name: str) -> list[type[BaseModel]]:
    """The section class(es) a top-level key holds: one, every variant of a union, or none for a plain value."""
    if name in UNION_SECTIONS:
        return list(UNION_SECTIONS[name].values())
    field = TrainingConfig.model_fields.get(name)
    cls = field.annotation if field is not None else None
    return [cls] if isinstance(cls, type) and issubclass(cls, BaseModel) else []


def _section_fields(section_loc: tuple) -> set[str]:
    if not section_loc:
        return set(TrainingConfig.model_fields)
    name = str(section_loc[0])
    if len(section_loc) > 1 and section_loc[1] in UNION_SECTIONS.get(name, ()):
        return set(UNION_SECTIONS[name][section_loc[1]].model_fields)
    return {key for cls in section_classes(name) for key in cls.model_fields}


def _all_dotted_fields() -> dict[str, list[str]]:
    """leaf name -> dotted paths, to point a key put in the wrong section to the right one."""
    index: dict[str, list[str]] = {}
    for section in TrainingConfig.model_fields:
        classes = section_classes(section)
        for leaf in dict.fromkeys(k for cls in classes for k in cls.model_fields):
            index.setdefault(leaf, []).append(f"{section}.{leaf}")
        if not classes:
            index.setdefault(section, []).append(section)
    return index


def _did_you_mean(loc: tuple) -> str:
    key = str(loc[-1])
    if len(loc) == 3 and loc[1] in UNION_SECTIONS.get(loc[0], ()):  # a key of another variant of this union
        users = [tag for tag, cls in UNION_SECTIONS[loc[0]].items() if key in cls.model_fields]
        if users:
            return f" for {loc[0]} {loc[1]!r} (only {', '.join(users)} use it)"
    elsewhere = [p for p in _all_dotted_fields().get(key, []) if p != _dotted(loc)]
    if elsewhere:  # the exact key of another section beats a look-alike in this one
        return f"; did you mean '{elsewhere[0]}'?"
    close = difflib.get_close_matches(key, sorted(_section_fields(loc[:-1])), n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return ""


# --------------------------------------------------------------------------- files


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
