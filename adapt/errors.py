"""User-facing errors: raised early, printed without a traceback by the command-line entry points.

Every message names what is wrong (file, field or model id) and how to fix it, so a user
never has to read a stack trace from inside a library to learn that a path is missing.
"""

from __future__ import annotations


class AdaptError(Exception):
    """Base class of errors whose message alone tells the user what to do."""


class ConfigError(AdaptError):
    """A configuration value is invalid or inconsistent (names the key and the valid choices)."""


class ModelNotFoundError(AdaptError):
    """SAM2 weights cannot be found locally or on the Hugging Face Hub."""


class DataError(AdaptError):
    """A dataset file is missing, unreadable or inconsistent (names the file and the problem)."""


class DataNotFoundError(DataError):
    """The data a card points to is not on disk (says where it looked and how to get it)."""


class ArtefactError(AdaptError):
    """A checkpoint, adapter or model file is truncated, foreign or holds non-finite numbers
    (names the file and how to get a good one)."""


class TrainingError(AdaptError):
    """Training cannot go on: a non-finite loss (names the step, the cases of the batch and what to try)."""


def not_one_of(choices: tuple | list) -> str:
    """The one wording of a value outside its choices, shared by the schema and the constructors."""
    return f"is not one of {list(choices)}"


def check_choice(key: str, value: object, choices: tuple | list) -> None:
    """Refuse ``value`` unless it is one of ``choices`` (for calls that bypass the config schema).

    Raises:
        ConfigError: ``key='value' is not one of [...]``, as the schema words it.
    """
    if value not in choices:
        raise ConfigError(f"{key}={value!r} {not_one_of(choices)}")
