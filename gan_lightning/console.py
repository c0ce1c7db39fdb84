"""Lines for the user on the console, which share it with the progress bar."""
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_info


def say(trainer, text: str) -> None:
    """``text`` on its own line on rank 0, above the progress bar when one is drawn (logging's line would be glued
    to the bar's)."""
    bar = getattr(trainer, "progress_bar_callback", None)
    if isinstance(bar, TQDMProgressBar) and trainer.is_global_zero and bar._train_progress_bar is not None \
            and not bar.train_progress_bar.disable:
        bar.print(text)
    else:
        rank_zero_info(text)
