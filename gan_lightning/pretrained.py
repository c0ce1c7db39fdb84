"""A trained model shared as the Hugging Face Hub shares models: a folder of safetensors weights, a JSON config and a
model card, loaded without the training code's pickles.

    python -m gan_lightning export --ckpt_path runs/bigan/checkpoints/last.ckpt --out exported/bigan
    model = gan_lightning.load_pretrained("exported/bigan")  # or ModelFolder.from_pretrained, or a Hub repo id
    x = model.sample(16); z = model.encode(x); x_hat = model.reconstruct(x)

The folder, written by ``huggingface_hub``'s ``PyTorchModelHubMixin.save_pretrained``:

- ``model.safetensors``: the networks that sample and encode, their moving averages where the run kept them; no
  discriminator, no optimizer state;
- ``config.json``: the model class (one of ``gan_lightning.models``, by name), its settings, its data's settings,
  the iteration and the images seen, all plain values;
- ``README.md``: the model card (the paper, the training config, the scores with their protocol records, a grid);
- ``samples.png``: that grid.

Loading reads JSON and safetensors' header, then its tensors: nothing in the folder is unpickled, imported or
called. A class outside the package, settings of the wrong type, weights of another shape or a truncated file are
refused in one line (``PretrainedError``), and what a folder can make the loader allocate is bounded by its
weights file (``LEFT_OUT_FACTOR``).
"""
import json
import math
import os
from pathlib import Path

import torch
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import nn

from gan_lightning.checkpoints import (
    CheckpointError,
    _short,
    build_on_meta,
    check_settings,
    plain,
    refuse_other_weights,
)
from gan_lightning.errors import first_line

FORMAT = 1                       # config.json's "format": the layout this module writes and reads
CONFIG_LIMIT = 1 << 20           # bytes of config.json (an export's is about 2 kB)
WEIGHTS, CONFIG, GRID = "model.safetensors", "config.json", "samples.png"
FOLDER_FILES = (WEIGHTS, CONFIG, "README.md", GRID)  # what export writes (samples.png for image data)
# What the networks left out of a folder (the discriminators, rebuilt at load and then dropped) may cost, against
# the networks the folder holds: at most this many times their elements, plus LEFT_OUT_SLACK. The shipped configs'
# largest ratio is 4.8 (configs/ali.yaml's joint discriminator against its generator and encoder).
LEFT_OUT_FACTOR, LEFT_OUT_SLACK = 8, 16_000_000
PAPERS = {  # model class -> the paper it implements, as the model card cites it
    "GAN": "Goodfellow et al. 2014, Generative Adversarial Nets, https://arxiv.org/abs/1406.2661",
    "ALI": "Dumoulin et al. 2017, Adversarially Learned Inference, https://arxiv.org/abs/1606.00704",
    "BiGAN": "Donahue, Kraehenbuehl & Darrell 2017, Adversarial Feature Learning, https://arxiv.org/abs/1605.09782",
    "AAE": "Makhzani et al. 2016, Adversarial Autoencoders, https://arxiv.org/abs/1511.05644",
    "SemiSupervisedAAE": "Makhzani et al. 2016, Adversarial Autoencoders, https://arxiv.org/abs/1511.05644",
    "ClusteringAAE": "Makhzani et al. 2016, Adversarial Autoencoders, https://arxiv.org/abs/1511.05644",
    "VAE": "Kingma & Welling 2014, Auto-Encoding Variational Bayes, https://arxiv.org/abs/1312.6114",
    "RealNVP": "Dinh, Sohl-Dickstein & Bengio 2017, Density estimation using Real NVP, https://arxiv.org/abs/1605.08803",
}
UPLOAD = "hf upload USER/REPO {folder} .  (after `hf auth login`; huggingface_hub's command line)"


class PretrainedError(CheckpointError):
    """A model folder that is missing, damaged, or not one ``export`` wrote."""


class NotExported(nn.Module):
    """Where a network left out of a model folder was (a discriminator): calling it says so."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"the {self.name} is not in an exported model folder, which holds the networks that sample "
                           "and encode: train on from the run's checkpoint (fit --ckpt_path) instead")


def left_out(model) -> set[str]:
    """The networks a folder leaves out: those of the players named discriminator (a class may say otherwise with
    ``export_leaves_out``, as InfoGAN, whose Q head lives in D)."""
    named = getattr(type(model), "export_leaves_out", None)
    if named is not None:
        return set(named)
    return {net for player, (nets, *_) in model._players.items() if "discriminator" in player for net in nets}


def exported_state(model) -> dict[str, torch.Tensor]:
    """The state a folder holds: the model's, less the networks ``left_out`` and the ``ema`` copies, with each
    averaged network's weights and buffers in place of the trained ones (what ``sample`` and ``encode`` use)."""
    dropped = left_out(model) | {"ema"}
    state = {key: value for key, value in model.state_dict().items() if key.split(".")[0] not in dropped}
    for name, averaged in model.ema.items():
        for key, value in averaged.module.state_dict().items():
            state[f"{name}.{key}"] = value
    return {key: value.detach().cpu().contiguous().clone() for key, value in state.items()}


class ModelFolder(nn.Module, PyTorchModelHubMixin, library_name="gan_lightning",
                  repo_url="https://github.com/gan-lightning/gan_lightning",
                  tags=["gan_lightning", "generative-adversarial-network", "pytorch"]):
    """A trained model as ``save_pretrained`` writes it and ``from_pretrained`` reads it back: ``model`` is the
    ``AdversarialModule``; ``config`` the plain values of config.json; ``card`` the model card's parts."""

    def __init__(self, model: nn.Module, config: dict, card: dict | None = None):
        super().__init__()
        self.model, self.config, self.card = model, config, card or {}

    def _save_pretrained(self, save_directory: Path) -> None:
        from safetensors.torch import save_file

        save_file(exported_state(self.model), str(Path(save_directory) / WEIGHTS), metadata={"format": "pt"})
        (Path(save_directory) / CONFIG).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
        if self.card.get("grid") is not None:
            from torchvision.utils import save_image

            save_image(self.card["grid"], Path(save_directory) / GRID, nrow=8)

    def generate_model_card(self, *args, **kwargs) -> ModelCard:
        return ModelCard(model_card(self.config, self.card))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, model_class: str | None = None,
                        revision: str | None = None, **hub_kwargs) -> nn.Module:
        """The model of a folder ``export`` wrote, or of a Hub repository holding one (downloaded with
        ``snapshot_download``): an ``AdversarialModule`` in eval mode on the CPU. ``model_class``: your own model
        class (package.module.Class), which is imported because you name it; a folder's own text never is."""
        folder = Path(pretrained_model_name_or_path).expanduser()
        if not folder.is_dir():
            if folder.exists() or str(pretrained_model_name_or_path).count("/") != 1:
                raise PretrainedError(f"model folder {folder} not found: pass a folder written by `python -m "
                                      "gan_lightning export`, or a Hub repository id (user/name)")
            from huggingface_hub import snapshot_download

            try:
                folder = Path(snapshot_download(str(pretrained_model_name_or_path), revision=revision,
                                                allow_patterns=[CONFIG, WEIGHTS, "README.md", GRID], **hub_kwargs))
            except Exception as err:  # offline, no such repository, no access: the Hub's errors, in one line
                raise PretrainedError(f"{pretrained_model_name_or_path} is neither a folder here nor a Hub repository "
                                      f"that could be downloaded ({type(err).__name__}: {first_line(err, 160)}): pass "
                                      "a folder written by `python -m gan_lightning export`, or USER/REPO on the "
                                      "Hub") from None
        return load_folder(folder, model_class)[0]


def read_config(folder: Path) -> dict:
    """config.json of a model folder, checked to be an export's: JSON (never unpickled), at most ``CONFIG_LIMIT``
    bytes, with each entry of the type ``export`` writes."""
    file = folder / CONFIG
    if not file.is_file():
        raise PretrainedError(f"model folder {folder} has no {CONFIG}: pass a folder written by `python -m "
                              "gan_lightning export`")
    if file.stat().st_size > CONFIG_LIMIT:
        raise PretrainedError(f"{file} is {file.stat().st_size:,} bytes, where an export's is a few kB: it was not "
                              "written by `python -m gan_lightning export` and is not read")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise PretrainedError(f"{file} is not JSON ({type(err).__name__}: {first_line(err, 120)}): the folder is "
                              "damaged; export the checkpoint again") from None
    kinds = {"library": str, "format": int, "model_class": str, "settings": dict, "data": dict, "iteration": int,
             "images_seen": int}
    wrong = [key for key, kind in kinds.items()
             if not isinstance(config, dict) or not isinstance(config.get(key), kind) or isinstance(config[key], bool)]
    if wrong or config.get("library") != "gan_lightning":
        raise PretrainedError(f"{file} is not a gan_lightning export's config ({', '.join(wrong) or 'library'} "
                              f"{'missing or of another type' if wrong else 'is not gan_lightning'}): pass a folder "
                              "written by `python -m gan_lightning export`")
    if config["format"] != FORMAT:
        raise PretrainedError(f"{file} has format {config['format']}, and this gan_lightning reads format {FORMAT}: "
                              "export the checkpoint again with this version")
    if config["iteration"] < 0 or config["images_seen"] < 0:
        raise PretrainedError(f"{file}: iteration and images_seen must be >= 0, got {config['iteration']}, "
                              f"{config['images_seen']}: the folder was edited; export the checkpoint again")
    return config


DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,  # safetensors'
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}                                                                   # names of them


def weights_header(file: Path) -> dict[str, torch.Tensor]:
    """The names, shapes and dtypes of ``model.safetensors``'s tensors, as meta tensors (nothing allocated), from
    its header: a file that is cut, or whose header does not cover it exactly, is refused in one line."""
    from safetensors import safe_open

    if not file.is_file():
        raise PretrainedError(f"model folder {file.parent} has no {WEIGHTS}: export the checkpoint again")
    try:
        with safe_open(str(file), framework="pt") as handle:
            found = {}
            for key in handle.keys():
                part = handle.get_slice(key)
                kind = part.get_dtype()
                if kind not in DTYPES:
                    raise PretrainedError(f"{file}: tensor {_short(key, 80)} is of type {_short(kind, 20)}, which "
                                          "no model's state holds: it was not written by `python -m gan_lightning "
                                          "export`")
                found[key] = torch.empty(part.get_shape(), dtype=DTYPES[kind], device="meta")
    except PretrainedError:
        raise
    except Exception as err:  # safetensors' SafetensorError: a cut file, a header that does not cover it
        raise PretrainedError(f"{file} cannot be read ({type(err).__name__}: {first_line(err, 160)}): it is "
                              "truncated or not a safetensors file; export the checkpoint again") from None
    return found


def load_folder(folder: str | Path, chosen_class: str | None = None):
    """(model in eval mode on the CPU, config.json's values) of a model folder, checked before anything is built:
    the class looked up by name, its settings typed as its signature says, the model built on the meta device
    and its weights' names and shapes compared with the file's header, and what the left-out networks would
    cost bounded by the weights file; then built, the left-out networks dropped, and the tensors loaded."""
    from safetensors.torch import load_file

    from gan_lightning.models.registry import model_class, model_settings

    folder = Path(folder).expanduser()
    config = read_config(folder)
    source = f"model folder {folder}"
    cls = model_class(f"gan_lightning.models.{config['model_class']}" if config["model_class"].isidentifier()
                      else config["model_class"], folder / CONFIG, chosen_class)
    if chosen_class is not None and cls.__name__ != config["model_class"]:
        raise PretrainedError(f"{source} holds a {config['model_class'][:60]}, not the {cls.__name__} named "
                              f"by --model_class {chosen_class}: name the class it holds, or none")
    settings = model_settings(cls, config["settings"], folder / CONFIG)
    check_settings(cls, settings, folder / CONFIG)
    settings = {**settings, "ema_decay": None, "compile": False}  # the averaged weights are the folder's own
    header = weights_header(folder / WEIGHTS)
    meta = build_on_meta(cls, settings, len(header), source, "export the checkpoint again")
    leave = left_out(meta)
    ours = {key: value for key, value in meta.state_dict().items() if key.split(".")[0] not in leave}
    refuse_other_weights(ours, header, source, cls.__name__, "it was edited or written for other settings; export "
                                                             "the checkpoint again")
    held = sum(value.numel() for value in ours.values())
    dropped = sum(value.numel() for key, value in meta.state_dict().items() if key.split(".")[0] in leave)
    if dropped > LEFT_OUT_FACTOR * held + LEFT_OUT_SLACK:
        raise PretrainedError(f"{source}: its settings would build {_short(sorted(leave), 80)} of {dropped:,} "
                              f"weights beside the {held:,} the folder holds: they were edited to allocate memory; "
                              "export the checkpoint again")
    del meta
    model = cls(**settings)
    for name in leave:
        setattr(model, name, NotExported(name))
    try:
        tensors = load_file(str(folder / WEIGHTS), device="cpu")
    except Exception as err:  # the header was whole; its data may still be cut
        raise PretrainedError(f"{folder / WEIGHTS} cannot be read ({type(err).__name__}: {first_line(err, 160)}): it "
                              "is truncated; export the checkpoint again") from None
    bad = [key for key, value in tensors.items() if value.is_floating_point() and not bool(value.isfinite().all())]
    if bad:
        raise PretrainedError(f"{source}: {len(bad)} tensors hold NaN or Inf ({', '.join(bad[:3])}): a diverged "
                              "model is not loaded; export an earlier checkpoint")
    model.load_state_dict(tensors)
    model.iteration, model.images_seen = config["iteration"], config["images_seen"]
    return model.eval().requires_grad_(False), config


def load_pretrained(folder: str | Path, model_class: str | None = None, revision: str | None = None) -> nn.Module:
    """The model of a folder written by ``python -m gan_lightning export`` (or a Hub repository id holding one):
    ``sample(n)``, ``encode(x)`` and ``reconstruct(x)`` work on it. See ``ModelFolder.from_pretrained``."""
    return ModelFolder.from_pretrained(folder, model_class=model_class, revision=revision)


# --- export ------------------------------------------------------------------------------------------------------

def run_folder(checkpoint: Path) -> Path | None:
    """The run a checkpoint belongs to: the parent of its ``checkpoints`` folder (the layout every shipped config
    writes); None for a checkpoint elsewhere, whose neighbours may be anything."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def run_scores(checkpoint: Path, iteration: int) -> list[dict]:
    """The scores recorded for the checkpoint's weights: ``evaluate``'s JSON beside it (``<ckpt>.eval.json``), and
    the held-out figures its run logged at its iteration (``run_folder``'s ``logs/``), each with its protocol
    record where one defines it (``compare.read_protocols``)."""
    import gan_lightning.compare as compare

    scores = []
    evaluated = checkpoint.with_suffix(".eval.json")
    if evaluated.is_file() and evaluated.stat().st_size < CONFIG_LIMIT:
        try:
            results = json.loads(evaluated.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            results = None
        if isinstance(results, dict) and results.get("iteration") == iteration:
            protocol = results.get("protocol") if isinstance(results.get("protocol"), dict) else None
            for key, value in results.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in (
                        "iteration", "n_samples", "n_modes", "seconds") and math.isfinite(value):
                    scores.append({"metric": key, "value": value, "source": f"evaluate ({evaluated.name})",
                                   "protocol": {k: v for k, v in (protocol or {}).items() if plain(v)}})
    run = run_folder(checkpoint)
    if run is None or not (run / "logs").is_dir():
        return scores
    try:
        logged = compare.read_run(run / "logs")
        protocols = compare.read_protocols(run / "logs")
    except (OSError, ValueError):
        return scores
    for metric, series in sorted(logged.items()):
        values = [value for at, value in series if at == iteration and math.isfinite(value)]
        if metric.startswith(("val/", "test/")) and values and compare.direction(metric):
            scores.append({"metric": metric, "value": values[-1], "source": f"the run's log ({run.name})",
                           "protocol": protocols.get(metric) or ({} if not compare.PROTOCOL_BOUND.search(metric)
                                                                 else {"name": compare.NOT_RECORDED})})
    return scores


def training_config(checkpoint: Path) -> str | None:
    """The config the run was trained with: LightningCLI's ``config.yaml`` in the run's newest log folder."""
    run = run_folder(checkpoint)
    if run is None:
        return None
    configs = sorted((p for p in run.glob("logs/version_*/config.yaml") if p.is_file() and not p.is_symlink()),
                     key=lambda p: int(p.parent.name.split("_")[-1]) if p.parent.name.split("_")[-1].isdigit() else -1)
    if configs and configs[-1].stat().st_size < CONFIG_LIMIT:
        return configs[-1].read_text(encoding="utf-8", errors="replace")
    return None


def write_folder(model: nn.Module, config: dict, card: dict, out: Path) -> Path:
    """``save_pretrained`` into a temporary folder beside ``out``, then renamed into place: a failure leaves no half
    folder. ``out`` must not exist or be an empty folder."""
    import shutil
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        ModelFolder(model, config, card).save_pretrained(staging)
        umask = os.umask(0)
        os.umask(umask)
        for path in (staging, *staging.iterdir()):  # mkdtemp's and safetensors' owner-only modes: the user's umask
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def model_card(config: dict, card: dict) -> str:
    """README.md of a model folder: the Hub's metadata block, then what the model is, how to load it, its scores
    each with its protocol, and the config it was trained with."""
    name, data = config["model_class"], config.get("data", {})
    lines = ["---", "library_name: gan_lightning", "tags:", "- gan_lightning", "- generative-adversarial-network",
             f"- {name.lower()}", "---", "", f"# {name} on {data.get('dataset', 'its data')}", "",
             f"- **Paper:** {card.get('paper', PAPERS.get(name, ''))}",
             f"- **Trained:** {config['iteration']:,} iterations, {config['images_seen']:,} images seen "
             f"(from {card.get('checkpoint', 'a checkpoint')})",
             f"- **Weights:** {', '.join(config.get('networks', []))}, "
             f"{'their exponential moving averages' if config.get('weights') == 'moving average' else 'as trained'}; "
             "no discriminator, no optimizer state", "",
             "## Use", "", "```python", "import gan_lightning", "",
             'model = gan_lightning.load_pretrained("THIS_FOLDER_OR_USER/REPO")',
             "x = model.sample(16)              # samples in the data's range", ]
    if card.get("encoder"):
        lines += ["z = model.encode(x)               # the encoder's codes",
                  "x_hat = model.reconstruct(x)      # G(E(x))"]
    lines += ["```", "", "Scores with `python -m gan_lightning evaluate --ckpt_path THIS_FOLDER`; samples with "
              "`python -m gan_lightning sample --ckpt_path THIS_FOLDER`.", "", "## Scores", ""]
    scores = card.get("scores") or []
    if scores:
        lines += ["Each image score (FD, FID, KID, IS, precision, recall) with the protocol it was measured under: "
                  "scores of different protocols are not comparable. The other figures (probes, mode coverage, "
                  "reconstruction errors) are measured as the training config below sets them.", "",
                  "| metric | value | source | protocol |", "|---|---|---|---|"]
        for score in scores:
            protocol = "; ".join(f"{k} {v}" for k, v in score.get("protocol", {}).items()) or "-"
            lines.append(f"| {score['metric']} | {score['value']:.6g} | {score['source']} | {protocol} |")
    else:
        lines.append("No score was recorded at this iteration: `python -m gan_lightning evaluate` measures them.")
    if card.get("grid") is not None:
        lines += ["", "## Samples", "", f"![64 samples, seed 0]({GRID})"]
    if card.get("config"):
        lines += ["", "## Training config", "", "```yaml", card["config"].rstrip(), "```"]
    lines += ["", "## Upload", "", f"`{UPLOAD.format(folder='THIS_FOLDER')}`", ""]
    return "\n".join(lines)
