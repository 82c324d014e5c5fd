"""The exceptions a user can cause. The CLI prints their message and exits non-zero.

Every message says what went wrong, where, and how to fix it.
"""


class TransformerKitError(Exception):
    """Base class of every error a user can cause (bad input, missing files, ...)."""


class ConfigError(TransformerKitError):
    """An unknown preset, or a configuration that does not make sense."""


class CheckpointError(TransformerKitError):
    """A checkpoint that is missing, of another model, or whose tensors do not fit."""


class AssetError(TransformerKitError):
    """An asset that cannot be fetched, or whose checksum does not match."""


class DataError(TransformerKitError):
    """A data file that is empty, unreadable, or not what was expected."""


class GenerationError(TransformerKitError):
    """A prompt or generation setting that cannot be honoured (e.g. longer than the context)."""
