"""Property-based fuzzing of every file the framework reads from elsewhere (docs/failures.md, "Fuzzing").

A real checkpoint, a real run folder, a real model folder (``export``) and a real cache file are mutated by
``hypothesis``: entries deleted, replaced by values of other types (huge and negative numbers, NaN, paths with
``..``, class paths, tensors of other shapes), keys added, files truncated. Each mutant is fed to the commands that
read it: ``sample``, ``evaluate``, ``fit --ckpt_path``, ``validate`` and ``test`` for checkpoints, ``compare`` for
run folders (their ``metrics.csv`` and ``hparams.yaml``), ``sample`` for model folders, the real-statistics reader
for caches. Each outcome must be one of two:

- success, or
- a nonzero exit with one line (``gan_lightning: error: ...``, or jsonargparse's ``gan_lightning: config error``),
  no traceback;

and in every case no file outside the example's own folders is created, changed or removed, and the process's
peak memory grows by less than ``MEMORY_BOUND``. The counts are fixed and derandomised in CI (the ``ci`` profile,
``tests/conftest.py``); ``pytest tests/test_fuzz_inputs.py --hypothesis-profile soak`` tries ten times as many.
Budget: about 4 minutes of CI.
"""
import contextlib
import hashlib
import io
import os
import shutil
import uuid
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gan_lightning.cli import main
from tests.conftest import toy_fit_args

MEMORY_BOUND = 2 * 2**30  # bytes of peak resident memory the fuzzing may add to the process


def fuzz(examples: int) -> settings:
    """``examples`` examples in the ``ci`` profile (tests/conftest.py), scaled with the profile's max_examples
    (``--hypothesis-profile soak``: ten times as many)."""
    return settings(max_examples=max(1, examples * settings.default.max_examples // 100), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]




# --- what an outcome may be --------------------------------------------------------------------------------------


def peak_memory() -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: files by their SHA-256, folders and links by kind; symlinks not followed."""
    entries = {}
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                entries[rel] = f"link:{os.readlink(path)}"
            elif path.is_file():
                entries[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                entries[rel] = "dir"
    return entries


class Sandbox:
    """One example's folders: ``work`` (where the command may write), ``outside`` (files a forged input points at,
    which must survive untouched) and ``cwd`` (the working directory, which must stay empty)."""

    def __init__(self, root: Path):
        self.root = root / uuid.uuid4().hex[:8]
        self.work, self.outside, self.cwd = self.root / "work", self.root / "outside", self.root / "cwd"
        for folder in (self.work, self.outside / "precious", self.cwd):
            folder.mkdir(parents=True)
        (self.outside / "precious" / "thesis.tex").write_text("years of work")
        (self.outside / "other.ckpt").write_bytes(b"another run's checkpoint")
        self.before = snapshot(self.outside)

    def check(self) -> None:
        assert snapshot(self.outside) == self.before, "a file outside the run was created, changed or removed"
        assert not any(self.cwd.iterdir()), f"files written in the working directory: {list(self.cwd.iterdir())}"


def outcome(args: list[str], sandbox: Sandbox, capsys) -> str:
    """Runs ``python -m gan_lightning ARGS`` in-process in ``sandbox.cwd``: "ok", or "refused" after checking that
    the refusal is one line without a traceback. Any other exception fails the example."""
    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(sandbox.cwd)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            main(args)
        result = "ok"
    except SystemExit as stop:
        err = capsys.readouterr().err
        if stop.code in (0, None):
            result = "ok"
        elif isinstance(stop.code, str):
            assert stop.code.startswith("gan_lightning: error: ") and "\n" not in stop.code.strip(), stop.code
            result = "refused"
            if os.environ.get("FUZZ_DEBUG"):  # a file of the refusals, to read what the fuzzing met
                with open(os.environ["FUZZ_DEBUG"], "a") as log:
                    log.write(f"{args[0]}: {stop.code[:400]}\n")
        else:  # the config parser's own exit: its one line is the last of stderr
            lines = err.strip().splitlines()
            assert lines and lines[-1].startswith("gan_lightning: config error"), err[-2000:]
            result = "refused"
        assert "Traceback (most recent call last)" not in err, err[-3000:]
    finally:
        os.chdir(cwd)
    sandbox.check()
    return result


# --- mutating a checkpoint ---------------------------------------------------------------------------------------

def key_paths(value: object, path: tuple = (), depth: int = 0) -> list[tuple]:
    """Every entry's path in a nested checkpoint (dicts by key, lists by index), to a depth of 5."""
    paths = [path] if path else []
    if depth < 5 and isinstance(value, dict):
        for key, item in value.items():
            paths += key_paths(item, (*path, key), depth + 1)
    elif depth < 5 and isinstance(value, list):
        for i, item in enumerate(value[:3]):
            paths += key_paths(item, (*path, i), depth + 1)
    return paths


def hostile_values(outside: Path):
    """Values of every kind a forged file may hold where another belongs."""
    paths = st.sampled_from([str(outside / "precious"), str(outside / "other.ckpt"), "../outside/precious", "/", "..",
                             f"{outside}/../outside/precious", "s3://bucket/x.ckpt", "memory://x.ckpt"])
    names = st.sampled_from(["subprocess.run", "os.system", "gan_lightning.models.BiGAN", "builtins.eval",
                             "gan_lightning.models.VAE"])
    tensors = st.lists(st.integers(0, 5), min_size=0, max_size=3).map(lambda shape: torch.zeros(shape))
    return st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                     st.sampled_from([10**7, 10**12, -1, 0, 2**31]), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=12), paths, names, tensors,
                     st.lists(st.integers(-3, 10**6), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                                    max_size=2))


def mutate(checkpoint: dict, data, outside: Path) -> list[str]:
    """0 to 3 mutations of ``checkpoint`` in place, drawn from ``data``; returns their descriptions."""
    done = []
    for _ in range(data.draw(st.integers(0, 3), label="mutations")):  # 0: the real file, which must load
        paths = key_paths(checkpoint)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        parent = checkpoint
        for key in path[:-1]:
            parent = parent[key]
        kind = data.draw(st.sampled_from(["delete", "replace", "replace", "add", "scale"]), label="kind")
        key = path[-1]
        if kind == "delete":
            del parent[key]
        elif kind == "scale" and isinstance(parent[key], torch.Tensor) and parent[key].dim():
            factor = data.draw(st.sampled_from([0, 2, 3]), label="factor")
            parent[key] = torch.zeros(parent[key].shape[0] * factor, *parent[key].shape[1:])
        elif kind == "add" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["extra", "best_model_path", "data_dir", "width", "iteration"]),
                             label="new key")] = data.draw(hostile_values(outside), label="value")
        else:
            parent[key] = data.draw(hostile_values(outside), label="value")
        done.append(f"{kind} {path}")
    return done


def write_mutant(checkpoint: dict, data, folder: Path) -> tuple[Path, str]:
    """The mutant as a file, sometimes truncated or with flipped bytes; (its path, the damage done)."""
    path = folder / "mutant.ckpt"
    torch.save(checkpoint, path)
    damage = data.draw(st.sampled_from(["none", "none", "none", "truncate", "flip"]), label="damage")
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="cut at")])
    elif damage == "flip":
        at = data.draw(st.integers(0, len(raw) - 1), label="flip at")
        path.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
    return path, damage


COMMANDS = {  # how each command reads a checkpoint, and the examples it gets in CI
    "sample": 120, "evaluate": 15, "fit": 40, "validate": 12, "test": 12}


def checkpoint_args(name: str, ckpt: Path, work: Path) -> list[str]:
    if name == "sample":
        return ["sample", "--ckpt_path", str(ckpt), "--n", "10", "--out", str(work / "samples.npz")]
    if name == "evaluate":
        return ["evaluate", "--ckpt_path", str(ckpt), "--metrics", "probes", "--n_train", "200", "--no_linear",
                "--out", str(work / "eval.json"), "--data_dir", str(work / "data")]
    longer = ["--trainer.max_epochs", "2"] if name == "fit" else []
    args = toy_fit_args(work / "run", "--ckpt_path", str(ckpt), *longer)
    return [name, *args[1:]]


OUTCOMES: dict[str, dict[str, int]] = {}  # command -> outcome -> count, written to the log at the end


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_mutated_checkpoint_is_loaded_or_refused_in_one_line_and_touches_nothing_outside(
        name, toy_run, tmp_path, capsys):
    real = torch.load(toy_run / "checkpoints" / "last.ckpt", weights_only=True)
    baseline = peak_memory()
    counts = OUTCOMES.setdefault(name, {})

    @fuzz(COMMANDS[name])
    @given(data=st.data())
    def check(data):
        sandbox = Sandbox(tmp_path)
        checkpoint = _copy(real)
        changes = mutate(checkpoint, data, sandbox.outside)
        ckpt, damage = write_mutant(checkpoint, data, sandbox.work)
        result = outcome(checkpoint_args(name, ckpt, sandbox.work), sandbox, capsys)
        assert result == "ok" or changes or damage != "none", f"{name} refused the real checkpoint"
        counts[result] = counts.get(result, 0) + 1
        shutil.rmtree(sandbox.root, ignore_errors=True)

    check()
    assert peak_memory() - baseline < MEMORY_BOUND
    print(f"fuzz {name}: {counts}")


def _copy(checkpoint: dict) -> dict:
    """A deep copy of a checkpoint (tensors included), through a buffer as torch would write and read it."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# --- a run folder, for compare -----------------------------------------------------------------------------------

@fuzz(60)
@given(data=st.data())
def test_compare_reads_a_mutated_run_folder_or_refuses_it_in_one_line(toy_run, tmp_path, capsys, data):
    sandbox = Sandbox(tmp_path)
    run = sandbox.work / "run"
    shutil.copytree(toy_run / "logs", run / "logs")
    csv = next(run.rglob("metrics.csv"))
    raw = csv.read_text()
    change = data.draw(st.sampled_from(["truncate", "long field", "text", "binary", "folder named metrics.csv",
                                        "symlink loop", "symlink outside", "empty", "header only",
                                        "hparams.yaml text", "hparams.yaml tags", "hparams.yaml binary"]),
                        label="change")
    hparams = csv.with_name("hparams.yaml")  # compare reads the protocol record beside each metrics.csv
    if change == "truncate":
        csv.write_text(raw[: data.draw(st.integers(0, len(raw)), label="cut at")])
    elif change == "long field":
        csv.write_text(raw + "x" * data.draw(st.sampled_from([10, 131_073, 300_000]), label="length") + "\n")
    elif change == "text":
        csv.write_text(raw + data.draw(st.text(max_size=200), label="text"))
    elif change == "binary":
        csv.write_bytes(raw.encode() + data.draw(st.binary(max_size=200), label="bytes"))
    elif change == "folder named metrics.csv":
        (run / "logs" / "version_9" / "metrics.csv").mkdir(parents=True)
    elif change == "symlink loop":
        (run / "loop").symlink_to(run)
    elif change == "symlink outside":
        (run / "elsewhere").symlink_to(sandbox.outside)
    elif change == "empty":
        csv.write_text("")
    elif change == "hparams.yaml text":
        hparams.write_text("eval_protocol:\n  name: " + data.draw(st.text(max_size=200), label="yaml"))
    elif change == "hparams.yaml tags":  # a tag that would build an object or run code under an unsafe loader
        hparams.write_text(data.draw(st.sampled_from([
            "eval_protocol: !!python/object/apply:os.system ['touch " + str(sandbox.outside / "ran") + "']\n",
            "eval_protocol: !!python/name:os.system\n", "eval_protocol: &a [*a]\n",
            "eval_protocol: {name: x, extractor: !!python/tuple [1, 2]}\n"]), label="yaml"))
    elif change == "hparams.yaml binary":
        hparams.write_bytes(data.draw(st.binary(max_size=300), label="bytes"))
    else:
        csv.write_text(raw.splitlines()[0] + "\n")
    target = data.draw(st.sampled_from(["run", "csv"]), label="target")
    out = sandbox.work / "compare.png"
    result = outcome(["compare", str(run if target == "run" else csv), "--out", str(out)], sandbox, capsys)
    OUTCOMES.setdefault("compare", {}).setdefault(result, 0)
    OUTCOMES["compare"][result] += 1


# --- a model folder written by export ----------------------------------------------------------------------------

def json_values(outside: Path):
    """``hostile_values`` that JSON can hold (a forged config.json holds no tensors)."""
    return st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.sampled_from([10**7, 10**12, -1, 0]),
                     st.floats(allow_nan=False), st.text(max_size=12),
                     st.sampled_from([str(outside / "precious"), "../outside", "os.system", "subprocess.run",
                                      "builtins.eval", "gan_lightning.models.VAE", "GAN", "VAE", "RealNVP",
                                      "tests.helpers.tiny_gan"]),
                     st.lists(st.integers(-3, 10**6), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                                    max_size=2))


@fuzz(60)
@given(data=st.data())
def test_a_mutated_model_folder_is_loaded_or_refused_in_one_line(toy_run, tmp_path, capsys, data):
    import json

    from safetensors.torch import load_file, save_file

    from gan_lightning.commands import export

    exported = tmp_path / "exported"
    if not exported.exists():  # once per test: export reads the run's checkpoint
        export(toy_run / "checkpoints" / "last.ckpt", exported)
    sandbox = Sandbox(tmp_path)
    folder = sandbox.work / "folder"
    shutil.copytree(exported, folder)
    config = json.loads((folder / "config.json").read_text())
    changes = []
    for _ in range(data.draw(st.integers(0, 3), label="config mutations")):
        path = data.draw(st.sampled_from(key_paths(config)), label="path")
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        kind = data.draw(st.sampled_from(["delete", "replace", "add"]), label="kind")
        if kind == "delete":
            del parent[path[-1]]
        elif kind == "add" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["width", "pack", "latent_dim", "_class_path", "class_path", "extra"]),
                             label="key")] = data.draw(json_values(sandbox.outside), label="value")
        else:
            parent[path[-1]] = data.draw(json_values(sandbox.outside), label="value")
        changes.append(f"{kind} {path}")
    (folder / "config.json").write_text(json.dumps(config))
    weights = folder / "model.safetensors"
    damage = data.draw(st.sampled_from(["none", "none", "truncate", "flip", "reshape", "drop", "text config"]),
                       label="damage")
    raw = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1), label="cut at")])
    elif damage == "flip":  # mostly in the JSON header, where a flip changes names, shapes and offsets
        at = data.draw(st.integers(0, min(len(raw) - 1, 4096)), label="flip at")
        weights.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
    elif damage in ("reshape", "drop"):
        tensors = load_file(weights)
        key = data.draw(st.sampled_from(sorted(tensors)), label="tensor")
        if damage == "drop":
            del tensors[key]
        else:
            tensors[key] = torch.zeros(tensors[key].numel() * 2 + 1)
        save_file(tensors, weights)
    elif damage == "text config":
        (folder / "config.json").write_bytes(data.draw(st.binary(max_size=300), label="bytes"))
    args = ["sample", "--ckpt_path", str(folder), "--n", "10", "--out", str(sandbox.work / "samples.npz")]
    result = outcome(args, sandbox, capsys)
    assert result == "ok" or changes or damage != "none", "sample refused the real export"
    OUTCOMES.setdefault("model folder", {}).setdefault(result, 0)
    OUTCOMES["model folder"][result] += 1
    shutil.rmtree(sandbox.root, ignore_errors=True)


# --- a cache file of real statistics ----------------------------------------------------------------------------

@fuzz(60)
@given(data=st.data())
def test_a_mutated_cache_file_is_read_or_refused_with_cache_file_error(tmp_path, data):
    from gan_lightning.metrics.image_scores import CacheFileError, read_cached

    features = torch.randn(8, 3)
    parts = {"dataset": "fashion_mnist", "split": "train", "n_real": 8}
    real = {"features_sum": features.double().sum(0), "features_cov_sum": features.double().T @ features.double(),
            "n": 8, "features": features, "inception_score": [1.0, 0.0], "meta": dict(parts)}
    sandbox = Sandbox(tmp_path)
    changes = mutate(real, data, sandbox.outside)
    path, damage = write_mutant(real, data, sandbox.work)
    try:
        stats = read_cached(path, 3, parts)
        result = "ok"
        assert stats.meta == parts and stats.features.shape[1] == 3 and bool(stats.features.isfinite().all())
    except CacheFileError as err:
        assert "\n" not in str(err) and str(path) in str(err), str(err)
        assert changes or damage != "none", f"the real cache file was refused: {err}"
        result = "refused"
    sandbox.check()
    OUTCOMES.setdefault("cache", {}).setdefault(result, 0)
    OUTCOMES["cache"][result] += 1


def test_the_fuzzing_tried_every_reader(request):
    """Last in the file: the counts of outcomes per reader, written for docs/failures.md."""
    if len(OUTCOMES) < len(COMMANDS) + 3:
        pytest.skip("run with the rest of this file")
    lines = [f"{name}: {sum(counts.values())} cases, " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
             for name, counts in OUTCOMES.items()]
    out = Path(os.environ.get("FUZZ_REPORT", "")) if os.environ.get("FUZZ_REPORT") else None
    if out is not None:
        out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    # Both branches reached for every reader: the real file loads (0 mutations), and some mutant is refused.
    assert all(counts.get("ok", 0) > 0 and counts.get("refused", 0) > 0 for counts in OUTCOMES.values()), OUTCOMES
