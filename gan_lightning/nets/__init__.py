"""Plain ``nn.Module`` networks: they know shapes and return raw logits; no losses, no Lightning."""
from gan_lightning.nets.mlp import JointDiscriminator, MLPEncoder, MLPGenerator

__all__ = ["MLPGenerator", "MLPEncoder", "JointDiscriminator"]
