"""What ``import lightning`` costs each optimizer step on a CPU run with a torch built for CUDA, and what holding the
CUDA device count (gan_lightning/models/device_count.py) gives back.

``import lightning`` sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``; torch then counts CUDA devices through NVML at every
``torch.cuda.is_available()`` until CUDA is initialised, and Adam's ``step()`` asks at every call. Times, in µs, of
``torch.cuda.is_available()`` and of a fused Adam step over a 16-unit MLP's parameters (784-16-16-8), each the
best of 5 repeats of 2,000 calls, one thread:

    python benchmarks/device_count_cost.py --out benchmarks/results/device_count_cost
"""
import argparse
import datetime
import os
import platform
import timeit

import lightning as L
import torch

from gan_lightning.models.device_count import hold_cuda_device_count
from provenance import commit, write_report  # benchmarks/provenance.py


def best_us(fn, number: int = 2000, repeat: int = 5) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/device_count_cost")
    args = parser.parse_args()
    torch.set_num_threads(1)
    net = torch.nn.Sequential(torch.nn.Linear(784, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 8))
    adam = torch.optim.Adam(net.parameters(), fused=True)
    net(torch.randn(128, 784)).square().mean().backward()
    adam.step()

    rows = {}
    rows["after import lightning"] = (best_us(torch.cuda.is_available), best_us(adam.step))
    release = hold_cuda_device_count()
    rows["device count held (gan_lightning, during fit)"] = (best_us(torch.cuda.is_available), best_us(adam.step))
    release()
    nvml = os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    rows["without Lightning's NVML setting (a loop that never imports lightning)"] = (
        best_us(torch.cuda.is_available), best_us(adam.step))
    if nvml is not None:
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = nvml

    report = {"command": f"python benchmarks/device_count_cost.py --out {args.out}",
              "date": datetime.date.today().isoformat(), "commit": commit(),
              "machine": f"{platform.processor() or platform.machine()}, 1 thread", "torch": torch.__version__,
              "lightning": L.__version__, "cuda_compiled": torch.cuda._is_compiled(),
              "cuda_initialised": torch.cuda.is_initialized(),
              "us": {k: {"is_available": a, "fused_adam_step": s} for k, (a, s) in rows.items()}}
    lines = [f"Command: {report['command']}",
             f"Date {report['date']}, commit {report['commit']}, {report['machine']}, torch {torch.__version__} "
             f"(built for CUDA: {report['cuda_compiled']}, CUDA initialised: {report['cuda_initialised']}), lightning "
             f"{L.__version__}; best of 5 repeats of 2,000 calls.", "",
             "| | torch.cuda.is_available(), µs | fused Adam step, 16-unit MLP, µs |", "|---|---|---|"]
    lines += [f"| {k} | {a:.1f} | {s:.1f} |" for k, (a, s) in rows.items()]
    write_report(args.out, report, lines)


if __name__ == "__main__":
    main()
