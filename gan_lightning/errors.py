"""Errors a user fixes in the config or on disk; the CLI prints them as one line, without a traceback."""


class ConfigError(ValueError):
    """Parts of a config that do not fit together (a callback and a model, a network and the data)."""


class Preempted(Exception):
    """Training stopped on a signal after saving a resumable checkpoint (see callbacks.Preemption)."""


def first_line(err: BaseException, limit: int = 200) -> str:
    """An exception's message as one short line (its type's name when it has none)."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[0].split())[:limit] if lines else type(err).__name__
