"""DINOv2 and CLIP extractors: offline only, every file checked by full SHA-256 before anything reads it."""
import hashlib
import io
import os
import re

import pytest
import torch
from torch import nn

from gan_lightning.errors import ConfigError
from gan_lightning.metrics import dinov2_clip
from gan_lightning.metrics.features import (
    CLIP_EXTRACTORS,
    DINOV2_EXTRACTORS,
    SCORE_NAMES,
    WeightsNotFoundError,
    build_extractor,
)
from gan_lightning.metrics.image_scores import ImageScores


class RunsCode:
    """Unpickled by a full unpickler, this creates the file ``marker``: the shape of any code a pickle can run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def crafted_file(path, marker) -> None:
    """A weights file that runs code when unpickled; checks that it does, or the tests would prove nothing."""
    probe = marker.with_name(marker.name + "_probe")
    torch.save({"payload": RunsCode(probe)}, probe.with_suffix(".pth"))
    torch.load(probe.with_suffix(".pth"), weights_only=False)  # what torch.hub's loader does with a cached file
    assert probe.exists(), "the crafted payload does not run code"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"pos_embed": torch.zeros(1), "payload": RunsCode(marker)}, path)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub"


def sha256_of(file) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()


def one_line(err) -> str:
    message = str(err)
    assert "\n" not in message, message
    return message


def test_our_names_are_torch_fidelitys():
    from torch_fidelity.feature_extractor_clip import MODEL_METADATA as clip
    from torch_fidelity.feature_extractor_dinov2 import MODEL_METADATA as dinov2

    assert [n.replace("_", "-") for n in DINOV2_EXTRACTORS] == list(dinov2)
    assert [n.replace("_", "-") for n in CLIP_EXTRACTORS] == list(clip)
    for name in DINOV2_EXTRACTORS + CLIP_EXTRACTORS:  # every score names its extractor, and none is an IS
        assert set(SCORE_NAMES[name]) == {"fid", "kid", "precision", "recall"}
        assert all(score.endswith(name) for score in SCORE_NAMES[name].values())


# --- missing files: one line naming the file, where it goes and where it comes from -------------------------

def test_missing_clip_weights_name_the_file_the_folder_and_the_url(torch_home):
    with pytest.raises(WeightsNotFoundError) as err:
        build_extractor("clip_vit_b_32")
    digest = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
    expected = torch_home / "checkpoints" / f"clip-vit-b-32-{digest}.pt"
    assert str(expected) in one_line(err.value)
    assert f"https://openaipublic.azureedge.net/clip/models/{digest}/ViT-B-32.pt" in str(err.value)


def test_missing_dinov2_weights_name_the_file_the_folder_and_the_url(torch_home):
    with pytest.raises(WeightsNotFoundError) as err:
        build_extractor("dinov2_vit_l_14")
    assert str(torch_home / "checkpoints" / "dinov2_vitl14_pretrain.pth") in one_line(err.value)
    assert "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth" in str(err.value)


def test_dinov2_without_a_pinned_digest_says_how_to_pin_one(torch_home, monkeypatch):
    monkeypatch.delenv("GAN_LIGHTNING_SHA256_DINOV2_VIT_S_14", raising=False)
    file = torch_home / "checkpoints" / "dinov2_vits14_pretrain.pth"
    file.parent.mkdir(parents=True)
    torch.save({"w": torch.zeros(1)}, file)
    with pytest.raises(ConfigError, match=r"no SHA-256 pinned.*sha256sum dinov2_vits14_pretrain\.pth.*"
                                          r"GAN_LIGHTNING_SHA256_DINOV2_VIT_S_14") as err:
        build_extractor("dinov2_vit_s_14")
    one_line(err.value)


def test_dinov2_without_its_code_says_where_to_clone_it(torch_home, tmp_path):
    file = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1)}, file)
    with pytest.raises(WeightsNotFoundError, match=re.escape(
            f"git clone https://github.com/facebookresearch/dinov2 {torch_home / 'facebookresearch_dinov2_main'}")):
        build_extractor("dinov2_vit_s_14", weights=str(file), sha256=sha256_of(file))


# --- refusals: a file with other contents is never unpickled ------------------------------------------------

def test_a_clip_file_that_is_not_openais_is_refused_before_it_is_unpickled(torch_home, tmp_path):
    digest = dinov2_clip.CLIP_METADATA["clip-vit-b-32"]["hash"]
    crafted, ran = torch_home / "checkpoints" / f"clip-vit-b-32-{digest}.pt", tmp_path / "ran"
    crafted_file(crafted, ran)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(crafted))} has SHA-256 [0-9a-f]{{64}}, not the pinned "
                                          rf"{digest}.*refusing") as err:
        build_extractor("clip_vit_b_32")
    one_line(err.value)
    assert not ran.exists(), "the crafted CLIP file ran its code"


def test_a_dinov2_file_with_another_digest_is_refused_before_it_is_unpickled(torch_home, tmp_path, monkeypatch):
    crafted, ran = torch_home / "checkpoints" / "dinov2_vits14_pretrain.pth", tmp_path / "ran"
    crafted_file(crafted, ran)
    monkeypatch.setenv("GAN_LIGHTNING_SHA256_DINOV2_VIT_S_14", "ab" * 32)
    fake_dinov2_checkout(torch_home / "facebookresearch_dinov2_main")
    with pytest.raises(ConfigError, match=rf"SHA-256 [0-9a-f]{{64}}, not the pinned {'ab' * 32}"):
        build_extractor("dinov2_vit_s_14")
    assert not ran.exists(), "the crafted DINOv2 file ran its code"


def test_a_file_matching_only_a_prefix_of_the_digest_is_refused(tmp_path, monkeypatch):
    """torch.hub checks a prefix (8 hex digits: about 2**32 tries craft a match); the pinned digest is checked whole."""
    file, ran = tmp_path / "ViT-B-32.pt", tmp_path / "ran"
    crafted_file(file, ran)
    digest = sha256_of(file)
    near = digest[:60] + ("0000" if digest[60:] != "0000" else "1111")
    monkeypatch.setitem(dinov2_clip.CLIP_METADATA["clip-vit-b-32"], "hash", near)
    with pytest.raises(ConfigError, match=f"not the pinned {near}"):
        build_extractor("clip_vit_b_32", weights=str(file))
    assert not ran.exists()


def test_a_dinov2_file_holding_code_is_refused_even_with_its_own_digest_pinned(torch_home, tmp_path):
    crafted, ran = tmp_path / "crafted.pth", tmp_path / "ran"
    crafted_file(crafted, ran)
    fake_dinov2_checkout(torch_home / "facebookresearch_dinov2_main")
    with pytest.raises(ConfigError, match=r"holds more than tensors.*weights-only.*refusing") as err:
        build_extractor("dinov2_vit_s_14", weights=str(crafted), sha256=sha256_of(crafted))
    one_line(err.value)
    assert not ran.exists(), "the crafted DINOv2 file ran its code"


# --- files that pass: torch-fidelity's preprocessing around the checked weights ------------------------------

class _Root(nn.Module):
    def forward(self, x):
        return x


def clip_archive(embed_dim: int = 8) -> bytes:
    """A TorchScript archive shaped like OpenAI's CLIP files (a 16x16 ViT with one block), random weights."""
    from torch_fidelity.feature_extractor_clip import CLIPVisual

    state = {**CLIPVisual(embed_dim, 16, 1, 64, 8).state_dict(), "text_projection": torch.zeros(4, embed_dim)}
    root = _Root()
    for key, value in state.items():
        *path, leaf = key.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(root), buffer)
    return buffer.getvalue()


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
def test_a_clip_file_with_the_pinned_digest_loads_and_scores_without_an_inception_score(tmp_path, monkeypatch):
    file = tmp_path / "ViT-B-32.pt"
    file.write_bytes(clip_archive())
    monkeypatch.setitem(dinov2_clip.CLIP_METADATA["clip-vit-b-32"], "hash", sha256_of(file))
    extractor = build_extractor("clip_vit_b_32", weights=str(file))
    features, logits = extractor(torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8))  # grey, any size
    assert features.shape == (3, 8) and logits.shape == (3, 0) and extractor.num_features == 8
    assert "16x16" in extractor.resize
    with pytest.raises(ValueError, match="Inception score needs class logits, which clip_vit_b_32 does not give"):
        ImageScores(extractor, "clip_vit_b_32", ["fid", "is"])
    scores = ImageScores(extractor, "clip_vit_b_32", ["fid", "kid", "prc"], kid_subsets=2, kid_subset_size=20)
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (40, 3, 32, 32), generator=g, dtype=torch.uint8)
    scores.load_real(lambda: real.split(20), {"dataset": "test"}, cache_dir=None)
    assert all(v != v for v in scores.real.inception_score)  # no logits: NaN, not the 1.0 of zero classes
    scores.add_fake(torch.randint(0, 128, (40, 3, 32, 32), generator=g, dtype=torch.uint8))
    out = scores.compute()
    assert list(out) == ["fd_clip_vit_b_32", "kid_clip_vit_b_32", "kid_clip_vit_b_32_std", "precision_clip_vit_b_32",
                         "recall_clip_vit_b_32"]
    assert all(v == v for v in out.values()), out  # no NaN
    floor = scores.floor(scores.real)
    assert list(floor) == ["fd_clip_vit_b_32_floor"] and abs(floor["fd_clip_vit_b_32_floor"]) < 1e-3


class TinyViT(nn.Module):
    """Stands in for DINOv2 (B, 3, 224, 224) -> (B, 6): what its hubconf returns, its ``embed_dim`` included."""

    embed_dim = 6

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 6, 14, 14)

    def forward(self, x):
        return self.patch(x).mean((2, 3))


def fake_dinov2_checkout(folder, ran=None) -> str:
    """A folder shaped like the facebookresearch/dinov2 checkout: a hubconf.py with dinov2_vits14(pretrained), which
    writes ``ran`` when it runs; returns the checkout's code digest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hubconf.py").write_text(
        "import os\nfrom pathlib import Path\nfrom tests.test_extractors import TinyViT\n\n\n"
        "def dinov2_vits14(pretrained=True):\n"
        "    assert not pretrained, 'the checked weights are loaded by gan_lightning, never by the hub code'\n"
        "    assert os.environ['XFORMERS_DISABLED'] == '1'\n"
        f"    {'Path(' + repr(str(ran)) + ').write_text(chr(120))' if ran else 'pass'}\n"
        "    return TinyViT()\n")
    return dinov2_clip.code_digest(folder)


def test_a_dinov2_file_with_the_pinned_digest_loads_into_the_hub_architecture(torch_home, monkeypatch):
    monkeypatch.setenv(dinov2_clip.CODE_SHA256_ENV, fake_dinov2_checkout(torch_home / "facebookresearch_dinov2_main"))
    state = TinyViT().state_dict()
    file = torch_home / "checkpoints" / "dinov2_vits14_pretrain.pth"
    file.parent.mkdir(parents=True)
    torch.save(state, file)
    monkeypatch.setenv("GAN_LIGHTNING_SHA256_DINOV2_VIT_S_14", sha256_of(file).upper())
    monkeypatch.delenv("XFORMERS_DISABLED", raising=False)
    extractor = build_extractor("dinov2_vit_s_14")
    assert "XFORMERS_DISABLED" not in os.environ  # set for the hub code only
    for key, value in state.items():
        assert torch.equal(extractor.net.model.state_dict()[key], value), key
    features, logits = extractor(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8))
    assert features.shape == (2, 6) and logits.shape == (2, 0) and extractor.num_features == 6


@pytest.mark.parametrize("pinned", [None, "ab" * 32])
def test_a_dinov2_checkout_whose_code_digest_is_not_pinned_never_runs(torch_home, tmp_path, monkeypatch, pinned):
    """torch.hub.load runs the checkout's hubconf.py: the checkout is pinned by the digest of its Python files, as
    the weights are by theirs, and refused (naming the digest it has) before any of it runs."""
    ran = tmp_path / "ran"
    digest = fake_dinov2_checkout(torch_home / "facebookresearch_dinov2_main", ran)
    file = torch_home / "checkpoints" / "dinov2_vits14_pretrain.pth"
    file.parent.mkdir(parents=True)
    torch.save(TinyViT().state_dict(), file)
    monkeypatch.setenv("GAN_LIGHTNING_SHA256_DINOV2_VIT_S_14", sha256_of(file))
    if pinned:
        monkeypatch.setenv(dinov2_clip.CODE_SHA256_ENV, pinned)
    else:
        monkeypatch.delenv(dinov2_clip.CODE_SHA256_ENV, raising=False)
    with pytest.raises(ConfigError, match=rf"DINOv2 code .* is {digest}.*set {dinov2_clip.CODE_SHA256_ENV}={digest}"):
        build_extractor("dinov2_vit_s_14")
    assert not ran.exists(), "the checkout's hubconf.py ran"
    monkeypatch.setenv(dinov2_clip.CODE_SHA256_ENV, digest)
    build_extractor("dinov2_vit_s_14")
    assert ran.exists()


def test_evaluate_offers_precision_recall_and_every_extractor():
    from gan_lightning.commands import parser

    for name in SCORE_NAMES:
        args = parser("evaluate").parse_args(["--ckpt_path", "x.ckpt", "--metrics", "fid", "prc",
                                              "--feature_extractor", name])
        assert args.metrics == ["fid", "prc"] and args.feature_extractor == name
