"""One LightningModule per paper; ``base`` holds what the adversarial ones share."""
from gan_lightning.models.ali import ALI, BiGAN
from gan_lightning.models.base import AdversarialModule
from gan_lightning.models.gan import GAN

__all__ = ["AdversarialModule", "GAN", "ALI", "BiGAN"]
