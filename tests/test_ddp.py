"""Two processes on CPU (gloo) with PlayerDDPStrategy: one all-reduce per player step, ranks identical,
equal to one process on the concatenated batch, and an exact resume under DDP."""
import os
import signal

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch import nn

from gan_lightning.callbacks import EncoderProbe, Preemption
from gan_lightning.distributed import CommunicationCounter, PlayerDDPStrategy
from gan_lightning.models import VAE
from tests.helpers import (
    RecordWarnings,
    assert_same_training_state,
    digits,
    tiny_ali,
    tiny_bigan,
    tiny_gan,
    tiny_trainer,
    unactionable,
)


@pytest.fixture(autouse=True)
def single_threaded_forks():
    """The ranks are forked from the test process. With OMP_NUM_THREADS=2 exported, the forked ranks hung here
    (600 s timeouts) unless the parent runs one intra-op thread while it forks them; two ranks on two cores need
    no more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordPerRank(L.Callback):
    """Each rank writes its first batch and noise, its final parameters, optimizer states and bytes sent."""

    def __init__(self, out, counter=None):
        self.out, self.counter, self.first = out, counter, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.first is None:  # the noise of the iteration that just ran
            pl_module.seed_iteration(pl_module.iteration - 1)
            self.first = {"x": batch[0].clone(), "z": pl_module.draw_training_prior(4)}

    def on_train_end(self, trainer, pl_module):
        params = {k: v.detach().clone() for k, v in pl_module.named_parameters()}
        buffers = {k: v.detach().clone() for k, v in pl_module.named_buffers()}
        optim = [opt.state_dict() for opt in trainer.optimizers]
        sent = (self.counter.bytes, self.counter.calls) if self.counter else (0, 0)
        torch.save({**self.first, "params": params, "buffers": buffers, "optim": optim, "bytes": sent[0],
                    "calls": sent[1], "iteration": pl_module.iteration}, self.out / f"rank{trainer.global_rank}.pt")


class RecordStart(L.Callback):
    """Each rank writes where its run starts training (a resumed run: where its checkpoint left off): the model's
    iteration, the epoch, the batch index and every optimizer's learning rates, at its first training batch."""

    def __init__(self, out):
        self.out, self.done = out, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.done:
            return
        self.done = True
        torch.save({"iteration": pl_module.iteration, "epoch": trainer.current_epoch, "batch_idx": batch_idx,
                    "lr": [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]},
                   self.out / f"start{trainer.global_rank}.pt")


def without_batch_norm(model):
    """Batch norm normalises each rank's batch by its own statistics (SyncBatchNorm needs GPUs), so the
    one-process equivalence holds for networks without it."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm1d):
                setattr(module, name, nn.Identity())
    return model


def player_ddp(**kwargs):
    return PlayerDDPStrategy(start_method="fork", process_group_backend="gloo", **kwargs)


def assert_same_state(a, b, atol=0.0):
    assert_same_training_state(a["params"], b["params"], a["optim"], b["optim"], atol=atol)


@pytest.mark.ddp
@pytest.mark.parametrize("on_device", [False, True])
def test_two_ranks_train_on_different_data_and_noise_and_stay_identical(tmp_path, on_device):
    # With a validation and an encoder probe (rank 0's): none of the values logged per epoch asks to be synced.
    trainer = tiny_trainer(tmp_path, devices=2, strategy=player_ddp(), limit_train_batches=4, limit_val_batches=1,
                           callbacks=[RecordPerRank(tmp_path), EncoderProbe(n_train=64, n_test=64),
                                      RecordWarnings(tmp_path)])
    torch.manual_seed(0)
    trainer.fit(tiny_bigan(seed=3), digits(batch_size=16, on_device=on_device))
    assert unactionable(tmp_path) == []
    assert "val/probe_1nn" in trainer.callback_metrics  # the probe ran (rank 0)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert not torch.equal(r0["x"], r1["x"]), "both ranks trained on the same batch"
    assert not torch.equal(r0["z"], r1["z"]), "both ranks drew the same noise"
    assert_same_state(r0, r1)
    torch.manual_seed(0)
    initial = tiny_bigan(seed=3).state_dict()
    assert any(not torch.equal(initial[k], v) for k, v in r0["params"].items()), "nothing trained"


MODELS = {
    "bigan": lambda: tiny_bigan(seed=3),  # simultaneous updates, as BiGAN's code
    "bigan_alternating": lambda: tiny_bigan(seed=3, update="alternating"),
    "gan_simultaneous": lambda: tiny_gan(seed=3, update="simultaneous"),
    "ali_gaussian_encoder": lambda: tiny_ali(seed=3, encoder="gaussian", dropout=0.0),  # dropout: per-rank RNG
    "ali_su_full": lambda: tiny_ali(seed=3, encoder="gaussian", dropout=0.0, loss="su_full"),  # E used twice
    "gan_r1": lambda: tiny_gan(seed=3, r1_penalty=1.0),
    "wgan_gp_n_critic_2": lambda: tiny_gan(seed=3, loss="wasserstein", gradient_penalty=10.0, n_critic=2),
    "vae": lambda: VAE(data_shape=(1, 8, 8), latent_dim=4, width=32, seed=3),
}


def one_process_and_two_ranks(tmp_path, build, data=None, batches: int = 5):
    """Fit ``build()`` (batch norm removed) on one process with batches of 32 and on two ranks with 16 each,
    counting the bytes the ranks all-reduce: (model, one process's record, rank 0's, rank 1's)."""
    counter = CommunicationCounter()
    data = data or (lambda batch_size: digits(batch_size=batch_size, on_device=True))

    def run(out, devices, batch_size, strategy, counter=None):
        out.mkdir()
        torch.manual_seed(0)
        model = without_batch_norm(build())
        trainer = tiny_trainer(out, devices=devices, strategy=strategy, limit_train_batches=batches,
                               callbacks=[RecordPerRank(out, counter)])
        trainer.fit(model, data(batch_size))
        return model

    model = run(tmp_path / "one", 1, 32, "auto")
    run(tmp_path / "two", 2, 16, player_ddp(ddp_comm_hook=counter.hook), counter)
    return (model, *(torch.load(tmp_path / path) for path in ("one/rank0.pt", "two/rank0.pt", "two/rank1.pt")))


@pytest.mark.ddp
@pytest.mark.parametrize("name", MODELS)
def test_two_ranks_equal_one_process_on_the_concatenated_batch_and_send_each_player_once(tmp_path, name):
    model, one, r0, r1 = one_process_and_two_ranks(tmp_path, MODELS[name])
    assert_same_state(r0, r1)
    assert_same_state(r0, one, atol=1e-6)

    # Bytes all-reduced = the gradients of exactly the networks each step updated, each once.
    size = {net: sum(p.numel() * p.element_size() for p in model.get_submodule(net).parameters())
            for net in model.player_networks()}
    iterations = r0["iteration"]
    d_steps = iterations if "discriminator" in size else 0  # the VAE: one player, every iteration
    g_steps = sum(1 for it in range(iterations) if (it + 1) % model.n_critic == 0)
    updated = d_steps * size.get("discriminator", 0) + g_steps * sum(v for k, v in size.items() if k != "discriminator")
    assert r0["bytes"] == updated  # Lightning's default DDP sends about twice this (benchmarks/ddp_communication.py)


@pytest.mark.ddp
def test_lightnings_default_ddp_sends_every_gradient_at_every_step(tmp_path):
    """The baseline the strategy improves on, measured the same way."""
    counter = CommunicationCounter()

    class Hook(L.Callback):
        def on_fit_start(self, trainer, pl_module):
            trainer.strategy.model.register_comm_hook(None, counter.hook)

    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo", find_unused_parameters=True)
    trainer = tiny_trainer(tmp_path, devices=2, strategy=strategy, limit_train_batches=3,
                           callbacks=[Hook(), RecordPerRank(tmp_path, counter)])
    model = tiny_bigan(seed=3, update="alternating")  # simultaneous updates are refused there (below)
    trainer.fit(model, digits(batch_size=16))
    r0 = torch.load(tmp_path / "rank0.pt")
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    assert r0["bytes"] == 2 * r0["iteration"] * total  # two backward passes, each all-reducing everything


class SignalRankAt(L.Callback):
    """Rank ``rank`` alone receives SIGUSR1 at the end of iteration ``iteration``."""

    def __init__(self, rank, iteration):
        self.rank, self.iteration = rank, iteration

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == self.rank and pl_module.iteration == self.iteration:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.ddp
def test_a_signal_to_one_rank_stops_all_ranks_at_the_same_iteration_and_resumes_exactly(tmp_path):
    """Mid-way through the second epoch, with a learning-rate schedule and validation on; the resumed run must start
    where the checkpoint left off (a run that ignored it would end in the same place: training is deterministic)."""
    import functools

    halve_every_epoch = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)

    def run(root, *callbacks, ckpt_path=None):
        root.mkdir(exist_ok=True)
        checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, save_top_k=0)
        trainer = tiny_trainer(root, devices=2, strategy=player_ddp(), max_epochs=2, limit_train_batches=5,
                               limit_val_batches=2, enable_checkpointing=True,
                               callbacks=[*callbacks, checkpoint, RecordPerRank(root), RecordStart(root)])
        torch.manual_seed(0)
        trainer.fit(tiny_ali(seed=3, encoder="gaussian", dropout=0.3, ema_decay=0.9, scheduler_d=halve_every_epoch,
                             scheduler_ge=halve_every_epoch),
                    digits(batch_size=16, on_device=True), ckpt_path=ckpt_path)

    run(tmp_path / "whole")
    with pytest.raises(Exception, match="Preempted|SIGUSR1"):
        run(tmp_path / "split", SignalRankAt(rank=1, iteration=7), Preemption(requeue=False))
    saved = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["gan_lightning"]["iteration"] == 7
    run(tmp_path / "split", Preemption(requeue=False), ckpt_path="last")
    for rank in (0, 1):  # the resumed run starts at iteration 7, the third batch of epoch 1, at half the rate
        start = torch.load(tmp_path / "split" / f"start{rank}.pt")
        assert start == {"iteration": 7, "epoch": 1, "batch_idx": 2, "lr": [0.5e-4, 0.5e-4]}, f"rank {rank}"
        assert torch.load(tmp_path / "whole" / f"start{rank}.pt") == {"iteration": 0, "epoch": 0, "batch_idx": 0,
                                                                      "lr": [1e-4, 1e-4]}
    for rank in (0, 1):
        whole, split = (torch.load(tmp_path / run / f"rank{rank}.pt") for run in ("whole", "split"))
        assert split["iteration"] == whole["iteration"] == 10
        assert_same_state(split, whole)
    # Batch-norm statistics are each rank's own (not broadcast at every forward); rank 0's are the saved ones.
    whole, split = (torch.load(tmp_path / run / "rank0.pt") for run in ("whole", "split"))
    for name, value in whole["buffers"].items():
        assert torch.equal(value, split["buffers"][name]), f"{name} differs on rank 0"


@pytest.mark.ddp
def test_gradient_accumulation_all_reduces_once_per_step_under_block_backward_sync(tmp_path):
    """Two micro-batches per discriminator step: the first backward inside Lightning's
    ``strategy.block_backward_sync()`` sends nothing, the second sends D's accumulated gradients once."""
    import contextlib

    from gan_lightning.losses import gan_discriminator_loss
    from gan_lightning.models import GAN

    class AccumulatingCritic(GAN):
        def update_players(self, batch):
            opt_d = self.optimizer("discriminator")
            with self.toggled_optimizer(opt_d):
                opt_d.zero_grad()
                for i, x in enumerate(batch[0].chunk(2)):
                    sync = self.trainer.strategy.block_backward_sync() if i == 0 else contextlib.nullcontext()
                    with sync:
                        x_fake = self.generator(self.draw_training_prior(len(x))).detach()
                        loss = gan_discriminator_loss(self.discriminator(x), self.discriminator(x_fake), self.loss)
                        self.manual_backward(loss / 2)
                opt_d.step()
            return {}

    counter = CommunicationCounter()
    torch.manual_seed(0)
    model = AccumulatingCritic(data_shape=(1, 8, 8), latent_dim=4, architecture="mlp", width=32)
    trainer = tiny_trainer(tmp_path, devices=2, strategy=player_ddp(ddp_comm_hook=counter.hook), limit_train_batches=3,
                           callbacks=[RecordPerRank(tmp_path, counter)])
    trainer.fit(model, digits(batch_size=16))
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert_same_state(r0, r1)
    d_bytes = sum(p.numel() * p.element_size() for p in model.discriminator.parameters())
    assert r0["bytes"] == r0["iteration"] * d_bytes


@pytest.mark.ddp
def test_lightnings_one_ddp_per_module_is_refused_with_the_fix(tmp_path):
    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo")
    with pytest.raises(Exception, match="set trainer.strategy to player_ddp"):
        tiny_trainer(tmp_path, devices=2, strategy=strategy).fit(tiny_bigan(), digits())


@pytest.mark.ddp
def test_simultaneous_updates_under_one_ddp_per_module_are_refused_with_the_fix(tmp_path):
    strategy = DDPStrategy(start_method="fork", process_group_backend="gloo", find_unused_parameters=True)
    with pytest.raises(Exception, match="model.update simultaneous .* player_ddp .* model.update alternating"):
        tiny_trainer(tmp_path, devices=2, strategy=strategy).fit(tiny_bigan(), digits())


# --- issue 23, item 6: routing that cannot silently drift, one wrapper per network, ranks checked ------------


def fit_two_ranks(root, model, *callbacks, data=None, **trainer_kwargs):
    """Fit ``model`` on two gloo ranks with RecordPerRank; returns (rank 0's record, rank 1's)."""
    root.mkdir(exist_ok=True)
    kwargs = {"limit_train_batches": 4, **trainer_kwargs}
    trainer = tiny_trainer(root, devices=2, strategy=player_ddp(), callbacks=[*callbacks, RecordPerRank(root)],
                           **kwargs)
    trainer.fit(model, data or digits(batch_size=16, on_device=True))
    return torch.load(root / "rank0.pt"), torch.load(root / "rank1.pt")


@pytest.mark.ddp
def test_a_network_whose_first_parameter_is_frozen_is_still_all_reduced(tmp_path):
    torch.manual_seed(0)
    model = tiny_bigan(seed=3)
    frozen_name, frozen = next(model.discriminator.named_parameters())
    frozen.requires_grad_(False)  # e.g. a fixed first layer; D's other parameters train
    before = frozen.detach().clone()
    r0, r1 = fit_two_ranks(tmp_path, model)
    assert torch.equal(r0["params"][f"discriminator.{frozen_name}"], before)
    assert_same_state(r0, r1)


class DiscriminatorInEvalMode(L.Callback):
    """Trains D in eval mode (no dropout, batch norm on its running statistics), as a user might."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        pl_module._modules["discriminator"].eval()


@pytest.mark.ddp
def test_a_network_trained_in_eval_mode_is_still_all_reduced(tmp_path):
    torch.manual_seed(0)
    r0, r1 = fit_two_ranks(tmp_path, tiny_ali(seed=3, dropout=0.3), DiscriminatorInEvalMode())
    assert_same_state(r0, r1)


@pytest.mark.ddp
def test_networks_under_no_grad_or_without_trainable_parameters_skip_ddp(tmp_path):
    """The routing rule, on one rank: the wrapper whenever a call can produce gradients for the network (any
    of its parameters requires grad, in training or eval mode), the bare network under no_grad or when frozen."""
    seen = {}

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_rank or seen:
                return
            d, wrapper = pl_module._modules["discriminator"], pl_module.distributed_networks["discriminator"]
            seen["train"] = pl_module.discriminator is wrapper
            d.eval()
            seen["eval"] = pl_module.discriminator is wrapper
            with torch.no_grad():
                seen["no_grad"] = pl_module.discriminator is d
            first = next(d.parameters())
            first.requires_grad_(False)
            seen["first_frozen"] = pl_module.discriminator is wrapper
            d.requires_grad_(False)
            seen["all_frozen"] = pl_module.discriminator is d
            d.requires_grad_(True)
            d.train()
            torch.save(seen, tmp_path / "seen.pt")

    fit_two_ranks(tmp_path, tiny_bigan(seed=3), Probe(), limit_train_batches=1)
    assert torch.load(tmp_path / "seen.pt") == {"train": True, "eval": True, "no_grad": True, "first_frozen": True,
                                                "all_frozen": True}


class CountWrappers(L.Callback):
    """Each rank writes how many DDP wrappers were built around each network, and the networks routed."""

    def __init__(self, out, made):
        self.out, self.made = out, made

    def on_train_end(self, trainer, pl_module):
        names = {id(module): name for name, module in pl_module.named_children()}
        counts = {}
        for module_id in self.made:
            counts[names.get(module_id, "?")] = counts.get(names.get(module_id, "?"), 0) + 1
        torch.save({"counts": counts, "routed": sorted(pl_module.distributed_networks)},
                   self.out / f"wrappers{trainer.global_rank}.pt")


@pytest.mark.ddp
@pytest.mark.parametrize("name", ["aae", "semi_supervised"])
def test_each_network_has_exactly_one_ddp_wrapper_although_several_players_train_it(tmp_path, monkeypatch, name):
    """The AAE's encoder belongs to two players (reconstruction, regularisation), the semi-supervised AAE's to
    three (and classification): one DDP each, which every player's step goes through (ranks stay identical)."""
    from torch.nn.parallel import DistributedDataParallel

    from gan_lightning import distributed
    from tests.test_aae import tiny_aae, tiny_semi

    made = []  # id of each module wrapped, in this process (the ranks are forked after the patch)

    class Counting(DistributedDataParallel):
        def __init__(self, module, *args, **kwargs):
            made.append(id(module))
            super().__init__(module, *args, **kwargs)

    monkeypatch.setattr(distributed, "DistributedDataParallel", Counting)
    torch.manual_seed(0)
    model = {"aae": lambda: tiny_aae(seed=3), "semi_supervised": lambda: tiny_semi(seed=3)}[name]()
    players_of_encoder = sum("encoder" in networks for networks, _, _ in model._players.values())
    assert players_of_encoder == {"aae": 2, "semi_supervised": 3}[name]
    r0, r1 = fit_two_ranks(tmp_path, model, CountWrappers(tmp_path, made),
                           data=digits(batch_size=16, on_device=True, n_labelled=100))
    networks = sorted(set(model.player_networks()))
    for rank in (0, 1):
        record = torch.load(tmp_path / f"wrappers{rank}.pt")
        assert record["counts"] == {net: 1 for net in networks}, f"rank {rank}"
        assert record["routed"] == networks
    assert_same_state(r0, r1)


class PerturbRank(L.Callback):
    """Rank ``rank`` alone nudges the first weight of ``network`` at the end of iteration ``iteration``."""

    def __init__(self, rank, iteration, network):
        self.rank, self.iteration, self.network = rank, iteration, network

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == self.rank and pl_module.iteration == self.iteration:
            with torch.no_grad():
                next(pl_module._modules[self.network].parameters()).add_(1e-3)


@pytest.mark.ddp
def test_ranks_whose_parameters_differ_are_stopped_at_the_next_validation_naming_the_network(tmp_path):
    with pytest.raises(Exception, match="RanksDivergedError") as err:
        fit_two_ranks(tmp_path, tiny_bigan(seed=3), PerturbRank(rank=1, iteration=2, network="discriminator"),
                      limit_val_batches=1, num_sanity_val_steps=0)
    message = next(line for line in str(err.value).splitlines() if "RanksDivergedError:" in line)
    # Only the network that differs is named (BiGAN's others: the generator and the encoder).
    assert "the parameters of discriminator differ between rank 0 and rank 1 at validation (iteration 4)" in message
    assert not (tmp_path / "rank0.pt").exists()  # stopped before the end


@pytest.mark.ddp
def test_ranks_whose_parameters_differ_are_stopped_before_the_next_checkpoint_is_written(tmp_path):
    # A checkpoint after every iteration, named by its step (an iteration, whatever the players).
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "checkpoints", every_n_train_steps=1, save_top_k=-1,
                                 filename="{step}")
    with pytest.raises(Exception, match=r"encoder differ between rank 0 and rank 1 .*checkpoint"):
        fit_two_ranks(tmp_path, tiny_bigan(seed=3), PerturbRank(rank=1, iteration=2, network="encoder"), checkpoint,
                      enable_checkpointing=True)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step=1.ckpt"]


class RecordDropout(L.Callback):
    """Each rank writes the input and output of the first dropout layer's first training call."""

    def __init__(self, out):
        self.out = out

    def on_fit_start(self, trainer, pl_module):
        dropout = next(m for m in pl_module.modules() if isinstance(m, nn.Dropout))

        def hook(module, inputs, output):
            if module.training and torch.is_grad_enabled():
                torch.save({"input": inputs[0].detach(), "output": output.detach(), "iteration": pl_module.iteration},
                           self.out / f"dropout{trainer.global_rank}.pt")
                handle.remove()

        handle = dropout.register_forward_hook(hook)


@pytest.mark.ddp
def test_two_ranks_draw_different_dropout_masks_in_the_same_iteration(tmp_path):
    """Dropout is seeded from (seed, iteration, rank): the ranks' masks differ (a seed without the rank would make
    every rank drop the same units of its batch)."""
    torch.manual_seed(0)
    fit_two_ranks(tmp_path, tiny_ali(seed=3, dropout=0.5), RecordDropout(tmp_path), limit_train_batches=1)
    d0, d1 = (torch.load(tmp_path / f"dropout{rank}.pt") for rank in (0, 1))
    assert d0["iteration"] == d1["iteration"] == 0
    # Where the input is nonzero on both ranks, a zero in the output is a dropped unit.
    valid = (d0["input"] != 0) & (d1["input"] != 0)
    assert valid.sum() > 100
    dropped0, dropped1 = ((d["output"] == 0) & valid for d in (d0, d1))
    assert 0.3 < dropped0.sum() / valid.sum() < 0.7  # dropout 0.5 at work
    assert not torch.equal(dropped0, dropped1), "both ranks dropped the same units"


# --- issue 23, item 7: a mid-epoch checkpoint resumed on another world size ------------------------------------


def checkpoint_after_two_iterations(root, devices):
    """Fit a BiGAN for 5 iterations on ``devices`` processes with 16 examples each, saving after iteration 2
    (mid-epoch): the path of that checkpoint."""
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    strategy = player_ddp() if devices > 1 else "auto"
    trainer = tiny_trainer(root, devices=devices, strategy=strategy, limit_train_batches=5, enable_checkpointing=True,
                           callbacks=[checkpoint])
    trainer.fit(tiny_bigan(seed=3), digits(batch_size=16, on_device=True))
    return root / "checkpoints" / "step=2.ckpt"


@pytest.mark.ddp
def test_a_mid_epoch_checkpoint_resumed_on_another_world_size_is_refused_naming_both(tmp_path):
    from gan_lightning.checkpoints import CheckpointError

    two = checkpoint_after_two_iterations(tmp_path / "two", devices=2)
    resumed = tiny_trainer(tmp_path / "one", limit_train_batches=5)
    with pytest.raises(CheckpointError) as err:
        resumed.fit(tiny_bigan(seed=3), digits(batch_size=16, on_device=True), ckpt_path=two)
    assert "world size 2" in str(err.value) and "world size 1" in str(err.value) and "\n" not in str(err.value)

    one = checkpoint_after_two_iterations(tmp_path / "one", devices=1)
    with pytest.raises(Exception, match="world size 1.*world size 2"):
        tiny_trainer(tmp_path / "two", devices=2, strategy=player_ddp(), limit_train_batches=5).fit(
            tiny_bigan(seed=3), digits(batch_size=16, on_device=True), ckpt_path=one)


@pytest.mark.ddp
def test_a_checkpoint_without_the_world_size_still_resumes_on_another(tmp_path):
    """Checkpoints written before the world size was recorded load as before (the position is then trusted)."""
    path = checkpoint_after_two_iterations(tmp_path, devices=2)
    saved = torch.load(path, weights_only=True)
    (state,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert (state["world_size"], state["batch_size"]) == (2, 16)
    del state["world_size"], state["batch_size"]
    torch.save(saved, tmp_path / "old.ckpt")
    starts = RecordStart(tmp_path)
    tiny_trainer(tmp_path, limit_train_batches=5, callbacks=[starts]).fit(
        tiny_bigan(seed=3), digits(batch_size=16, on_device=True), ckpt_path=tmp_path / "old.ckpt")
    assert torch.load(tmp_path / "start0.pt")["iteration"] == 2
