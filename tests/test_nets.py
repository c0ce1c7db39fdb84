import pytest
import torch

from gan_lightning.nets import JointDiscriminator, MLPEncoder, MLPGenerator


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (2,)])
def test_network_shapes_and_ranges(shape):
    z_dim, batch = 5, 6
    G, E, D = MLPGenerator(z_dim, shape, 16), MLPEncoder(z_dim, shape, 16), JointDiscriminator(z_dim, shape, 16)
    z = torch.randn(batch, z_dim)
    x = G(z)
    assert x.shape == (batch, *shape)
    assert x.min() >= -1 and x.max() <= 1  # tanh output, the data's range
    assert E(x).shape == (batch, z_dim)
    assert D(x, z).shape == (batch,)


def test_joint_discriminator_depends_on_both_x_and_z():
    D = JointDiscriminator(3, (1, 8, 8), 16).eval()
    x, z = torch.randn(4, 1, 8, 8), torch.randn(4, 3)
    base = D(x, z)
    assert not torch.allclose(base, D(x, torch.randn(4, 3)))
    assert not torch.allclose(base, D(torch.randn(4, 1, 8, 8), z))
