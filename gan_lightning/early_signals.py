"""Signals that arrive before training starts: recorded, not fatal (no heavy imports here, on purpose).

SLURM's ``--signal=USR1@T`` can come seconds after a job starts, while Python is still importing torch;
SIGUSR1's default action would kill the process. ``python -m gan_lightning`` installs this recorder
before anything else, and the ``Preemption`` callback acts on what it recorded at the first iteration.
"""
import signal

received: dict[str, int | None] = {"signal": None}


def catch_signals_early(*names: str) -> None:
    """Record these signals from now on (the last one wins) until a real handler replaces this one."""
    for name in names:
        signal.signal(getattr(signal, name), _record)


def _record(signum: int, frame) -> None:
    received["signal"] = signum


def pop_early_signal() -> int | None:
    """The signal recorded so far, if any, forgetting it."""
    signum, received["signal"] = received["signal"], None
    return signum
