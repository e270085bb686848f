"""Exceptions vaekit raises on purpose. Each message is one line saying what is wrong and what to do."""


class VaekitError(Exception):
    """Base class for vaekit's own errors."""


class DataError(VaekitError, ValueError):
    """The data cannot be used as given (bad values, shape, file)."""


class CheckpointError(VaekitError, ValueError):
    """A checkpoint or run folder is missing, corrupted or from an incompatible version."""


class TrainingError(VaekitError, RuntimeError):
    """Training cannot go on (the loss became non-finite)."""
