"""Errors of the learning loop the user can fix (a light module: the CLI imports it early)."""


class LogUnavailableError(ValueError):
    """The scoring log cannot be read: no such file, unreachable, or not a scoring log."""
