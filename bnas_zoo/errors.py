"""Errors that name what was wrong: the file, the field, what was expected."""

__all__ = ['BnasError', 'GenotypeError', 'CheckpointError', 'ModelConfigError']


class BnasError(ValueError):
    """Base class of bnas_zoo's input errors (a ValueError, so callers may catch either)."""


class GenotypeError(BnasError):
    """A genotype JSON that is malformed or inconsistent."""


class CheckpointError(BnasError):
    """A checkpoint or weight file that is unreadable, corrupted or belongs to another model."""


class ModelConfigError(BnasError):
    """Network arguments that cannot build a network (unknown stem, too few layers, ...)."""
