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


@pytest.mark.parametrize("architecture,shape", [("dcgan", (1, 28, 28)), ("dcgan", (3, 32, 32)), ("dcgan", (3, 64, 64)),
                                                ("ali32", (3, 32, 32)), ("toy", (2,)), ("mlp", (1, 8, 8))])
def test_every_architecture_builds_the_four_networks(architecture, shape):
    from gan_lightning.nets import ARCHITECTURES

    nets, z_dim, width = ARCHITECTURES[architecture], 6, {"dcgan": 8, "ali32": 4, "toy": 20, "mlp": 16}[architecture]
    z = torch.randn(3, z_dim)
    x = nets.generator(z_dim, shape, width)(z)
    assert x.shape == (3, *shape)
    assert nets.encoder(2 * z_dim, shape, width)(x).shape == (3, 2 * z_dim)  # (mu, log sigma) for ALI
    assert nets.joint_discriminator(z_dim, shape, width, 0.2)(x, z).shape == (3,)
    if nets.discriminator is not None:
        assert nets.discriminator(shape, width, 0.0, True)(x).shape == (3,)


def test_conv_networks_refuse_unsupported_sizes_with_the_shape():
    from gan_lightning.nets import DCGANGenerator

    with pytest.raises(ValueError, match=r"\(3, 48, 48\)"):
        DCGANGenerator(8, (3, 48, 48))


def test_maxout_takes_the_max_of_its_pieces():
    from gan_lightning.nets.toy import Maxout

    layer = Maxout(2, 3, pieces=4)
    h = torch.randn(5, 2)
    pieces = layer.linear(h).view(5, 3, 4)
    assert torch.equal(layer(h), pieces.amax(dim=2))
