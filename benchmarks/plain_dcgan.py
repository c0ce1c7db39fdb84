"""A plain PyTorch DCGAN loop, the baseline beside the framework's GAN row in the results table.

Radford et al. 2016 as their code trains it, on the framework's own DCGAN networks and data split so that only
the training loop differs: weights drawn from N(0, 0.02) (batch-norm scales from N(1, 0.02), biases 0), Adam 2e-4
with beta1 0.5, batch 128, the non-saturating generator loss, D then G on every batch, no moving average. The
data are ``configs/gan.yaml``'s (Fashion-MNIST's training split less its seeded 10 % validation fraction, in
[-1, 1]), in a fresh random order each epoch. Writes a checkpoint that ``python -m gan_lightning evaluate`` and
``sample`` read like any ``fit`` checkpoint (a ``GAN`` without EMA), so that it is scored exactly as the
framework's runs are.

    python benchmarks/plain_dcgan.py --epochs 5 --out /tmp/plain/checkpoints/last.ckpt
"""
import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gan_lightning.data import GANDataModule
from gan_lightning.data.datamodule import to_model_range
from gan_lightning.models import GAN
from gan_lightning.nets.init import radford_init


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit_train_batches", type=int, default=None, help="iterations per epoch (tests)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="the checkpoint to write")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = GANDataModule("fashion_mnist", data_dir=args.data_dir, batch_size=args.batch_size, val_fraction=0.1,
                         seed=args.seed, on_device=False, num_workers=0)
    data.setup("fit")
    x_train = to_model_range(data._tensors("train")[0])  # uint8 -> [-1, 1], as the framework's loader
    model = GAN(data_shape=tuple(x_train.shape[1:]), latent_dim=100, architecture="dcgan", width=64, seed=args.seed)
    x_train, model = x_train.to(args.device), model.to(args.device)
    G, D = model.generator, model.discriminator
    G.apply(radford_init)
    D.apply(radford_init)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ones = lambda t: torch.ones_like(t)  # noqa: E731

    iterations, start = 0, time.perf_counter()
    batches = len(x_train) // args.batch_size  # full batches, as the framework's loader (drop_last)
    for epoch in range(args.epochs):
        order = torch.randperm(len(x_train)).to(args.device)
        for b in range(min(batches, args.limit_train_batches or batches)):
            x = x_train[order[b * args.batch_size:(b + 1) * args.batch_size]]
            z = torch.randn(len(x), 100, device=args.device)
            x_fake = G(z)
            # D: log D(x) + log(1 - D(G(z)))
            d_real, d_fake = D(x), D(x_fake.detach())
            d_loss = F.binary_cross_entropy_with_logits(d_real, ones(d_real)) + \
                F.binary_cross_entropy_with_logits(d_fake, 1 - ones(d_fake))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # G: -log D(G(z)) against the updated D
            d_fake = D(x_fake)
            g_loss = F.binary_cross_entropy_with_logits(d_fake, ones(d_fake))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            iterations += 1
        print(f"epoch {epoch}: {iterations} iterations, d_loss {d_loss.item():.3f}, g_loss {g_loss.item():.3f}, "
              f"{time.perf_counter() - start:.0f} s", flush=True)

    hparams = {**dict(model.hparams), "_class_path": "gan_lightning.models.GAN"}
    checkpoint = {"state_dict": model.cpu().state_dict(), "hyper_parameters": hparams,
                  "datamodule_hyper_parameters": {k: v for k, v in dict(data.hparams).items() if k != "_class_path"},
                  "gan_lightning": {"model": "GAN", "iteration": iterations,
                                    "images_seen": iterations * args.batch_size}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, args.out)
    print(f"wrote {args.out}: {iterations} iterations in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
