"""A start-up summary and a closing line that say what runs and where its outputs go."""
import os

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from gan_lightning.callbacks.images import SampleGrid
from gan_lightning.tracking import WandbLogger


class RunSummary(L.Callback):
    """Prints the model's networks and parameter counts, the data, the devices and the output folders at the start
    of fit; its last scores and the folders at its end; and at the start of validate, test and predict, the weights
    they use and where their outputs go."""

    def _folders(self, trainer: L.Trainer) -> list[tuple[str, str]]:
        folders = []
        for cb in trainer.callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath and ("checkpoints", str(cb.dirpath)) not in folders:
                folders.append(("checkpoints", str(cb.dirpath)))
            if isinstance(cb, SampleGrid):
                folders.append(("samples", str(cb.dirpath(trainer))))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                mode = "offline, `wandb sync` it later" if logger._offline else "online"
                files = logger.experiment.dir  # the run's files/ folder on rank 0; other ranks hold a dummy run
                run_folder = os.path.dirname(os.path.normpath(files)) if isinstance(files, str) else "rank 0's run"
                folders.append(("wandb", f"{run_folder} ({mode})"))
            else:
                folders.append(("logs", str(logger.log_dir or logger.save_dir)))
        return folders

    def _outputs(self, trainer: L.Trainer) -> list[str]:
        return [f"  {name:<11} -> {path}" for name, path in self._folders(trainer)]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_outputs(dict(self._folders(trainer)))
        nets = [f"{name} {sum(p.numel() for p in m.parameters()):,}" for name, m in pl_module.named_children()
                if name != "ema" and any(True for _ in m.parameters())]
        data = trainer.datamodule
        device = f"{trainer.world_size} x {trainer.strategy.root_device.type}"
        rank_zero_info("\n".join([
            f"gan_lightning: {type(pl_module).__name__} ({', '.join(nets)} parameters)",
            f"  data        : {data.hparams.dataset} {tuple(data.data_shape)}, {len(data.splits['train']):,} train / "
            f"{len(data.splits['val']):,} val examples, batch {data.hparams.batch_size} per device"
            if data is not None and hasattr(data, "splits") and data.splits
            else "  data        : (not a GANDataModule)",
            f"  devices     : {device}, precision {trainer.precision}",
            *([f"  resumed     : at iteration {pl_module.iteration} from {trainer.ckpt_path}"]
              if getattr(pl_module, "iteration", 0) and trainer.ckpt_path else []),
            *self._outputs(trainer),
        ]))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        rank_zero_info("\n".join([f"gan_lightning: finished at iteration {getattr(pl_module, 'iteration', '?')}",
                                  *self._scores(trainer), *self._outputs(trainer)]))

    @staticmethod
    def _scores(trainer: L.Trainer) -> list[str]:
        """The measuring callbacks' last scores, with the iteration each was measured at."""
        lines = []
        for cb in trainer.callbacks:
            last, at = getattr(cb, "last", None), getattr(cb, "last_iteration", None)
            if isinstance(last, dict) and last and at is not None:
                shown = "  ".join(f"{k} {v:.4g}" for k, v in last.items() if not k.endswith(("_std", "_pixels")))
                lines.append(f"  {'scores':<11} : {shown} (iteration {at}, {type(cb).__name__})")
        return lines

    def _evaluation_start(self, trainer: L.Trainer, pl_module: L.LightningModule, command: str) -> None:
        """``validate``, ``test`` and ``predict``: which weights, and where their outputs go."""
        weights = f"the checkpoint {trainer.ckpt_path}" if trainer.ckpt_path else "the config's untrained weights"
        logs = [f"  {name:<11} -> {path}" for name, path in self._folders(trainer) if name in ("logs", "wandb")]
        rank_zero_info("\n".join([f"gan_lightning: {command} {type(pl_module).__name__} at iteration "
                                  f"{getattr(pl_module, 'iteration', '?')} ({weights})",
                                  *(logs if command != "predict" else [])]))  # predict says what it wrote

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._evaluation_start(trainer, pl_module, "validate")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluation_start(trainer, pl_module, "test")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluation_start(trainer, pl_module, "predict")
