"""Errors raised by models: what was wrong with the input, in words a user can act on."""


class InvalidSeries(ValueError):
    """The input cannot be forecast at all (empty, infinite values, bad step)."""


class InsufficientHistory(ValueError):
    """The history is too short or too gappy for this model; a simpler one may still fit."""
