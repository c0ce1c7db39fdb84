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


@pytest.mark.parametrize("architecture,shape", [("dcgan", (1, 28, 28)), ("dcgan", (3, 32, 32)),
                                                ("dcgan", (3, 64, 64)), ("ali", (3, 32, 32)), ("ali", (3, 64, 64)),
                                                ("toy", (2,)), ("mlp", (1, 8, 8))])
def test_every_architecture_builds_the_four_networks(architecture, shape):
    from gan_lightning.nets import ARCHITECTURES

    nets, z_dim, width = ARCHITECTURES[architecture], 6, {"dcgan": 8, "ali": 4, "toy": 20, "mlp": 16}[architecture]
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


@pytest.mark.parametrize("size,width,x_channels,g_channels,z_units,joint_units", [
    (32, 32, [32, 64, 128, 256, 512], [256, 128, 64, 32, 32, 32], 512, 1024),     # CIFAR-10 / SVHN table
    (64, 64, [64, 128, 256, 256, 512], [512, 256, 256, 128, 64], 1024, 2048),    # CelebA table
])
def test_ali_networks_follow_the_papers_tables(size, width, x_channels, g_channels, z_units, joint_units):
    from torch import nn

    from gan_lightning.nets.ali import ALIEncoder, ALIGenerator, ALIJointDiscriminator

    G, E = ALIGenerator(256, (3, size, size), width), ALIEncoder(512, (3, size, size), width)
    D = ALIJointDiscriminator(256, (3, size, size), width)

    def out(net, kind):
        return [m.out_channels for m in net.modules() if type(m) is kind]

    assert out(G, nn.ConvTranspose2d) + out(G, nn.Conv2d)[:-1] == g_channels
    assert out(E, nn.Conv2d) == x_channels and out(D.x_branch, nn.Conv2d) == x_channels
    assert [m.out_features for m in D.z_branch if isinstance(m, nn.Linear)] == [z_units, z_units]
    assert [m.out_features for m in D.joint if isinstance(m, nn.Linear)] == [joint_units, joint_units, 1]
    assert not isinstance(D.x_branch[1], nn.BatchNorm2d) and isinstance(E.net[1], nn.BatchNorm2d)  # no BN on D's first
    assert G(torch.randn(2, 256)).shape == (2, 3, size, size)
    with pytest.raises(ValueError, match="32x32.*64x64.*image_size"):
        ALIGenerator(8, (3, 48, 48))


@pytest.mark.parametrize("architecture,shape", [("dcgan", (1, 28, 28)), ("dcgan", (3, 32, 32)), ("toy", (2,)),
                                                ("mlp", (1, 8, 8))])
def test_every_discriminator_takes_dropout_and_batch_norm_as_named_and_tells_inputs_apart(architecture, shape):
    from gan_lightning.nets import ARCHITECTURES

    make = ARCHITECTURES[architecture].discriminator
    x = torch.randn(8, *shape)
    for batch_norm in (True, False):
        D = make(shape, 16, 0.0, batch_norm).train()  # dropout 0: training mode must not blank anything out
        assert D(x).std() > 0, "D gives every input the same logit in training mode"
        norms = [m for m in D.modules() if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
        if architecture != "toy":  # the maxout D has no batch norm at all
            assert bool(norms) == batch_norm
        assert all(m.p == 0.0 for m in D.modules() if isinstance(m, torch.nn.Dropout))
