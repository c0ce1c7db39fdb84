"""1-NN probes of one trained checkpoint against raw pixels, at one or more sizes of the training set searched.

The BiGAN paper's protocol (test images against training images, Euclidean distance) for E(x), the encoder's
penultimate layer and the pixels, each feature set's classifier paired with the pixels' on the same test
images (McNemar's exact test: ``*_vs_pixels_p``, ``*_vs_pixels_discordant``). ``probe_trajectory.py`` probes
with one training-set size along a run; this asks whether the size changes the ranking for a trained model.
The official BiGAN code searches 50,000 training images (5 x 10,000), the probes here default to 10,000.

Writes ``OUT.json`` (the scores per size, the checkpoint's epoch and iteration, command, commit, machine, date)
and ``OUT.md`` (the table and one paired sentence per size).

    python benchmarks/probe_checkpoint.py --ckpt_path runs/bigan_400/checkpoints/last.ckpt --n_train 10000 50000
"""
import argparse
import datetime
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_trajectory import paired_line  # noqa: E402
from provenance import commit, machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", required=True, help="a checkpoint of a model with an encoder (BiGAN, ALI, AAE ...)")
    p.add_argument("--n_train", type=int, nargs="+", default=[10_000, 50_000],
                   help="training images the 1-NN search covers, one probe per size")
    p.add_argument("--n_test", type=int, default=None, help="test images scored (default: the whole test split)")
    p.add_argument("--data_dir", default=None, help="where the dataset is, if not where training found it")
    p.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "probe_checkpoint"))
    args = p.parse_args()

    from gan_lightning.callbacks.probes import model_probe_scores
    from gan_lightning.checkpoints import CheckpointError, read_checkpoint
    from gan_lightning.commands import load_model

    model, dm = load_model(args.ckpt_path, "cuda" if args.accelerator == "gpu" else "cpu", args.data_dir)
    if not hasattr(model, "encode"):
        raise CheckpointError(f"{args.ckpt_path} is a {type(model).__name__}, which has no encoder to probe")
    dm.prepare_data()
    dm.setup("fit")
    epoch = read_checkpoint(args.ckpt_path).get("epoch")  # Lightning's 0-based epoch at the save
    rows = []
    for n_train in args.n_train:
        start = time.perf_counter()
        scores = model_probe_scores(model, dm, n_train, args.n_test, linear=False)
        rows.append({"n_train": n_train, **{k: v for k, v in scores.items() if k.startswith("probe_1nn")},
                     "seconds": round(time.perf_counter() - start, 1)})
        print(paired_line(rows[-1], f"{n_train:,} training images"), flush=True)

    header = {"command": " ".join(["python", "benchmarks/probe_checkpoint.py", *sys.argv[1:]]),
              "commit": commit(), "machine": machine(args.accelerator), "date": datetime.date.today().isoformat(),
              "checkpoint": str(args.ckpt_path), "model": type(model).__name__, "epoch": epoch,
              "iteration": int(getattr(model, "iteration", 0)), "distance": "euclidean", "n_test": args.n_test}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"header": header, "probes": rows}, indent=2) + "\n")
    pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    lines = [f"Command: `{header['command']}`, commit {header['commit']}, {header['machine']}, {header['date']}. "
             f"{header['model']} checkpoint at iteration {header['iteration']:,} (saved in epoch {header['epoch']}, "
             "counting from 0); 1-NN, Euclidean distance, scored on the test split.", "",
             "| training images searched | 1-NN E(x) | 1-NN penultimate | 1-NN pixels | seconds |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['n_train']:,} | {pct(row['probe_1nn'])} | "
                     + (pct(row["probe_1nn_penultimate"]) if "probe_1nn_penultimate" in row else "-")
                     + f" | {pct(row['probe_1nn_pixels'])} | {row['seconds']:.0f} |")
    lines += [""] + [paired_line(row, f"{row['n_train']:,} training images") for row in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
