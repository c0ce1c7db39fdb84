"""A progress bar with the iteration counter, images seen, images per second and the latest losses.

The bar counts iterations, as ``max_steps`` and the logs do (``AdversarialModule.count_iterations``): with
``data.iterations_per_batch`` k, each of Lightning's batches moves it k iterations on."""
import time

from lightning.pytorch.callbacks import TQDMProgressBar

from gan_lightning.data.loader import iterations_per_batch


class GANProgressBar(TQDMProgressBar):
    """TQDM bar with ``iteration`` and ``images_seen`` as integers, ``img/s`` since the last refresh of the
    counters, and without Lightning's ``v_num``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._last: tuple[float, float] | None = None  # (time, images_seen) when the counters last changed
        self._rate: float | None = None
        self._per_batch = 1  # iterations in each of Lightning's batches, read when training starts

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        for counter in ("iteration", "images_seen"):
            if counter in metrics:
                metrics[counter] = int(float(metrics[counter]))
        seen = getattr(pl_module, "images_seen", None)
        if seen is not None and trainer.training:
            now = time.perf_counter()
            if self._last is not None and seen > self._last[1]:
                self._rate = (seen - self._last[1]) / max(now - self._last[0], 1e-9)
            if self._last is None or seen != self._last[1]:
                self._last = (now, seen)
            if self._rate is not None:
                metrics["img/s"] = int(self._rate)
        return metrics

    @property
    def total_train_batches(self) -> int | float:
        """Iterations in an epoch (Lightning's batches times ``iterations_per_batch``), or, when the run is bounded by
        steps only, up to ``max_steps`` (from the epoch's iterations already done, where a run resumes inside one)."""
        trainer = self.trainer
        k = self._per_batch
        total = trainer.num_training_batches * k
        if trainer.max_epochs == -1 and trainer.max_steps is not None and trainer.max_steps > 0:
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed * k
            total = min(total, done + trainer.max_steps - trainer.global_step)
        return total

    def on_train_start(self, trainer, pl_module) -> None:
        """A run resumed inside an epoch gets no ``on_train_epoch_start`` from Lightning: the bar starts here at the
        epoch's iterations already done, with the epoch's total, rather than at ``0/?``."""
        self._per_batch = iterations_per_batch(trainer)
        super().on_train_start(trainer, pl_module)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed * self._per_batch
        bar = self._train_progress_bar
        if done and bar is not None and not bar.disable:
            total = self.total_train_batches
            bar.reset(total=None if total == float("inf") else total)
            bar.n = done
            bar.set_description(f"Epoch {trainer.current_epoch}")
            bar.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, (batch_idx + 1) * self._per_batch - 1)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._show_done(trainer)
        super().on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._show_done(trainer)
        super().on_train_end(trainer, pl_module)

    def _show_done(self, trainer) -> None:
        """The bar at the batches this epoch processed: a stop by ``max_steps`` or ``max_time`` between two of the
        bar's refreshes would leave it at an earlier count (``0/421`` after 5 iterations with ``refresh_rate`` 20)."""
        bar = self._train_progress_bar
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed * self._per_batch
        if bar is not None and not bar.disable and done and bar.n != done:
            bar.n = done
            bar.refresh()

