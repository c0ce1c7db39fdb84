"""The CUDA device count, read once per fit instead of at every optimizer step.

``import lightning`` sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (so that asking whether CUDA is available does not
initialise CUDA before a fork). With it, ``torch.cuda.is_available()`` counts the devices through NVML, and torch
keeps the count only once CUDA is initialised: until then every call loads ``libnvidia-ml`` again. Adam and AdamW
ask at every ``step()`` (their CUDA-graph capture check), so a run on the CPU with a torch built for CUDA paid
about 175 µs per optimizer step: 95 µs a call on the build machine, the fused Adam step of a 16-unit MLP 278 µs
against 101 µs with the count held (``benchmarks/device_count_cost.py``). A loop that never imports Lightning
does not pay it.

``hold_cuda_device_count`` counts once, through the same NVML path, and lets torch answer from that count until
``release``; it does nothing where torch keeps the count already (CUDA initialised, e.g. training on a GPU) or is
built without CUDA. The number of devices cannot change during a fit; ``release`` lets torch count again after it.
A hold that a fit dying by exception left behind is taken over, counted afresh, by the next hold.
"""
from collections.abc import Callable

import torch

_holding = False  # whether the count torch answers from is one that hold_cuda_device_count set


def hold_cuda_device_count() -> Callable[[], None]:
    """Keep ``torch.cuda.device_count()`` fixed at its present value; returns ``release``, which undoes that."""
    global _holding
    cuda = torch.cuda
    if not hasattr(cuda, "_cached_device_count") or cuda.is_initialized():
        return _nothing
    if cuda._cached_device_count is not None and not _holding:  # torch's own count
        return _nothing
    cuda._cached_device_count = None  # a hold left behind is counted afresh, not carried over
    cuda._cached_device_count, _holding = cuda.device_count(), True

    def release() -> None:
        global _holding
        if _holding and not cuda.is_initialized():  # once CUDA is initialised, the count torch keeps is its own
            cuda._cached_device_count, _holding = None, False

    return release


def _nothing() -> None:
    pass
