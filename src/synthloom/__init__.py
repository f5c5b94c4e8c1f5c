"""synthloom: train text-generation models on records, sample synthetic records.

from synthloom import TrainingConfig, train, load_model
config = TrainingConfig(output_dir="model", data={"path": "data.csv"})
train(config)
records = load_model("model").generate(num_records=100)
"""

__version__ = "0.1.0"

from .config import TrainingConfig, load_config, save_config  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError,
    DataError,
    GenerationError,
    ModelDirError,
    SynthloomError,
    TokenizerError,
    TrainingError,
)
from .generate import TrainedModel, generate, load_model  # noqa: E402
from .records import GeneratedRecord  # noqa: E402
from .train import EpochState, TrainResult, train  # noqa: E402

__all__ = [
    "TrainingConfig",
    "load_config",
    "save_config",
    "train",
    "TrainResult",
    "EpochState",
    "load_model",
    "generate",
    "TrainedModel",
    "GeneratedRecord",
    "SynthloomError",
    "ConfigError",
    "DataError",
    "TokenizerError",
    "TrainingError",
    "ModelDirError",
    "GenerationError",
]
