"""The README's Fashion-MNIST results table: every model trained from its config, then scored the same way.

For each model: ``python -m gan_lightning fit`` on its config for ``--epochs`` epochs (validation off, so the
time is training time), its own held-out figures on the test split (bits/dim for the flow, the negative ELBO
for the VAE, the semi-supervised AAE's error) through ``Trainer.test`` without the config's callbacks, then
``python -m gan_lightning evaluate`` (Frechet distance, Inception-style score and KID in the features of the
project's Fashion-MNIST classifier, with the real-vs-real floor; 1-NN and linear probes of the encoder beside
raw pixels; reconstruction MSE) and ``sample`` (a grid of 64 samples per model).

Writes ``OUT.json`` (every raw figure, the commands, commit, machine and date), ``OUT.md`` (the table) and
``OUT_samples/<model>.png``. The semi-supervised AAE row comes with the baseline the issue asks for: a
logistic regression on the raw pixels of the same 100 labelled images.

    python benchmarks/results_table.py --epochs 1                                  # CPU, about 30 minutes
    python benchmarks/results_table.py --epochs 10 --accelerator gpu --jobs 9      # one GPU, models side by side
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from provenance import commit, machine  # noqa: E402

# name -> (config, extra options, paper / what it is)
MODELS = {
    "gan": ("configs/gan.yaml", [], "GAN, non-saturating (Goodfellow et al. 2014)"),
    "dcgan_plain": ("benchmarks/plain_dcgan.py", [],
                    "a plain PyTorch DCGAN loop (Radford et al.: N(0, 0.02) init, no EMA)"),
    "gan_su": ("configs/gan.yaml", ["--model.init_args.su_lambda", "5", "--model.init_args.generator_steps", "2"],
               "GAN + Su's regulariser (lambda 5, 2 G steps)"),
    "ali": ("configs/ali.yaml", [], "ALI (Dumoulin et al. 2017)"),
    "ali_su": ("configs/ali.yaml", ["--model.init_args.loss", "su"], "ALI with Su's G/E loss (Su 2018, eq. 41)"),
    "ali_su_full": ("configs/ali.yaml", ["--model.init_args.loss", "su_full"],
                    "ALI with Su's G/E loss and its encoder term (Su 2018, eq. 40)"),
    "bigan": ("configs/bigan.yaml", [], "BiGAN (Donahue et al. 2017)"),
    "aae": ("configs/aae.yaml", [], "AAE, Gaussian prior (Makhzani et al. 2016)"),
    "aae_semi_100": ("configs/aae_semi_100.yaml", [], "semi-supervised AAE, 100 labels"),
    "vae": ("configs/vae.yaml", [], "VAE (Kingma & Welling 2014)"),
    "flow": ("configs/flow.yaml", [], "RealNVP + Glow 1x1 conv (Dinh et al. 2017)"),
}
ENCODERS = {"ali", "ali_su", "ali_su_full", "bigan", "aae", "aae_semi_100", "vae"}


def child_env() -> dict:
    """The runs' environment: on the CPU, the cores shared out among the parallel jobs (each torch process
    would otherwise start a thread per core, and oversubscribed cores run many times slower)."""
    env = dict(os.environ)
    if args.accelerator == "cpu" and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.jobs))
    return env


def run(cmd: list[str], log: Path) -> float:
    """Run a command, its output to ``log``; returns its wall time. Raises with the log's tail on failure."""
    start = time.perf_counter()
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        code = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=child_env()).returncode
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{log.read_text()[-3000:]}")
    return time.perf_counter() - start


def held_out(ckpt: Path, device: str) -> dict:
    """The model's own test figures (``evaluate(x, ..., "test")``), without the config's callbacks."""
    import lightning as L

    from gan_lightning.commands import load_model

    model, datamodule = load_model(str(ckpt), device)
    datamodule.hparams.data_dir = datamodule.root = Path(args.data_dir)
    trainer = L.Trainer(accelerator="gpu" if device.startswith("cuda") else "cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    metrics = trainer.test(model, datamodule, verbose=False)[0]
    return {k: float(v) for k, v in metrics.items() if k.startswith("test/")}


def pixel_baseline_on_labelled(config: str) -> dict:
    """A classifier trained on the semi-supervised run's labelled images alone: logistic regression on pixels
    (``semi_supervised_baselines.py`` has it, the 1-NN and the config's own network trained on them)."""
    from semi_supervised_baselines import config_parts, pixel_baselines, splits

    labelled, _, test = splits(config_parts(config)[1], args.data_dir)
    return {"labels": int(len(labelled[1])),
            "pixel_logistic_regression_error": pixel_baselines(labelled, test)["pixels_logistic_regression_error"]}


def one_model(name: str) -> dict:
    config, extra, what = MODELS[name]
    run_dir = out_dir / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    log = run_dir / "commands.log"
    python = [sys.executable, "-m", "gan_lightning"]
    fit = [*python, "fit", "--config", config, *extra, "--run_dir", str(run_dir),
           "--trainer.max_epochs", str(args.epochs), "--trainer.limit_val_batches", "0",
           "--trainer.accelerator", args.accelerator, "--trainer.precision", args.precision,
           "--trainer.enable_progress_bar", "false", "--data.init_args.data_dir", args.data_dir, "--wandb.mode", "off"]
    if args.seed is not None:  # one seed for the weights, the noise and the data order alike
        fit += ["--seed_everything", str(args.seed), "--model.init_args.seed", str(args.seed),
                "--data.init_args.seed", str(args.seed)]
    if args.limit_train_batches:
        fit += ["--trainer.limit_train_batches", str(args.limit_train_batches)]
    if name == "dcgan_plain":  # the same networks and data outside the framework, scored the same way
        fit = [sys.executable, config, "--epochs", str(args.epochs), "--data_dir", args.data_dir,
               "--seed", str(args.seed or 0), "--device", "cuda" if args.accelerator == "gpu" else "cpu",
               "--out", str(run_dir / "checkpoints" / "last.ckpt"),
               *(["--limit_train_batches", str(args.limit_train_batches)] if args.limit_train_batches else [])]
    seconds = run(fit, log)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    device = "cuda" if args.accelerator == "gpu" else "cpu"
    evaluate = [*python, "evaluate", "--ckpt_path", str(ckpt), "--device", device, "--protocol", args.protocol,
                *(["--n_samples", str(args.n_samples)] if args.n_samples else []),
                "--n_train", str(args.n_train), "--data_dir", args.data_dir, "--out", str(run_dir / "eval.json"),
                "--metrics", "fid", "is", "kid", *(["probes"] if name in ENCODERS else [])]
    run(evaluate, log)
    picture = samples_dir / f"{name}.npz"
    run([*python, "sample", "--ckpt_path", str(ckpt), "--device", device, "--n", "64", "--out", str(picture)], log)
    picture.unlink()  # the PNG grid beside it is what the README shows
    scores = json.loads((run_dir / "eval.json").read_text())
    row = {**scores, "class": scores["model"], "model": name, "what": what, "config": config, "options": extra,
           "epochs": args.epochs, "iterations": scores["iteration"], "fit_seconds": round(seconds, 1),
           **held_out(ckpt, device), "commands": [" ".join(fit), " ".join(evaluate)]}
    if name == "aae_semi_100":
        row.update(pixel_baseline_on_labelled(config))
    print(f"{name}: {row['iterations']} iterations in {seconds:.0f} s", flush=True)
    return row


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def probe(row: dict, key: str) -> str:
    """A probe's accuracy and that of the same probe on pixels, in percent; "-" where the row has none."""
    return f"{100 * row[key]:.1f} / {100 * row[key + '_pixels']:.1f} %" if key in row else "-"


def table(rows: list[dict], header: dict) -> str:
    lines = [f"Fashion-MNIST, {header['epochs']} epoch(s) per model, {header['machine']}, commit {header['commit']}, "
             f"{header['date']}. Command: `{header['command']}`. Scores in the features of the project's Fashion-MNIST "
             f"classifier (`fashion_classifier`, not Inception): FD = Frechet distance, IS, KID x 1000, "
             f"protocol `{header['protocol']}` ({header.get('protocol_text', '')}); floor = FD between the reference "
             "and the floor split. Probes on E(x) (and on the encoder's penultimate layer, the BiGAN paper's second "
             "feature set) with "
             f"{header['n_train']} training images, accuracy on the test split; pixels = the same probe on raw pixels.",
             "",
             "| model | iterations | fit time | FD (floor) | IS (real) | KID x1e3 | 1-NN E(x) / pixels "
             "| 1-NN penultimate | linear E(x) / pixels | recon MSE | own test figure |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        own = {"flow": ("bits/dim", r.get("test/bits_per_dim")), "vae": ("-ELBO nats", r.get("test/loss")),
               "aae_semi_100": ("error", r.get("test/error"))}.get(r["model"])
        penultimate = f"{100 * r['probe_1nn_penultimate']:.1f} %" if "probe_1nn_penultimate" in r else "-"
        kid = 1000 * r["kid_fashion_classifier"] if "kid_fashion_classifier" in r else None
        lines.append(
            f"| {r['model']} | {r['iterations']} | {r['fit_seconds']:.0f} s | {fmt(r.get('fd_fashion_classifier'))} "
            f"({fmt(r.get('fd_fashion_classifier_floor'))}) | {fmt(r.get('is_fashion_classifier'))} "
            f"({fmt(r.get('is_fashion_classifier_real'))}) | {fmt(kid)} "
            f"| {probe(r, 'probe_1nn')} | {penultimate} | {probe(r, 'probe_linear')} "
            f"| {fmt(r.get('reconstruction_mse'))} "
            f"| {f'{own[0]} {fmt(own[1], 4)}' if own else '-'} |")
    semi = next((r for r in rows if r["model"] == "aae_semi_100"), None)
    if semi:
        lines += ["", f"Semi-supervised AAE, {semi['labels']} labels: test error {100 * semi['test/error']:.1f} %; "
                      f"logistic regression on the pixels of the same {semi['labels']} labelled images: "
                      f"{100 * semi['pixel_logistic_regression_error']:.1f} %."]
    return "\n".join(lines) + "\n"


def main() -> None:
    global args, out_dir, samples_dir
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--limit_train_batches", type=int, default=None, help="cap iterations per epoch (tests)")
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--precision", default="32-true")
    p.add_argument("--jobs", type=int, default=1, help="models trained at the same time")
    p.add_argument("--seed", type=int, default=None, help="override the configs' seeds (default: theirs, 0)")
    p.add_argument("--protocol", default="trainsplit10k",
                   help="evaluate's named protocol (docs/evaluation.md); trainsplit10k, 10,000 samples against the "
                        "training split less the 10 %% hold-out, is what the earlier tables used")
    p.add_argument("--n_samples", type=int, default=None, help="samples instead of the protocol's (renames it)")
    p.add_argument("--n_train", type=int, default=10_000)
    p.add_argument("--data_dir", default=str(REPO / "data"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "fashion_mnist"))
    p.add_argument("--work_dir", default=None, help="the runs' checkpoints and logs (default: OUT_runs)")
    args = p.parse_args()
    out = Path(args.out)
    out_dir = Path(args.work_dir) if args.work_dir else out.parent / f"{out.name}_runs"
    samples_dir = out.parent / f"{out.name}_samples"
    out_dir.mkdir(parents=True, exist_ok=True)
    samples_dir.mkdir(parents=True, exist_ok=True)
    header = {"command": " ".join(["python", "benchmarks/results_table.py", *sys.argv[1:]]), "commit": commit(),
              "machine": machine(args.accelerator), "date": datetime.date.today().isoformat(), "epochs": args.epochs,
              "protocol": args.protocol, "n_samples": args.n_samples, "n_train": args.n_train,
              "accelerator": args.accelerator, "precision": args.precision, "seed": args.seed}
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one_model, args.models))
    used = rows[0].get("protocol", {}) if rows else {}  # as evaluate described it
    header["protocol_text"] = (f"{used.get('n_samples')} samples against {used.get('reference_is')}, "
                               f"{used.get('reference_size')} images; floor: {used.get('floor_reference')}, "
                               f"{used.get('floor_size')} images; extractor {used.get('extractor')}") if used else ""
    out.with_suffix(".json").write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(table(rows, header))
    print(out.with_suffix(".md").read_text())


args: argparse.Namespace
out_dir: Path
samples_dir: Path

if __name__ == "__main__":
    main()
