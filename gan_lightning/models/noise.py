"""Each training iteration's randomness, derived from (seed, iteration) and the rank.

A resumed run draws the same noise as the run it continues, and W ranks draw together what one process would draw
for the W batches concatenated: the noise of the whole global batch comes from one generator seeded with (seed,
iteration), and each rank keeps its rows; the global RNG (dropout) is seeded with (seed, iteration, rank).
"""
from collections.abc import Callable, Sequence

import torch


def seed_training_rng(seed: int, device: torch.device) -> None:
    """``torch.manual_seed(seed)`` for the generators a training step draws from: the CPU's and, on a CUDA device,
    that device's. ``torch.manual_seed`` also seeds every other backend (every CUDA device, XPU, MTIA); with a torch
    built for CUDA and no GPU it queues each as a lazy call that formats a stack trace, 0.2 to 0.5 ms a call, every
    iteration (benchmarks/host_overhead.py). Other accelerators (MPS, XPU) keep ``torch.manual_seed``."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()
                                      ].manual_seed(seed)
    elif device.type != "cpu":
        torch.manual_seed(seed)


class IterationNoise:
    """The training noise of an ``AdversarialModule`` (a mixin of it): ``self.noise`` and the draws from it."""

    def seed_iteration(self, iteration: int) -> None:
        """Derive an iteration's randomness from (seed, iteration): ``self.noise`` for the global batch's
        noise, and the global RNG (dropout) from (seed, iteration, rank)."""
        _, rank, device = self.place()
        if self.noise is None or self.noise.device != device:
            self.noise = torch.Generator(device=device)
        # Tuples of ints hash the same in every process and every Python run (no hash randomisation).
        self.noise.manual_seed(hash((self.seed, iteration)) & (2**63 - 1))
        seed_training_rng(hash((self.seed, iteration, rank)) & (2**63 - 1), device)

    def place(self) -> tuple[int, int, torch.device]:
        """(world size, this process's rank, device): kept per fit (``on_train_start``), read from the trainer
        otherwise; a training iteration reads them several times, at about 1 µs a property."""
        place = self.__dict__.get("_fit_place")
        if place is None:
            world, rank = (self.trainer.world_size, self.global_rank) if self._trainer is not None else (1, 0)
            place = (world, rank, self.device)
        return place

    def rank_rows(self, draw: Callable[[int], torch.Tensor], n: int) -> torch.Tensor:
        """This rank's n rows of ``draw(n * world_size)``: noise drawn for the whole global batch, so that
        training on W ranks equals training on one process with the W batches concatenated."""
        world, rank, _ = self.place()
        return draw(n) if world == 1 else draw(n * world)[rank * n : (rank + 1) * n]

    def draw_training_prior(self, n: int) -> torch.Tensor:
        """This iteration's n draws from p(z) for this rank's batch: (n, Z)."""
        return self.rank_rows(lambda m: self.draw_prior(m, self.noise), n)

    def draw_training_normal(self, shape: Sequence[int]) -> torch.Tensor:
        """This iteration's standard normal noise of ``shape`` (first dimension: this rank's batch)."""
        return self.rank_rows(lambda m: torch.randn(m, *shape[1:], generator=self.noise, device=self.noise.device),
                              shape[0])

    def draw_training_uniform(self, n: int) -> torch.Tensor:
        """This iteration's n draws from U[0, 1] for this rank's batch (e.g. WGAN-GP's interpolation weights)."""
        return self.rank_rows(lambda m: torch.rand(m, generator=self.noise, device=self.noise.device), n)
