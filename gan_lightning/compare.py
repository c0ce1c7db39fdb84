"""``compare``: several runs side by side from their CSV logs, for users offline or without W&B.

    python -m gan_lightning compare runs/aae_semi_100 runs/aae_semi_1000 [--metrics val/error] [--out compare.png]

Prints, per metric, each run's best value (lowest for distances, errors, bits/dim and reconstruction errors;
highest for accuracies, probes, scores, precision/recall and mode counts), the iteration it was reached at, and the
last value; a figure without a better direction (a GAN's adversarial losses, references such as ``_floor``) is
shown with its last value and never ranked, and each block says which it is. It draws every
metric's curves against training iterations on one PNG. A run is a folder holding ``metrics.csv`` files
(every ``version_N`` of a resumed run, in order) or one CSV file.

Scores are comparable only under one evaluation protocol: ``ImageMetrics`` records its protocol (extractor and
weights digest, sample count, reference split and size, resizes) in the ``hparams.yaml`` beside each
``metrics.csv``. Runs whose records of a score differ are shown in separate blocks, one per protocol, each ranked on
its own, and the table says what differs; a run without a record is a block of its own ("protocol not recorded").
"""
import argparse
import csv
import functools
import math
import os
import re
import stat
from pathlib import Path

from gan_lightning.errors import first_line

# The scores an evaluation protocol defines (ImageMetrics' figures and their floors): compared only within one.
PROTOCOL_BOUND = re.compile(r"(^|/)(fd|fid|kid|is|precision|recall)_")
# The parts of a protocol record (``metrics.protocols.describe``) that change a score: two records that differ in
# any of them measure different things.
PROTOCOL_FIELDS = ("name", "extractor", "n_samples", "dataset", "reference", "reference_size", "extractor_resize",
                   "data_resize", "kid_subsets", "prc_real")
NOT_RECORDED = "protocol not recorded"
HPARAMS_LIMIT = 1 << 20  # bytes: Lightning's hparams.yaml of a run is a few kB

# Which way each figure is better, by its name. A GAN's adversarial losses have no better direction (a lower D loss
# means a stronger discriminator, not a better model), nor have references (``_floor``, ``_real``, ``_pixels``),
# spreads (``_std``), p-values (``_vs_pixels_``) or parts of an objective (the VAE's ``kl``): those are shown, never
# ranked. Anything not named here is not ranked either.
HIGHER_IS_BETTER = re.compile(r"accuracy|probe_|(^|/)is_|(^|/)modes$|high_quality|(^|/)precision_|(^|/)recall_")
LOWER_IS_BETTER = re.compile(r"(^|/)(fd|fid|kid)_|error|bits_per_dim|mse|(^|/)nll$|reverse_kl|(^|/)loss$|recon")
NO_DIRECTION = re.compile(r"_std$|_floor$|_real$|_pixels$|_vs_pixels_|(^|/)(d|g|ge|e|z|y|gen|disc|adv|info|gp)_loss$"
                          r"|(^|/)kl$|(^|/)skipped_")


def direction(metric: str) -> str | None:
    """``"higher"`` or ``"lower"``: the direction in which ``metric`` is better; None where it has none."""
    if NO_DIRECTION.search(metric):
        return None
    if HIGHER_IS_BETTER.search(metric):
        return "higher"
    return "lower" if LOWER_IS_BETTER.search(metric) else None


def higher_is_better(metric: str) -> bool:
    return direction(metric) == "higher"


def _version(path: Path) -> int:
    match = re.search(r"version_(\d+)", str(path))
    return int(match[1]) if match else -1


def metrics_files(run: Path) -> list[Path]:
    """The regular files named metrics.csv under ``run`` (or ``run`` itself, a CSV), in version order: symlinks
    are not followed (no loop, nothing outside the folder), and folders, FIFOs and devices are not read."""
    if run.is_file():
        return [run]
    if not run.is_dir():
        raise FileNotFoundError(f"no metrics.csv at {run}: it is neither a run folder nor a CSV file; pass a run "
                                "folder (trainer.default_root_dir) or a metrics.csv")
    files = [Path(root) / "metrics.csv" for root, _, names in os.walk(run, followlinks=False) if "metrics.csv" in names]
    return sorted((f for f in files if stat.S_ISREG(f.lstat().st_mode)), key=_version)


@functools.cache
def plain_loader() -> type:
    """YAML's safe loader, with Lightning's tuples read as lists and any other tag as nothing (never built)."""
    import yaml

    class PlainLoader(yaml.SafeLoader):
        pass

    PlainLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))
    PlainLoader.add_multi_constructor("", lambda loader, suffix, node: None)
    return PlainLoader


def protocol_record(metrics_csv: Path) -> dict | None:
    """The evaluation protocol that ``ImageMetrics`` recorded beside ``metrics_csv`` (``eval_protocol`` in the
    ``hparams.yaml`` of the same folder), its ``PROTOCOL_FIELDS`` only; None where there is none. The file is
    someone else's text: read with YAML's safe loader (any tag it does not know builds nothing), a file too large,
    unreadable or of another shape counts as no record."""
    import yaml

    file = metrics_csv.with_name("hparams.yaml")
    try:
        if not file.is_file() or file.is_symlink() or file.stat().st_size > HPARAMS_LIMIT:
            return None
        hparams = yaml.load(file.read_text(encoding="utf-8"), plain_loader())
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, TypeError, RecursionError):
        return None
    record = hparams.get("eval_protocol") if isinstance(hparams, dict) else None
    if not isinstance(record, dict) or not isinstance(record.get("name"), str):
        return None
    return {key: record[key] for key in PROTOCOL_FIELDS
            if key in record and isinstance(record[key], (str, int, float, type(None)))}


def protocol_label(record: dict | None) -> str:
    """How a table names a protocol: its name and extractor, e.g. ``trainsplit10k, fashion_classifier (sha256
    1a2b...)``."""
    if record is None:
        return NOT_RECORDED
    if record.get("mixed"):
        return record["name"]
    return f"{record['name']}, {record.get('extractor', 'extractor not recorded')}"


def read_protocols(run: Path) -> dict[str, dict | None]:
    """{metric: protocol record} of a run's protocol-bound scores, from the records beside the metrics.csv files
    that logged each. A run resumed under another protocol has logged a score under two: its record is then
    ``{"name": "changed during the run: A, then B", "mixed": True}``, which ``compare`` never ranks."""
    seen: dict[str, list[dict | None]] = {}
    for file in metrics_files(run):
        record = protocol_record(file)
        try:
            with open(file, newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
        except (csv.Error, UnicodeDecodeError, OSError):
            continue
        for metric in header:
            if PROTOCOL_BOUND.search(metric or "") and record not in seen.setdefault(metric, []):
                seen[metric].append(record)
    return {metric: records[0] if len(records) == 1 else
            {"name": "changed during the run: " + ", then ".join(protocol_label(r) for r in records), "mixed": True}
            for metric, records in seen.items()}


def read_run(run: Path) -> dict[str, list[tuple[float, float]]]:
    """{metric: [(iteration, value), ...]} from a run folder's metrics.csv files (in version order) or a CSV.
    A file that is not a CSV of numbers (as Lightning's CSVLogger writes) is refused in one line naming it."""
    files = metrics_files(run)
    if not files:
        raise FileNotFoundError(f"no metrics.csv under {run}: pass a run folder (trainer.default_root_dir) "
                                "or a CSV file")
    series: dict[str, list[tuple[float, float]]] = {}
    for file in files:
        try:
            with open(file, newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    if row.get("epoch") == "epoch":  # a header repeated by an appended log
                        continue
                    x = row.get("iteration")  # every row the models log carries it (not Lightning's optimizer steps)
                    if not x:
                        continue
                    for key, value in row.items():
                        if key and value and key not in ("epoch", "step", "iteration", "images_seen"):
                            series.setdefault(key, []).append((float(x), float(value)))
        except (csv.Error, ValueError, TypeError, UnicodeDecodeError, OSError) as err:
            raise ValueError(f"{file} is not a metrics CSV as Lightning's CSVLogger writes it ({type(err).__name__}: "
                             f"{first_line(err, 160)}): pass another run, or repair or remove that file") from None
    return series


def summarise(series: list[tuple[float, float]], metric: str) -> dict[str, float]:
    """The last value, and where ``metric`` has a better direction, the best value and the iteration it was at."""
    finite = [(x, v) for x, v in series if math.isfinite(v)]
    better = direction(metric)
    summary = {"last": series[-1][1], "points": len(series)}
    if better is not None:
        best_x, best = (max if better == "higher" else min)(finite, key=lambda point: point[1]) if finite \
            else (math.nan, math.nan)
        summary.update(best=best, at=best_x)
    return summary


def default_metrics(runs: dict[str, dict]) -> list[str]:
    """The held-out metrics every run logged (val/ and test/), else the training losses they share."""
    shared = set.intersection(*(set(series) for series in runs.values()))
    held_out = sorted((m for m in shared if m.startswith(("val/", "test/")) and not m.endswith(("_std", "_floor"))),
                      key=lambda m: (direction(m) is None, m))  # ranked figures first
    return held_out or sorted(m for m in shared if m.startswith("train/"))


def protocol_groups(names: list[str], protocols: dict[str, dict], metric: str) -> list[tuple[dict | None, list[str]]]:
    """The runs in ``names`` grouped by the protocol their ``metric`` was measured under, in first-seen order: one
    group for a figure no protocol defines. ``protocols``: {run: {metric: record}} (``read_protocols``)."""
    if not PROTOCOL_BOUND.search(metric):
        return [(None, list(names))]
    groups: list[tuple[dict | None, list[str]]] = []
    for name in names:
        record = protocols.get(name, {}).get(metric)
        for held, members in groups:
            if held == record and comparable(record):
                members.append(name)
                break
        else:
            groups.append((record, [name]))
    return groups


def comparable(record: dict | None) -> bool:
    """Whether scores under ``record`` may be ranked with others under the same: not when it is unknown (no record:
    two such runs may have used any two protocols) or changed during the run."""
    return record is not None and not record.get("mixed")


def _differences(records: list[dict | None]) -> str:
    """The fields in which protocol records differ, for the line that says why their scores are not ranked together."""
    if any(record is None for record in records):
        return "a run did not record its protocol"
    if any(record.get("mixed") for record in records):
        return "a run changed its protocol while it ran"
    fields = [key for key in PROTOCOL_FIELDS if len({str(record.get(key)) for record in records}) > 1]
    return "they differ in " + ", ".join(fields)


def table(runs: dict[str, dict], metrics: list[str], protocols: dict[str, dict] | None = None) -> str:
    """A plain-text table: one block per metric, one line per run; only metrics with a better direction are ranked,
    and a protocol-bound score only among the runs measured under the same protocol (one block per protocol).
    The best run of each ranked block is marked ``<- best``."""
    protocols = protocols or {}
    name_width = max(len(name) for name in runs)
    lines = []
    for metric in metrics:
        better = direction(metric)
        logged = [name for name in runs if metric in runs[name]]
        groups = protocol_groups(logged, protocols, metric)
        if len(groups) > 1:
            lines.append(f"{metric}  {len(groups)} blocks, one per protocol, not ranked against each other "
                         f"({_differences([record for record, _ in groups])}): a score is comparable only under "
                         "one protocol")
        for record, members in groups:
            said = f" [{protocol_label(record)}]" if PROTOCOL_BOUND.search(metric) else ""
            lines.append(f"{metric}{said}  ({better} is better)" if better else
                         f"{metric}{said}  (no better direction: last values, not ranked)")
            summaries = {name: summarise(runs[name][metric], metric) for name in members}
            ranked = [name for name in members if better and math.isfinite(summaries[name]["best"])]
            winner = ((max if better == "higher" else min)(ranked, key=lambda n: summaries[n]["best"])
                      if len(ranked) > 1 else None)
            for name in members:
                s = summaries[name]
                if better:
                    lines.append(f"  {name:<{name_width}}  best {s['best']:.4g} at iteration {s['at']:.0f}   "
                                 f"last {s['last']:.4g}" + ("   <- best" if name == winner else ""))
                else:
                    lines.append(f"  {name:<{name_width}}  last {s['last']:.4g} at iteration "
                                 f"{runs[name][metric][-1][0]:.0f}")
        for name in runs:
            if metric not in runs[name]:
                lines.append(f"  {name:<{name_width}}  (not logged)")
    return "\n".join(lines)


def plot(runs: dict[str, dict], metrics: list[str], out: Path, protocols: dict[str, dict] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(len(metrics), 3)
    rows = math.ceil(len(metrics) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):  # the grid may have spare axes
        several = len(protocol_groups([n for n in runs if metric in runs[n]], protocols or {}, metric)) > 1
        for name, series in runs.items():
            if metric in series:
                x, y = zip(*series[metric], strict=True)
                label = f"{name} [{protocol_label((protocols or {}).get(name, {}).get(metric))}]" if several else name
                ax.plot(x, y, label=label, marker="." if len(x) < 50 else None)
        ax.set_title(metric)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def run_names(paths: list[Path]) -> list[str]:
    """Short unique names: each path's last part, or more of it where two end alike."""
    for depth in range(1, 6):
        names = ["/".join(p.with_suffix("").parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gan_lightning compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("runs", nargs="+", type=Path,
                        help="run folders (trainer.default_root_dir) or metrics CSV files")
    parser.add_argument("--metrics", nargs="+",
                        help="metrics to compare (default: the val/ and test/ ones all runs logged)")
    parser.add_argument("--out", type=Path, default=Path("compare.png"), help="the PNG of the curves")
    args = parser.parse_args(argv)
    runs = {name: read_run(path) for name, path in zip(run_names(args.runs), args.runs, strict=True)}
    protocols = {name: read_protocols(path) for name, path in zip(run_names(args.runs), args.runs, strict=True)}
    metrics = args.metrics or default_metrics(runs)
    if not metrics:
        raise ValueError("these runs logged no metric in common; name some with --metrics")
    unknown = [m for m in metrics if not any(m in series for series in runs.values())]
    if unknown:
        logged = sorted(set().union(*runs.values()))
        raise ValueError(f"no run logged {', '.join(unknown)}; logged: {', '.join(logged)}")
    out = args.out if args.out.suffix.lower() == ".png" else args.out.with_name(args.out.name + ".png")
    if out.is_dir() or (out.parent.exists() and not out.parent.is_dir()):
        raise ValueError(f"--out {args.out}: cannot write the PNG {out} there; name a .png file in a folder")
    print(table(runs, metrics, protocols))
    plot(runs, metrics, out, protocols)
    print(f"wrote {out}")
