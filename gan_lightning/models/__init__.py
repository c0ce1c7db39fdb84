"""One LightningModule per paper; ``base`` holds what the adversarial ones share."""
from gan_lightning.models.base import AdversarialModule
from gan_lightning.models.bigan import BiGAN

__all__ = ["AdversarialModule", "BiGAN"]
