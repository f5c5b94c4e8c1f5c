"""The exception hierarchy: every error a user can cause is a `SynthloomError`.

The CLI catches `SynthloomError`, prints its message (no traceback) and exits non-zero.
Anything else escaping is a bug in synthloom.
"""


class SynthloomError(Exception):
    """Base class of every error a user can cause."""

    exit_code = 1


class ConfigError(SynthloomError):
    """The configuration is invalid; the message lists every problem with its dotted path."""

    exit_code = 2


class DataError(SynthloomError):
    """The training data cannot be read or holds no usable records."""

    exit_code = 3


class TokenizerError(SynthloomError):
    """A tokenizer cannot be trained, saved, loaded or cannot encode its input."""

    exit_code = 4


class TrainingError(SynthloomError):
    """Training cannot start or cannot go on (for example a non-finite loss)."""

    exit_code = 5


class ModelDirError(SynthloomError):
    """A model directory is missing, incomplete or inconsistent."""

    exit_code = 6


class GenerationError(SynthloomError):
    """Sampling cannot produce what was asked (bad prefix, too many invalid records...).
    `records`: what was sampled before it stopped (valid and invalid, flagged), when anything
    was; a caller can keep the valid ones."""

    exit_code = 7
    records: list | None = None
