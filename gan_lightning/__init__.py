"""gan_lightning: adversarial generative models with inference, on PyTorch Lightning."""
__version__ = "0.1.0"
