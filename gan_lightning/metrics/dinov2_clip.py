"""DINOv2 and CLIP feature extractors (torch-fidelity's), read only from local files checked by full SHA-256.

FD_DINOv2 (Stein et al. 2023, arXiv:2306.04675) and FD_CLIP (Kynkaanniemi et al. 2023, arXiv:2203.06026) are
the Frechet distance in these networks' embeddings; KID and precision/recall work in them too. They give
features, no class logits: no Inception score with them.

torch-fidelity downloads and unpickles their weights with nothing checked once a file is cached; here a weights
file someone else wrote is untrusted. It is read once, its full SHA-256 is compared with a pinned digest, and
only those checked bytes are ever deserialised:

- CLIP: OpenAI publishes each file under its own SHA-256 (the URL's folder, which torch-fidelity pins in
  ``MODEL_METADATA``), so the full digest is known offline. The files are TorchScript archives, which torch's
  weights-only loader refuses, so after the digest matches, torch-fidelity's own ``torch.jit.load`` reads the
  checked bytes (it runs the archive's TorchScript: OpenAI's, byte for byte).
- DINOv2: Meta publishes no digest and its URLs carry none (torch.hub checks nothing for it). The user supplies
  the SHA-256 of the file they downloaded and trust; then the weights-only loader reads it. The architecture is
  the facebookresearch/dinov2 code that ``torch.hub.load`` runs (its ``hubconf.py`` and package), from the
  checkout torch.hub caches: that code is pinned the same way, by the SHA-256 of its files (``code_digest``),
  which the user sets in ``GAN_LIGHTNING_DINOV2_CODE_SHA256`` after reviewing the checkout; a checkout with any
  other digest is refused before any of it runs.

Nothing is downloaded: a missing file stops the run at start-up with one line naming the file, where it goes
and the URL torch-fidelity would fetch it from.
"""
import hashlib
import io
import os
import pickle
import sys
from pathlib import Path

import torch
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_clip import MODEL_METADATA as CLIP_METADATA
from torch_fidelity.feature_extractor_clip import MODEL_URLS as CLIP_URLS
from torch_fidelity.feature_extractor_clip import FeatureExtractorCLIP
from torch_fidelity.feature_extractor_dinov2 import MODEL_METADATA as DINOV2_HUB_NAMES
from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2

from gan_lightning.errors import ConfigError
from gan_lightning.metrics.weights import WeightsNotFoundError, hub_checkpoint_dir

DINOV2_REPO = "https://github.com/facebookresearch/dinov2"
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/{hub}/{hub}_pretrain.pth"  # what its hubconf downloads


def sha256_env(name: str) -> str:
    return f"GAN_LIGHTNING_SHA256_{name.upper()}"


def read_checked(file: Path, sha256: str, what: str) -> bytes:
    """The bytes of ``file`` if their SHA-256 is ``sha256``, else ``ConfigError``; nothing is deserialised."""
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256.lower():
        raise ConfigError(f"{what} weights file {file} has SHA-256 {digest}, not the pinned {sha256}: it is not "
                          "the published file; refusing to load it")
    return data


def weights_file(name: str, default: Path, url: str, path: str | None) -> Path:
    """``path`` if given, else ``default`` (in torch.hub's cache); ``WeightsNotFoundError`` naming both and the URL."""
    file = Path(path).expanduser() if path is not None else default
    if not file.is_file():
        raise WeightsNotFoundError(f"{name} weights file {file} not found: download {url} on a machine with internet "
                                   f"access and copy it to {default} (TORCH_HOME moves that folder)")
    return file


class TorchFidelityFeatures(nn.Module):
    """uint8 (B, 1 or 3, H, W) -> ((B, F) features, (B, 0) no logits) through one of torch-fidelity's extractors."""

    num_logits = 0

    def __init__(self, net: FeatureExtractorBase, num_features: int, size: int):
        super().__init__()
        self.net, self.num_features, self.size = net, num_features, size

    @property
    def resize(self) -> str:
        """How images reach the network's input size (part of the real statistics' cache key)."""
        return f"bilinear like TensorFlow 1 to {self.size}x{self.size} (torch-fidelity)"

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)  # grey -> RGB, as for Inception
        (features,) = self.net(images)
        return features, features.new_zeros(len(images), 0)


class CheckedDinoV2(FeatureExtractorDinoV2):
    """torch-fidelity's DINOv2 resize, normalisation and forward around a model built from checked weights
    (its own ``__init__`` fetches code and weights through torch.hub and checks neither)."""

    def __init__(self, name: str, model: nn.Module):
        FeatureExtractorBase.__init__(self, name, ["dinov2"])
        self.feature_extractor_internal_dtype = torch.float32
        self.model = model.float().eval()


def build_dinov2(name: str, weights: str | None = None, sha256: str | None = None) -> TorchFidelityFeatures:
    """DINOv2 ``name`` (e.g. ``dinov2_vit_l_14``) from the weights file whose SHA-256 the user pinned."""
    hub = DINOV2_HUB_NAMES[name.replace("_", "-")]  # dinov2_vitl14
    url, code = DINOV2_URL.format(hub=hub), Path(torch.hub.get_dir()) / "facebookresearch_dinov2_main"
    file = weights_file(name, hub_checkpoint_dir() / f"{hub}_pretrain.pth", url, weights)
    sha256 = sha256 or os.environ.get(sha256_env(name))
    if not sha256:
        raise ConfigError(f"{name}: no SHA-256 pinned for {file} (Meta publishes none): compute it where you trust the "
                          f"file (sha256sum {file.name}) and set {sha256_env(name)} to it")
    if not (code / "hubconf.py").is_file():
        raise WeightsNotFoundError(f"{name} needs the DINOv2 code that torch.hub runs, not found in {code}: "
                                   f"git clone {DINOV2_REPO} {code}")
    try:  # the digest is the user's: a second check that the file holds nothing but tensors
        state = torch.load(io.BytesIO(read_checked(file, sha256, name)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0]
        raise ConfigError(f"{name} weights file {file} holds more than tensors: torch's weights-only loader refused "
                          f"it ({reason}); refusing to load it") from None
    check_code(code)  # before any of it runs
    model = dinov2_architecture(code, hub)
    model.load_state_dict(state)
    return TorchFidelityFeatures(CheckedDinoV2(name.replace("_", "-"), model), model.embed_dim,
                                 FeatureExtractorDinoV2.INPUT_IMAGE_SIZE)


CODE_SHA256_ENV = "GAN_LIGHTNING_DINOV2_CODE_SHA256"


def code_digest(code: Path) -> str:
    """The SHA-256 of every file of a checkout but its ``.git`` folder, each as its relative path and its bytes (a
    symlink as its target's text, not followed), in sorted order: Python may run any of them (a ``.py``, a ``.so``
    beside it, a ``__pycache__/*.pyc`` whose header matches its source)."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(code, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files):
            path = Path(root) / name
            content = os.readlink(path).encode() if path.is_symlink() else path.read_bytes() if path.is_file() else b""
            digest.update(str(path.relative_to(code)).encode() + b"\0" + content + b"\0")
    return digest.hexdigest()


def check_code(code: Path) -> None:
    """The DINOv2 checkout runs only when its ``code_digest`` is the one the user pinned in ``CODE_SHA256_ENV``."""
    pinned, found = os.environ.get(CODE_SHA256_ENV, "").strip().lower(), code_digest(code)
    if pinned != found:
        said = f"is {found}, not the pinned {pinned}" if pinned else f"is {found}, and no digest is pinned"
        raise ConfigError(f"the DINOv2 code in {code} (its hubconf.py runs when loaded) {said}: review that "
                          f"checkout, then set {CODE_SHA256_ENV}={found} to run it")


def dinov2_architecture(code: Path, hub: str) -> nn.Module:
    """The untrained network ``hub`` (``dinov2_vitl14``) of the DINOv2 checkout ``code``, as torch-fidelity gets it."""
    xformers, bytecode = os.environ.get("XFORMERS_DISABLED"), sys.dont_write_bytecode
    os.environ["XFORMERS_DISABLED"] = "1"  # as torch-fidelity: the plain attention, on any machine
    sys.dont_write_bytecode = True  # no __pycache__ written into the checkout: its digest stays the pinned one
    try:
        return torch.hub.load(str(code), hub, source="local", pretrained=False)
    finally:
        sys.dont_write_bytecode = bytecode
        if xformers is None:
            os.environ.pop("XFORMERS_DISABLED")
        else:
            os.environ["XFORMERS_DISABLED"] = xformers


def build_clip(name: str, weights: str | None = None) -> TorchFidelityFeatures:
    """CLIP ``name`` (e.g. ``clip_vit_b_32``) from OpenAI's file, checked against the digest in its URL."""
    key = name.replace("_", "-")  # clip-vit-b-32
    sha256 = CLIP_METADATA[key]["hash"]
    file = weights_file(name, hub_checkpoint_dir() / f"{key}-{sha256}.pt", CLIP_URLS[key], weights)
    checked = io.BytesIO(read_checked(file, sha256, name))  # torch-fidelity's torch.jit.load reads these bytes only
    net = FeatureExtractorCLIP(key, ["clip"], feature_extractor_weights_path=checked)
    return TorchFidelityFeatures(net, net.model.visual.output_dim, net.resolution)
