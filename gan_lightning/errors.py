"""Errors a user fixes in the config or on disk; the CLI prints them as one line, without a traceback."""


class ConfigError(ValueError):
    """Parts of a config that do not fit together (a callback and a model, a network and the data)."""


class Preempted(Exception):
    """Training stopped on a signal after saving a resumable checkpoint (see callbacks.Preemption)."""
