"""Weight initialisations from the papers, applied with ``network.apply(...)``."""
from torch import nn


def radford_init(module: nn.Module) -> None:
    """DCGAN's initialisation (Radford et al. 2016; also InfoGAN's released code): conv and linear weights
    ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
