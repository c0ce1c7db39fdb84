"""When a periodic measurement runs: every n-th epoch of fit, at the fit's last validation, and at every
``validate`` (a checkpoint is scored whatever its epoch)."""
import lightning as L
from lightning.pytorch.trainer.states import TrainerFn


def measures_now(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """Whether a callback measuring every ``every_n_epochs`` validations measures at this one."""
    if trainer.sanity_checking:
        return False
    if trainer.state.fn != TrainerFn.FITTING:  # `validate --ckpt_path ...`: the checkpoint's scores, always
        return True
    return (trainer.current_epoch + 1) % every_n_epochs == 0 or last_validation(trainer)


def last_validation(trainer: L.Trainer) -> bool:
    """Whether the fit stops after this validation: its last epoch, its step budget spent, or a stop asked for."""
    epochs = trainer.max_epochs
    return (bool(trainer.should_stop)
            or (epochs is not None and epochs >= 0 and trainer.current_epoch + 1 >= epochs)
            or (trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step))


def log_after_fit(trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, float]) -> None:
    """Scores measured at the end of fit into every logger, as one row with the iteration (and images seen) like
    every other row; ``self.log`` is closed in ``on_train_end``. Also into ``trainer.callback_metrics``, where
    the run summary reads the final scores."""
    import torch

    row = {**metrics, "iteration": float(getattr(pl_module, "iteration", trainer.global_step))}
    if hasattr(pl_module, "images_seen"):
        row["images_seen"] = float(pl_module.images_seen)
    for logger in trainer.loggers:
        logger.log_metrics(row, step=trainer.global_step)
    trainer.callback_metrics.update({name: torch.tensor(float(value)) for name, value in metrics.items()})
