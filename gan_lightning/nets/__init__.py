"""Plain ``nn.Module`` networks: they know shapes and return raw logits; no losses, no Lightning.

An *architecture* is a family of the four networks the models need, built from one width:
``generator(latent_dim, data_shape, width)``, ``encoder(out_dim, data_shape, width)``,
``discriminator(data_shape, width, dropout, batch_norm)`` and
``joint_discriminator(latent_dim, data_shape, width, dropout)``.
"""
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from gan_lightning.nets.ali import ALIEncoder, ALIGenerator, ALIJointDiscriminator, ALIMaxoutJointDiscriminator
from gan_lightning.nets.conv import DCGANDiscriminator, DCGANEncoder, DCGANGenerator, DCGANJointDiscriminator
from gan_lightning.nets.latent import LatentDiscriminator
from gan_lightning.nets.mlp import JointDiscriminator, MLPDiscriminator, MLPEncoder, MLPGenerator
from gan_lightning.nets.toy import MaxoutDiscriminator, ToyEncoder, ToyGenerator

ArchitectureName = Literal["mlp", "dcgan", "ali", "ali_cifar10", "toy"]


@dataclass(frozen=True)
class Architecture:
    generator: Callable[..., nn.Module]
    encoder: Callable[..., nn.Module]
    discriminator: Callable[..., nn.Module] | None
    joint_discriminator: Callable[..., nn.Module]


ARCHITECTURES: dict[str, Architecture] = {
    # BiGAN's MNIST MLPs; width = hidden units
    "mlp": Architecture(MLPGenerator, MLPEncoder,
                        lambda shape, w, dropout, batch_norm: MLPDiscriminator(shape, w, dropout, batch_norm),
                        JointDiscriminator),
    # DCGAN for 28x28, 32x32, 64x64; width = channels at the finest resolution
    "dcgan": Architecture(DCGANGenerator, DCGANEncoder,
                          lambda shape, w, dropout, batch_norm: DCGANDiscriminator(shape, w, batch_norm, dropout),
                          DCGANJointDiscriminator),
    # the ALI paper's networks: CIFAR-10 / SVHN at 32x32 (width 32), CelebA at 64x64 (width 64)
    "ali": Architecture(ALIGenerator, ALIEncoder, None, ALIJointDiscriminator),
    # ALI's released CIFAR-10 model: the 32x32 table with leaky ReLU 0.1 in G and E, and a maxout D without batch norm
    "ali_cifar10": Architecture(functools.partial(ALIGenerator, leak=0.1), functools.partial(ALIEncoder, leak=0.1),
                                None, ALIMaxoutJointDiscriminator),
    # 2-D mixtures: G and E of `width` units (400), maxout D of width // 2 units (200) x 5 pieces
    "toy": Architecture(ToyGenerator, ToyEncoder,
                        lambda shape, w, dropout, batch_norm: MaxoutDiscriminator(shape, 0, w // 2, dropout=dropout),
                        lambda z_dim, shape, w, dropout: MaxoutDiscriminator(shape, z_dim, w // 2, dropout=dropout)),
}

__all__ = ["ARCHITECTURES", "Architecture", "ArchitectureName", "MLPGenerator", "MLPEncoder", "MLPDiscriminator",
           "JointDiscriminator", "DCGANGenerator", "DCGANEncoder", "DCGANDiscriminator", "DCGANJointDiscriminator",
           "ALIGenerator", "ALIEncoder", "ALIJointDiscriminator", "ALIMaxoutJointDiscriminator", "ToyGenerator",
           "ToyEncoder",
           "MaxoutDiscriminator", "LatentDiscriminator"]
