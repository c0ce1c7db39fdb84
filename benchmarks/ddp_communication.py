"""Bytes all-reduced per training iteration under DDP: PlayerDDPStrategy versus Lightning's default.

Runs each shipped config on 2 CPU ranks (gloo) for a few iterations with a DDP communication hook
that counts the bytes of every gradient bucket it all-reduces, and compares them with the bytes of the
parameters the iteration actually updated (the discriminator every iteration, the generator side
every n_critic-th). Lightning's default needs ``find_unused_parameters=True`` for these models (one DDP
around the whole module), so each backward all-reduces every network's gradients.

    python benchmarks/ddp_communication.py                  # writes benchmarks/results/ddp_communication.*
    python benchmarks/ddp_communication.py --iterations 4   # quicker
"""
import argparse
import datetime
import json
import platform
import tempfile
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import DDPStrategy

from gan_lightning.distributed import CommunicationCounter, PlayerDDPStrategy
from provenance import commit  # benchmarks/provenance.py

RESULTS = Path(__file__).parent / "results"
CASES = {  # key: (name, config, extra command-line options)
    "gan": ("GAN (DCGAN)", "configs/gan.yaml", []),
    "wgan_gp": ("WGAN-GP, n_critic 5", "configs/gan.yaml", ["--model.init_args.loss", "wasserstein",
                                                            "--model.init_args.gradient_penalty", "10",
                                                            "--model.init_args.n_critic", "5"]),
    "ali": ("ALI (DCGAN networks)", "configs/ali.yaml", []),
    "bigan": ("BiGAN (MLP 1024)", "configs/bigan.yaml", []),
}


class Report(L.Callback):
    """Rank 0 writes the bytes its hook counted and the bytes of the parameters its players updated."""

    def __init__(self, counter: CommunicationCounter, out: Path):
        self.counter, self.out, self.updated = counter, out, 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.updated += sum(p.numel() * p.element_size() for group in optimizer.param_groups for p in group["params"])

    def on_train_end(self, trainer, pl_module):
        if trainer.is_global_zero:
            self.out.write_text(json.dumps({"bytes": self.counter.bytes, "updated": self.updated,
                                            "iterations": pl_module.iteration}))


def build(config: str, extra: list[str], data_dir: str):
    from gan_lightning.cli import GANLightningCLI

    cli = GANLightningCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                          auto_configure_optimizers=False, run=False, save_config_callback=None,
                          args=["--config", config, "--config", "configs/overlays/smoke.yaml",
                                "--data.init_args.data_dir", data_dir, *extra])
    return cli.model, cli.datamodule


def measure(config: str, extra: list[str], strategy_name: str, iterations: int, data_dir: str) -> dict:
    counter = CommunicationCounter()
    if strategy_name == "player_ddp":
        strategy = PlayerDDPStrategy(start_method="fork", process_group_backend="gloo", ddp_comm_hook=counter.hook)
        hooks = []
    else:  # Lightning's default for these models; the hook goes on its one DDP around the whole module
        strategy = DDPStrategy(start_method="fork", process_group_backend="gloo", find_unused_parameters=True)

        class Hook(L.Callback):
            def on_fit_start(self, trainer, pl_module):
                trainer.strategy.model.register_comm_hook(None, counter.hook)

        hooks = [Hook()]
    torch.manual_seed(0)
    model, data = build(config, extra, data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_epochs=1,
                            limit_train_batches=iterations, limit_val_batches=0, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[*hooks, Report(counter, out)], default_root_dir=tmp)
        trainer.fit(model, data)
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--models", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", default=str(RESULTS / "ddp_communication"))
    args = parser.parse_args()
    rows = []
    for name, config, extra in (CASES[key] for key in args.models):
        player = measure(config, extra, "player_ddp", args.iterations, args.data_dir)
        default = measure(config, extra, "ddp", args.iterations, args.data_dir)
        it = player["iterations"]
        rows.append({"model": name, "config": " ".join([config, *extra]), "iterations": it,
                     "updated_bytes_per_iteration": player["updated"] / it,
                     "player_ddp_bytes_per_iteration": player["bytes"] / it,
                     "lightning_ddp_bytes_per_iteration": default["bytes"] / default["iterations"],
                     "player_ddp_ratio": player["bytes"] / player["updated"],
                     "lightning_ddp_ratio": default["bytes"] / default["updated"]})
        print(f"{name:24s} updated {rows[-1]['updated_bytes_per_iteration'] / 2**20:8.2f} MiB/it  "
              f"player_ddp x{rows[-1]['player_ddp_ratio']:.3f}  lightning ddp x{rows[-1]['lightning_ddp_ratio']:.3f}")
    models = "" if args.models == list(CASES) else f" --models {' '.join(args.models)}"
    meta = {"command": f"python benchmarks/ddp_communication.py --iterations {args.iterations}{models}",
            "commit": commit(),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} CPU threads, 2 ranks, gloo",
            "torch": torch.__version__, "lightning": L.__version__, "date": datetime.date.today().isoformat()}
    Path(args.out + ".json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
    lines = [f"`{meta['command']}` at {meta['commit']}, {meta['date']}, {meta['machine']}", "",
             "| model | updated per iteration | PlayerDDPStrategy | ratio | Lightning DDP (find_unused) | ratio |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['updated_bytes_per_iteration'] / 2**20:.2f} MiB | "
              f"{r['player_ddp_bytes_per_iteration'] / 2**20:.2f} MiB | {r['player_ddp_ratio']:.3f} | "
              f"{r['lightning_ddp_bytes_per_iteration'] / 2**20:.2f} MiB | {r['lightning_ddp_ratio']:.3f} |"
              for r in rows]
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
