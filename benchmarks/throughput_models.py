"""Training throughput of every model from its config: gan_lightning versus a plain PyTorch loop.

For each model the networks, optimizers and data come from the model's own config (the same networks,
initialised from the same seed, for both variants):

  framework  ``python -m gan_lightning fit``'s path: Trainer, the model's ``training_step`` (manual
             optimisation, per-iteration noise seeding, the non-finite check of ``model.on_nonfinite``,
             EMA), CSV logger and progress bar on. The config's measuring and drawing callbacks run at
             epoch ends, outside the timed iterations, so they are left out.
  plain      a hand-written loop over the same networks with the same updates, in the order the model's
             ``update_players`` runs them (its paper's algorithm box), the same optimizers and the same
             batches (the data module's loader), as a careful engineer would write it: no Trainer, no
             logging, no checks, and without the CUDA device count that ``import lightning`` makes torch redo
             at every Adam step until CUDA is initialised (``without_lightnings_device_check``).

Every iteration is timed (batch start to batch start, data included); a run's figure is the batch size
over its median iteration time, which bursts of load from other processes do not move. Variants run in
turn (ABBA) over ``--repeats``; the table gives the median images/s and the median of the paired ratios.

    python benchmarks/throughput_models.py                                   # CPU, every model
    python benchmarks/throughput_models.py --accelerator gpu --precision bf16-mixed --iterations 100
"""
import argparse
import contextlib
import datetime
import io
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger

from gan_lightning.callbacks import GANProgressBar
from gan_lightning.data import to_model_range
from gan_lightning.losses import (
    bigan_encoder_generator_loss,
    discriminator_loss,
    fooling_loss,
    gan_discriminator_loss,
    gan_generator_loss,
    gaussian_kl,
    reconstruction_error,
    reconstruction_nll,
)
from provenance import commit, write_report  # benchmarks/provenance.py
from throughput import (  # benchmarks/throughput.py: the same timing as BiGAN's benchmark
    Timer,
    images_per_second,
    without_lightnings_device_check,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"gan": "configs/gan.yaml", "ali": "configs/ali.yaml", "bigan": "configs/bigan.yaml",
           "aae": "configs/aae.yaml", "vae": "configs/vae.yaml", "flow": "configs/flow.yaml"}
# Timed iterations per run on a CPU when --iterations is not given: a few seconds to a minute each.
CPU_ITERATIONS = {"gan": 16, "ali": 12, "bigan": 20, "aae": 60, "vae": 200, "flow": 12}


def build(name: str, data_dir: str, accelerator: str, overrides: tuple[str, ...] = ()):
    """The model and data module of a config, as ``fit`` builds them (seed 0 for the weights)."""
    from gan_lightning.cli import GANLightningCLI

    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        cli = GANLightningCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True,
                              subclass_mode_data=True, auto_configure_optimizers=False, run=False,
                              save_config_callback=None,
                              args=["--config", str(REPO / CONFIGS[name]), "--data.init_args.data_dir", data_dir,
                                    "--trainer.accelerator", accelerator, "--trainer.logger", "false",
                                    "--wandb.mode", "off", *overrides])
    return cli.model, cli.datamodule


def check_plain_settings(model) -> None:
    """The plain loops write the configs' algorithm without the options they leave at their defaults."""
    for option, default in (("n_critic", 1), ("generator_steps", 1), ("su_lambda", 0.0)):
        if getattr(model, option, default) != default:
            raise SystemExit(f"the plain loop of {type(model).__name__} does not implement {option}="
                             f"{getattr(model, option)}; drop it from the config or extend the loop")


def plain_update(model, optimizers: list) -> Callable[[torch.Tensor], None]:
    """One iteration of ``type(model).update_players``, written out over the model's networks."""
    check_plain_settings(model)
    kind = type(model).__name__
    G, D = getattr(model, "generator", None), getattr(model, "discriminator", None)
    ema = [(getattr(model, name), averaged) for name, averaged in model.ema.items()]

    def step(optimizer, loss):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if model.gradient_clip_val is not None:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                           model.gradient_clip_val)
        optimizer.step()

    def steps_together(*updates):
        """Each loss differentiated w.r.t. its own optimizer's parameters only, then every step."""
        for k, (optimizer, loss) in enumerate(updates):
            optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=[p for g in optimizer.param_groups for p in g["params"]],
                          retain_graph=k + 1 < len(updates))
        for optimizer, _ in updates:
            if model.gradient_clip_val is not None:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                               model.gradient_clip_val)
            optimizer.step()

    if kind == "GAN":
        opt_d, opt_g = optimizers

        def update(x):
            z = model.draw_prior(len(x))
            x_fake = G(z)
            if model.update == "simultaneous":  # both losses from one pass of D, then both steps
                d_fake = D(x_fake)
                steps_together((opt_d, gan_discriminator_loss(D(x), d_fake, model.loss)),
                               (opt_g, gan_generator_loss(d_fake, model.loss)))
                return
            step(opt_d, gan_discriminator_loss(D(x), D(x_fake.detach()), model.loss))
            with frozen(D):
                step(opt_g, gan_generator_loss(D(x_fake), model.loss))
    elif kind in ("ALI", "BiGAN"):
        opt_d, opt_ge = optimizers

        def update(x):
            z = model.draw_prior(len(x))
            x_fake = G(z)  # G(z), then E(x): ALI.update_players's order
            h = model.encoder(x)
            if model.gaussian_encoder:
                mu, log_sigma = h.chunk(2, dim=1)
                h = mu + log_sigma.exp() * torch.randn_like(mu)
            else:
                h = model.squash(h)  # 2 sigmoid(h) - 1 with squash_encoder, else h
            if model.update == "simultaneous":  # both losses from one pass of D over each kind of pair
                d_real, d_fake = D(x, h), D(x_fake, z)
                steps_together((opt_d, discriminator_loss(d_real, d_fake)),
                               (opt_ge, bigan_encoder_generator_loss(d_real, d_fake, model.loss)))
                return
            step(opt_d, discriminator_loss(D(x, h.detach()), D(x_fake.detach(), z)))
            with frozen(D):
                step(opt_ge, bigan_encoder_generator_loss(D(x, h), D(x_fake, z), model.loss))
    elif kind == "AAE":
        if model.objective != "phases" or model.conditioning != "none":
            raise SystemExit("the plain AAE loop implements the unconditioned three-phase AAE (configs/aae.yaml)")
        opt_ae, opt_d, opt_e = optimizers

        def encode(x):
            h = model.encoder(x)
            if not model.gaussian_encoder:
                return h
            mu, log_var = h.chunk(2, dim=1)
            return mu + (0.5 * log_var).exp() * torch.randn_like(mu)

        def update(x):
            z_prior = model.draw_prior(len(x))
            step(opt_ae, reconstruction_error(G(encode(x)), x, model.reconstruction).mean())  # 1. reconstruction
            with torch.no_grad():
                z_data = encode(x)
            step(opt_d, discriminator_loss(D(z_prior, None), D(z_data, None)))  # 2. D_z
            with frozen(D):
                step(opt_e, fooling_loss(D(encode(x), None)))  # 3. E fools D_z
    elif kind == "VAE":
        (opt,) = optimizers

        def update(x):
            mu, log_var = model.encoder(x).chunk(2, dim=1)
            z = mu + (0.5 * log_var).exp() * torch.randn_like(mu)
            nll = reconstruction_nll(G(z), x, model.likelihood, model.sigma)
            step(opt, (nll + model.kl_weight * gaussian_kl(mu, log_var)).mean())
    elif kind == "RealNVP":
        (opt,) = optimizers

        def update(x):
            step(opt, model.bits_per_dim(x, torch.rand_like(x)).mean())
    else:
        raise SystemExit(f"no plain loop for {kind}")

    def iteration(x):
        update(x)
        with torch.no_grad():
            for net, averaged in ema:
                averaged.update_parameters(net)

    return iteration


@contextlib.contextmanager
def frozen(net: torch.nn.Module):
    """The other player's parameters need no gradients during a player's step."""
    net.requires_grad_(False)
    try:
        yield
    finally:
        net.requires_grad_(True)


def plain_loop(name: str, args, iterations: int) -> tuple[float, int]:
    """(images/s, batch size) of the hand-written loop."""
    model, data = build(name, args.data_dir, "cpu" if args.accelerator == "cpu" else "gpu", args.overrides)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    data.prepare_data()
    data.setup("fit")
    model.to(device).train()
    optimizers, _ = model.configure_optimizers()
    iteration = plain_update(model, optimizers)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision.startswith("bf16")
                else contextlib.nullcontext())
    stamps = []
    with without_lightnings_device_check():
        for i, batch in enumerate(data.train_dataloader()):
            if i >= args.warmup:
                stamps.append(time.perf_counter())
            if i == args.warmup + iterations:
                break
            x = to_model_range(batch[0].to(device, non_blocking=True))
            with autocast:
                iteration(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
    return images_per_second(stamps, data.hparams.batch_size), data.hparams.batch_size


def framework(name: str, args, iterations: int) -> tuple[float, int]:
    """(images/s, batch size) through the Trainer, timed between batches like the plain loop."""
    model, data = build(name, args.data_dir, "cpu" if args.accelerator == "cpu" else "gpu", args.overrides)
    timer = Timer(args.warmup)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):  # the progress bar
        trainer = L.Trainer(accelerator=args.accelerator, devices=1, precision=args.precision, max_epochs=1,
                            limit_train_batches=args.warmup + iterations, limit_val_batches=0,
                            logger=CSVLogger(tmp), log_every_n_steps=50, enable_checkpointing=False,
                            enable_model_summary=False, callbacks=[timer, GANProgressBar(refresh_rate=20)],
                            default_root_dir=tmp)
        trainer.fit(model, data)
    return images_per_second(timer.stamps, data.hparams.batch_size), data.hparams.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--warmup", type=int, default=3, help="iterations before the timed ones")
    parser.add_argument("--iterations", type=int, default=None,
                        help="timed iterations per run (default: per model, a few seconds to a minute on a CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/throughput_models")
    parser.add_argument("--overrides", nargs=argparse.REMAINDER, default=[],
                        help="the rest of the command line goes to every config, e.g. --overrides "
                             "--model.init_args.on_nonfinite ignore")
    args = parser.parse_args()

    runs = {"plain": plain_loop, "framework": framework}
    results = {}
    for name in args.models:
        samples: dict[str, list[float]] = {v: [] for v in runs}
        iterations = args.iterations or (CPU_ITERATIONS[name] if args.accelerator == "cpu" else 100)
        for repeat in range(args.repeats):
            for variant in list(runs) if repeat % 2 == 0 else list(runs)[::-1]:  # ABBA: drift favours neither
                images_per_s, batch_size = runs[variant](name, args, iterations)
                samples[variant].append(images_per_s)
                print(f"{name:6s} repeat {repeat}: {variant:10s} {images_per_s:9.1f} images/s", flush=True)
        ratio = statistics.median(f / p for f, p in zip(samples["framework"], samples["plain"], strict=True))
        results[name] = {"config": CONFIGS[name], "batch_size": batch_size, "iterations": iterations,
                         "samples": samples,
                         "median": {v: statistics.median(s) for v, s in samples.items()},
                         "framework_vs_plain": ratio}

    machine = (torch.cuda.get_device_name() if args.accelerator == "gpu"
               else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    command = "python benchmarks/throughput_models.py " + " ".join(
        f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
        if v is not None)
    report = {"command": command, "date": datetime.date.today().isoformat(), "commit": commit(), "machine": machine,
              "torch": torch.__version__, "lightning": L.__version__, "precision": args.precision, "models": results}
    lines = [f"Command: {command}",
             f"Date {report['date']}, commit {report['commit']}, {machine}, torch {torch.__version__}, "
             f"lightning {L.__version__}, "
             f"precision {args.precision}; the timed iterations below after {args.warmup} warm-up ones, "
             f"{args.repeats} repeats per variant.", "",
             "| model (config) | batch | timed iterations | plain loop, images/s | framework, images/s "
             "| framework vs plain |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} ({r['config']}) | {r['batch_size']} | {r['iterations']} "
                     f"| {r['median']['plain']:,.1f} | "
                     f"{r['median']['framework']:,.1f} | {100 * (r['framework_vs_plain'] - 1):+.1f} % |")
    write_report(args.out, report, lines)


if __name__ == "__main__":
    main()
