"""A progress bar that shows the iteration counter and images seen as whole numbers."""
from lightning.pytorch.callbacks import TQDMProgressBar


class GANProgressBar(TQDMProgressBar):
    """TQDM bar with ``iteration`` and ``images_seen`` as integers and without Lightning's ``v_num``."""

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        for counter in ("iteration", "images_seen"):
            if counter in metrics:
                metrics[counter] = int(float(metrics[counter]))
        return metrics
