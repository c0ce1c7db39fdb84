"""How the papers' released code starts its networks, in one place, applied with ``network.apply(...)``.

Every model takes two options that route here (see ``AdversarialModule``): ``init_std`` and ``bn_momentum``.

- ``init_std``: the Theano/Blocks codebases draw every weight from an isotropic Gaussian and set biases to 0
  (``IsotropicGaussian(std)``, ``Constant(0)``): ALI's CIFAR-10, SVHN and CelebA experiments use std 0.01
  (``experiments/ali_*.py``), PacGAN's toy experiments and BiGAN's ``net.py`` 0.02. Batch norm keeps its
  own start (scale 1, shift 0), as Blocks' and BiGAN's batch-norm bricks do. None: torch's default.
- ``bn_momentum``: Blocks averages batch-norm population statistics as ``m * 0.05 + p * 0.95`` per batch
  (ALI's and PacGAN's ``bn_updates``), which is torch's ``momentum=0.05``; torch's default is 0.1.
"""
import functools

from torch import nn

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)


def isotropic_gaussian_init(module: nn.Module, std: float) -> None:
    """Blocks' ``IsotropicGaussian(std)`` weights and ``Constant(0)`` biases; batch norm: scale 1, shift 0."""
    if isinstance(module, LAYERS):
        nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def radford_init(module: nn.Module) -> None:
    """DCGAN's initialisation (Radford et al. 2016; also InfoGAN's released code): the isotropic N(0, 0.02) start
    with zero biases, and batch-norm scales ~ N(1, 0.02)."""
    isotropic_gaussian_init(module, 0.02)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)


def initialise(network: nn.Module, std: float | None = None, bn_momentum: float | None = None) -> None:
    """Start ``network`` as a paper's code does: weights ~ N(0, std) and zero biases (``std`` None: leave torch's
    default), and batch norm's population statistics averaged with ``bn_momentum`` (None: torch's 0.1)."""
    if std is not None:
        network.apply(functools.partial(isotropic_gaussian_init, std=std))
    if bn_momentum is not None:
        for m in network.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = bn_momentum
