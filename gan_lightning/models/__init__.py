"""One LightningModule per paper; ``base`` holds what they share (players, noise, counters, EMA)."""
from gan_lightning.models.aae import AAE
from gan_lightning.models.ali import ALI, BiGAN
from gan_lightning.models.base import AdversarialModule
from gan_lightning.models.flow import RealNVP
from gan_lightning.models.gan import GAN
from gan_lightning.models.semi_supervised_aae import ClusteringAAE, SemiSupervisedAAE
from gan_lightning.models.vae import VAE

__all__ = ["AdversarialModule", "GAN", "ALI", "BiGAN", "VAE", "AAE", "SemiSupervisedAAE", "ClusteringAAE", "RealNVP"]
