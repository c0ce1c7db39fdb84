"""What measuring FID / IS / KID costs on top of the unavoidable work, side by side in one run.

- ``bare``: generate N samples in batches and run the feature extractor once over them (the floor:
  any implementation has to do this much).
- ``scores[fid,is]`` / ``scores[fid,is,kid]``: what ImageMetrics does at each evaluation with cached real
  statistics: read them from the cache, the same generation and extraction feeding torchmetrics' metric
  states, ``compute()`` and reset. KID's estimator (100 subsets of 1,000, three 1,000 x 1,000 Gram matrices
  each, in float64 as torch-fidelity computes it) is work of its own, reported apart.

Each round runs every variant, in an order that alternates between rounds, so drift on a shared machine
hits all alike; the figures are medians of the per-round ratios to ``bare``. Writes JSON and a text summary.

    python benchmarks/eval_overhead.py                                  # fashion_classifier, N = 10,000
    python benchmarks/eval_overhead.py --feature_extractor inception --inception_weights PATH --device cuda
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gan_lightning.data import GANDataModule, to_uint8  # noqa: E402
from gan_lightning.metrics.features import build_extractor  # noqa: E402
from gan_lightning.metrics.image_scores import ImageScores  # noqa: E402
from gan_lightning.metrics.protocols import real_key, real_shard  # noqa: E402
from gan_lightning.models import BiGAN  # noqa: E402
from provenance import commit  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_samples", type=int, default=10_000)
    parser.add_argument("--batch_size", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=4, help="rounds; each runs every variant once")
    parser.add_argument("--metric_sets", nargs="+", default=["fid,is", "fid,is,kid"])
    parser.add_argument("--feature_extractor", default="fashion_classifier",
                        choices=["fashion_classifier", "inception"])
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

    def scores(metrics: list[str]) -> tuple[float, dict]:
        start = time.perf_counter()
        s = ImageScores(extractor, args.feature_extractor, metrics)
        s.load_real(shard, real_key(dm, "train", args.n_real), cache)
        assert s.cache_hit
        s.add_generator(lambda n, noise: model.sample(n, generator=noise), args.n_samples, args.batch_size)
        values = s.compute()
        return time.perf_counter() - start, values

    variants = {"bare": bare, **{f"scores[{m}]": (lambda m=m: scores(m.split(","))[0]) for m in args.metric_sets}}
    for run in variants.values():  # warm-up
        run()
    runs = []
    for i in range(args.repeats):
        names = list(variants) if i % 2 == 0 else list(reversed(variants))
        runs.append({name: variants[name]() for name in names})
        print(json.dumps(runs[-1]), flush=True)
    summary = {
        "command": "python benchmarks/eval_overhead.py " + " ".join(sys.argv[1:]),
        "date": str(datetime.date.today()),
        "commit": commit(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads, device {args.device}"
                   + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
        "torch": torch.__version__, "feature_extractor": args.feature_extractor, "n_samples": args.n_samples,
        "n_real": args.n_real or len(dm.splits["train"]),
        "seconds_median": {name: statistics.median(r[name] for r in runs) for name in variants},
        "overhead_median": {name: statistics.median(r[name] / r["bare"] - 1 for r in runs)
                            for name in variants if name != "bare"},
        "runs": runs, "last_scores": scores(args.metric_sets[-1].split(","))[1],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [summary["command"], f"{summary['date']}, commit {summary['commit']}, {summary['machine']}",
             f"{args.n_samples} generated images, {args.feature_extractor} features, real statistics of "
             f"{summary['n_real']} images read from the cache; medians of {args.repeats} rounds:"]
    for name, seconds in summary["seconds_median"].items():
        extra = f", overhead {100 * summary['overhead_median'][name]:+.1f} % over bare" if name != "bare" else ""
        lines.append(f"  {name:<22} {seconds:7.2f} s{extra}")
    text = "\n".join(lines) + "\n"
    Path(args.out + ".txt").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
