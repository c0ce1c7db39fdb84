"""Feature extractors for FID / IS / KID / precision-recall: Inception-v3 (what papers report), the offline domain
classifier, and torch-fidelity's DINOv2 and CLIP (``dinov2_clip.py``: features only, no logits).

An extractor maps a batch of uint8 images (B, C, H, W) in [0, 255] to ``(features, logits)`` in one
forward pass; the Frechet distance, KID and precision/recall use the features, the Inception score the logits.

Inception-v3 is torch-fidelity's ``inception-v3-compat`` (the TF-1 graph the papers used), loaded
through torchmetrics with ``antialias=False``, the resize torch-fidelity and the papers use
(torchmetrics' default ``antialias=True`` shifts FID). Its weights file is checked before torch-fidelity
sees it, because torch-fidelity unpickles it with ``weights_only=False``: see ``load_inception_weights``.
"""
import hashlib
import io
import os
import socket
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from gan_lightning.errors import ConfigError
from gan_lightning.metrics.classifier import load_classifier
from gan_lightning.metrics.weights import WeightsNotFoundError, hub_checkpoint_dir

__all__ = ["SCORE_NAMES", "ExtractorName", "WeightsNotFoundError", "build_extractor", "extractor_fingerprint",
           "hub_checkpoint_dir", "resolve_inception_weights"]

# DINOv2 and CLIP: torch-fidelity's names with '_' for '-' (a test checks these against its tables)
DINOV2_EXTRACTORS = ("dinov2_vit_s_14", "dinov2_vit_b_14", "dinov2_vit_l_14", "dinov2_vit_g_14")
CLIP_EXTRACTORS = ("clip_rn50", "clip_rn101", "clip_rn50x4", "clip_rn50x16", "clip_rn50x64", "clip_vit_b_32",
                   "clip_vit_b_16", "clip_vit_l_14", "clip_vit_l_14_336px")
ExtractorName = Literal["inception", "fashion_classifier", "dinov2_vit_s_14", "dinov2_vit_b_14", "dinov2_vit_l_14",
                        "dinov2_vit_g_14", "clip_rn50", "clip_rn101", "clip_rn50x4", "clip_rn50x16", "clip_rn50x64",
                        "clip_vit_b_32", "clip_vit_b_16", "clip_vit_l_14", "clip_vit_l_14_336px"]

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
# torch.hub checks a downloaded file against the SHA-256 prefix in its name; so do we, for local files. These
# 8 hex digits (32 bits) catch a wrong or damaged file, not a crafted one (about 2**32 tries find a match), and
# neither torch-fidelity nor torchmetrics records the full digest, so it is not pinned: the safety against a
# crafted file is torch's weights-only loader (load_inception_weights), not this prefix.
INCEPTION_SHA256_PREFIX = "6726825d"

# the name every log key, table and plot uses: "fid_inception" but "fd_fashion_classifier", "fd_dinov2_vit_l_14"
# (never FID); DINOv2 and CLIP give no logits, hence no Inception score
SCORE_NAMES = {
    "inception": {"fid": "fid_inception", "is": "is_inception", "kid": "kid_inception",
                  "precision": "precision_inception", "recall": "recall_inception"},
    "fashion_classifier": {"fid": "fd_fashion_classifier", "is": "is_fashion_classifier",
                           "kid": "kid_fashion_classifier", "precision": "precision_fashion_classifier",
                           "recall": "recall_fashion_classifier"},
    **{name: {"fid": f"fd_{name}", "kid": f"kid_{name}", "precision": f"precision_{name}",
              "recall": f"recall_{name}"} for name in DINOV2_EXTRACTORS + CLIP_EXTRACTORS}}


def inception_fix() -> str:
    """What to do when the Inception weights are missing or not torch-fidelity's: every such error ends with it."""
    return (f"download {INCEPTION_URL} on a machine with internet access and either copy it to "
            f"{hub_checkpoint_dir() / INCEPTION_FILE} or pass its path as inception_weights; or use "
            f"feature_extractor: fashion_classifier (offline, 28x28 grey data)")


def resolve_inception_weights(path: str | None = None, download: bool = True) -> Path:
    """The Inception weights file to load: ``path`` if given, else torch.hub's cache, else downloaded there.

    Raises ``WeightsNotFoundError`` naming the fix when none of those works. The file is checked when it is
    read, by ``load_inception_weights``.
    """
    fix = inception_fix()
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise WeightsNotFoundError(f"Inception weights file {file} not found: {fix}")
    else:
        file = hub_checkpoint_dir() / INCEPTION_FILE
        if not file.is_file():
            if not download or os.environ.get("GAN_LIGHTNING_OFFLINE"):
                raise WeightsNotFoundError(f"Inception weights not in {file.parent} and downloads are off: {fix}")
            timeout = socket.getdefaulttimeout()
            try:
                socket.setdefaulttimeout(60)  # a firewall that drops packets fails in a minute, not never
                file.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(INCEPTION_URL, str(file), hash_prefix=INCEPTION_SHA256_PREFIX,
                                               progress=False)
            except Exception as err:  # URLError offline, HTTPError, hash mismatch
                raise WeightsNotFoundError(f"could not download the Inception weights ({err}): {fix}") from None
            finally:
                socket.setdefaulttimeout(timeout)
    return file


def load_inception_weights(file: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict in ``file``, or ``ConfigError`` naming the file and the fix; nothing in it can run code.

    The file is read once, and those bytes are checked twice: their SHA-256 must start with the published
    prefix (a wrong or damaged file), or be ``sha256`` whole when the user pins it, and torch's weights-only
    unpickler must find only tensors in them (a crafted file: that unpickler builds tensors and plain
    containers and refuses any other class or call). torch-fidelity, which unpickles with
    ``weights_only=False``, then reads a copy re-serialised from the tensors, never the file.
    """
    data = Path(file).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise ConfigError(f"Inception weights file {file} has SHA-256 {digest[:16]}..., not the published "
                          f"{INCEPTION_SHA256_PREFIX}...: it is not torch-fidelity's {INCEPTION_FILE} (another file, "
                          f"or a damaged download); refusing to load it: {inception_fix()}")
    if sha256 is not None and digest != sha256.lower():
        raise ConfigError(f"Inception weights file {file} has SHA-256 {digest}, not the pinned {sha256}: refusing to "
                          "load it: pass the file whose digest you pinned, or pin this one's (sha256sum)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError for a forbidden global or opcode, RuntimeError, ...
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else
                      type(err).__name__).split(". Please use")[0]  # not torch's advice to allow-list the global
        raise ConfigError(f"Inception weights file {file} holds more than tensors: torch's weights-only loader "
                          f"refused it ({reason}); refusing to load it, since torch-fidelity's loader would "
                          f"unpickle it and run what it names: {inception_fix()}") from None
    if not (isinstance(state, dict) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise ConfigError(f"Inception weights file {file} is not a state dict of tensors; refusing to load it: "
                          f"{inception_fix()}")
    return state


class InceptionExtractor(nn.Module):
    """uint8 (B, 1 or 3, H, W) -> (2048 pool features, 1008 unbiased logits), as torch-fidelity computes them."""

    num_features = 2048
    num_logits = 1008

    def __init__(self, weights: Path, sha256: str | None = None):
        super().__init__()
        from torchmetrics.image.fid import NoTrainInceptionV3

        # torch-fidelity torch.load()s what it is given with weights_only=False: give it our own serialisation
        # of the tensors that the weights-only loader read from the checked bytes, never the file itself
        checked = io.BytesIO()
        torch.save(load_inception_weights(Path(weights), sha256), checked)
        checked.seek(0)
        self.net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=checked, antialias=False)

    @property
    def resize(self) -> str:
        """How images reach 299x299 (part of the real statistics' cache key)."""
        return ("bilinear, antialias=True (torchmetrics)" if self.net.use_antialias
                else "bilinear like TensorFlow 1 (torch-fidelity, antialias=False)")

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # grey -> RGB, as torch-fidelity does
        features, logits = self.net._torch_fidelity_forward(images)  # both layers in one pass
        return features.reshape(len(images), -1), logits.reshape(len(images), -1)


def build_extractor(name: ExtractorName, inception_weights: str | None = None, download: bool = True,
                    weights: str | None = None, sha256: str | None = None) -> nn.Module:
    """The extractor in eval mode with frozen weights; raises before any training when weights are missing.

    ``weights``: the extractor's weights file instead of the one in torch.hub's cache (for Inception the same as
    ``inception_weights``); ``sha256``: the full SHA-256 that file must have (DINOv2 needs one, here or in its
    environment variable; see ``dinov2_clip.py``; for Inception it adds to the published 8-digit prefix; CLIP's
    is pinned by OpenAI's URL). The CLI's ``--extractor_weights`` / ``--extractor_sha256`` and ImageMetrics'
    ``extractor_weights`` / ``extractor_sha256`` arrive here. Built under a forked RNG: initialising its layers
    must not move the global RNG that training draws its data order from.
    """
    with torch.random.fork_rng(devices=[]):
        return _build_extractor(name, inception_weights, download, weights, sha256)


def _build_extractor(name: ExtractorName, inception_weights: str | None, download: bool, weights: str | None,
                     sha256: str | None) -> nn.Module:
    _check_weights_options(name, inception_weights, weights, sha256)
    if name == "inception":
        net = InceptionExtractor(resolve_inception_weights(inception_weights or weights, download), sha256)
    elif name == "fashion_classifier":
        net = load_classifier()
    elif name in DINOV2_EXTRACTORS:
        from gan_lightning.metrics.dinov2_clip import build_dinov2

        net = build_dinov2(name, weights, sha256)
    elif name in CLIP_EXTRACTORS:
        from gan_lightning.metrics.dinov2_clip import build_clip

        net = build_clip(name, weights)
    else:
        raise ValueError(f"unknown feature extractor {name!r}; choose one of {', '.join(SCORE_NAMES)}")
    return net.eval().requires_grad_(False)


def _check_weights_options(name: str, inception_weights: str | None, weights: str | None,
                           sha256: str | None) -> None:
    """Refuse, in one line, weights options that this extractor would otherwise silently ignore."""
    if sha256 is not None and not (len(sha256) == 64 and all(c in "0123456789abcdefABCDEF" for c in sha256)):
        raise ConfigError(f"extractor_sha256 must be a file's full SHA-256, 64 hex digits (sha256sum FILE); got "
                          f"{sha256!r}")
    if name == "fashion_classifier" and (weights is not None or sha256 is not None):
        raise ConfigError("feature_extractor fashion_classifier ships with the package and checks its own weights: "
                          "drop extractor_weights and extractor_sha256")
    if name == "inception" and inception_weights is not None and weights is not None \
            and Path(inception_weights).expanduser() != Path(weights).expanduser():
        raise ConfigError(f"inception_weights {inception_weights} and extractor_weights {weights} name two Inception "
                          "weights files: give one of them")
    if name in CLIP_EXTRACTORS and sha256 is not None:
        from gan_lightning.metrics.dinov2_clip import CLIP_METADATA

        pinned = CLIP_METADATA[name.replace("_", "-")]["hash"]
        if sha256.lower() != pinned:
            raise ConfigError(f"{name}'s weights are pinned to OpenAI's SHA-256 {pinned} (the digest in its URL); "
                              f"extractor_sha256 {sha256} cannot match it: drop extractor_sha256")


def extractor_fingerprint(name: ExtractorName, net: nn.Module) -> str:
    """What the cached real statistics depend on, for this extractor: its name and its weights' SHA-256."""
    digest = hashlib.sha256()
    for key, tensor in net.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"{name}:{digest.hexdigest()[:16]}"
