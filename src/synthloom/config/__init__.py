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

from .files import (
    apply_overrides,
    commented_yaml,
    config_json_schema,
    config_to_dict,
    dump_config,
    load_config,
    read_config_file,
    save_config,
)
from .messages import format_validation_error
from .sections import (
    METRIC_MODE,
    OPTIMIZER_PARAMS,
    SCHEDULES,
    UNION_SECTIONS,
    CheckpointConfig,
    ColumnKind,
    ConstantSchedule,
    CosineSchedule,
    CosineWithRestartsSchedule,
    CyclicalSchedule,
    DataConfig,
    EarlyStoppingConfig,
    ExponentialSchedule,
    GenerateConfig,
    InverseSqrtSchedule,
    LinearSchedule,
    LoRAConfig,
    LSTMConfig,
    Metric,
    ModelConfig,
    MultiStepSchedule,
    OneCycleSchedule,
    OptimConfig,
    PolynomialSchedule,
    PrivacyConfig,
    ReduceOnPlateauSchedule,
    ScheduleConfig,
    Section,
    Seq2SeqConfig,
    StepSchedule,
    TokenizerConfig,
    TrainConfig,
    TransformerConfig,
    WarmupStableDecaySchedule,
)
from .training import DELIMITERS, DERIVED_KEYS, TrainingConfig, section_classes, sniff_delimiter, validate_config

__all__ = [
    "CheckpointConfig",
    "ColumnKind",
    "ConstantSchedule",
    "CosineSchedule",
    "CosineWithRestartsSchedule",
    "CyclicalSchedule",
    "DELIMITERS",
    "DERIVED_KEYS",
    "DataConfig",
    "EarlyStoppingConfig",
    "ExponentialSchedule",
    "GenerateConfig",
    "InverseSqrtSchedule",
    "LSTMConfig",
    "LinearSchedule",
    "LoRAConfig",
    "METRIC_MODE",
    "Metric",
    "ModelConfig",
    "MultiStepSchedule",
    "OPTIMIZER_PARAMS",
    "OneCycleSchedule",
    "OptimConfig",
    "PolynomialSchedule",
    "PrivacyConfig",
    "ReduceOnPlateauSchedule",
    "SCHEDULES",
    "ScheduleConfig",
    "Section",
    "StepSchedule",
    "TokenizerConfig",
    "TrainConfig",
    "TrainingConfig",
    "Seq2SeqConfig",
    "TransformerConfig",
    "UNION_SECTIONS",
    "WarmupStableDecaySchedule",
    "apply_overrides",
    "commented_yaml",
    "config_json_schema",
    "config_to_dict",
    "dump_config",
    "format_validation_error",
    "load_config",
    "read_config_file",
    "save_config",
    "section_classes",
    "sniff_delimiter",
    "validate_config",
]
