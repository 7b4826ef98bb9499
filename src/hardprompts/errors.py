"""User-facing errors.

Every error a user can cause by a bad input (a config field, a data file, a model name, a
verbalizer) is a :class:`HardpromptsError`. The command line prints its message, without a
traceback, and exits with status 2. Messages say what is wrong *and* what to do about it.
"""

from __future__ import annotations


class HardpromptsError(Exception):
    """Base class of the errors caused by user input; the CLI prints them without a traceback."""


class ConfigError(HardpromptsError):
    """A configuration field is unknown, has the wrong type, or names something that does not exist."""


class DataError(HardpromptsError):
    """A data file or dataset is missing, malformed, or has labels outside ``0..C-1``."""


class ModelLoadError(HardpromptsError):
    """A model or tokenizer could not be loaded from the name or path given."""


class VerbalizerError(HardpromptsError):
    """A verbalizer (label word) is not a single token of the target's tokenizer."""


class TargetError(HardpromptsError):
    """A scoring target (in-process model or served endpoint) cannot do what was asked."""


class CheckpointError(HardpromptsError):
    """A checkpoint folder is missing, incomplete or damaged (the message names the file)."""


def not_utf8(path: object, exc: UnicodeDecodeError, fix: str = "save it as UTF-8") -> str:
    """The message for a file that is not UTF-8 text: where the first bad byte is, and the fix."""
    return (
        f"{path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); {fix}"
    )


class MissingExtraError(HardpromptsError):
    """An optional dependency group (a ``pip install "hardprompts[extra]"``) is needed but absent."""
