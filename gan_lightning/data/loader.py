"""A data loader for datasets that fit in device memory: one tensor per field, no worker processes.

Small GANs are data-loader bound: collating 128 images in Python costs more than the networks'
step. Here a batch is one index-gather on the device. Under DDP every rank draws the same seeded
permutation per epoch and takes a disjoint, equally long share of it (like DistributedSampler with
drop_last), so ranks see different data and the same number of batches.
"""
from typing import Iterator, Sequence

import torch


class DeviceTensorLoader:
    def __init__(
        self,
        tensors: Sequence[torch.Tensor],
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tensors = [t.to(device) for t in tensors]
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def _rank_indices(self) -> torch.Tensor:
        n = len(self.tensors[0])
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch)) if self.shuffle \
            else torch.arange(n)
        per_rank = n // self.world_size
        return order[self.rank :: self.world_size][:per_rank]

    def __len__(self) -> int:
        per_rank = len(self.tensors[0]) // self.world_size
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        indices = self._rank_indices().to(self.tensors[0].device)
        self.epoch += 1
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            yield tuple(t[batch] for t in self.tensors)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
