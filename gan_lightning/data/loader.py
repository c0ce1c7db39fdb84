"""Loaders that resume mid-epoch exactly, and serve every rank its share of one global batch.

The training order of an epoch is a permutation seeded with (seed, epoch). It is cut into *global*
batches of ``batch_size * world_size`` examples, and rank r takes the r-th ``batch_size`` of each. The
W ranks together therefore see exactly the batches that one process with ``batch_size * W`` would see,
whatever W is; and a run resumed at batch k of epoch e skips the first k batches of the same order.

``DeviceTensorLoader`` serves datasets that fit in device memory (one index-gather per batch, no
workers); ``ResumableDataLoader`` is a torch DataLoader over the same sampler for datasets read
from disk. Both save ``{"epoch", "batches_done", "epoch_done"}`` in Lightning's checkpoints through
``state_dict``: the position the training loop has *consumed*, read from the trainer, not the
loader's own count, which runs ahead by Lightning's prefetched batch; and the ``world_size`` and
per-device ``batch_size`` that position is counted in. A mid-epoch position resumed with another
global batch (``batch_size * world_size``) would land elsewhere in the epoch, and is refused in one
line naming both world sizes; the same global batch split otherwise (2 x 64 resumed as 4 x 32) lands
exactly, and so does any position at an epoch's end (the next epoch starts at its beginning).
"""
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

Position = Callable[[], dict]  # returns {"epoch": int, "batches_done": int, "epoch_done": bool}


class ResumableSampler(DistributedSampler):
    """This rank's indices of one epoch, in global-batch blocks, optionally skipping consumed batches.

    A DistributedSampler subclass, so Lightning keeps it instead of inserting its own under DDP.
    ``set_epoch`` (called by Lightning every epoch) chooses the permutation; a full pass also moves to
    the next epoch, for use outside Lightning.
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool = True, drop_last: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        # DistributedSampler's own fields, for code that reads them; its __iter__ is replaced below.
        self.dataset, self.num_replicas, self.rank, self.epoch = range(n), world_size, rank, 0
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.n, self.batch_size = n, batch_size
        self.skip = 0  # batches of the current epoch already consumed (set when resuming)
        self.num_samples = self.batches * batch_size if drop_last else n // world_size
        self.total_size = self.num_samples * world_size

    @property
    def batches(self) -> int:
        """Batches per epoch on each rank."""
        if self.drop_last:
            return self.n // (self.batch_size * self.num_replicas)
        return -(-(self.n // self.num_replicas) // self.batch_size)

    def _indices(self) -> torch.Tensor:
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(hash((self.seed, self.epoch))
                                                                                   & (2**63 - 1)))
        else:
            order = torch.arange(self.n)
        if self.drop_last:  # global batches of B*W, rank r takes the r-th B of each
            global_batch = self.batch_size * self.num_replicas
            blocks = order[: (self.n // global_batch) * global_batch].view(-1, self.num_replicas, self.batch_size)
            return blocks[:, self.rank].reshape(-1)
        per_rank = self.n // self.num_replicas  # evaluation: strided shares of equal length
        return order[self.rank :: self.num_replicas][:per_rank]

    def take_epoch(self) -> torch.Tensor:
        """This rank's indices for the rest of the current epoch; the sampler moves on to the next epoch."""
        indices = self._indices()[self.skip * self.batch_size :]
        self.skip, self.epoch = 0, self.epoch + 1
        return indices

    def __iter__(self) -> Iterator[int]:
        yield from self.take_epoch().tolist()

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state(self, position: dict) -> dict:
        """A loader's saved state: the loop ``position`` and the global batch it is counted in."""
        return {**position, "world_size": self.num_replicas, "batch_size": self.batch_size}

    def resume(self, state: dict) -> None:
        """Continue where ``state`` (a Lightning loop position) stopped: the next epoch if it was done.

        A position inside an epoch counts global batches of the run that saved it: with another global batch
        size it is refused (``CheckpointError``, one line naming both world sizes). States saved before the
        world size was recorded are trusted, as they always were."""
        if not state["epoch_done"] and "world_size" in state:
            self._refuse_another_global_batch(state)
        self.epoch = state["epoch"] + int(state["epoch_done"])
        self.skip = 0 if state["epoch_done"] else state["batches_done"]

    def _refuse_another_global_batch(self, state: dict) -> None:
        world, per_device = state["world_size"], state.get("batch_size", self.batch_size)
        if world * per_device == self.num_replicas * self.batch_size:
            return  # the same global batches, split otherwise: the position holds
        from gan_lightning.checkpoints import CheckpointError

        raise CheckpointError(
            f"this checkpoint stopped in the middle of epoch {state['epoch']}, after {state['batches_done']} global "
            f"batches of {world} x {per_device} examples (world size {world}, data.batch_size {per_device}), but "
            f"this run has world size {self.num_replicas} with data.batch_size {self.batch_size}: its position "
            "would land on other examples. Resume it on "
            f"{world} device{'s' if world > 1 else ''} in all (trainer.devices x trainer.num_nodes) with "
            f"data.batch_size {per_device} (or any split of {world * per_device} examples per step), resume "
            "from a checkpoint written at an epoch's end, or start a new run without --ckpt_path")


class Batches:
    """Several consecutive training batches served to Lightning as one (``data.iterations_per_batch``): the
    tensors of all of them, concatenated (one index-gather each), and the batch size of one iteration.

    Iterating yields each iteration's batch, a tuple like a lone batch's. Lightning moves it with ``to`` and
    calls its per-batch machinery (hooks, logging, progress) once for all of them."""

    def __init__(self, tensors: Sequence[torch.Tensor], batch_size: int):
        self.tensors, self.batch_size = tuple(tensors), batch_size

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return zip(*(t.split(self.batch_size) for t in self.tensors))

    def to(self, *args, **kwargs) -> "Batches":
        return Batches([t.to(*args, **kwargs) for t in self.tensors], self.batch_size)

    def map_first(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Batches":
        """The same batches with ``fn`` applied to the first tensor (the examples) of all of them at once."""
        return Batches([fn(self.tensors[0]), *self.tensors[1:]], self.batch_size)


def iterations_per_batch(trainer) -> int:
    """Iterations in each of Lightning's training batches: the data module's ``iterations_per_batch`` (1 for any
    other data module). Steps, the progress bar and ``max_steps`` count iterations (docs/configs.md)."""
    hparams = getattr(getattr(trainer, "datamodule", None), "hparams", None) or {}
    return int(hparams.get("iterations_per_batch", 1))


class DeviceTensorLoader:
    """Batches of tensors held in device memory, one index-gather each, in ``ResumableSampler`` order.

    With ``iterations_per_batch`` k > 1 it serves k consecutive batches at a time as one ``Batches`` (the
    epoch's last one may hold fewer), so that Lightning's per-batch work is paid once per k iterations; the
    batches and their order are those of k = 1."""

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
        position: Optional[Position] = None,
        iterations_per_batch: int = 1,
    ):
        if iterations_per_batch < 1:
            raise ValueError(f"iterations_per_batch must be >= 1, got {iterations_per_batch}")
        self.tensors = [t.to(device) for t in tensors]
        self.batch_size, self.iterations_per_batch = batch_size, iterations_per_batch
        self.sampler = ResumableSampler(len(self.tensors[0]), batch_size, shuffle=shuffle, drop_last=drop_last,
                                        seed=seed, rank=rank, world_size=world_size)
        self.batch_sampler = None  # read by Lightning, as on a DataLoader
        self.position = position

    def __len__(self) -> int:
        return -(-self.sampler.batches // self.iterations_per_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...] | Batches]:
        indices = self.sampler.take_epoch().to(self.tensors[0].device)
        k = self.iterations_per_batch
        for batch in indices.split(self.batch_size * k):
            gathered = tuple(t[batch] for t in self.tensors)
            yield gathered if k == 1 else Batches(gathered, self.batch_size)

    def state_dict(self) -> dict:
        if self.position is None:
            return {}
        state = self.sampler.state(self.position())
        if self.iterations_per_batch > 1:  # absent: 1, as in checkpoints written before the option
            state["iterations_per_batch"] = self.iterations_per_batch
        return state

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        refuse_another_order(state, self.position)
        saved = state.get("iterations_per_batch", 1)
        if saved != self.iterations_per_batch and not state["epoch_done"]:
            from gan_lightning.checkpoints import CheckpointError

            raise CheckpointError(
                f"this checkpoint stopped in the middle of epoch {state['epoch']} with data.iterations_per_batch "
                f"{saved}, and this run has {self.iterations_per_batch}: Lightning's count of the epoch's batches "
                f"would not match. Resume with data.iterations_per_batch {saved}, or from a checkpoint written at "
                "an epoch's end")
        self.sampler.resume(state)


class ResumableDataLoader(DataLoader):
    """A torch DataLoader over a ``ResumableSampler`` that Lightning saves and restores mid-epoch."""

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int, rank: int,
                 world_size: int, position: Optional[Position] = None, **kwargs):
        sampler = ResumableSampler(len(dataset), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                                   rank=rank, world_size=world_size)
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **kwargs)
        self.position = position

    def __iter__(self):
        return WorkerDeathExplained(super().__iter__(), self.num_workers)

    def state_dict(self) -> dict:
        return self.sampler.state(self.position()) if self.position is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            refuse_another_order(state, self.position)
            self.sampler.resume(state)


# A saved loader position (``Position`` plus what ResumableSampler.state adds): each entry's type and least value.
POSITION = {"epoch": (int, 0), "batches_done": (int, 0), "epoch_done": (bool, None), "world_size": (int, 1),
            "batch_size": (int, 1), "iterations_per_batch": (int, 1), "data": (str, None)}
REQUIRED = ("epoch", "batches_done", "epoch_done")


def position_mismatch(state: object) -> str | None:
    """What is wrong with a saved loader position ({} is none), or None: checked before Lightning hands it to the
    loaders, so that a damaged one is refused in one line rather than failing inside them."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a dict"
    if not state:
        return None
    for key, (kind, least) in POSITION.items():
        if key not in state:
            if key in REQUIRED:
                return f"no {key!r}"
            continue
        value = state[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)) or \
                (least is not None and value < least):
            return f"{key!r} is {value!r:.60}"
    return None


def refuse_another_order(state: dict, position: Optional[Position]) -> None:
    """A position inside an epoch counts batches of one order of the examples (``GANDataModule.order_name``): with
    other data settings it would land on other examples, so it is refused in one line naming both."""
    here = position().get("data") if position is not None and not state.get("epoch_done", True) else None
    if here is not None and state.get("data") is not None and state["data"] != here:
        from gan_lightning.checkpoints import CheckpointError

        raise CheckpointError(
            f"this checkpoint stopped in the middle of epoch {state.get('epoch')} of another order of the data "
            f"({state['data']}; this run: {here}): resume with the checkpoint's data settings, resume from a "
            "checkpoint written at an epoch's end, or start a new run without --ckpt_path")


class DataLoaderWorkerDied(RuntimeError):
    """A DataLoader worker process ended without an exception of its own (a signal); the message says why."""


# What each way of dying usually means, and what to do about it.
_WORKER_DEATHS = {
    "Killed": "most often the kernel's out-of-memory killer (see `dmesg`): lower data.num_workers or "
              "data.batch_size, or give the job more memory",
    "Bus error": "the shared memory the workers pass batches through (/dev/shm) is full: enlarge it (docker: "
                 "--shm-size) or lower data.num_workers",
    "Segmentation fault": "a crash in native code while reading data (an image library, a corrupt file): run with "
                          "data.num_workers 0 to see it in the main process",
}


class WorkerDeathExplained:
    """A DataLoader iterator whose worker deaths say the cause and the fix instead of torch's bare
    "DataLoader worker (pid(s) N) exited unexpectedly"; everything else passes through."""

    def __init__(self, iterator, num_workers: int):
        self._iterator, self._num_workers = iterator, num_workers

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._iterator)

    def __getattr__(self, name: str):
        return getattr(self._iterator, name)

    def __next__(self):
        try:
            return next(self._iterator)
        except RuntimeError as err:
            if "DataLoader worker" not in str(err) or "exited unexpectedly" not in str(err):
                raise
            causes, cause = [], err
            while cause is not None:
                causes.append(str(cause).strip())
                cause = cause.__cause__ or cause.__context__
            how = next((c for c in causes if "killed by signal" in c), causes[0])
            advice = next((a for signal, a in _WORKER_DEATHS.items() if signal in how),
                          "run with data.num_workers 0 to see the error in the main process")
            raise DataLoaderWorkerDied(
                f"a DataLoader worker died ({how.rstrip('. ')}; data.num_workers={self._num_workers}): {advice}. "
                "Checkpoints already written are intact: resume with --ckpt_path last") from err
