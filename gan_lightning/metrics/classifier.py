"""A small Fashion-MNIST classifier, the offline feature extractor of the domain scores.

Frechet distance, Inception-style score and KID need a network that maps images to features and
class logits. Inception-v3 is what papers use; where its weights are not available (offline machines,
CI) and for 28x28 grey data, this classifier, trained on the dataset's own training set, stands in.
Its scores are *not* FID-Inception and are always logged under ``fashion_classifier`` names.

Re-train the shipped weights (about 5 minutes on 2 CPU cores; prints the test accuracy and SHA-256):

    python -m gan_lightning.metrics.classifier --data_dir data --epochs 10
"""
import argparse
import hashlib
import time
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS = "fashion_mnist_classifier.pt"
# SHA-256 of the shipped weights file; a file with another digest is refused (torch.load unpickles).
WEIGHTS_SHA256 = "41840ceb808b1fb08f7a55fb1936c00315e95a4cf1e3d4c682ffb307e735f62c"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class FashionClassifier(nn.Module):
    """uint8 (B, 1, 28, 28) -> (128-d features, 10 logits); 28 -> 14 -> 7 -> 3 spatially."""

    num_features = 128

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(*_conv(1, 32), *_conv(32, 32), nn.MaxPool2d(2),
                                  *_conv(32, 64), *_conv(64, 64), nn.MaxPool2d(2),
                                  *_conv(64, 128), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3),
                                  nn.Linear(128 * 3 * 3, self.num_features), nn.ReLU())
        self.head = nn.Linear(self.num_features, 10)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.dtype != torch.uint8:
            raise TypeError(f"the classifier takes uint8 images in [0, 255], got {images.dtype}")
        features = self.body(images.float() / 127.5 - 1.0)
        return features, self.head(features)


def load_classifier(path: Path | None = None, expected_sha256: str | None = WEIGHTS_SHA256) -> FashionClassifier:
    """The shipped (or given) weights in eval mode, after checking the file's SHA-256."""
    path = Path(path) if path else Path(str(resources.files("gan_lightning.metrics") / "weights" / WEIGHTS))
    if not path.is_file():
        raise FileNotFoundError(f"classifier weights {path} not found; re-train them with "
                                "`python -m gan_lightning.metrics.classifier --data_dir data`")
    if expected_sha256 is not None and (digest := sha256(path)) != expected_sha256:
        raise ValueError(f"classifier weights {path} have SHA-256 {digest}, expected {expected_sha256}: the file "
                         "is not the one this version ships; refusing to load it")
    net = FashionClassifier()
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(net: FashionClassifier, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
    net.eval()
    hits = sum((net(images[i:i + batch])[1].argmax(1) == labels[i:i + batch]).sum().item()
               for i in range(0, len(images), batch))
    return hits / len(images)


def train(data_dir: Path, epochs: int, seed: int, out: Path) -> None:
    from gan_lightning.data.sources import load_tensors

    torch.manual_seed(seed)
    x, y = load_tensors("fashion_mnist", data_dir, "train", download=False)
    x_test, y_test = load_tensors("fashion_mnist", data_dir, "test", download=False)
    net = FashionClassifier()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=5e-4)
    steps = epochs * (len(x) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    start = time.time()
    for epoch in range(epochs):
        net.train()
        for idx in torch.randperm(len(x)).split(128)[:len(x) // 128]:
            batch = x[idx]
            flip = torch.rand(len(idx)) < 0.5  # horizontal flips: clothes are left-right symmetric
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
            loss = F.cross_entropy(net(batch)[1], y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{epochs}: test accuracy {accuracy(net, x_test, y_test):.4f} "
              f"({time.time() - start:.0f} s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), SHA-256 {sha256(out)}; "
          f"final test accuracy {accuracy(net, x_test, y_test):.4f} on the 10,000 test images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, default=Path("data"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "weights" / WEIGHTS)
    args = parser.parse_args()
    train(args.data_dir, args.epochs, args.seed, args.out)


if __name__ == "__main__":
    main()
