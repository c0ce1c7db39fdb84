"""What measuring FID / IS / KID costs on top of the unavoidable work, side by side in one run.

- ``bare``: generate N samples in batches and run the feature extractor once over them (the floor:
  any implementation has to do this much).
- ``scores``: what ImageMetrics does at each evaluation with cached real statistics: the same
  generation and extraction feeding torchmetrics' FID, IS and KID (states, compute, reset), after
  reading the real statistics from the cache.

Runs alternate (bare, scores, scores, bare, ...) so drift on a shared machine hits both alike; the
figure is the median of the paired ratios. Writes JSON and a text summary.

    python benchmarks/eval_overhead.py                                  # fashion_classifier, N = 10,000
    python benchmarks/eval_overhead.py --feature_extractor inception --inception_weights PATH --device cuda
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan_lightning.callbacks.image_metrics import real_key, real_shard  # noqa: E402
from gan_lightning.data import GANDataModule  # noqa: E402
from gan_lightning.metrics.features import build_extractor  # noqa: E402
from gan_lightning.data import to_uint8
from gan_lightning.metrics.image_scores import ImageScores  # noqa: E402
from gan_lightning.models import BiGAN  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_samples", type=int, default=10_000)
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=4, help="pairs of (bare, scores) runs")
    parser.add_argument("--feature_extractor", default="fashion_classifier", choices=["fashion_classifier", "inception"])
    parser.add_argument("--inception_weights", default=None)
    parser.add_argument("--n_real", type=int, default=None, help="real images for the statistics (default: all)")
    parser.add_argument("--data_dir", default=str(REPO / "data"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "eval_overhead"))
    args = parser.parse_args()

    device = torch.device(args.device)
    model = BiGAN(data_shape=(1, 28, 28)).to(device).eval()  # the default config's networks
    extractor = build_extractor(args.feature_extractor, args.inception_weights, download=False).to(device)
    dm = GANDataModule("fashion_mnist", data_dir=args.data_dir)
    dm.prepare_data()
    dm.setup("fit")
    cache = Path(tempfile.mkdtemp())
    shard = lambda: real_shard(dm, "train", 0, 1, args.batch_size, args.n_real)  # noqa: E731
    ImageScores(extractor, args.feature_extractor).load_real(shard, real_key(dm, "train", args.n_real), cache)

    @torch.no_grad()
    def bare() -> float:
        start = time.perf_counter()
        for b in range(0, args.n_samples, args.batch_size):
            noise = torch.Generator(device).manual_seed(b)
            extractor(to_uint8(model.sample(min(args.batch_size, args.n_samples - b), generator=noise)))
        return time.perf_counter() - start

    def scores() -> tuple[float, dict]:
        start = time.perf_counter()
        s = ImageScores(extractor, args.feature_extractor)
        s.load_real(shard, real_key(dm, "train", args.n_real), cache)
        assert s.cache_hit
        s.add_generator(lambda n, noise: model.sample(n, generator=noise), args.n_samples, args.batch_size)
        values = s.compute()
        return time.perf_counter() - start, values

    bare(), scores()  # warm-up
    runs = []
    for i in range(args.repeats):
        order = ["bare", "scores"] if i % 2 == 0 else ["scores", "bare"]
        times = {}
        for name in order:
            times[name] = bare() if name == "bare" else scores()[0]
        runs.append(times)
        print(json.dumps(times), flush=True)
    ratios = [r["scores"] / r["bare"] - 1 for r in runs]
    summary = {
        "command": "python benchmarks/eval_overhead.py " + " ".join(sys.argv[1:]),
        "date": str(datetime.date.today()),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                 cwd=REPO).stdout.strip(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads, device {args.device}"
                   + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch": torch.__version__, "feature_extractor": args.feature_extractor, "n_samples": args.n_samples,
        "n_real": args.n_real or len(dm.splits["train"]),
        "bare_s_median": statistics.median(r["bare"] for r in runs),
        "scores_s_median": statistics.median(r["scores"] for r in runs),
        "overhead_median": statistics.median(ratios), "runs": runs, "last_scores": scores()[1],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(summary, indent=2) + "\n")
    text = (f"{summary['command']}\n{summary['date']}, commit {summary['commit']}, {summary['machine']}\n"
            f"{args.n_samples} samples, {args.feature_extractor}: bare generation + extraction "
            f"{summary['bare_s_median']:.2f} s, FID+IS+KID with cached real statistics "
            f"{summary['scores_s_median']:.2f} s (median of {args.repeats}); overhead "
            f"{100 * summary['overhead_median']:+.1f} % (median of paired ratios)\n")
    Path(args.out + ".txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
