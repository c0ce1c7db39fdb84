"""What every benchmark's raw output is labelled with: the code it ran (``commit``) and where (``machine``)."""
import json
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def commit(repo: Path = REPO) -> str:
    """The checkout's commit as ``git describe --always --dirty`` gives it: ``1187ca8``, or ``1187ca8-dirty`` when
    tracked files differ from it (figures from uncommitted code, or a copied tree whose ``.git`` is stale).

    ``GIT_COMMIT`` overrides it, for a copy of the tree elsewhere whose commit is known; ``unknown`` outside a
    checkout.
    """
    if os.environ.get("GIT_COMMIT"):
        return os.environ["GIT_COMMIT"]
    described = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=repo,
                               capture_output=True, text=True)
    return described.stdout.strip() if described.returncode == 0 and described.stdout.strip() else "unknown"


def machine(accelerator: str) -> str:
    """Host, processor, CPU threads, the GPU's name when ``accelerator`` is ``gpu``, and torch's version."""
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(0)}" if accelerator == "gpu" and torch.cuda.is_available() else ""
    return f"{platform.node()} ({cpu}, {os.cpu_count()} CPU threads{gpu}), torch {torch.__version__}"


def write_report(out: str | Path, report: dict, lines: list[str]) -> None:
    """A benchmark's raw output: ``<out>.json`` holds ``report``, ``<out>.md`` its ``lines`` (command, date, commit,
    machine, table); the lines are printed too."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
