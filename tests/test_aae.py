"""Adversarial autoencoders: each phase updates only its own players, the priors sample what they claim, labels
reach D_z or the decoder as the variant says, semi-supervised training beats chance, DDP equals one process."""
import math

import pytest
import torch
import torch.nn.functional as F

from gan_lightning.callbacks import StyleGrid
from gan_lightning.errors import ConfigError
from gan_lightning.metrics.clustering import LabelContingency
from gan_lightning.models import AAE, ClusteringAAE, SemiSupervisedAAE
from gan_lightning.priors import GaussianMixturePrior, GaussianPrior, SwissRollPrior, make_prior
from tests.helpers import digits, tiny_trainer

SMALL = {"data_shape": (1, 8, 8), "width": 32, "discriminator_width": 32}


def tiny_aae(**kwargs) -> AAE:
    return AAE(**{**SMALL, "latent_dim": 2, "prior": "mixture", **kwargs})


def tiny_semi(**kwargs) -> SemiSupervisedAAE:
    return SemiSupervisedAAE(**{**SMALL, "latent_dim": 3, **kwargs})


def record_phases(model) -> list[tuple[str, set[str]]]:
    """Wrap ``model.step`` to record, per update, the player and the networks whose parameters changed."""
    phases, step = [], model.step

    def recording_step(optimizer, loss, player):
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        step(optimizer, loss, player)
        changed = {name.split(".")[0] for name, p in model.named_parameters() if not torch.equal(before[name], p)}
        phases.append((player, changed))

    model.step = recording_step
    return phases


# --- phases ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, data, expected", [
    (lambda: tiny_aae(), lambda: digits(),
     [("autoencoder", {"encoder", "generator"}), ("discriminator", {"discriminator"}), ("encoder", {"encoder"})]),
    (lambda: tiny_aae(objective="joint"), lambda: digits(),
     [("discriminator", {"discriminator"}), ("autoencoder", {"encoder", "generator"})]),
    (lambda: tiny_semi(), lambda: digits(n_labelled=50),
     [("autoencoder", {"encoder", "generator"}), ("discriminator", {"discriminator_y", "discriminator_z"}),
      ("encoder", {"encoder"}), ("classifier", {"encoder"})]),
    (lambda: tiny_semi(cluster_heads=True, latent_dim=2), lambda: digits(n_labelled=50),
     [("autoencoder", {"encoder", "generator", "heads"}), ("discriminator", {"discriminator_y", "discriminator_z"}),
      ("encoder", {"encoder"}), ("classifier", {"encoder"})]),
    (lambda: ClusteringAAE(**SMALL, n_classes=5), lambda: digits(),
     [("autoencoder", {"encoder", "generator"}), ("discriminator", {"discriminator_y", "discriminator_z"}),
      ("encoder", {"encoder"})]),
], ids=["aae", "su_joint", "semi_supervised", "dimensionality_reduction", "clustering"])
def test_each_phase_updates_only_its_own_players_in_the_papers_order(tmp_path, model, data, expected):
    model = model()
    phases = record_phases(model)
    tiny_trainer(tmp_path, limit_train_batches=1).fit(model, data())
    assert phases == expected


def test_n_critic_steps_the_encoder_phase_every_nth_iteration(tmp_path):
    model = tiny_aae(n_critic=2)
    phases = record_phases(model)
    tiny_trainer(tmp_path, limit_train_batches=2).fit(model, digits())
    assert [player for player, _ in phases] == ["autoencoder", "discriminator"] + ["autoencoder", "discriminator",
                                                                                   "encoder"]


def test_su_joint_objective_weights_the_reconstruction_by_lambda(tmp_path):
    """With lambda = 0 only -log D_z(E(x)) is left, which does not involve G: the decoder must not move."""
    model = tiny_aae(objective="joint", joint_lambda=0.0)
    phases = record_phases(model)
    tiny_trainer(tmp_path, limit_train_batches=1).fit(model, digits())
    assert phases == [("discriminator", {"discriminator"}), ("autoencoder", {"encoder"})]


# --- priors -------------------------------------------------------------------------------------------

def test_gaussian_prior_has_the_std_it_claims():
    z = GaussianPrior(8, std=5.0).sample(20_000, torch.Generator().manual_seed(0))
    assert z.mean(0).abs().max() < 0.15 and (z.std(0) - 5.0).abs().max() < 0.15


def test_mixture_prior_draws_each_component_equally_and_labels_pick_their_component():
    prior = GaussianMixturePrior(10)
    z = prior.sample(50_000, torch.Generator().manual_seed(0))
    nearest = torch.cdist(z, prior.means()).argmin(1)
    frequencies = torch.bincount(nearest, minlength=10) / len(z)
    assert (frequencies - 0.1).abs().max() < 0.01
    k = torch.arange(10).repeat(500)
    z = prior.sample(len(k), torch.Generator().manual_seed(1), k=k)
    assert (torch.cdist(z, prior.means()).argmin(1) == k).float().mean() > 0.99
    # Component 0 lies along the x axis: std 0.5 along the radius, 0.05 across it.
    first = z[k == 0]
    assert abs(first[:, 0].mean() - 1.4) < 0.06 and abs(first[:, 0].std() - 0.5) < 0.05
    assert abs(first[:, 1].std() - 0.05) < 0.01


def test_swiss_roll_label_picks_its_segment_of_the_roll():
    prior = SwissRollPrior(10)
    k = torch.arange(10).repeat(300)
    z = prior.sample(len(k), torch.Generator().manual_seed(0), k=k)
    radius = z.norm(dim=1)   # r = 3 sqrt(u), u in [k/10, (k+1)/10)
    low, high = 3 * (k / 10).sqrt(), 3 * ((k + 1) / 10).sqrt()
    assert ((radius >= low - 1e-5) & (radius <= high + 1e-5)).all()
    unlabelled = prior.sample(20_000, torch.Generator().manual_seed(1), k=torch.full((20_000,), -1))
    u = (unlabelled.norm(dim=1) / 3) ** 2           # the whole roll: u ~ U[0, 1)
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005


def test_2d_priors_refuse_other_latent_sizes_naming_the_option():
    with pytest.raises(ValueError, match="latent_dim to 2"):
        make_prior("swiss_roll", 8)
    with pytest.raises(ValueError, match="mixture or swiss_roll"):
        tiny_aae(prior="gaussian", latent_dim=4, conditioning="prior")


# --- labels: the conditioned prior, the supervised decoder, the labelled subset -------------------------

def test_label_conditioned_prior_gives_labelled_codes_their_component_and_d_z_the_one_hot(tmp_path):
    model = tiny_aae(conditioning="prior")
    model.seed_iteration(0)
    y = torch.tensor([3, -1, 7, -1] * 250)
    z = model.draw_training_latent(y)
    nearest = torch.cdist(z, model.latent_prior.means()).argmin(1)
    assert (nearest[y >= 0] == y[y >= 0]).float().mean() > 0.99
    assert len(set(nearest[y < 0].tolist())) == 10  # unlabelled: the whole mixture
    condition = model.prior_condition(torch.tensor([3, -1]))
    assert condition.tolist() == [F.one_hot(torch.tensor(3), 11).tolist(), F.one_hot(torch.tensor(10), 11).tolist()]


def test_supervised_decoder_reads_the_label_and_asks_for_it():
    model = tiny_aae(latent_dim=3, prior="gaussian", conditioning="decoder").eval()
    z = torch.randn(4, 3)
    a, b = model.generate(z, torch.zeros(4, dtype=torch.long)), model.generate(z, torch.ones(4, dtype=torch.long))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="label"):
        model.decode(z, torch.tensor([0, -1, 2, 3]))
    with pytest.raises(ValueError, match="conditioning decoder"):
        tiny_aae().generate(torch.randn(2, 2), torch.zeros(2, dtype=torch.long))


def test_style_grid_refuses_a_decoder_without_classes(tmp_path):
    with pytest.raises(ConfigError, match="StyleGrid"):
        StyleGrid().setup(None, tiny_aae(), "fit")


def test_labelled_subset_is_class_balanced_and_the_rest_of_the_training_labels_are_hidden():
    data = digits(n_labelled=50)
    data.setup()
    x, y = data.labelled_subset()
    assert len(y) == 50 and torch.bincount(y, minlength=10).tolist() == [5] * 10
    assert x.min() >= -1 and x.max() <= 1
    _, served = data.train_dataloader().dataset.tensors   # the labels training batches are drawn from
    true = data._tensors("train")[1]
    assert (served >= 0).sum() == 50 and (served >= -1).all()
    assert torch.equal(served[served >= 0], true[served >= 0]) and torch.equal(served[data.labelled_indices()], y)
    again = digits(n_labelled=50)
    again.setup()
    assert torch.equal(again.labelled_indices(), data.labelled_indices())  # the same subset on resume


def test_labelled_subset_errors_name_the_option():
    data = digits(n_labelled=100_000)
    with pytest.raises(ValueError, match="data.n_labelled"):
        data.setup()
    with pytest.raises(ValueError, match="n_labelled must be >= 0"):
        digits(n_labelled=-1)


# --- evaluation -----------------------------------------------------------------------------------

def test_majority_cluster_accuracy_maps_each_cluster_to_its_majority_label():
    """The figure beside the paper's (tests/test_cluster_error.py): labelled by the scored examples' majority."""
    table = LabelContingency(num_clusters=3, num_labels=2)
    clusters = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 0])
    labels = torch.tensor([1, 1, 0, 0, 0, 1, 0, 0, -1, -1])  # -1: unlabelled, not counted
    table.update(clusters, labels)
    # cluster 0: labels 1, 1, 0 -> 2 right; cluster 1: 0, 0 -> 2; cluster 2: 1, 0, 0 -> 2: 6 of 8
    assert table.compute()["cluster_accuracy_majority"] == pytest.approx(6 / 8)
    square = LabelContingency(2, 2)
    square.update(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]))
    assert square.compute()["accuracy"] == pytest.approx(3 / 4)


def test_cluster_heads_cost_penalises_heads_closer_than_the_margin():
    model = tiny_semi(n_classes=3, latent_dim=2, cluster_heads=True, head_margin=2.0)
    with torch.no_grad():
        model.heads.weight.copy_(torch.tensor([[0.0, 1.0, 5.0], [0.0, 0.0, 0.0]]))  # heads at x = 0, 1, 5
    assert model.head_distance_cost().item() == pytest.approx(1.0)  # only |0 - 1| < 2, by 1
    code = model.code(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, -0.5]]))
    assert code.tolist() == [[5.5, -0.5]]  # W y + z


@pytest.mark.slow
def test_semi_supervised_training_with_100_labels_beats_chance_on_the_test_set(tmp_path):
    torch.manual_seed(0)
    model = tiny_semi(width=64, latent_dim=4)
    data = digits(batch_size=32, n_labelled=100, on_device=True)
    trainer = tiny_trainer(tmp_path, max_epochs=8, limit_train_batches=None)
    untrained = trainer.test(model, data, verbose=False)[0]["test/error"]
    trainer.fit(model, data)
    error = trainer.test(model, data, verbose=False)[0]["test/error"]
    assert error < 0.5 < untrained, f"test error {untrained:.3f} -> {error:.3f} (chance: 0.9)"


def test_aae_evaluates_and_exposes_sample_encode_reconstruct():
    model = tiny_aae().eval()
    x = torch.rand(6, 1, 8, 8) * 2 - 1
    logs = model.evaluate(x, 0, "val")
    assert set(logs) == {"val/d_loss", "val/recon_mse"} and all(math.isfinite(float(v)) for v in logs.values())
    assert model.sample(5).shape == (5, 1, 8, 8) and model.encode(x).shape == (6, 2)
    assert model.reconstruct(x).shape == x.shape
    semi = tiny_semi().eval()
    assert semi.encode(x).shape == (6, 10 + 3) and semi.classify(x).shape == (6, 10)
    assert torch.allclose(semi.encode(x)[:, :10].sum(1), torch.ones(6))  # q(y|x) is a distribution


def test_semi_supervised_model_without_labels_says_which_option_to_set(tmp_path):
    with pytest.raises(ConfigError, match="n_labelled"):
        tiny_trainer(tmp_path, limit_train_batches=1).fit(tiny_semi(), digits(n_labelled=0))


def test_adversarial_generator_options_are_refused():
    with pytest.raises(ValueError, match="objective joint"):
        tiny_aae(su_lambda=5.0)


@pytest.mark.ddp
@pytest.mark.parametrize("name", ["aae_gaussian_encoder", "semi_supervised"])
def test_two_ranks_equal_one_process_and_send_each_phase_once(tmp_path, name):
    """The encoder belongs to several players: each phase all-reduces exactly the networks it updates."""
    from tests.test_ddp import assert_same_state, one_process_and_two_ranks

    build = {"aae_gaussian_encoder": lambda: tiny_aae(encoder="gaussian", conditioning="prior", seed=3),
             "semi_supervised": lambda: tiny_semi(seed=3)}[name]
    data = lambda batch_size: digits(batch_size=batch_size, on_device=True, n_labelled=100)  # noqa: E731
    model, one, r0, r1 = one_process_and_two_ranks(tmp_path, build, data, batches=4)
    assert_same_state(r0, r1)
    assert_same_state(r0, one, atol=1e-6)
    size = lambda net: sum(p.numel() * p.element_size() for p in model.get_submodule(net).parameters())  # noqa: E731
    per_iteration = sum(size(net) for networks, _, _ in model._players.values() for net in networks)
    assert r0["bytes"] == r0["iteration"] * per_iteration


@pytest.mark.parametrize("name", ["aae_conditioned_gaussian_encoder", "semi_supervised"])
def test_signal_mid_epoch_and_resume_equals_the_uninterrupted_run_bit_for_bit(tmp_path, name):
    """The prior draws, the labelled batches of the classification phase and the hidden labels all resume."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from gan_lightning.callbacks import Preemption
    from gan_lightning.errors import Preempted
    from tests.helpers import assert_same_training_state
    from tests.test_resume import SignalAt, StartedAt

    build = {"aae_conditioned_gaussian_encoder": lambda: tiny_aae(encoder="gaussian", conditioning="prior", seed=5,
                                                                  ema_decay=0.9),
             "semi_supervised": lambda: tiny_semi(seed=5, cluster_heads=True, latent_dim=2, ema_decay=0.9)}[name]

    def fit(root, *callbacks, ckpt_path=None):
        torch.manual_seed(0)
        model = build()
        trainer = tiny_trainer(root, max_epochs=2, limit_train_batches=6, enable_checkpointing=True, callbacks=[
            *callbacks, ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0)])
        trainer.fit(model, digits(batch_size=16, n_labelled=60), ckpt_path=ckpt_path)
        return model, [opt.state_dict() for opt in trainer.optimizers]

    whole, whole_opt = fit(tmp_path / "whole")
    with pytest.raises(Preempted):
        fit(tmp_path / "cut", SignalAt(4), Preemption(requeue=False))
    started = StartedAt()
    resumed, resumed_opt = fit(tmp_path / "cut", started, ckpt_path="last")
    assert (started.iteration, started.epoch) == (4, 0), "the resumed run did not start from the checkpoint"
    assert resumed.iteration == whole.iteration == 12
    assert_same_training_state(whole.state_dict(), resumed.state_dict(), whole_opt, resumed_opt)


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_semi_supervised_input_noise_corrupts_every_encoder_input_but_not_the_reconstruction_target(
        tmp_path, monkeypatch, sigma):
    import gan_lightning.models.semi_supervised_aae as aae_module

    model = tiny_semi(input_noise=sigma, seed=0)
    seen, targets = [], []
    model.encoder.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    real_error = aae_module.reconstruction_error
    monkeypatch.setattr(aae_module, "reconstruction_error",
                        lambda x_hat, x, kind: targets.append(x.detach().clone()) or real_error(x_hat, x, kind))
    data = digits(batch_size=16, n_labelled=50)
    tiny_trainer(tmp_path, limit_train_batches=1).fit(model, data)

    # Phases 1-3 see one corrupted copy of the batch; the reconstruction target is the clean batch.
    (x,) = targets
    assert len(seen) == 4                      # reconstruction, D's regularisation, E's, classification
    unlabelled = seen[:3]
    assert all(torch.equal(s, unlabelled[0]) for s in unlabelled)
    residual = unlabelled[0] - x
    assert (residual.std().item() == pytest.approx(sigma, abs=0.05)) if sigma else torch.equal(residual, 0 * x)
    # Phase 4: the labelled batch is corrupted as well.
    x_l = model._labelled[0].flatten(1)
    labelled = seen[-1].flatten(1)
    nearest = torch.cdist(labelled, x_l).argmin(1)
    residual = labelled - x_l[nearest]
    assert (residual.std().item() == pytest.approx(sigma, abs=0.05)) if sigma else torch.equal(residual, 0 * labelled)
    with pytest.raises(ValueError, match="input_noise"):
        tiny_semi(input_noise=-0.1)
